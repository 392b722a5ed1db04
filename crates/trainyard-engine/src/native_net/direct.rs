//! The first convolution of a single-channel image, computed directly (nine taps per pixel)
//! rather than as a product of unfolded patches, which would be nine times the image's size
//! for a product only `c_out` wide. Interior pixels, where all nine taps are inside, take a
//! register-resident path; every sum takes its terms in the same order either way.

use rayon::prelude::*;

use super::conv::ConvSpan;
use crate::simd::simd_fn;

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
pub(super) fn direct_forward(x: &[f32], span: &ConvSpan, weight: &[f32], pre: &mut [f32]) {
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
pub(super) fn direct_weight_gradient(x: &[f32], span: &ConvSpan, g_pre: &[f32], out: &mut [f32]) {
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
    /// One image's share of the direct weight gradient, `[9, c_out]`: each tap's sums over the
    /// pixels in order. An interior row's middle pixels go through `interior_gradient` in groups
    /// of eight channels; every sum still takes its pixels in the same order.
    fn direct_image_gradient(sums: &mut [f32], image: &[f32], g: &[f32], shape: [usize; 3]) {
        let [h, w, c_out] = shape;
        let grouped = c_out / 8 * 8;
        for y in 0..h {
            if y == 0 || y + 1 == h || w < 3 {
                for x in 0..w {
                    pixel_gradient(sums, image, g, shape, [y, x], 0);
                }
                continue;
            }
            pixel_gradient(sums, image, g, shape, [y, 0], 0);
            for group in 0..grouped / 8 {
                interior_gradient(sums, image, g, shape, y, group);
            }
            if grouped < c_out {
                for x in 1..w - 1 {
                    pixel_gradient(sums, image, g, shape, [y, x], grouped);
                }
            }
            pixel_gradient(sums, image, g, shape, [y, w - 1], 0);
        }
    }
}

/// Pixel `[y, x]`'s share of the weight gradient, channels `first..`, taps inside the image.
#[inline(always)]
fn pixel_gradient(
    sums: &mut [f32],
    image: &[f32],
    g: &[f32],
    shape: [usize; 3],
    [y, x]: [usize; 2],
    first: usize,
) {
    let [h, w, c_out] = shape;
    let g_row = &g[(y * w + x) * c_out + first..][..c_out - first];
    for ky in (y == 0) as usize..3 - (y + 1 == h) as usize {
        for kx in (x == 0) as usize..3 - (x + 1 == w) as usize {
            let v = image[(y + ky - 1) * w + x + kx - 1];
            add_scaled(
                &mut sums[(ky * 3 + kx) * c_out + first..][..c_out - first],
                v,
                g_row,
            );
        }
    }
}

/// Channels `group * 8..` of interior row `y`'s middle pixels: the group's nine tap sums stay
/// in registers while the loop walks the pixels.
#[inline(always)]
fn interior_gradient(
    sums: &mut [f32],
    image: &[f32],
    g: &[f32],
    shape: [usize; 3],
    y: usize,
    group: usize,
) {
    let [_, w, c_out] = shape;
    let at = |tap: usize| tap * c_out + group * 8;
    let mut acc: [[f32; 8]; 9] =
        std::array::from_fn(|tap| sums[at(tap)..][..8].try_into().expect("eight channels"));
    let rows = &image[(y - 1) * w..][..3 * w];
    for x in 1..w - 1 {
        let g8 = &g[(y * w + x) * c_out + group * 8..][..8];
        for (tap, acc) in acc.iter_mut().enumerate() {
            let v = rows[(tap / 3) * w + x + tap % 3 - 1];
            for (a, gi) in acc.iter_mut().zip(g8) {
                *a += v * gi;
            }
        }
    }
    for (tap, acc) in acc.iter().enumerate() {
        sums[at(tap)..][..8].copy_from_slice(acc);
    }
}

#[cfg(test)]
mod tests {
    use super::{direct_image, direct_image_gradient};

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

    /// Each tap's gradient added to, pixel by pixel in order, one channel at a time.
    fn reference_gradient(sums: &mut [f32], image: &[f32], g: &[f32], [h, w, c_out]: [usize; 3]) {
        for y in 0..h {
            for x in 0..w {
                for tap in 0..9 {
                    let (iy, ix) = ((y + tap / 3) as isize - 1, (x + tap % 3) as isize - 1);
                    if (0..h as isize).contains(&iy) && (0..w as isize).contains(&ix) {
                        let v = image[iy as usize * w + ix as usize];
                        for c in 0..c_out {
                            sums[tap * c_out + c] += v * g[(y * w + x) * c_out + c];
                        }
                    }
                }
            }
        }
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
            let g: Vec<f32> = (0..h * w * c_out).map(|i| value(i + 3) * 0.1).collect();
            let mut sums: Vec<f32> = (0..9 * c_out).map(|i| value(i + 11)).collect();
            let mut expected = sums.clone();
            direct_image_gradient(&mut sums, &image, &g, shape);
            reference_gradient(&mut expected, &image, &g, shape);
            assert!(
                sums.iter()
                    .zip(&expected)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "gradient {shape:?}"
            );
        }
    }
}
