//! A factor packed into tiles of bf16 pairs: each `u32` holds two consecutive `k` of one line
//! (the even `k` in the low half, so in memory the pair reads in `k` order). A tile is 16 rows
//! of 16 pairs (64 bytes a row): a left factor's row is one line (a row of `a`, 32 `k`), a right
//! factor's row is one pair of `k` across 16 lines (columns of `b`): the layout both
//! `tdpbf16ps` and `vdpbf16ps` read. Tiles of the same 16 lines follow each other along `k`, so
//! a block's loop walks one stride. Lines and `k` are padded with zeros to whole 32-line blocks
//! and 32-wide tiles.

use std::cell::RefCell;

use rayon::prelude::*;

use crate::sae::linalg::{View, stride};
use crate::simd::simd_fn;

/// Lines in a tile, pairs of `k` per tile row, and `k` per tile.
pub const TILE_LINES: usize = 16;
pub const TILE_PAIRS: usize = 16;
pub const TILE_K: usize = 2 * TILE_PAIRS;
/// Pairs in one tile, and its size in bytes.
pub const TILE: usize = TILE_LINES * TILE_PAIRS;
pub const TILE_BYTES: usize = TILE * 4;
/// Output rows and columns per block: two tiles each way.
pub const BLOCK: usize = 2 * TILE_LINES;

#[derive(Clone, Copy, PartialEq)]
pub enum Side {
    /// `a` in `a @ b`: lines are its rows.
    Left,
    /// `b` in `a @ b`: lines are its columns.
    Right,
}

/// A packed factor: `k_tiles` tiles per 16 lines, of which the first `pairs` pairs of `k` and
/// the first `lines` lines are the factor's (the rest is zero padding).
pub struct Packed<'a> {
    pub data: &'a [u32],
    pub k_tiles: usize,
    pub pairs: usize,
    pub lines: usize,
}

impl Packed<'_> {
    /// The tiles of the 16 lines from `tile_line * 16`, along the whole depth.
    pub fn tiles(&self, tile_line: usize) -> &[u32] {
        &self.data[tile_line * self.k_tiles * TILE..][..self.k_tiles * TILE]
    }
}

thread_local! {
    /// Reused so a step's products fault in no fresh pages.
    static LEFT: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
    static RIGHT: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
}

/// Packs `view` as the `side` factor into this thread's buffer for that side and calls `f`.
/// A thread that steals a task while its own product waits gets a fresh buffer instead.
pub fn with_packed<R>(view: View<'_>, side: Side, f: impl FnOnce(&Packed<'_>) -> R) -> R {
    let buffer = match side {
        Side::Left => &LEFT,
        Side::Right => &RIGHT,
    };
    let run = |data: &mut Vec<u32>| {
        let src = Source::of(view, side);
        let k_tiles = pack(&src, side, data);
        f(&Packed {
            data,
            k_tiles,
            pairs: src.depth.div_ceil(2),
            lines: src.lines,
        })
    };
    buffer.with(|cell| match cell.try_borrow_mut() {
        Ok(mut data) => run(&mut data),
        Err(_) => run(&mut Vec::new()),
    })
}

/// A factor's lines and depth, and the strides between elements along each.
struct Source<'a> {
    data: &'a [f32],
    lines: usize,
    depth: usize,
    line_stride: usize,
    k_stride: usize,
}

impl Source<'_> {
    fn of(view: View<'_>, side: Side) -> Source<'_> {
        let (rs, cs) = (stride(view.rs), stride(view.cs));
        let (lines, depth, line_stride, k_stride) = match side {
            Side::Left => (view.rows, view.cols, rs, cs),
            Side::Right => (view.cols, view.rows, cs, rs),
        };
        Source {
            data: view.data,
            lines,
            depth,
            line_stride,
            k_stride,
        }
    }

    /// Element (`line`, `k`), zero past the depth (an odd depth's last pair).
    #[inline]
    fn at(&self, line: usize, k: usize) -> f32 {
        if k < self.depth {
            self.data[line * self.line_stride + k * self.k_stride]
        } else {
            0.0
        }
    }

    /// The `lines` elements (`first..`, `k`) when lines are contiguous; zeros past the depth.
    #[inline]
    fn run(&self, first: usize, lines: usize, k: usize) -> &[f32] {
        const ZEROS: [f32; TILE_LINES] = [0.0; TILE_LINES];
        if k < self.depth {
            &self.data[first + k * self.k_stride..][..lines]
        } else {
            &ZEROS[..lines]
        }
    }
}

/// Fills `data` with `src` packed as `side`; returns the tiles per 16 lines.
fn pack(src: &Source<'_>, side: Side, data: &mut Vec<u32>) -> usize {
    let k_tiles = src.depth.div_ceil(TILE_K);
    let tile_lines = src.lines.div_ceil(BLOCK) * 2;
    data.clear();
    data.resize(tile_lines * k_tiles * TILE, 0);
    let fill_lines =
        |(tile_line, tiles): (usize, &mut [u32])| fill(src, side, tile_line * TILE_LINES, tiles);
    if tile_lines > 2 {
        data.par_chunks_mut(k_tiles * TILE)
            .enumerate()
            .for_each(fill_lines);
    } else {
        // One band's rows: packed by the task that multiplies them.
        data.chunks_mut(k_tiles * TILE)
            .enumerate()
            .for_each(fill_lines);
    }
    k_tiles
}

/// 16 x 16 pairs, indexed `[pair][line]` or `[line][pair]`.
type Square = [[u32; TILE_LINES]; TILE_PAIRS];

simd_fn! {
    /// Writes the tiles of the 16 lines from `first`, one tile at a time: its pairs are
    /// rounded in a square read along whichever of the source's strides is 1 (so the loops
    /// vectorise), then copied to the tile in the side's order, transposed where they differ.
    fn fill(src: &Source<'_>, side: Side, first: usize, tiles: &mut [u32]) {
        let lines = src.lines.saturating_sub(first).min(TILE_LINES);
        let pairs = src.depth.div_ceil(2);
        for (tile, dst) in tiles.chunks_exact_mut(TILE).enumerate() {
            if lines == 0 {
                return; // padding: zeros already
            }
            let p0 = tile * TILE_PAIRS;
            let count = (pairs - p0).min(TILE_PAIRS);
            let mut square: Square = [[0; TILE_LINES]; TILE_PAIRS];
            let by_pair = src.line_stride == 1;
            if by_pair {
                for (p, row) in square.iter_mut().enumerate().take(count) {
                    let k = 2 * (p0 + p);
                    let (even, odd) = (src.run(first, lines, k), src.run(first, lines, k + 1));
                    for ((d, &e), &o) in row.iter_mut().zip(even).zip(odd) {
                        *d = pair(e, o);
                    }
                }
            } else if src.k_stride == 1 {
                let width = (src.depth - 2 * p0).min(TILE_K);
                let whole_rows = width == TILE_K && super::avx512::available();
                for (line, row) in square.iter_mut().enumerate().take(lines) {
                    let ks = &src.data[(first + line) * src.line_stride + 2 * p0..][..width];
                    if whole_rows {
                        super::avx512::round_row(ks, row);
                        continue;
                    }
                    let mut two = ks.chunks_exact(2);
                    for (d, t) in row.iter_mut().zip(two.by_ref()) {
                        *d = pair(t[0], t[1]);
                    }
                    if let [last] = two.remainder() {
                        row[width / 2] = pair(*last, 0.0);
                    }
                }
            } else {
                for (line, row) in square.iter_mut().enumerate().take(lines) {
                    for (p, d) in row.iter_mut().enumerate().take(count) {
                        let k = 2 * (p0 + p);
                        *d = pair(src.at(first + line, k), src.at(first + line, k + 1));
                    }
                }
            }
            // The square is `[pair][line]` when read by pair; a right tile wants that order.
            if by_pair == (side == Side::Right) {
                for (row, out) in square.iter().zip(dst.chunks_exact_mut(TILE_LINES)) {
                    out.copy_from_slice(row);
                }
            } else {
                for (i, out) in dst.chunks_exact_mut(TILE_LINES).enumerate() {
                    for (j, d) in out.iter_mut().enumerate() {
                        *d = square[j][i];
                    }
                }
            }
        }
    }
}

/// Two values rounded to bf16, `even` in the low half.
#[inline]
fn pair(even: f32, odd: f32) -> u32 {
    u32::from(to_bf16(even)) | u32::from(to_bf16(odd)) << 16
}

/// `view` as a row-major matrix of its elements rounded to bf16 (kept as f32).
pub fn rounded(view: View<'_>) -> Vec<f32> {
    let (rs, cs) = (stride(view.rs), stride(view.cs));
    let mut out = Vec::with_capacity(view.rows * view.cols);
    for r in 0..view.rows {
        out.extend((0..view.cols).map(|c| from_bf16(to_bf16(view.data[r * rs + c * cs]))));
    }
    out
}

/// Round to nearest, ties to even; NaN stays NaN (quieted).
#[inline]
pub fn to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    let rounded = bits.wrapping_add(0x7fff + ((bits >> 16) & 1)) >> 16;
    let quiet = (bits >> 16) | 0x40;
    // A select, not a branch, so packing loops vectorise.
    (if x.is_nan() { quiet } else { rounded }) as u16
}

#[inline]
pub fn from_bf16(x: u16) -> f32 {
    f32::from_bits(u32::from(x) << 16)
}
