//! The CNN's blocks: a 3x3 convolution (padding 1, bias), ReLU and a 2x2 max pool, as burn's
//! `Network` stacks them. Images are channels-last here (`[batch, height, width, channels]`)
//! so a convolution is one product of the unfolded patches (`[batch * pixels, c_in * 9]`)
//! with the weight (`[c_out, c_in * 9]`, burn's `[c_out, c_in, 3, 3]` as stored).

use rayon::prelude::*;

use crate::sae::linalg::{View, matmul};

/// Where one block's weight and bias sit in the parameter vector, and its input's shape.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConvSpan {
    pub c_in: usize,
    pub c_out: usize,
    pub height: usize,
    pub width: usize,
    pub weight: usize,
    pub bias: usize,
}

impl ConvSpan {
    fn patch(&self) -> usize {
        self.c_in * 9
    }

    fn pixels(&self) -> usize {
        self.height * self.width
    }

    /// The pooled output's height and width.
    pub fn pooled(&self) -> (usize, usize) {
        (self.height / 2, self.width / 2)
    }
}

/// The blocks for an image `[channels, height, width]` and `channels` per block, laid out
/// from parameter offset 0; returns them and the offset after the last.
pub fn conv_spans(image: [usize; 3], channels: &[usize]) -> (Vec<ConvSpan>, usize) {
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

/// Unfolds `[batch, height, width, c_in]` into `[batch * pixels, c_in * 9]`, column
/// `ci * 9 + ky * 3 + kx`; outside the image reads zero.
fn unfold(x: &[f32], span: &ConvSpan, batch: usize) -> Vec<f32> {
    let (h, w, c, k) = (span.height, span.width, span.c_in, span.patch());
    let mut patches = vec![0.0; batch * h * w * k];
    patches
        .par_chunks_mut(h * w * k)
        .zip(x.par_chunks(h * w * c))
        .for_each(|(out, image)| {
            for y in 0..h {
                for x in 0..w {
                    let row = &mut out[(y * w + x) * k..][..k];
                    for ky in 0..3 {
                        let sy = y + ky;
                        if sy == 0 || sy > h {
                            continue;
                        }
                        for kx in 0..3 {
                            let sx = x + kx;
                            if sx == 0 || sx > w {
                                continue;
                            }
                            let pixel = &image[((sy - 1) * w + sx - 1) * c..][..c];
                            for (ci, v) in pixel.iter().enumerate() {
                                row[ci * 9 + ky * 3 + kx] = *v;
                            }
                        }
                    }
                }
            }
        });
    patches
}

/// The adjoint of `unfold`: adds each patch entry back onto the pixel it was read from.
fn fold(patches: &[f32], span: &ConvSpan, batch: usize) -> Vec<f32> {
    let (h, w, c, k) = (span.height, span.width, span.c_in, span.patch());
    let mut x = vec![0.0; batch * h * w * c];
    x.par_chunks_mut(h * w * c)
        .zip(patches.par_chunks(h * w * k))
        .for_each(|(image, patches)| {
            for y in 0..h {
                for x in 0..w {
                    let row = &patches[(y * w + x) * k..][..k];
                    for ky in 0..3 {
                        let sy = y + ky;
                        if sy == 0 || sy > h {
                            continue;
                        }
                        for kx in 0..3 {
                            let sx = x + kx;
                            if sx == 0 || sx > w {
                                continue;
                            }
                            let pixel = &mut image[((sy - 1) * w + sx - 1) * c..][..c];
                            for (ci, v) in pixel.iter_mut().enumerate() {
                                *v += row[ci * 9 + ky * 3 + kx];
                            }
                        }
                    }
                }
            }
        });
    x
}

/// One block forward: the pooled ReLU output `[batch, height/2, width/2, c_out]` and the tape
/// (`None` when no backward follows).
pub fn forward(
    span: &ConvSpan,
    params: &[f32],
    x: &[f32],
    batch: usize,
    keep_tape: bool,
) -> (Vec<f32>, Option<ConvTape>) {
    let (k, c_out, pixels) = (span.patch(), span.c_out, span.pixels());
    let patches = unfold(x, span, batch);
    let mut pre = vec![0.0; batch * pixels * c_out];
    let weight = &params[span.weight..span.bias];
    matmul(
        &mut pre,
        View::new(&patches, batch * pixels, k),
        View::new(weight, c_out, k).t(),
        false,
    );
    let bias = &params[span.bias..span.bias + c_out];
    pre.par_chunks_mut(pixels * c_out).for_each(|image| {
        for row in image.chunks_mut(c_out) {
            row.iter_mut().zip(bias).for_each(|(z, b)| *z += b);
        }
    });
    let (ph, pw) = span.pooled();
    let mut pooled = vec![0.0; batch * ph * pw * c_out];
    let mut taken = vec![0u32; pooled.len()];
    pooled
        .par_chunks_mut(ph * pw * c_out)
        .zip(taken.par_chunks_mut(ph * pw * c_out))
        .enumerate()
        .for_each(|(b, (out, taken))| {
            let base = b * pixels * c_out;
            for (py, px) in (0..ph).flat_map(|py| (0..pw).map(move |px| (py, px))) {
                let o = (py * pw + px) * c_out;
                for c in 0..c_out {
                    let (mut best, mut at) = (f32::NEG_INFINITY, 0);
                    for (dy, dx) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                        let i = base + ((2 * py + dy) * span.width + 2 * px + dx) * c_out + c;
                        let v = pre[i].max(0.0);
                        if v > best {
                            (best, at) = (v, i);
                        }
                    }
                    out[o + c] = best;
                    taken[o + c] = at as u32;
                }
            }
        });
    let tape = keep_tape.then_some(ConvTape {
        patches,
        pre,
        taken,
    });
    (pooled, tape)
}

/// One block backward from the gradient of its pooled output: adds the weight and bias
/// gradients into `grads` (the parameter vector's layout) and returns the gradient of its
/// input when `input_gradient`.
pub fn backward(
    span: &ConvSpan,
    params: &[f32],
    tape: &ConvTape,
    g_pooled: &[f32],
    batch: usize,
    grads: &mut [f32],
    input_gradient: bool,
) -> Option<Vec<f32>> {
    let (k, c_out, pixels) = (span.patch(), span.c_out, span.pixels());
    let mut g_pre = vec![0.0; batch * pixels * c_out];
    // Each pooled output took one element of its own window: no two write the same one.
    for (&at, &g) in tape.taken.iter().zip(g_pooled) {
        let at = at as usize;
        if tape.pre[at] > 0.0 {
            g_pre[at] = g;
        }
    }
    let (weight_grad, rest) = grads[span.weight..].split_at_mut(c_out * k);
    matmul(
        weight_grad,
        View::new(&g_pre, batch * pixels, c_out).t(),
        View::new(&tape.patches, batch * pixels, k),
        false,
    );
    let bias_grad = &mut rest[..c_out];
    for row in g_pre.chunks(c_out) {
        bias_grad.iter_mut().zip(row).for_each(|(b, v)| *b += v);
    }
    if !input_gradient {
        return None;
    }
    let mut g_patches = vec![0.0; batch * pixels * k];
    matmul(
        &mut g_patches,
        View::new(&g_pre, batch * pixels, c_out),
        View::new(&params[span.weight..span.bias], c_out, k),
        false,
    );
    Some(fold(&g_patches, span, batch))
}

/// `[batch, c, h, w]` rows (as datasets and burn's flatten order them) to channels-last.
pub fn to_channels_last(x: &[f32], batch: usize, [c, h, w]: [usize; 3]) -> Vec<f32> {
    let mut out = vec![0.0; x.len()];
    out.par_chunks_mut(c * h * w)
        .zip(x.par_chunks(c * h * w))
        .take(batch)
        .for_each(|(out, image)| {
            for ci in 0..c {
                for p in 0..h * w {
                    out[p * c + ci] = image[ci * h * w + p];
                }
            }
        });
    out
}

/// Channels-last back to `[batch, c, h, w]` rows.
pub fn to_channels_first(x: &[f32], batch: usize, [c, h, w]: [usize; 3]) -> Vec<f32> {
    let mut out = vec![0.0; x.len()];
    out.par_chunks_mut(c * h * w)
        .zip(x.par_chunks(c * h * w))
        .take(batch)
        .for_each(|(out, image)| {
            for ci in 0..c {
                for p in 0..h * w {
                    out[ci * h * w + p] = image[p * c + ci];
                }
            }
        });
    out
}
