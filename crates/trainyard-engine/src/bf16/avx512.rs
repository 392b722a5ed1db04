//! AVX-512 BF16: `vdpbf16ps` adds, in each of 16 f32 lanes, the products of a pair of bf16 from
//! each operand. A right tile's row is exactly one operand (16 columns, each with two
//! consecutive `k`); a left row's pair is broadcast to every lane. Each 32 x 32 block is four
//! 8 x 32 strips, each summed in 16 registers over the whole depth, pairs in order.

use super::pack::{BLOCK, Packed, TILE, TILE_K, TILE_LINES};

/// Rows of a strip: 8 rows x 2 registers of 16 columns keep 16 sums in registers.
const STRIP: usize = 8;

/// Whether this CPU has AVX-512 with BF16.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The 32 x 32 block (`row_block`, `col_block`) of `left @ right` into `out` (row-major,
/// 32 wide).
pub fn block(
    left: &Packed<'_>,
    right: &Packed<'_>,
    row_block: usize,
    col_block: usize,
    out: &mut [f32; BLOCK * BLOCK],
) {
    assert_eq!(left.k_tiles, right.k_tiles, "inner dimensions");
    assert!(available(), "AVX-512 BF16 products on a CPU without them");
    let tiles = left.k_tiles * TILE;
    let right0 = &right.data[2 * col_block * tiles..][..tiles];
    let right1 = &right.data[(2 * col_block + 1) * tiles..][..tiles];
    for half in 0..2 {
        let rows = &left.data[(2 * row_block + half) * tiles..][..tiles];
        for strip in 0..TILE_LINES / STRIP {
            let first = half * TILE_LINES + strip * STRIP;
            let out = &mut out[first * BLOCK..][..STRIP * BLOCK];
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `available()` checked the CPU's features above.
            unsafe {
                x86::strip(rows, strip * STRIP, right0, right1, left.k_tiles, out)
            };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{STRIP, TILE, TILE_K, TILE_LINES};

    /// Sums rows `first..first + 8` of the left tiles `rows` against the 32 columns of
    /// `right0` and `right1` over `k_tiles` tiles into `out` (8 rows of 32).
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn strip(
        rows: &[u16],
        first: usize,
        right0: &[u16],
        right1: &[u16],
        k_tiles: usize,
        out: &mut [f32],
    ) {
        let mut sums = [[_mm512_setzero_ps(); 2]; STRIP];
        for tile in 0..k_tiles {
            let a = &rows[tile * TILE + first * TILE_K..][..STRIP * TILE_K];
            let (b0, b1) = (
                &right0[tile * TILE..][..TILE],
                &right1[tile * TILE..][..TILE],
            );
            for pair in 0..TILE_LINES {
                // SAFETY: each slice above holds a whole tile, 16 rows of 32 bf16 (64 bytes).
                let (v0, v1) = unsafe {
                    (
                        load_pairs(b0.as_ptr().add(pair * TILE_K)),
                        load_pairs(b1.as_ptr().add(pair * TILE_K)),
                    )
                };
                for (row, sum) in sums.iter_mut().enumerate() {
                    let at = row * TILE_K + 2 * pair;
                    let both = u32::from(a[at]) | u32::from(a[at + 1]) << 16;
                    // SAFETY: a bit cast between two 64-byte vector types.
                    let broadcast: __m512bh =
                        unsafe { std::mem::transmute(_mm512_set1_epi32(both as i32)) };
                    sum[0] = _mm512_dpbf16_ps(sum[0], broadcast, v0);
                    sum[1] = _mm512_dpbf16_ps(sum[1], broadcast, v1);
                }
            }
        }
        for (row, sum) in sums.iter().enumerate() {
            // SAFETY: `out` holds 8 rows of 32 floats.
            unsafe {
                _mm512_storeu_ps(out.as_mut_ptr().add(row * 32), sum[0]);
                _mm512_storeu_ps(out.as_mut_ptr().add(row * 32 + 16), sum[1]);
            }
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn load_pairs(at: *const u16) -> __m512bh {
        // SAFETY: the caller passes 64 readable bytes.
        unsafe { std::mem::transmute(_mm512_loadu_si512(at.cast())) }
    }
}
