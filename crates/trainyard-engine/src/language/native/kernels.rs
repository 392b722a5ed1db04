//! The element-wise and row-wise kernels of the hand-written transformer step: products through
//! `gemm` with explicit strides, and layer norm, GELU and softmax written so the compiler
//! vectorises them (branch-free polynomial `exp` and `erf` instead of `libm` calls, which were
//! a tenth of burn's step).

use rayon::prelude::*;

use crate::simd::simd_fn;

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
    cs: isize,
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
            cs: 1,
        }
    }

    pub fn of(data: &mut [f32], rows: usize, cols: usize) -> Out {
        Out::rows(data, 0, rows, cols, cols)
    }

    /// The transpose, without copying.
    fn t(self) -> Out {
        Out {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            ..self
        }
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
            cs: 1,
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

/// Rows of the output one task computes when a product is split over threads: fixed by the
/// product's shape, so every call gemm sees has the same shape whatever the pool size, and so
/// does its sum order.
const ROWS_PER_TASK: usize = 128;

/// Rows (or columns) per task for an output `extent` long: half as many when that would
/// leave fewer than four tasks, so a weight's gradient 128 or 384 wide is not one or three
/// tasks on two threads.
fn rows_per_task(extent: usize) -> usize {
    if extent >= 4 * ROWS_PER_TASK {
        ROWS_PER_TASK
    } else {
        ROWS_PER_TASK / 2
    }
}

/// `out = scale * a @ b`, or `out += scale * a @ b` when `accumulate`. `parallel` splits the
/// output into fixed blocks of rows computed on the pool, so results do not depend on it.
pub fn matmul(out: Out, a: Mat, b: Mat, accumulate: bool, scale: f32, parallel: bool) {
    assert_eq!(a.cols, b.rows, "inner dimensions");
    assert_eq!((out.rows, out.cols), (a.rows, b.cols), "output shape");
    if !parallel || out.rows.max(out.cols) <= ROWS_PER_TASK / 2 {
        return gemm_block(&out, &a, &b, accumulate, scale);
    }
    // Split the rows; a product with few rows (a weight's gradient) splits its columns.
    let by_rows = out.rows > ROWS_PER_TASK;
    let extent = if by_rows { out.rows } else { out.cols };
    let per_task = rows_per_task(extent);
    let blocks = extent.div_ceil(per_task);
    (0..blocks).into_par_iter().for_each(|i| {
        let (start, len) = (i * per_task, per_task.min(extent - i * per_task));
        // SAFETY: block `i` covers rows (or columns) `start..start + len` of `out` and of `a`
        // (or `b`), inside them; blocks do not overlap.
        unsafe {
            if by_rows {
                gemm_block(
                    &out.block(start, len),
                    &a.block(start, len),
                    &b,
                    accumulate,
                    scale,
                );
            } else {
                let (out, b) = (out.t().block(start, len).t(), b.t().block(start, len).t());
                gemm_block(&out, &a, &b, accumulate, scale);
            }
        }
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
            out.cs,
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
    // Adding and subtracting 1.5 * 2^23 rounds to the nearest integer without a library call.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let biased = x * LOG2E + ROUND;
    let n = biased - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    power_of_two(biased) * p
}

/// `2^n` from `n + 1.5 * 2^23` (`n` an integer in -126..=127). That sum's ulp is 1, so its low
/// mantissa bits hold `n` plus those of 1.5 * 2^23: read as bits, `n` needs no `as i32`, whose
/// saturating conversion the compiler does not vectorise (lane by lane, it was most of GELU's
/// time).
#[inline(always)]
fn power_of_two(biased: f32) -> f32 {
    const ROUND_BITS: u32 = 0x4B40_0000;
    let n = biased.to_bits().wrapping_sub(ROUND_BITS);
    f32::from_bits(n.wrapping_add(127) << 23)
}

/// `(erf(x), e^(-x^2))`, the first within 1.5e-7 (Abramowitz and Stegun 7.1.26), branch-free.
#[inline(always)]
fn erf_and_gaussian(x: f32) -> (f32, f32) {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_7 + t * (-1.453_152 + t * 1.061_405_4))));
    let gaussian = exp(-a * a);
    ((1.0 - poly * gaussian).copysign(x), gaussian)
}

#[cfg(test)]
fn erf(x: f32) -> f32 {
    erf_and_gaussian(x).0
}

const ROOT_HALF: f32 = std::f32::consts::FRAC_1_SQRT_2;

simd_fn! {
    fn gelu_chunk(out: &mut [f32], pre_to_slope: &mut [f32]) {
        const INV_ROOT_TAU: f32 = 0.398_942_3;
        for (o, p) in out.iter_mut().zip(pre_to_slope) {
            let x = *p;
            // erf(x / sqrt 2) and the normal density share e^(-x^2 / 2).
            let (erf, gaussian) = erf_and_gaussian(x * ROOT_HALF);
            *o = 0.5 * x * (1.0 + erf);
            *p = 0.5 * (1.0 + erf) + x * INV_ROOT_TAU * gaussian;
        }
    }
}

simd_fn! {
    fn mul_chunk(d: &mut [f32], by: &[f32]) {
        for (g, s) in d.iter_mut().zip(by) {
            *g *= s;
        }
    }
}

/// Exact (erf) GELU of `pre` into `out`, and its slope at `pre` into `pre`: the backward pass
/// then multiplies by it instead of evaluating erf and e^x again (they were 5% of a step).
pub fn gelu_keeping_slope(out: &mut [f32], pre: &mut [f32]) {
    out.par_chunks_mut(CHUNK)
        .zip(pre.par_chunks_mut(CHUNK))
        .for_each(|(out, pre)| gelu_chunk(out, pre));
}

/// `d_pre = d_out * gelu'(pre)`, in place over `d` (which holds `d_out`), from the slope
/// `gelu_keeping_slope` kept.
pub fn gelu_backward(d: &mut [f32], slope: &[f32]) {
    par_zip(d, slope, mul_chunk);
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

/// `sum(a[i] * b[i])` in eight lanes (a fixed order, so the compiler may vectorise it).
#[inline(always)]
fn dot8(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let full = a.len() / 8 * 8;
    for (ca, cb) in a[..full].chunks_exact(8).zip(b[..full].chunks_exact(8)) {
        for l in 0..8 {
            lanes[l] += ca[l] * cb[l];
        }
    }
    let tail: f32 = a[full..].iter().zip(&b[full..]).map(|(x, y)| x * y).sum();
    lanes.iter().sum::<f32>() + tail
}

#[inline(always)]
fn sum8(a: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let full = a.len() / 8 * 8;
    for c in a[..full].chunks_exact(8) {
        for l in 0..8 {
            lanes[l] += c[l];
        }
    }
    lanes.iter().sum::<f32>() + a[full..].iter().sum::<f32>()
}

simd_fn! {
    fn norm_rows(
        out: &mut [f32],
        x: &[f32],
        weight: &[f32],
        bias: Option<&[f32]>,
        eps: f32,
        mean: &mut [f32],
        rstd: &mut [f32],
    ) {
        let width = weight.len();
        for (i, (o, row)) in out.chunks_exact_mut(width).zip(x.chunks_exact(width)).enumerate() {
            let m = sum8(row) / width as f32;
            for (o, v) in o.iter_mut().zip(row) {
                *o = v - m;
            }
            let r = 1.0 / (dot8(o, o) / width as f32 + eps).sqrt();
            for (o, w) in o.iter_mut().zip(weight) {
                *o = *o * r * w;
            }
            if let Some(b) = bias {
                for (o, b) in o.iter_mut().zip(b) {
                    *o += b;
                }
            }
            mean[i] = m;
            rstd[i] = r;
        }
    }
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
        .for_each(|(((out, x), mean), rstd)| norm_rows(out, x, weight, bias, eps, mean, rstd));
}

simd_fn! {
    fn norm_backward_rows(
        dx: &mut [f32],
        dout: &[f32],
        x: &[f32],
        weight: &[f32],
        mean: &[f32],
        rstd: &[f32],
    ) {
        let width = weight.len();
        let (mut dnorm, mut xhat) = (vec![0.0f32; width], vec![0.0f32; width]);
        let rows = dx.chunks_exact_mut(width).zip(dout.chunks_exact(width)).zip(x.chunks_exact(width));
        for (i, ((dx, dout), x)) in rows.enumerate() {
            let (m, r) = (mean[i], rstd[i]);
            for ((((dn, xh), d), w), v) in dnorm.iter_mut().zip(&mut xhat).zip(dout).zip(weight).zip(x) {
                *dn = d * w;
                *xh = (v - m) * r;
            }
            let mean_d = sum8(&dnorm) / width as f32;
            let mean_dn = dot8(&dnorm, &xhat) / width as f32;
            for ((g, dn), xh) in dx.iter_mut().zip(&dnorm).zip(&xhat) {
                *g += r * (dn - mean_d - xh * mean_dn);
            }
        }
    }
}

simd_fn! {
    fn norm_weight_grads(dweight: &mut [f32], dout: &[f32], x: &[f32], mean: &[f32], rstd: &[f32]) {
        let width = dweight.len();
        for (row, (dout, x)) in dout.chunks_exact(width).zip(x.chunks_exact(width)).enumerate() {
            let (m, r) = (mean[row], rstd[row]);
            for ((g, d), v) in dweight.iter_mut().zip(dout).zip(x) {
                *g += d * (v - m) * r;
            }
        }
    }
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
        .zip(stats.mean.par_chunks(rows_per_task))
        .zip(stats.rstd.par_chunks(rows_per_task))
        .for_each(|((((dx, dout), x), mean), rstd)| {
            norm_backward_rows(dx, dout, x, weight, mean, rstd)
        });
    norm_weight_grads(dweight, dout, x, &stats.mean, &stats.rstd);
    if let Some(dbias) = dbias {
        add_column_sums(dbias, dout);
    }
}

simd_fn! {
    #[allow(clippy::too_many_arguments)]
    /// One AdamW update of a chunk of parameters: `p -= step_size * m / (sqrt(v / c2) + eps)`,
    /// `step_size` being the learning rate over the first moment's bias correction.
    pub fn adamw_chunk(
        p: &mut [f32],
        g: &[f32],
        m: &mut [f32],
        v: &mut [f32],
        betas: (f32, f32),
        step_size: f32,
        inv_c2: f32,
        eps: f32,
    ) {
        let (b1, b2) = betas;
        for (((p, g), m), v) in p.iter_mut().zip(g).zip(m).zip(v) {
            *m = b1 * *m + (1.0 - b1) * g;
            *v = b2 * *v + (1.0 - b2) * g * g;
            *p -= step_size * *m / ((*v * inv_c2).sqrt() + eps);
        }
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

simd_fn! {
    /// Softmax of `row` in place; returns the log of its normaliser (log-sum-exp).
    pub fn softmax_in_place(row: &mut [f32]) -> f32 {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        for v in row.iter_mut() {
            *v = exp(*v - max);
        }
        let sum: f32 = row.iter().sum();
        let inv = 1.0 / sum;
        for v in row.iter_mut() {
            *v *= inv;
        }
        max + sum.ln()
    }
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
    fn the_power_of_two_read_from_the_bits_is_the_rounded_exponents() {
        const ROUND: f32 = 12_582_912.0;
        let mut x = -87.0f32;
        while x <= 88.0 {
            let biased = x * std::f32::consts::LOG2_E + ROUND;
            let n = (biased - ROUND) as i32;
            assert_eq!(power_of_two(biased), 2f32.powi(n), "x = {x}, n = {n}");
            x += 0.007;
        }
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
