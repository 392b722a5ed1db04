//! The element-wise and row-wise kernels of the hand-written transformer step: products through
//! `gemm` with explicit strides, and layer norm, GELU and softmax written so the compiler
//! vectorises them (branch-free polynomial `exp` and `erf` instead of `libm` calls, which were
//! a tenth of burn's step).

use rayon::prelude::*;

/// A strided matrix operand: `rows x cols`, element `(r, c)` at `ptr + r * rs + c * cs`.
#[derive(Clone, Copy)]
pub struct Mat {
    ptr: *const f32,
    rows: usize,
    cols: usize,
    rs: isize,
    cs: isize,
}

impl Mat {
    /// A row-major `rows x cols` block of `data` starting at `offset` with row stride `rs`.
    pub fn rows(data: &[f32], offset: usize, rows: usize, cols: usize, rs: usize) -> Mat {
        assert!(
            rows == 0 || offset + (rows - 1) * rs + cols <= data.len(),
            "matrix out of bounds"
        );
        Mat {
            // SAFETY: the assert keeps every element the view describes inside `data`.
            ptr: unsafe { data.as_ptr().add(offset) },
            rows,
            cols,
            rs: rs as isize,
            cs: 1,
        }
    }

    /// A contiguous row-major matrix.
    pub fn of(data: &[f32], rows: usize, cols: usize) -> Mat {
        Mat::rows(data, 0, rows, cols, cols)
    }

    /// Rows `start..start + rows`.
    ///
    /// # Safety
    /// They must lie inside the matrix.
    unsafe fn block(&self, start: usize, rows: usize) -> Mat {
        Mat {
            // SAFETY: the caller's contract.
            ptr: unsafe { self.ptr.offset(start as isize * self.rs) },
            rows,
            ..*self
        }
    }

    /// The transpose, without copying.
    pub fn t(self) -> Mat {
        Mat {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }
}

/// Where a product is written: a row-major block of a buffer.
#[derive(Clone, Copy)]
pub struct Out {
    ptr: *mut f32,
    rows: usize,
    cols: usize,
    rs: isize,
}

impl Out {
    pub fn rows(data: &mut [f32], offset: usize, rows: usize, cols: usize, rs: usize) -> Out {
        assert!(
            rows == 0 || offset + (rows - 1) * rs + cols <= data.len(),
            "output out of bounds"
        );
        Out {
            // SAFETY: as in `Mat::rows`.
            ptr: unsafe { data.as_mut_ptr().add(offset) },
            rows,
            cols,
            rs: rs as isize,
        }
    }

    pub fn of(data: &mut [f32], rows: usize, cols: usize) -> Out {
        Out::rows(data, 0, rows, cols, cols)
    }

    /// Rows `start..start + rows`.
    ///
    /// # Safety
    /// They must lie inside the block, and no other task may write them meanwhile.
    unsafe fn block(&self, start: usize, rows: usize) -> Out {
        Out {
            // SAFETY: the caller's contract.
            ptr: unsafe { self.ptr.offset(start as isize * self.rs) },
            rows,
            ..*self
        }
    }

    /// A block of a buffer other threads write other blocks of.
    ///
    /// # Safety
    /// No other live `Out` or reference may cover the same elements, and `base` must hold
    /// `offset + (rows - 1) * rs + cols` elements.
    pub unsafe fn shared(
        base: SharedMut,
        offset: usize,
        rows: usize,
        cols: usize,
        rs: usize,
    ) -> Out {
        Out {
            // SAFETY: the caller's contract.
            ptr: unsafe { base.0.add(offset) },
            rows,
            cols,
            rs: rs as isize,
        }
    }
}

// SAFETY: a `Mat` only reads, and an `Out` is written by one task at a time (the blocks of
// `matmul`, the heads of attention).
unsafe impl Send for Mat {}
unsafe impl Sync for Mat {}
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

/// A buffer's base pointer handed to parallel tasks that each write their own disjoint block.
#[derive(Clone, Copy)]
pub struct SharedMut(*mut f32);
// SAFETY: only used through `Out::shared`, whose callers guarantee disjoint blocks.
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

impl SharedMut {
    pub fn new(data: &mut [f32]) -> Self {
        SharedMut(data.as_mut_ptr())
    }
}

/// Rows of the output one task computes when a product is split over threads: fixed, so
/// every call gemm sees has the same shape whatever the pool size, and so does its sum order.
const ROWS_PER_TASK: usize = 64;

/// `out = scale * a @ b`, or `out += scale * a @ b` when `accumulate`. `parallel` splits the
/// output into fixed blocks of rows computed on the pool, so results do not depend on it.
pub fn matmul(out: Out, a: Mat, b: Mat, accumulate: bool, scale: f32, parallel: bool) {
    assert_eq!(a.cols, b.rows, "inner dimensions");
    assert_eq!((out.rows, out.cols), (a.rows, b.cols), "output shape");
    if !parallel || out.rows <= ROWS_PER_TASK {
        return gemm_block(&out, &a, &b, accumulate, scale);
    }
    let blocks = out.rows.div_ceil(ROWS_PER_TASK);
    (0..blocks).into_par_iter().for_each(|i| {
        let (start, rows) = (
            i * ROWS_PER_TASK,
            ROWS_PER_TASK.min(out.rows - i * ROWS_PER_TASK),
        );
        // SAFETY: block `i` covers rows `start..start + rows` of `out` and of `a`, inside them.
        let (out, a) = unsafe { (out.block(start, rows), a.block(start, rows)) };
        gemm_block(&out, &a, &b, accumulate, scale);
    });
}

fn gemm_block(out: &Out, a: &Mat, b: &Mat, accumulate: bool, scale: f32) {
    // SAFETY: `Mat` and `Out` were bounds-checked against their buffers when made, and an
    // output never aliases an operand (outputs come from `&mut` borrows or disjoint blocks).
    unsafe {
        gemm::gemm(
            a.rows,
            b.cols,
            a.cols,
            out.ptr,
            1,
            out.rs,
            accumulate,
            a.ptr,
            a.cs,
            a.rs,
            b.ptr,
            b.cs,
            b.rs,
            1.0,
            scale,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// `e^x`, within about 2e-7 relative, branch-free so loops over it vectorise.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let x = x.clamp(-87.0, 88.0);
    let n = (x * LOG2E).round_ties_even();
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    f32::from_bits(((n as i32 + 127) << 23) as u32) * p
}

/// `erf(x)` within 1.5e-7 (Abramowitz and Stegun 7.1.26), branch-free.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_7 + t * (-1.453_152 + t * 1.061_405_4))));
    (1.0 - poly * exp(-a * a)).copysign(x)
}

/// Exact (erf) GELU of `pre` into `out`.
pub fn gelu(out: &mut [f32], pre: &[f32]) {
    const ROOT_HALF: f32 = std::f32::consts::FRAC_1_SQRT_2;
    par_zip(out, pre, |out, pre| {
        for (o, &x) in out.iter_mut().zip(pre) {
            *o = 0.5 * x * (1.0 + erf(x * ROOT_HALF));
        }
    });
}

/// `d_pre = d_out * gelu'(pre)`, in place over `d` (which holds `d_out`).
pub fn gelu_backward(d: &mut [f32], pre: &[f32]) {
    const ROOT_HALF: f32 = std::f32::consts::FRAC_1_SQRT_2;
    const INV_ROOT_TAU: f32 = 0.398_942_3;
    par_zip(d, pre, |d, pre| {
        for (g, &x) in d.iter_mut().zip(pre) {
            let cdf = 0.5 * (1.0 + erf(x * ROOT_HALF));
            let pdf = INV_ROOT_TAU * exp(-0.5 * x * x);
            *g *= cdf + x * pdf;
        }
    });
}

/// Chunks of this many elements are one task: enough work to pay for a thread hand-off.
const CHUNK: usize = 1 << 14;

fn par_zip(a: &mut [f32], b: &[f32], f: impl Fn(&mut [f32], &[f32]) + Sync) {
    a.par_chunks_mut(CHUNK)
        .zip(b.par_chunks(CHUNK))
        .for_each(|(a, b)| f(a, b));
}

/// Layer norm of each `width`-wide row of `x` into `out`, keeping each row's mean and
/// reciprocal standard deviation for the backward pass.
pub struct NormStats {
    pub mean: Vec<f32>,
    pub rstd: Vec<f32>,
}

pub fn layer_norm(
    out: &mut [f32],
    stats: &mut NormStats,
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    eps: f32,
) {
    let width = weight.len();
    let rows_per_task = (CHUNK / width).max(1);
    out.par_chunks_mut(rows_per_task * width)
        .zip(x.par_chunks(rows_per_task * width))
        .zip(stats.mean.par_chunks_mut(rows_per_task))
        .zip(stats.rstd.par_chunks_mut(rows_per_task))
        .for_each(|(((out, x), mean), rstd)| {
            for (i, (o, row)) in out
                .chunks_exact_mut(width)
                .zip(x.chunks_exact(width))
                .enumerate()
            {
                let m = row.iter().sum::<f32>() / width as f32;
                let var = row.iter().map(|v| (v - m) * (v - m)).sum::<f32>() / width as f32;
                let r = 1.0 / (var + eps).sqrt();
                for ((o, v), w) in o.iter_mut().zip(row).zip(weight) {
                    *o = (v - m) * r * w;
                }
                if let Some(b) = bias {
                    for (o, b) in o.iter_mut().zip(b) {
                        *o += b;
                    }
                }
                mean[i] = m;
                rstd[i] = r;
            }
        });
}

/// The layer norm's backward: adds the input's gradient to `dx`, and the weight's and bias's
/// (summed over rows in order, so the result does not depend on threads) to `dweight`, `dbias`.
#[allow(clippy::too_many_arguments)]
pub fn layer_norm_backward(
    dx: &mut [f32],
    dweight: &mut [f32],
    dbias: Option<&mut [f32]>,
    dout: &[f32],
    x: &[f32],
    stats: &NormStats,
    weight: &[f32],
) {
    let width = weight.len();
    let rows_per_task = (CHUNK / width).max(1);
    dx.par_chunks_mut(rows_per_task * width)
        .zip(dout.par_chunks(rows_per_task * width))
        .zip(x.par_chunks(rows_per_task * width))
        .enumerate()
        .for_each(|(task, ((dx, dout), x))| {
            let mut dnorm = vec![0.0f32; width];
            for (i, ((dx, dout), x)) in dx
                .chunks_exact_mut(width)
                .zip(dout.chunks_exact(width))
                .zip(x.chunks_exact(width))
                .enumerate()
            {
                let row = task * rows_per_task + i;
                let (m, r) = (stats.mean[row], stats.rstd[row]);
                let (mut mean_d, mut mean_dn) = (0.0f32, 0.0f32);
                for (((dn, d), w), v) in dnorm.iter_mut().zip(dout).zip(weight).zip(x) {
                    *dn = d * w;
                    mean_d += *dn;
                    mean_dn += *dn * (v - m) * r;
                }
                mean_d /= width as f32;
                mean_dn /= width as f32;
                for ((g, dn), v) in dx.iter_mut().zip(&dnorm).zip(x) {
                    *g += r * (dn - mean_d - (v - m) * r * mean_dn);
                }
            }
        });
    for (row, (dout, x)) in dout
        .chunks_exact(width)
        .zip(x.chunks_exact(width))
        .enumerate()
    {
        let (m, r) = (stats.mean[row], stats.rstd[row]);
        for ((g, d), v) in dweight.iter_mut().zip(dout).zip(x) {
            *g += d * (v - m) * r;
        }
    }
    if let Some(dbias) = dbias {
        add_column_sums(dbias, dout);
    }
}

/// `acc[c] += sum over rows of m[r, c]`, rows in order.
pub fn add_column_sums(acc: &mut [f32], m: &[f32]) {
    for row in m.chunks_exact(acc.len()) {
        for (a, v) in acc.iter_mut().zip(row) {
            *a += v;
        }
    }
}

/// Adds `bias` to every row of `m`.
pub fn add_bias(m: &mut [f32], bias: &[f32]) {
    let width = bias.len();
    m.par_chunks_mut((CHUNK / width).max(1) * width)
        .for_each(|rows| {
            for row in rows.chunks_exact_mut(width) {
                for (v, b) in row.iter_mut().zip(bias) {
                    *v += b;
                }
            }
        });
}

/// Softmax of `row` in place; returns the log of its normaliser (log-sum-exp).
pub fn softmax_in_place(row: &mut [f32]) -> f32 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f32;
    for v in row.iter_mut() {
        *v = exp(*v - max);
        sum += *v;
    }
    let inv = 1.0 / sum;
    for v in row.iter_mut() {
        *v *= inv;
    }
    max + sum.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_and_erf_match_the_library_closely() {
        for i in -2000..=2000 {
            let x = i as f32 * 0.01;
            let (e, want) = (exp(x), x.exp());
            assert!(
                ((e - want) / want).abs() < 5e-7,
                "exp({x}) = {e}, want {want}"
            );
            let (f, want) = (erf(x), libm::erff(x));
            assert!((f - want).abs() < 3e-7, "erf({x}) = {f}, want {want}");
        }
        assert_eq!(exp(-200.0), exp(-87.0));
        assert!(exp(-87.0) > 0.0 && exp(88.0).is_finite());
    }

    #[test]
    fn a_strided_product_matches_the_naive_one() {
        let a: Vec<f32> = (0..24).map(|i| i as f32 * 0.5 - 3.0).collect();
        let b: Vec<f32> = (0..12).map(|i| 1.0 - i as f32 * 0.25).collect();
        // a's columns 1..4 of a 4 x 6 matrix, times b (3 x 4), into a 4 x 4 block.
        let mut out = vec![0.0; 16];
        matmul(
            Out::of(&mut out, 4, 4),
            Mat::rows(&a, 1, 4, 3, 6),
            Mat::of(&b, 3, 4),
            false,
            2.0,
            false,
        );
        for r in 0..4 {
            for c in 0..4 {
                let want: f32 = (0..3).map(|k| a[r * 6 + 1 + k] * b[k * 4 + c]).sum();
                assert!((out[r * 4 + c] - 2.0 * want).abs() < 1e-4);
            }
        }
    }
}
