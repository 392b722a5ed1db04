//! Element-wise loops compiled for the CPU they run on.

/// Defines a function twice: compiled for AVX2 and FMA (chosen at run time when the CPU has
/// them) and for the baseline, so the element-wise loops vectorise eight lanes wide. Results
/// are the same either way: the loops are element-wise (no reassociated sums) and Rust never
/// fuses a multiply and an add on its own.
macro_rules! simd_fn {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn wide($($arg: $ty),*) $(-> $ret)? $body
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU has the features `wide` was compiled for.
                    return unsafe { wide($($arg),*) };
                }
            }
            $body
        }
    };
}

pub(crate) use simd_fn;
