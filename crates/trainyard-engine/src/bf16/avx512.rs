//! AVX-512 BF16: `vdpbf16ps` adds, in each of 16 f32 lanes, the products of a pair of bf16 from
//! each operand. A right tile's row is exactly one operand (16 columns, each with a pair of
//! `k`); a left row's pair is broadcast to every lane. Each 32 x 32 block is up to four 8 x 32
//! strips, each summed in registers over the depth, pairs in order. Padding is skipped: strips
//! past the last row, the second 16 columns past the last column, pairs past the depth.

use super::pack::{BLOCK, Packed, TILE, TILE_LINES, TILE_PAIRS};

/// Rows of a strip: 8 rows x 2 registers of 16 columns keep 16 sums in registers.
const STRIP: usize = 8;
/// Tiles of depth per chunk: 16 KiB of the band's left tiles and 16 KiB of the right ones stay
/// in L1 together.
const CHUNK_TILES: usize = 8;

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

/// 32 consecutive `k` of a line as a tile row of 16 pairs, with one `vcvtne2ps2bf16`: the same
/// rounding as `pack::to_bf16` (to nearest, ties to even, NaN quieted), except that a
/// subnormal input becomes zero, as the instruction defines.
pub fn round_row(ks: &[f32], row: &mut [u32; TILE_PAIRS]) {
    assert_eq!(ks.len(), 2 * TILE_PAIRS, "a whole tile row");
    assert!(available(), "AVX-512 BF16 rounding on a CPU without it");
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `available()` checked the CPU's features; the lengths are checked above.
    unsafe {
        x86::round_row(ks, row)
    }
}

/// The 32 x 32 block (`row_block`, `col_block`) of `left @ right` into `out` (row-major,
/// 32 wide); rows and columns past the factors' lines are left as they were.
pub fn block(
    left: &Packed<'_>,
    right: &Packed<'_>,
    row_block: usize,
    col_block: usize,
    out: &mut [f32; BLOCK * BLOCK],
) {
    assert_eq!(left.k_tiles, right.k_tiles, "inner dimensions");
    assert!(available(), "AVX-512 BF16 products on a CPU without them");
    let rows = left.lines - row_block * BLOCK;
    let columns = right.lines - col_block * BLOCK;
    let right0 = right.tiles(2 * col_block);
    let right1 = (columns > TILE_LINES).then(|| right.tiles(2 * col_block + 1));
    let k_tiles = left.pairs.div_ceil(TILE_PAIRS);
    // The depth in chunks whose left and right tiles fit in L1 together; each strip's sums
    // carry from one chunk to the next through `out`, so they take the pairs in order.
    for start in (0..k_tiles).step_by(CHUNK_TILES) {
        for first in (0..rows.min(BLOCK)).step_by(STRIP) {
            let (half, within) = (first / TILE_LINES, first % TILE_LINES);
            let strip = Strip {
                left: left.tiles(2 * row_block + half),
                first: within,
                pairs: left.pairs,
                tiles: start..(start + CHUNK_TILES).min(k_tiles),
            };
            let out = &mut out[first * BLOCK..][..STRIP * BLOCK];
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `available()` checked the CPU's features above.
            unsafe {
                match right1 {
                    Some(right1) => x86::strip::<2>(&strip, [right0, right1], out),
                    None => x86::strip::<1>(&strip, [right0], out),
                }
            }
        }
    }
}

/// Eight rows of a left factor's tiles: rows `first..first + 8` of `left`, whose first `pairs`
/// pairs of `k` are real, over `tiles` (the first chunk starts the sums, later ones add on).
struct Strip<'a> {
    left: &'a [u32],
    first: usize,
    pairs: usize,
    tiles: std::ops::Range<usize>,
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{STRIP, Strip, TILE, TILE_LINES, TILE_PAIRS};

    /// Sums `strip` against `COLS` x 16 columns of right tiles into `out` (8 rows of 32).
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn strip<const COLS: usize>(
        strip: &Strip<'_>,
        right: [&[u32]; COLS],
        out: &mut [f32],
    ) {
        let mut sums = [[_mm512_setzero_ps(); COLS]; STRIP];
        if strip.tiles.start > 0 {
            for (row, sum) in sums.iter_mut().enumerate() {
                for (column, sum) in sum.iter_mut().enumerate() {
                    // SAFETY: `out` holds 8 rows of 32 floats; `column` < 2.
                    *sum = unsafe { _mm512_loadu_ps(out.as_ptr().add(row * 32 + column * 16)) };
                }
            }
        }
        for tile in strip.tiles.clone() {
            let pairs = (strip.pairs - tile * TILE_PAIRS).min(TILE_PAIRS);
            let a = &strip.left[tile * TILE + strip.first * TILE_PAIRS..][..STRIP * TILE_PAIRS];
            let b = right.map(|r| &r[tile * TILE..][..TILE]);
            for pair in 0..pairs {
                let mut columns = [_mm512_setzero_si512(); COLS];
                for (column, b) in columns.iter_mut().zip(b) {
                    // SAFETY: a right tile holds 16 rows of 16 pairs; `pair` < 16.
                    *column =
                        unsafe { _mm512_loadu_si512(b.as_ptr().add(pair * TILE_LINES).cast()) };
                }
                for (row, sum) in sums.iter_mut().enumerate() {
                    let broadcast = _mm512_set1_epi32(a[row * TILE_PAIRS + pair] as i32);
                    for (sum, column) in sum.iter_mut().zip(columns) {
                        *sum = _mm512_dpbf16_ps(*sum, bf16s(broadcast), bf16s(column));
                    }
                }
            }
        }
        for (row, sum) in sums.iter().enumerate() {
            for (column, sum) in sum.iter().enumerate() {
                // SAFETY: `out` holds 8 rows of 32 floats; `column` < 2.
                unsafe { _mm512_storeu_ps(out.as_mut_ptr().add(row * 32 + column * 16), *sum) };
            }
        }
    }

    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn round_row(ks: &[f32], row: &mut [u32; TILE_PAIRS]) {
        // SAFETY: the caller passes 32 floats and 16 pairs.
        unsafe {
            let (low, high) = (
                _mm512_loadu_ps(ks.as_ptr()),
                _mm512_loadu_ps(ks.as_ptr().add(16)),
            );
            // The first operand fills the upper half: `k` 16..32 after 0..16.
            let pairs: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(high, low));
            _mm512_storeu_si512(row.as_mut_ptr().cast(), pairs);
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bf16")]
    fn bf16s(v: __m512i) -> __m512bh {
        // SAFETY: a bit cast between two 64-byte vector types.
        unsafe { std::mem::transmute(v) }
    }
}
