//! A factor packed into AMX tiles of bf16. A tile is 16 lines of 64 bytes; a left factor's
//! line is a row of `a` (32 consecutive `k`), a right factor's line holds pairs: 16 columns of
//! `b`, each with two consecutive `k` side by side (the layout `tdpbf16ps` reads). Tiles of
//! the same 16 lines follow each other along `k`, so a block's loop walks one stride. Lines
//! and `k` are padded with zeros to whole 32-line blocks and 32-wide tiles.

use std::cell::RefCell;

use rayon::prelude::*;

use crate::sae::linalg::View;

/// Lines in a tile, and `k` per tile (32 bf16 fill a 64-byte tile row).
pub const TILE_LINES: usize = 16;
pub const TILE_K: usize = 32;
/// Elements in one tile.
pub const TILE: usize = TILE_LINES * TILE_K;
/// Output rows and columns per block: two tiles each way.
pub const BLOCK: usize = 2 * TILE_LINES;

#[derive(Clone, Copy, PartialEq)]
pub enum Side {
    /// `a` in `a @ b`: lines are its rows.
    Left,
    /// `b` in `a @ b`: lines are its columns, `k` in pairs.
    Right,
}

/// A packed factor: `k_tiles` tiles per 16 lines.
pub struct Packed<'a> {
    pub data: &'a [u16],
    pub k_tiles: usize,
}

impl Packed<'_> {
    /// The first tile of the 16 lines from `tile_line * 16`.
    pub fn tiles(&self, tile_line: usize) -> *const u16 {
        self.data[tile_line * self.k_tiles * TILE..].as_ptr()
    }
}

thread_local! {
    /// Reused so a step's products fault in no fresh pages.
    static LEFT: RefCell<Vec<u16>> = const { RefCell::new(Vec::new()) };
    static RIGHT: RefCell<Vec<u16>> = const { RefCell::new(Vec::new()) };
}

/// Packs `view` as the `side` factor into this thread's buffer for that side and calls `f`.
/// A thread that steals a task while its own product waits gets a fresh buffer instead.
pub fn with_packed<R>(view: View<'_>, side: Side, f: impl FnOnce(&Packed<'_>) -> R) -> R {
    let buffer = match side {
        Side::Left => &LEFT,
        Side::Right => &RIGHT,
    };
    let run = |data: &mut Vec<u16>| {
        let k_tiles = pack(view, side, data);
        f(&Packed { data, k_tiles })
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
        match side {
            Side::Left => Source {
                data: view.data,
                lines: view.rows,
                depth: view.cols,
                line_stride: rs,
                k_stride: cs,
            },
            Side::Right => Source {
                data: view.data,
                lines: view.cols,
                depth: view.rows,
                line_stride: cs,
                k_stride: rs,
            },
        }
    }
}

fn stride(s: isize) -> usize {
    usize::try_from(s).expect("views have non-negative strides")
}

/// Fills `data` with `view` packed as `side`; returns the tiles per 16 lines.
fn pack(view: View<'_>, side: Side, data: &mut Vec<u16>) -> usize {
    let src = Source::of(view, side);
    let k_tiles = src.depth.div_ceil(TILE_K);
    let tile_lines = src.lines.div_ceil(BLOCK) * 2;
    data.clear();
    data.resize(tile_lines * k_tiles * TILE, 0);
    match side {
        Side::Left => fill::<false>(&src, k_tiles, data),
        Side::Right => fill::<true>(&src, k_tiles, data),
    }
    k_tiles
}

/// Writes each group of 16 lines' tiles, in parallel; `PAIRS` for a right factor. The loops
/// follow whichever of the source's strides is 1.
fn fill<const PAIRS: bool>(src: &Source<'_>, k_tiles: usize, data: &mut [u16]) {
    let at = |line: usize, k: usize| {
        let (tile, k) = (k / TILE_K, k % TILE_K);
        tile * TILE
            + if PAIRS {
                (k / 2) * TILE_K + line * 2 + k % 2
            } else {
                line * TILE_K + k
            }
    };
    data.par_chunks_mut(k_tiles * TILE)
        .enumerate()
        .for_each(|(tile_line, tiles)| {
            let first = tile_line * TILE_LINES;
            let lines = src.lines.saturating_sub(first).min(TILE_LINES);
            if lines == 0 {
                return; // padding: zeros already
            }
            if src.k_stride == 1 && !PAIRS {
                // A row of the left factor: each tile's 32 `k` are one contiguous run.
                for line in 0..lines {
                    let start = (first + line) * src.line_stride;
                    let row = &src.data[start..start + src.depth];
                    for (tile, chunk) in row.chunks(TILE_K).enumerate() {
                        let dst = &mut tiles[tile * TILE + line * TILE_K..][..chunk.len()];
                        dst.iter_mut()
                            .zip(chunk)
                            .for_each(|(d, &v)| *d = to_bf16(v));
                    }
                }
            } else if src.k_stride == 1 {
                for line in 0..lines {
                    let start = (first + line) * src.line_stride;
                    let row = &src.data[start..start + src.depth];
                    for (k, &v) in row.iter().enumerate() {
                        tiles[at(line, k)] = to_bf16(v);
                    }
                }
            } else {
                for k in 0..src.depth {
                    let start = first * src.line_stride + k * src.k_stride;
                    if src.line_stride == 1 {
                        let run = &src.data[start..start + lines];
                        for (line, &v) in run.iter().enumerate() {
                            tiles[at(line, k)] = to_bf16(v);
                        }
                    } else {
                        for line in 0..lines {
                            let v = src.data[start + line * src.line_stride];
                            tiles[at(line, k)] = to_bf16(v);
                        }
                    }
                }
            }
        });
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
    if x.is_nan() {
        return ((bits >> 16) | 0x40) as u16;
    }
    (bits.wrapping_add(0x7fff + ((bits >> 16) & 1)) >> 16) as u16
}

#[inline]
pub fn from_bf16(x: u16) -> f32 {
    f32::from_bits(u32::from(x) << 16)
}
