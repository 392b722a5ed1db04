//! The CNN's blocks: a 3x3 convolution (padding 1, bias), ReLU and a 2x2 max pool, as burn's
//! `Network` stacks them. Images are channels-last here (`[batch, height, width, channels]`)
//! so a convolution is one product of the unfolded patches (`[batch * pixels, 9 * c_in]`,
//! column `(ky * 3 + kx) * c_in + ci`: a pixel's channels stay contiguous) with the weight
//! reordered to match; burn's `[c_out, c_in, 3, 3]` order is kept in the parameters.

use rayon::prelude::*;

use super::buffers::Buffers;
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

/// The inverse of `tap_major`, added into `out`.
fn add_channel_major(tap_major: &[f32], c_in: usize, out: &mut [f32]) {
    for (dst, src) in out.chunks_mut(9 * c_in).zip(tap_major.chunks(9 * c_in)) {
        for ci in 0..c_in {
            for tap in 0..9 {
                dst[ci * 9 + tap] += src[tap * c_in + ci];
            }
        }
    }
}

/// `out += scale * x` in blocks of eight: a row of a few channels (16 in the default CNN) is
/// shorter than the unrolled vector loop the compiler would make of a plain one.
#[inline(always)]
fn add_scaled(out: &mut [f32], scale: f32, x: &[f32]) {
    let mut out = out.chunks_exact_mut(8);
    let mut x = x.chunks_exact(8);
    for (o, x) in (&mut out).zip(&mut x) {
        for i in 0..8 {
            o[i] += scale * x[i];
        }
    }
    for (o, x) in out.into_remainder().iter_mut().zip(x.remainder()) {
        *o += scale * x;
    }
}

/// `pre = x * weight` for a single-channel image batch (no bias), per image in parallel.
fn direct_forward(x: &[f32], span: &ConvSpan, weight: &[f32], pre: &mut [f32]) {
    let (h, w, c_out) = (span.height, span.width, span.c_out);
    // `[9, c_out]`: one tap's weights for every output channel, contiguous.
    let mut taps = vec![0.0; 9 * c_out];
    for (co, row) in weight.chunks(9).enumerate() {
        for (tap, &v) in row.iter().enumerate() {
            taps[tap * c_out + co] = v;
        }
    }
    pre.par_chunks_mut(h * w * c_out)
        .zip(x.par_chunks(h * w))
        .for_each(|(out, image)| direct_image(out, image, &taps, [h, w, c_out]));
}

simd_fn! {
    /// One image's single-channel convolution: each output pixel's channels as a sum over
    /// the taps inside the image, taken in tap order. Interior pixels (all nine taps inside)
    /// go through `direct_interior` in groups of eight channels; this loop takes the border
    /// and any channels past the last whole group, with the same sums in the same order.
    fn direct_image(out: &mut [f32], image: &[f32], taps: &[f32], shape: [usize; 3]) {
        let [h, w, c_out] = shape;
        let grouped = c_out / 8 * 8;
        let mut inside = [(0usize, 0.0f32); 9];
        for (p, row) in out.chunks_mut(c_out).enumerate() {
            let (y, x) = (p / w, p % w);
            let interior = y > 0 && x > 0 && y + 1 < h && x + 1 < w;
            let first = if interior { grouped } else { 0 };
            if first == c_out {
                continue;
            }
            let mut n = 0;
            for ky in (y == 0) as usize..3 - (y + 1 == h) as usize {
                for kx in (x == 0) as usize..3 - (x + 1 == w) as usize {
                    inside[n] = ((ky * 3 + kx) * c_out, image[(y + ky - 1) * w + x + kx - 1]);
                    n += 1;
                }
            }
            // Eight channels at a time summed over the taps, held in one register.
            let mut start = first;
            for block in row[first..].chunks_mut(8) {
                let mut sums = [0.0f32; 8];
                for &(at, v) in &inside[..n] {
                    let weights = &taps[at + start..][..block.len()];
                    for (s, t) in sums.iter_mut().zip(weights) {
                        *s += v * t;
                    }
                }
                block.copy_from_slice(&sums[..block.len()]);
                start += 8;
            }
        }
        for group in 0..grouped / 8 {
            direct_interior(out, image, taps, shape, group);
        }
    }
}

/// Channels `group * 8..` of every interior pixel: the group's nine taps stay in registers
/// while the loop walks the pixels.
#[inline(always)]
fn direct_interior(out: &mut [f32], image: &[f32], taps: &[f32], shape: [usize; 3], group: usize) {
    let [h, w, c_out] = shape;
    let weights: [[f32; 8]; 9] = std::array::from_fn(|tap| {
        taps[tap * c_out + group * 8..][..8]
            .try_into()
            .expect("eight channels")
    });
    for y in 1..h.saturating_sub(1) {
        let rows = &image[(y - 1) * w..][..3 * w];
        for x in 1..w - 1 {
            let mut sums = [0.0f32; 8];
            for (tap, weights) in weights.iter().enumerate() {
                let v = rows[(tap / 3) * w + x + tap % 3 - 1];
                for (s, t) in sums.iter_mut().zip(weights) {
                    *s += v * t;
                }
            }
            out[(y * w + x) * c_out + group * 8..][..8].copy_from_slice(&sums);
        }
    }
}

/// The direct block's weight gradient, added into `out` (burn's `[c_out, 1, 3, 3]`): per
/// image in parallel, then the images' sums added in image order.
fn direct_weight_gradient(x: &[f32], span: &ConvSpan, g_pre: &[f32], out: &mut [f32]) {
    let (h, w, c_out) = (span.height, span.width, span.c_out);
    let per_image: Vec<Vec<f32>> = x
        .par_chunks(h * w)
        .zip(g_pre.par_chunks(h * w * c_out))
        .map(|(image, g)| {
            let mut sums = vec![0.0; 9 * c_out];
            direct_image_gradient(&mut sums, image, g, [h, w, c_out]);
            sums
        })
        .collect();
    let mut total = vec![0.0f32; 9 * c_out];
    for sums in per_image {
        total.iter_mut().zip(&sums).for_each(|(t, s)| *t += s);
    }
    for (co, row) in out.chunks_mut(9).enumerate() {
        for (tap, v) in row.iter_mut().enumerate() {
            *v += total[tap * c_out + co];
        }
    }
}

simd_fn! {
    /// One image's share of the direct weight gradient, `[9, c_out]`.
    fn direct_image_gradient(sums: &mut [f32], image: &[f32], g: &[f32], shape: [usize; 3]) {
        let [h, w, c_out] = shape;
        for (p, g_row) in g.chunks(c_out).enumerate() {
            let (y, x) = (p / w, p % w);
            for ky in (y == 0) as usize..3 - (y + 1 == h) as usize {
                for kx in (x == 0) as usize..3 - (x + 1 == w) as usize {
                    let v = image[(y + ky - 1) * w + x + kx - 1];
                    add_scaled(&mut sums[(ky * 3 + kx) * c_out..][..c_out], v, g_row);
                }
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
        let mut weight_grad = vec![0.0; c_out * k];
        matmul_in(
            span.precision,
            &mut weight_grad,
            View::new(&g_pre, batch * pixels, c_out).t(),
            View::new(&tape.patches, batch * pixels, k),
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

#[cfg(test)]
mod direct_tests {
    use super::direct_image;

    /// Each pixel's channels summed over its inside taps in tap order, one channel at a time.
    fn reference(image: &[f32], taps: &[f32], [h, w, c_out]: [usize; 3]) -> Vec<f32> {
        let mut out = vec![0.0f32; h * w * c_out];
        for y in 0..h {
            for x in 0..w {
                for c in 0..c_out {
                    let mut sum = 0.0f32;
                    for tap in 0..9 {
                        let (iy, ix) = ((y + tap / 3) as isize - 1, (x + tap % 3) as isize - 1);
                        if (0..h as isize).contains(&iy) && (0..w as isize).contains(&ix) {
                            let v = image[iy as usize * w + ix as usize];
                            sum += v * taps[tap * c_out + c];
                        }
                    }
                    out[(y * w + x) * c_out + c] = sum;
                }
            }
        }
        out
    }

    #[test]
    fn the_direct_convolution_sums_each_pixels_taps_in_order() {
        // 16 channels: two whole groups; 12: a group and four left over; tiny images: no
        // interior at all.
        for shape in [[28, 28, 16], [9, 7, 12], [2, 3, 16], [1, 1, 8], [5, 5, 3]] {
            let [h, w, c_out] = shape;
            let value = |i: usize| ((i * 2_654_435_761) % 1000) as f32 / 250.0 - 2.0;
            let image: Vec<f32> = (0..h * w).map(value).collect();
            let taps: Vec<f32> = (0..9 * c_out).map(|i| value(i + 7) * 0.3).collect();
            let mut out = vec![f32::NAN; h * w * c_out];
            direct_image(&mut out, &image, &taps, shape);
            let expected = reference(&image, &taps, shape);
            assert!(
                out.iter()
                    .zip(&expected)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{shape:?}"
            );
        }
    }
}
