//! Element-wise loops compiled for the CPU they run on.

use std::sync::atomic::{AtomicBool, Ordering};

/// Defines a function twice: compiled for AVX2 and FMA (eight lanes, chosen at run time when
/// the CPU has them) and for the baseline. Results are the same on both paths (a test holds
/// each family to it): the loops are element-wise (no reassociated sums; where a sum is split
/// into lanes, the code fixes the lanes) and Rust never fuses a multiply and an add on its own.
/// An AVX-512 copy measured no faster on the language model's or the autoencoder's step.
macro_rules! simd_fn {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn wide($($arg: $ty),*) $(-> $ret)? $body
                if $crate::simd::has_avx2() {
                    // SAFETY: the CPU has the features `wide` was compiled for.
                    return unsafe { wide($($arg),*) };
                }
            }
            $body
        }
    };
}

pub(crate) use simd_fn;

/// Set by tests to hold the AVX2 path to the baseline's bits.
static BASELINE_ONLY: AtomicBool = AtomicBool::new(false);

/// Every `simd_fn` takes the baseline path from now on (for tests, which nextest runs one per
/// process).
#[cfg(test)]
pub(crate) fn baseline_only() {
    BASELINE_ONLY.store(true, Ordering::Relaxed);
}

#[cfg(target_arch = "x86_64")]
pub(crate) fn has_avx2() -> bool {
    !BASELINE_ONLY.load(Ordering::Relaxed)
        && std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
}
