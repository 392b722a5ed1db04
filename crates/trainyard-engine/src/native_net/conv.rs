//! The CNN's blocks: a 3x3 convolution (padding 1, bias), ReLU and a 2x2 max pool, as burn's
//! `Network` stacks them. Images are channels-last here (`[batch, height, width, channels]`)
//! so a convolution is one product of the unfolded patches (`[batch * pixels, 9 * c_in]`,
//! column `(ky * 3 + kx) * c_in + ci`: a pixel's channels stay contiguous) with the weight
//! reordered to match; burn's `[c_out, c_in, 3, 3]` order is kept in the parameters.

use rayon::prelude::*;

use super::direct::{direct_forward, direct_weight_gradient};
use crate::buffers::Buffers;
use trainyard_core::hyperparameters::Precision;

use crate::bf16::matmul_in;
use crate::sae::linalg::View;
use crate::simd::simd_fn;

/// Where one block's weight and bias sit in the parameter vector, and its input's shape.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConvSpan {
    pub c_in: usize,
    pub c_out: usize,
    pub height: usize,
    pub width: usize,
    pub weight: usize,
    pub bias: usize,
    /// The number format of the block's products.
    pub precision: Precision,
}

impl ConvSpan {
    fn patch(&self) -> usize {
        self.c_in * 9
    }

    fn pixels(&self) -> usize {
        self.height * self.width
    }

    /// A first block on a single channel convolves directly: unfolded, its product would
    /// have an inner dimension of 9, too small for the matrix kernel to pay off.
    fn is_direct(&self) -> bool {
        self.c_in == 1 && self.weight == 0
    }

    /// The pooled output's height and width.
    pub fn pooled(&self) -> (usize, usize) {
        (self.height / 2, self.width / 2)
    }
}

/// The blocks for an image `[channels, height, width]` and `channels` per block, laid out
/// from parameter offset 0; returns them and the offset after the last.
pub fn conv_spans(
    image: [usize; 3],
    channels: &[usize],
    precision: Precision,
) -> (Vec<ConvSpan>, usize) {
    let [mut c_in, mut height, mut width] = image;
    let mut at = 0;
    let spans = channels
        .iter()
        .map(|&c_out| {
            let span = ConvSpan {
                c_in,
                c_out,
                height,
                width,
                weight: at,
                bias: at + c_out * c_in * 9,
                precision,
            };
            at = span.bias + c_out;
            (c_in, height, width) = (c_out, height / 2, width / 2);
            span
        })
        .collect();
    (spans, at)
}

/// What a block keeps for its backward pass.
pub struct ConvTape {
    patches: Vec<f32>,
    /// Pre-activations, `[batch * pixels, c_out]`.
    pre: Vec<f32>,
    /// Per pooled output, the offset in `pre` of the element it took.
    taken: Vec<u32>,
}

impl ConvTape {
    pub fn recycle(self, buffers: &mut Buffers) {
        buffers.give(self.patches);
        buffers.give(self.pre);
        buffers.give_indices(self.taken);
    }
}

/// The source pixel of tap `(ky, kx)` for output pixel `(y, x)`, if inside the image.
#[inline]
fn source(y: usize, x: usize, ky: usize, kx: usize, h: usize, w: usize) -> Option<usize> {
    let (sy, sx) = (y + ky, x + kx);
    (sy >= 1 && sy <= h && sx >= 1 && sx <= w).then(|| (sy - 1) * w + sx - 1)
}

/// `dst = src` for a few floats: a pixel's channels. A slice copy of unknown length is a call
/// to `memcpy`, which cost more than the copy itself at these sizes.
#[inline]
fn copy_channels(dst: &mut [f32], src: &[f32]) {
    let mut dst = dst.chunks_exact_mut(8);
    let mut src = src.chunks_exact(8);
    for (d, s) in (&mut dst).zip(&mut src) {
        d.copy_from_slice(&s[..8]);
    }
    for (d, s) in dst.into_remainder().iter_mut().zip(src.remainder()) {
        *d = *s;
    }
}

/// Unfolds `[batch, height, width, c_in]` into `patches` (`[batch * pixels, 9 * c_in]`),
/// writing every entry (zeros outside the image).
fn unfold(x: &[f32], span: &ConvSpan, batch: usize, patches: &mut [f32]) {
    let (h, w, c, k) = (span.height, span.width, span.c_in, span.patch());
    patches
        .par_chunks_mut(h * w * k)
        .zip(x.par_chunks(h * w * c))
        .take(batch)
        .for_each(|(out, image)| {
            for (p, row) in out.chunks_mut(k).enumerate() {
                let (y, x) = (p / w, p % w);
                for (tap, dst) in row.chunks_mut(c).enumerate() {
                    match source(y, x, tap / 3, tap % 3, h, w) {
                        Some(at) if c == 1 => dst[0] = image[at],
                        Some(at) => copy_channels(dst, &image[at * c..][..c]),
                        None => dst.iter_mut().for_each(|v| *v = 0.0),
                    }
                }
            }
        });
}

/// The adjoint of `unfold`: adds each patch entry back onto the pixel it was read from.
fn fold(patches: &[f32], span: &ConvSpan, batch: usize, x: &mut [f32]) {
    let (h, w, c, k) = (span.height, span.width, span.c_in, span.patch());
    x.par_chunks_mut(h * w * c)
        .zip(patches.par_chunks(h * w * k))
        .take(batch)
        .for_each(|(image, patches)| {
            for (p, row) in patches.chunks(k).enumerate() {
                let (y, x) = (p / w, p % w);
                for (tap, src) in row.chunks(c).enumerate() {
                    if let Some(at) = source(y, x, tap / 3, tap % 3, h, w) {
                        let pixel = &mut image[at * c..][..c];
                        pixel.iter_mut().zip(src).for_each(|(v, g)| *v += g);
                    }
                }
            }
        });
}

/// burn's `[c_out, c_in, 3, 3]` weight in the patches' column order, `[c_out, 9 * c_in]`.
fn tap_major(weight: &[f32], c_in: usize) -> Vec<f32> {
    let mut out = vec![0.0; weight.len()];
    for (dst, src) in out.chunks_mut(9 * c_in).zip(weight.chunks(9 * c_in)) {
        for ci in 0..c_in {
            for tap in 0..9 {
                dst[tap * c_in + ci] = src[ci * 9 + tap];
            }
        }
    }
    out
}

/// A weight gradient computed patch-major, `[9 * c_in, c_out]`, added into burn's
/// `[c_out, c_in, 3, 3]` layout.
fn add_channel_major(patch_major: &[f32], c_in: usize, out: &mut [f32]) {
    let c_out = out.len() / (9 * c_in);
    for (co, dst) in out.chunks_mut(9 * c_in).enumerate() {
        for ci in 0..c_in {
            for tap in 0..9 {
                dst[ci * 9 + tap] += patch_major[(tap * c_in + ci) * c_out + co];
            }
        }
    }
}

/// One block forward: the pooled ReLU output `[batch, height/2, width/2, c_out]` and the tape
/// (`None` when no backward follows).
pub fn forward(
    span: &ConvSpan,
    params: &[f32],
    x: &[f32],
    batch: usize,
    keep_tape: bool,
    buffers: &mut Buffers,
) -> (Vec<f32>, Option<ConvTape>) {
    let (k, c_out, pixels) = (span.patch(), span.c_out, span.pixels());
    let mut pre = buffers.stale(batch * pixels * c_out);
    let weight = &params[span.weight..span.bias];
    // The tape keeps what the weight's gradient reads: the image itself when it is direct.
    let patches = if span.is_direct() {
        direct_forward(x, span, weight, &mut pre);
        let mut image = buffers.stale(x.len());
        image.copy_from_slice(x);
        image
    } else {
        let mut patches = buffers.stale(batch * pixels * k);
        unfold(x, span, batch, &mut patches);
        matmul_in(
            span.precision,
            &mut pre,
            View::new(&patches, batch * pixels, k),
            View::new(&tap_major(weight, span.c_in), c_out, k).t(),
            false,
        );
        patches
    };
    let bias = &params[span.bias..span.bias + c_out];
    let (ph, pw) = span.pooled();
    let mut pooled = buffers.stale(batch * ph * pw * c_out);
    let mut taken = buffers.stale_indices(pooled.len());
    pre.par_chunks_mut(pixels * c_out)
        .zip(pooled.par_chunks_mut(ph * pw * c_out))
        .zip(taken.par_chunks_mut(ph * pw * c_out))
        .enumerate()
        .for_each(|(b, ((image, out), taken))| {
            for row in image.chunks_mut(c_out) {
                row.iter_mut().zip(bias).for_each(|(z, b)| *z += b);
            }
            pool(image, span, b * pixels * c_out, out, taken);
        });
    if !keep_tape {
        buffers.give(patches);
        buffers.give(pre);
        buffers.give_indices(taken);
        return (pooled, None);
    }
    let tape = ConvTape {
        patches,
        pre,
        taken,
    };
    (pooled, Some(tape))
}

/// 2x2 max pooling of one image's ReLU output; `taken` gets each output's offset in the
/// batch's pre-activations (`base` is this image's).
fn pool(pre: &[f32], span: &ConvSpan, base: usize, out: &mut [f32], taken: &mut [u32]) {
    let (c_out, (ph, pw)) = (span.c_out, span.pooled());
    for py in 0..ph {
        for px in 0..pw {
            let o = (py * pw + px) * c_out;
            let corner = (2 * py * span.width + 2 * px) * c_out;
            let (out, taken) = (&mut out[o..o + c_out], &mut taken[o..o + c_out]);
            let first = &pre[corner..corner + c_out];
            relu_into(out, taken, first, (base + corner) as u32);
            for offset in [c_out, span.width * c_out, (span.width + 1) * c_out] {
                let at = corner + offset;
                let candidates = &pre[at..at + c_out];
                take_larger(out, taken, candidates, (base + at) as u32);
            }
        }
    }
}

simd_fn! {
    /// A window's first pixel: its ReLU'd channels, each taken from offset `first + i`.
    fn relu_into(out: &mut [f32], taken: &mut [u32], pre: &[f32], first: u32) {
        for (i, ((v, t), &p)) in out.iter_mut().zip(taken.iter_mut()).zip(pre).enumerate() {
            *v = if p > 0.0 { p } else { 0.0 };
            *t = first + i as u32;
        }
    }
}

simd_fn! {
    /// Another pixel of the window: where its ReLU'd channel is larger (the first of equals
    /// stays), it is taken instead.
    fn take_larger(out: &mut [f32], taken: &mut [u32], pre: &[f32], first: u32) {
        for (i, ((v, t), &p)) in out.iter_mut().zip(taken.iter_mut()).zip(pre).enumerate() {
            let candidate = if p > 0.0 { p } else { 0.0 };
            let larger = candidate > *v;
            *v = if larger { candidate } else { *v };
            *t = if larger { first + i as u32 } else { *t };
        }
    }
}

/// The gradient of the pre-activations from the pooled output's: each window passes its
/// gradient to the element it took, where that was positive (ReLU); every entry is written.
fn unpool(span: &ConvSpan, tape: &ConvTape, g_pooled: &[f32], g_pre: &mut [f32]) {
    let (c_out, pixels, (ph, pw)) = (span.c_out, span.pixels(), span.pooled());
    g_pre
        .par_chunks_mut(pixels * c_out)
        .zip(tape.pre.par_chunks(pixels * c_out))
        .zip(g_pooled.par_chunks(ph * pw * c_out))
        .zip(tape.taken.par_chunks(ph * pw * c_out))
        .enumerate()
        .for_each(|(b, (((g_image, pre), g_out), taken))| {
            g_image.iter_mut().for_each(|g| *g = 0.0);
            let base = b * pixels * c_out;
            for (&at, &g) in taken.iter().zip(g_out) {
                let at = at as usize - base;
                if pre[at] > 0.0 {
                    g_image[at] = g;
                }
            }
        });
}

/// One block backward from the gradient of its pooled output: adds the weight and bias
/// gradients into `grads` (the parameter vector's layout) and returns the gradient of its
/// input when `input_gradient`. The tape's buffers go back to `buffers`.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    span: &ConvSpan,
    params: &[f32],
    tape: ConvTape,
    g_pooled: &[f32],
    batch: usize,
    grads: &mut [f32],
    input_gradient: bool,
    buffers: &mut Buffers,
) -> Option<Vec<f32>> {
    let (k, c_out, pixels) = (span.patch(), span.c_out, span.pixels());
    let mut g_pre = buffers.stale(batch * pixels * c_out);
    unpool(span, &tape, g_pooled, &mut g_pre);
    let (weight_out, rest) = grads[span.weight..].split_at_mut(c_out * k);
    if span.is_direct() {
        assert!(!input_gradient, "a direct block is the first");
        direct_weight_gradient(&tape.patches, span, &g_pre, weight_out);
    } else {
        // patches^T @ g_pre rather than g_pre^T @ patches: gemm ran the same sums 1.7x
        // faster with the longer side as the output's rows (`bench --workload bf16_products`).
        let mut weight_grad = vec![0.0; k * c_out];
        matmul_in(
            span.precision,
            &mut weight_grad,
            View::new(&tape.patches, batch * pixels, k).t(),
            View::new(&g_pre, batch * pixels, c_out),
            false,
        );
        add_channel_major(&weight_grad, span.c_in, weight_out);
    }
    let bias_grad = &mut rest[..c_out];
    for row in g_pre.chunks(c_out) {
        bias_grad.iter_mut().zip(row).for_each(|(b, v)| *b += v);
    }
    tape.recycle(buffers);
    let input = input_gradient.then(|| {
        let weight = tap_major(&params[span.weight..span.bias], span.c_in);
        let mut g_patches = buffers.stale(batch * pixels * k);
        matmul_in(
            span.precision,
            &mut g_patches,
            View::new(&g_pre, batch * pixels, c_out),
            View::new(&weight, c_out, k),
            false,
        );
        let mut g_input = buffers.zeroed(batch * pixels * span.c_in);
        fold(&g_patches, span, batch, &mut g_input);
        buffers.give(g_patches);
        g_input
    });
    buffers.give(g_pre);
    input
}

/// `[batch, c, h, w]` rows (as datasets and burn's flatten order them) to channels-last.
pub fn to_channels_last(x: &[f32], [c, h, w]: [usize; 3], buffers: &mut Buffers) -> Vec<f32> {
    transpose_each(x, c, h * w, buffers)
}

/// Channels-last back to `[batch, c, h, w]` rows.
pub fn to_channels_first(x: &[f32], [c, h, w]: [usize; 3], buffers: &mut Buffers) -> Vec<f32> {
    transpose_each(x, h * w, c, buffers)
}

/// Each image of `x`, a row-major `[rows, cols]` matrix, transposed.
fn transpose_each(x: &[f32], rows: usize, cols: usize, buffers: &mut Buffers) -> Vec<f32> {
    let mut out = buffers.stale(x.len());
    out.par_chunks_mut(rows * cols)
        .zip(x.par_chunks(rows * cols))
        .for_each(|(out, image)| {
            for r in 0..rows {
                for k in 0..cols {
                    out[k * rows + r] = image[r * cols + k];
                }
            }
        });
    out
}
