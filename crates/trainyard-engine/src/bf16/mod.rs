//! Products in bfloat16 (`precision: "bf16"`): both factors are rounded to bf16 (to nearest,
//! ties to even) and the sums are kept in f32. On CPUs with AMX the products run on its tiles;
//! on CPUs with AVX-512 BF16 (AMD Zen 4 and later, Intel Cooper Lake) on `vdpbf16ps`; elsewhere
//! the rounded factors go through the f32 kernel. Either way a run is deterministic on one
//! machine: the blocking and the order of the sums are fixed, and no sum is split by the
//! thread count. The kernels round their sums differently, so a bf16 run is bit-identical
//! only on machines with the same kernel.

mod amx;
mod avx512;
mod pack;

use std::sync::OnceLock;

use rayon::prelude::*;
use trainyard_core::hyperparameters::Precision;

use crate::sae::linalg::{self, View};
use pack::{BLOCK, Side};

/// The smallest height, depth and width a product needs to run in bf16. Packing converts every
/// element of both factors once, and each converted element of the right factor serves the
/// left's rows (and of the left, the right's columns): a product only a few rows tall, or
/// columns wide, or deep measured slower in bf16 than in f32 (`trainyard bench --workload
/// bf16_products`). The MLP's 10-class output, a CNN's 32-channel convolutions and their
/// weight gradient (32 x 25088 x 144: 3.6M conversions for 32 rows of use, 0.8x of f32 and
/// a CNN step 15-30% slower than f32 on AVX-512 BF16) stay f32.
const MIN_SIDE: usize = 64;

/// Whether a `m x k @ k x n` product runs in bf16 in a `precision: "bf16"` run.
pub fn rounds(m: usize, k: usize, n: usize) -> bool {
    m >= MIN_SIDE && k >= MIN_SIDE && n >= MIN_SIDE
}

/// `out = a @ b` (or `+=` when `accumulate`) in `precision`: in bf16 when [`rounds`] says
/// so, else in f32.
pub fn matmul_in(
    precision: Precision,
    out: &mut [f32],
    a: View<'_>,
    b: View<'_>,
    accumulate: bool,
) {
    match precision {
        Precision::Bf16 if rounds(a.rows, a.cols, b.cols) => matmul(out, a, b, accumulate),
        _ => linalg::matmul(out, a, b, accumulate),
    }
}

/// `out = a @ b` (or `+=` when `accumulate`) with both factors rounded to bf16.
pub fn matmul(out: &mut [f32], a: View<'_>, b: View<'_>, accumulate: bool) {
    assert_eq!(a.cols, b.rows, "inner dimensions");
    assert_eq!(out.len(), a.rows * b.cols, "output shape");
    if out.is_empty() {
        return;
    }
    if a.cols == 0 {
        if !accumulate {
            out.fill(0.0);
        }
        return;
    }
    matmul_on(Kernel::detect(), out, a, b, accumulate);
}

/// Which instructions run the products in bf16.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// Intel AMX tiles (`tdpbf16ps`).
    Amx,
    /// AVX-512 BF16 (`vdpbf16ps`).
    Avx512Bf16,
    /// Rounded factors through the f32 kernel: bf16's numbers, not its speed.
    Portable,
}

impl Kernel {
    /// The fastest kernel this CPU runs (looked up once: every product asks).
    pub fn detect() -> Kernel {
        static DETECTED: OnceLock<Kernel> = OnceLock::new();
        *DETECTED.get_or_init(|| Kernel::available()[0])
    }

    /// Every kernel this CPU runs, fastest first.
    pub fn available() -> Vec<Kernel> {
        let mut kernels = Vec::with_capacity(3);
        if amx::available() {
            kernels.push(Kernel::Amx);
        }
        if avx512::available() {
            kernels.push(Kernel::Avx512Bf16);
        }
        kernels.push(Kernel::Portable);
        kernels
    }
}

/// What a bf16 run says about where its products run (`native`: on the hand-written path;
/// burn's path has no bf16 and trains in fp32).
pub fn describe(native: bool) -> String {
    if !native {
        return "precision bf16 is not available on this run's path (burn's): it trains in fp32"
            .into();
    }
    match Kernel::detect() {
        Kernel::Amx => "products in bf16 on AMX tiles".into(),
        Kernel::Avx512Bf16 => "products in bf16 on AVX-512 BF16".into(),
        Kernel::Portable => "this CPU has neither AMX nor AVX-512 BF16: products are rounded to \
                             bf16 and summed in f32 (bf16's numbers, slower than fp32)"
            .into(),
    }
}

/// `matmul` on a chosen kernel, which must be one of `Kernel::available()`.
fn matmul_on(kernel: Kernel, out: &mut [f32], a: View<'_>, b: View<'_>, accumulate: bool) {
    match kernel {
        Kernel::Portable => rounded_in_f32(out, a, b, accumulate),
        packed => on_packed(packed, out, a, b, accumulate),
    }
}

/// Both factors packed as tiles (the layout both `tdpbf16ps` and `vdpbf16ps` read): the right
/// one whole, then each 32-row band of `out` is one task that packs its 32 rows of the left
/// factor (so they are packed by the thread that reads them, and stay in its cache) and walks
/// the band's 32 x 32 blocks.
fn on_packed(kernel: Kernel, out: &mut [f32], a: View<'_>, b: View<'_>, accumulate: bool) {
    let (m, n) = (a.rows, b.cols);
    pack::with_packed(b, Side::Right, |right| {
        let band = |(row_block, rows): (usize, &mut [f32])| {
            pack::with_packed(band_of(a, row_block), Side::Left, |left| {
                let _tiles = (kernel == Kernel::Amx).then(amx::Tiles::configure);
                let mut block = [0.0f32; BLOCK * BLOCK];
                for col_block in 0..n.div_ceil(BLOCK) {
                    if kernel == Kernel::Amx {
                        amx::block(left, right, 0, col_block, &mut block);
                    } else {
                        avx512::block(left, right, 0, col_block, &mut block);
                    }
                    write_block(&block, rows, n, col_block, accumulate);
                }
            })
        };
        let bands = out.par_chunks_mut(BLOCK * n).enumerate();
        if m * a.cols * n >= 1 << 16 {
            bands.for_each(band);
        } else {
            bands.collect::<Vec<_>>().into_iter().for_each(band);
        }
    });
}

/// Rows `32 * row_block..` of `view`, at most 32.
fn band_of(view: View<'_>, row_block: usize) -> View<'_> {
    let first = row_block * BLOCK;
    let offset = first * linalg::stride(view.rs);
    View {
        data: &view.data[offset..],
        rows: (view.rows - first).min(BLOCK),
        ..view
    }
}

/// Copies (or adds) the valid part of a 32 x 32 block into a band of `out`'s rows.
fn write_block(block: &[f32], rows: &mut [f32], n: usize, col_block: usize, accumulate: bool) {
    let first = col_block * BLOCK;
    let width = (n - first).min(BLOCK);
    for (row, out) in block.chunks(BLOCK).zip(rows.chunks_mut(n)) {
        let (src, dst) = (&row[..width], &mut out[first..first + width]);
        if accumulate {
            dst.iter_mut().zip(src).for_each(|(d, s)| *d += s);
        } else {
            dst.copy_from_slice(src);
        }
    }
}

/// Without AMX: the factors rounded to bf16 (their products are exact in f32), then f32 sums.
fn rounded_in_f32(out: &mut [f32], a: View<'_>, b: View<'_>, accumulate: bool) {
    let left = pack::rounded(a);
    let right = pack::rounded(b);
    linalg::matmul(
        out,
        View::new(&left, a.rows, a.cols),
        View::new(&right, b.rows, b.cols),
        accumulate,
    );
}

#[cfg(test)]
mod tests;
