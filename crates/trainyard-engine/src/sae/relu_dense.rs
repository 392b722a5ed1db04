//! The ReLU autoencoder's step while many latents fire (the start of training, before the L1
//! penalty has made the codes sparse): the codes stay a dense matrix in the pre-activations'
//! buffer, so the five products run back to back through gemm with no code lists, gathers or
//! re-densified copies in between. The gradients are the sparse path's, bit for bit: the same
//! products, and sums taken in the same (row) order.

use rayon::prelude::*;

use super::linalg::{View, axpy, matmul};
use super::model::{Grads, LossSettings, Sae, StepStats, reconstruction_stats};
use crate::simd::simd_fn;

/// Latent columns per parallel task when summing over rows.
const COLUMNS_PER_TASK: usize = 256;

/// Decoder-bias elements per parallel task.
const ELEMENTS_PER_TASK: usize = 128;

/// Rows per task when the codes are made: counts per block, added up (integers: exact).
const ROWS_PER_BLOCK: usize = 64;

/// Buffers a layer's relu steps keep from one step to the next: the codes and their
/// gradient, batch x d_sae each (16 MB apiece at the default shapes). Allocated afresh, each
/// would be zeroed every step only for a product to overwrite it. Not state: a clone starts
/// empty, and any two are equal.
#[derive(Debug, Default)]
pub struct Scratch {
    codes: Vec<f32>,
    code_grads: Vec<f32>,
    /// The last step's gradients, once the optimiser is done with them (16 MB at the
    /// default shapes, zeroed afresh every step otherwise).
    grads: Option<Grads>,
}

impl Scratch {
    /// Keeps a step's gradients for the next dense step to overwrite.
    pub fn keep(&mut self, grads: Grads) {
        self.grads = Some(grads);
    }

    /// Gradient buffers for a step of these shapes: the kept ones, or fresh. Only the
    /// biases are zeroed; the dense step's products overwrite both weight gradients.
    fn grads(&mut self, d: usize, m: usize) -> Grads {
        match self.grads.take() {
            Some(mut grads) if grads.w_enc.len() == d * m && grads.b_dec.len() == d => {
                grads.b_enc.fill(0.0);
                grads.b_dec.fill(0.0);
                grads
            }
            _ => Grads::zeros(d, m),
        }
    }
}

impl Clone for Scratch {
    fn clone(&self) -> Self {
        Scratch::default()
    }
}

impl PartialEq for Scratch {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// `buffer`'s allocation at `len` elements. Its contents are stale: only for a product
/// that overwrites every element.
fn reuse(buffer: &mut Vec<f32>, len: usize) -> Vec<f32> {
    let mut reused = std::mem::take(buffer);
    reused.resize(len, 0.0);
    reused
}

impl Sae {
    /// The relu codes `max(0, (x - b_dec) W_enc^T + b_enc)`, the centred input, and per
    /// latent the rows it fires on. The bias, the count and the ReLU are one pass over the
    /// product, rather than a bias-filled buffer for gemm to read and two passes after it.
    pub(super) fn relu_codes(
        &self,
        x: &[f32],
        scratch: &mut Scratch,
    ) -> (Vec<f32>, Vec<f32>, Vec<u32>) {
        let (d, m) = (self.d_in, self.d_sae);
        let n = x.len() / d;
        let xc = self.centred(x);
        let mut z = reuse(&mut scratch.codes, n * m);
        matmul(
            &mut z,
            View::new(&xc, n, d),
            View::new(&self.w_enc, m, d).t(),
            false,
        );
        let counts: Vec<Vec<u32>> = z
            .par_chunks_mut(ROWS_PER_BLOCK * m)
            .map(|block| {
                let mut counts = vec![0u32; m];
                for row in block.chunks_mut(m) {
                    bias_relu_count(row, &self.b_enc, &mut counts);
                }
                counts
            })
            .collect();
        let mut firing = vec![0u32; m];
        for block in counts {
            firing.iter_mut().zip(block).for_each(|(f, c)| *f += c);
        }
        (z, xc, firing)
    }

    /// `step` for `relu` when the codes are dense: `z` holds them (from `relu_codes`),
    /// `active` how many are positive. The codes' buffers go back to `scratch`.
    pub(super) fn relu_dense_step(
        &self,
        (x, z, xc): (&[f32], Vec<f32>, &[f32]),
        active: u64,
        settings: &LossSettings,
        scratch: &mut Scratch,
    ) -> (Grads, StepStats) {
        let (d, m) = (self.d_in, self.d_sae);
        let n = x.len() / d;
        let x_hat = self.decode_dense(&z);
        let mut stats = reconstruction_stats(x, &x_hat, d);
        stats.l0 = active as f64 / n as f64;
        let scale = 2.0 / n as f32;
        let g_out: Vec<f32> = x_hat.iter().zip(x).map(|(h, x)| scale * (h - x)).collect();
        drop(x_hat);

        let mut grads = scratch.grads(d, m);
        matmul(
            &mut grads.w_dec,
            View::new(&z, n, m).t(),
            View::new(&g_out, n, d),
            false,
        );
        let mut g_pre = reuse(&mut scratch.code_grads, n * m);
        matmul(
            &mut g_pre,
            View::new(&g_out, n, d),
            View::new(&self.w_dec, m, d).t(),
            false,
        );
        for row in g_out.chunks(d) {
            axpy(&mut grads.b_dec, 1.0, row);
        }
        let g_b_enc = if settings.l1 > 0.0 {
            let (penalty, g_b_enc) = self.dense_penalty(&z, &mut g_pre, &mut grads, settings, n);
            stats.sparsity = penalty;
            g_b_enc
        } else {
            gate_and_sum(&z, &mut g_pre, m, None).0
        };
        scratch.codes = z;

        matmul(
            &mut grads.w_enc,
            View::new(&g_pre, n, m).t(),
            View::new(xc, n, d),
            false,
        );
        // x_c = x - b_dec: the decoder bias also reaches the output through the encoder.
        subtract_through_encoder(&mut grads.b_dec, &g_b_enc, &self.w_enc);
        axpy(&mut grads.b_enc, 1.0, &g_b_enc);
        scratch.code_grads = g_pre;
        (grads, stats)
    }

    /// The L1 penalty on dense codes: masks `g_pre` to the active entries and adds the
    /// penalty's gradient there (and the decoder's, when norm-weighted); returns its value
    /// and the masked gradient's column sums (the encoder bias's gradient).
    fn dense_penalty(
        &self,
        z: &[f32],
        g_pre: &mut [f32],
        grads: &mut Grads,
        settings: &LossSettings,
        n: usize,
    ) -> (f64, Vec<f32>) {
        let (d, m) = (self.d_in, self.d_sae);
        let norms = self.penalty_weights(settings);
        let coefficient = settings.l1 / n as f32;
        let push: Vec<f32> = norms.iter().map(|w| coefficient * w).collect();
        let (g_b_enc, totals) = gate_and_sum(z, g_pre, m, Some(&push));
        // sum over rows and latents of code * weight, taken per latent.
        let penalty: f64 = totals
            .iter()
            .zip(&norms)
            .map(|(t, w)| f64::from(*t) * f64::from(*w))
            .sum();
        if settings.norm_weighted_penalty {
            grads
                .w_dec
                .par_chunks_mut(d)
                .zip(self.w_dec.par_chunks(d))
                .enumerate()
                .for_each(|(j, (grad, row))| {
                    if totals[j] > 0.0 && norms[j] > 0.0 {
                        axpy(grad, coefficient * totals[j] / norms[j], row);
                    }
                });
        }
        (penalty * f64::from(settings.l1) / n as f64, g_b_enc)
    }
}

/// One pass over the codes `z` and their gradient `g_pre` (both `_ x m`): keeps the gradient
/// only where a code is active, adding `push` there when given (the L1 penalty), and returns
/// per latent the kept gradient's sum and the codes' sum. Each task owns a block of columns
/// and walks the rows in order, so every sum is added in row order, as the sparse path adds
/// it. One pass instead of three (gate, then each column sum) saves two reads of 16 MB at
/// the default shapes.
fn gate_and_sum(
    z: &[f32],
    g_pre: &mut [f32],
    m: usize,
    push: Option<&[f32]>,
) -> (Vec<f32>, Vec<f32>) {
    let tasks = m.div_ceil(COLUMNS_PER_TASK);
    let rows = g_pre.len() / m;
    let mut blocks: Vec<Vec<&mut [f32]>> = (0..tasks).map(|_| Vec::with_capacity(rows)).collect();
    for row in g_pre.chunks_mut(m) {
        for (block, part) in blocks.iter_mut().zip(row.chunks_mut(COLUMNS_PER_TASK)) {
            block.push(part);
        }
    }
    let sums: Vec<(Vec<f32>, Vec<f32>)> = blocks
        .into_par_iter()
        .enumerate()
        .map(|(task, parts)| {
            let start = task * COLUMNS_PER_TASK;
            let width = parts.first().map_or(0, |p| p.len());
            let (mut g_sums, mut z_sums) = (vec![0.0f32; width], vec![0.0f32; width]);
            for (i, g) in parts.into_iter().enumerate() {
                let codes = &z[i * m + start..][..width];
                match push {
                    Some(push) => penalise_and_sum(
                        g,
                        codes,
                        &push[start..][..width],
                        &mut g_sums,
                        &mut z_sums,
                    ),
                    None => mask_and_sum(g, codes, &mut g_sums, &mut z_sums),
                }
            }
            (g_sums, z_sums)
        })
        .collect();
    let (g_sums, z_sums): (Vec<Vec<f32>>, Vec<Vec<f32>>) = sums.into_iter().unzip();
    (g_sums.concat(), z_sums.concat())
}

/// `b_dec -= sum_j g_j * w_enc[j]`, latents added in order for each element (the sparse
/// path's order); split over the elements, so the threads share it and no bit changes.
fn subtract_through_encoder(b_dec: &mut [f32], g_b_enc: &[f32], w_enc: &[f32]) {
    let d = b_dec.len();
    b_dec
        .par_chunks_mut(ELEMENTS_PER_TASK)
        .enumerate()
        .for_each(|(task, part)| {
            let start = task * ELEMENTS_PER_TASK;
            for (j, g) in g_b_enc.iter().enumerate() {
                if *g != 0.0 {
                    axpy(part, -g, &w_enc[j * d + start..][..part.len()]);
                }
            }
        });
}

simd_fn! {
    /// One row's block of the L1 penalty: the gradient kept where the code is active, plus
    /// the penalty's `push` there, added to `g_sums`; the codes added to `z_sums`.
    fn penalise_and_sum(
        g: &mut [f32],
        codes: &[f32],
        push: &[f32],
        g_sums: &mut [f32],
        z_sums: &mut [f32],
    ) {
        for ((((g, &v), &p), gs), zs) in g.iter_mut().zip(codes).zip(push).zip(g_sums).zip(z_sums) {
            *g = if v > 0.0 { *g + p } else { 0.0 };
            *gs += *g;
            *zs += v;
        }
    }
}

simd_fn! {
    /// `penalise_and_sum` without a penalty: the ReLU passes the gradient only where the
    /// code is active.
    fn mask_and_sum(g: &mut [f32], codes: &[f32], g_sums: &mut [f32], z_sums: &mut [f32]) {
        for (((g, &v), gs), zs) in g.iter_mut().zip(codes).zip(g_sums).zip(z_sums) {
            *g = if v > 0.0 { *g } else { 0.0 };
            *gs += *g;
            *zs += v;
        }
    }
}

simd_fn! {
    /// Adds the bias to a row of the product, counts where it is positive and applies the
    /// ReLU (`!(v > 0)` also zeroes NaN, as the code lists drop it).
    fn bias_relu_count(row: &mut [f32], bias: &[f32], counts: &mut [u32]) {
        for ((v, b), count) in row.iter_mut().zip(bias).zip(counts) {
            let pre = *v + b;
            *count += u32::from(pre > 0.0);
            *v = if pre > 0.0 { pre } else { 0.0 };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::model::{Architecture, select};
    use super::*;

    fn case(norm_weighted_penalty: bool, l1: f32) -> (Sae, Vec<f32>, LossSettings) {
        // Three blocks of rows, two of latent columns and two of decoder-bias elements,
        // each the last one short.
        let (d, m, n) = (
            ELEMENTS_PER_TASK + 3,
            COLUMNS_PER_TASK + 44,
            2 * ROWS_PER_BLOCK + 22,
        );
        let mut rng = trainyard_data::SeededRng::new(3);
        let mut sae = Sae::init(d, m, &mut rng);
        for v in sae.b_enc.iter_mut().chain(&mut sae.b_dec) {
            *v = 0.2 * rng.normal() as f32;
        }
        for v in &mut sae.w_dec {
            *v *= 1.0 + 0.5 * rng.next_f64() as f32;
        }
        let x: Vec<f32> = (0..n * d).map(|_| rng.normal() as f32).collect();
        let settings = LossSettings {
            architecture: Architecture::Relu,
            k: 0,
            l1,
            norm_weighted_penalty,
            aux_k: 0,
            aux_coefficient: 0.0,
        };
        (sae, x, settings)
    }

    #[test]
    fn the_dense_relu_step_gives_the_sparse_paths_gradients_bit_for_bit() {
        for (weighted, l1) in [(true, 0.3), (false, 0.3), (false, 0.0)] {
            let (mut sae, x, settings) = case(weighted, l1);
            let dead = vec![false; sae.d_sae];
            let (pre, xc) = sae.pre_activations(&x);
            let (codes, _) = select(&pre, sae.d_sae, Architecture::Relu, 0);
            assert!(codes.density() > 0.2, "the case must be dense");
            // A scratch left dirty by another batch's step: stale buffers change nothing.
            let mut scratch = Scratch::default();
            let other: Vec<f32> = x.iter().map(|v| 3.0 - v).collect();
            sae.step(&other, &settings, &dead, &mut scratch);
            let (z, relu_xc, firing) = sae.relu_codes(&x, &mut scratch);
            assert_eq!(relu_xc, xc);
            assert_eq!(firing, codes.firing_counts());
            let same_bits =
                |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same_bits(&z, &codes.dense()), "the codes differ");
            let active = codes.nonzeros() as u64;
            let (dense_grads, dense_stats) =
                sae.relu_dense_step((&x, z, &xc), active, &settings, &mut scratch);
            let (grads, _, stats) =
                sae.sparse_step(&x, pre, &xc, codes, f32::NAN, &settings, &dead);
            assert_eq!(dense_grads, grads, "weighted {weighted}, l1 {l1}");
            assert_eq!(dense_stats.mse, stats.mse);
            assert_eq!(dense_stats.l0, stats.l0);
            // The penalty's value (not its gradient) is summed in lanes here.
            let tolerance = 1e-5 * stats.sparsity.abs().max(1.0);
            assert!((dense_stats.sparsity - stats.sparsity).abs() < tolerance);
            // And `step` itself takes the dense path here.
            let (step_grads, step_firing, _) = sae.step(&x, &settings, &dead, &mut scratch);
            assert_eq!(step_grads, grads);
            assert_eq!(step_firing, firing);
        }
    }

    /// A step, its gradient norm and an Adam update: every vectorised loop of the family.
    fn update_bits(settings: &LossSettings) -> (Vec<u32>, u64) {
        let (mut sae, x, _) = case(true, 0.3);
        let dead = vec![false; sae.d_sae];
        let (mut grads, _, _) = sae.step(&x, settings, &dead, &mut Scratch::default());
        let norm = super::super::optim::clip(&mut grads, 0.5);
        let mut adam = super::super::optim::Adam::new(&sae);
        adam.step(&mut sae, &grads, 1e-3);
        let bits = sae
            .w_enc
            .iter()
            .chain(&sae.b_dec)
            .map(|v| v.to_bits())
            .collect();
        (bits, norm.to_bits())
    }

    #[test]
    fn the_step_and_update_are_the_same_with_or_without_avx2() {
        let (_, _, settings) = case(true, 0.3);
        let wide = update_bits(&settings);
        crate::simd::baseline_only();
        assert!(update_bits(&settings) == wide, "the baseline path differs");
    }
}
