//! The sparse autoencoder's parameters, its encoder (ReLU, TopK, BatchTopK), decoder, losses
//! and their gradients, written out by hand: two products dominate, and once trained only a
//! few latents fire per token, so the decoder's side runs sparse.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::linalg::{Codes, View, axpy, matmul, sparse_decode, sparse_outer, sparse_project};
use super::relu_dense::Scratch;

/// How codes are chosen from the encoder's pre-activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Architecture {
    /// ReLU, with an L1 penalty for sparsity.
    Relu,
    /// Exactly the `k` largest pre-activations per token (then ReLU).
    Topk,
    /// The `k * batch` largest over the whole batch; at inference a learned threshold.
    BatchTopk,
}

pub const ARCHITECTURES: [&str; 3] = ["relu", "topk", "batch_topk"];

/// Parameters. Encoder and decoder are both stored latent-major (`[d_sae, d_in]`), so one
/// latent's encoder and decoder directions are contiguous rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sae {
    pub d_in: usize,
    pub d_sae: usize,
    pub w_enc: Vec<f32>,
    pub b_enc: Vec<f32>,
    pub w_dec: Vec<f32>,
    pub b_dec: Vec<f32>,
    /// BatchTopK's inference threshold: the running mean of the smallest kept activation.
    pub threshold: f32,
}

/// What the loss is made of for one step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossSettings {
    pub architecture: Architecture,
    pub k: usize,
    /// The L1 coefficient in force (ReLU).
    pub l1: f32,
    /// Weight the L1 penalty by each latent's decoder norm (the decoder is not constrained).
    pub norm_weighted_penalty: bool,
    pub aux_k: usize,
    pub aux_coefficient: f32,
}

/// One step's loss, its parts and the statistics logged with it (sums over the batch); summed
/// over steps by the trainer between evaluations.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct StepStats {
    pub rows: usize,
    /// Mean over tokens of the squared reconstruction error.
    pub mse: f64,
    pub sparsity: f64,
    pub aux: f64,
    /// Mean active latents per token.
    pub l0: f64,
    /// Sum of squared errors and of squared deviations from the batch mean.
    pub sse: f64,
    pub sst: f64,
    /// Sum over tokens of |x_hat|^2 / |x|^2.
    pub norm_ratio: f64,
}

impl StepStats {
    pub fn loss(&self) -> f64 {
        self.mse + self.sparsity + self.aux
    }

    /// Adds another step's statistics to these.
    pub fn add(&mut self, other: &StepStats) {
        self.rows += other.rows;
        self.mse += other.mse;
        self.sparsity += other.sparsity;
        self.aux += other.aux;
        self.l0 += other.l0;
        self.sse += other.sse;
        self.sst += other.sst;
        self.norm_ratio += other.norm_ratio;
    }
}

/// Gradients, shaped as the parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Grads {
    pub w_enc: Vec<f32>,
    pub b_enc: Vec<f32>,
    pub w_dec: Vec<f32>,
    pub b_dec: Vec<f32>,
}

impl Grads {
    /// Gradients of an autoencoder `d_in -> d_sae`, all zero.
    pub fn zeros(d_in: usize, d_sae: usize) -> Grads {
        Grads {
            w_enc: vec![0.0; d_sae * d_in],
            b_enc: vec![0.0; d_sae],
            w_dec: vec![0.0; d_sae * d_in],
            b_dec: vec![0.0; d_in],
        }
    }
}

/// Above this fraction of active codes the decoder's products run dense.
const DENSE_ABOVE: f64 = 0.04;

impl Sae {
    /// Random unit-norm decoder rows, the encoder as the decoder's transpose, biases at zero
    /// (the trainer sets the decoder bias to the data's centre).
    pub fn init(d_in: usize, d_sae: usize, rng: &mut trainyard_data::SeededRng) -> Sae {
        let mut w_dec: Vec<f32> = (0..d_in * d_sae).map(|_| normal(rng)).collect();
        for row in w_dec.chunks_mut(d_in) {
            normalize(row);
        }
        Sae {
            d_in,
            d_sae,
            w_enc: w_dec.clone(),
            b_enc: vec![0.0; d_sae],
            w_dec,
            b_dec: vec![0.0; d_in],
            threshold: 0.0,
        }
    }

    /// The input less the decoder bias: what the encoder reads.
    pub(super) fn centred(&self, x: &[f32]) -> Vec<f32> {
        let mut xc = x.to_vec();
        for row in xc.chunks_mut(self.d_in) {
            axpy(row, -1.0, &self.b_dec);
        }
        xc
    }

    /// Pre-activations `(x - b_dec) W_enc^T + b_enc` and the centred input.
    pub fn pre_activations(&self, x: &[f32]) -> (Vec<f32>, Vec<f32>) {
        let (d, m) = (self.d_in, self.d_sae);
        let n = x.len() / d;
        let xc = self.centred(x);
        let mut pre = vec![0.0; n * m];
        for row in pre.chunks_mut(m) {
            row.copy_from_slice(&self.b_enc);
        }
        matmul(
            &mut pre,
            View::new(&xc, n, d),
            View::new(&self.w_enc, m, d).t(),
            true,
        );
        (pre, xc)
    }

    /// Codes for inference: BatchTopK uses its learned threshold, not the batch.
    pub fn encode(&self, x: &[f32], architecture: Architecture, k: usize) -> Codes {
        let (pre, _) = self.pre_activations(x);
        match architecture {
            Architecture::BatchTopk => threshold_codes(&pre, self.d_sae, self.threshold),
            other => select(&pre, self.d_sae, other, k).0,
        }
    }

    pub fn decode(&self, codes: &Codes) -> Vec<f32> {
        if codes.density() > DENSE_ABOVE {
            return self.decode_dense(&codes.dense());
        }
        let mut out = self.decoder_bias_rows(codes.rows.len());
        sparse_decode(&mut out, codes, &self.w_dec, self.d_in);
        out
    }

    /// `z W_dec + b_dec` for dense codes `z` (`n x d_sae`).
    pub(super) fn decode_dense(&self, z: &[f32]) -> Vec<f32> {
        let n = z.len() / self.d_sae;
        let mut out = self.decoder_bias_rows(n);
        matmul(
            &mut out,
            View::new(z, n, self.d_sae),
            View::new(&self.w_dec, self.d_sae, self.d_in),
            true,
        );
        out
    }

    fn decoder_bias_rows(&self, n: usize) -> Vec<f32> {
        (0..n).flat_map(|_| self.b_dec.iter().copied()).collect()
    }

    pub fn decoder_norms(&self) -> Vec<f32> {
        self.w_dec
            .chunks(self.d_in)
            .map(|r| r.iter().map(|v| v * v).sum::<f32>().sqrt())
            .collect()
    }

    /// The loss on a batch `x` (`n x d_in`), its gradients, how many of the batch's rows each
    /// latent fired on, and its statistics. `dead` marks latents that have not fired for the
    /// dead window (AuxK revives them).
    pub fn step(
        &mut self,
        x: &[f32],
        settings: &LossSettings,
        dead: &[bool],
        scratch: &mut Scratch,
    ) -> (Grads, Vec<u32>, StepStats) {
        if settings.architecture == Architecture::Relu {
            // The codes themselves: a relu step needs no pre-activation below zero.
            let (z, xc, firing) = self.relu_codes(x, scratch);
            let active: u64 = firing.iter().map(|&c| u64::from(c)).sum();
            let (grads, stats) = if active as f64 > DENSE_ABOVE * z.len() as f64 {
                self.relu_dense_step((x, z, &xc), active, settings, scratch)
            } else {
                let (codes, _) = select(&z, self.d_sae, Architecture::Relu, 0);
                let (grads, _, stats) =
                    self.sparse_step(x, z, &xc, codes, f32::NAN, settings, dead);
                (grads, stats)
            };
            return (grads, firing, stats);
        }
        let (pre, xc) = self.pre_activations(x);
        let (codes, smallest_kept) = select(&pre, self.d_sae, settings.architecture, settings.k);
        let (grads, codes, stats) =
            self.sparse_step(x, pre, &xc, codes, smallest_kept, settings, dead);
        (grads, codes.firing_counts(), stats)
    }

    /// `step` over code lists: every architecture, with the decoder's side sparse once few
    /// latents fire.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn sparse_step(
        &mut self,
        x: &[f32],
        pre: Vec<f32>,
        xc: &[f32],
        codes: Codes,
        smallest_kept: f32,
        settings: &LossSettings,
        dead: &[bool],
    ) -> (Grads, Codes, StepStats) {
        let (d, m) = (self.d_in, self.d_sae);
        let n = x.len() / d;
        if settings.architecture == Architecture::BatchTopk && smallest_kept.is_finite() {
            self.threshold = 0.99 * self.threshold + 0.01 * smallest_kept;
        }
        let x_hat = self.decode(&codes);
        let mut stats = reconstruction_stats(x, &x_hat, d);
        stats.l0 = codes.nonzeros() as f64 / n as f64;
        let scale = 2.0 / n as f32;
        let g_out: Vec<f32> = x_hat.iter().zip(x).map(|(h, x)| scale * (h - x)).collect();

        let mut grads = Grads::zeros(d, m);
        let dense = codes.density() > DENSE_ABOVE;
        let mut g_codes = if dense {
            let z = codes.dense();
            matmul(
                &mut grads.w_dec,
                View::new(&z, n, m).t(),
                View::new(&g_out, n, d),
                false,
            );
            let mut g_z = vec![0.0; n * m];
            matmul(
                &mut g_z,
                View::new(&g_out, n, d),
                View::new(&self.w_dec, m, d).t(),
                false,
            );
            gather(&codes, &g_z, m)
        } else {
            sparse_outer(&mut grads.w_dec, &codes.by_latent(), &g_out, d);
            sparse_project(&codes, &g_out, &self.w_dec, d)
        };
        for row in g_out.chunks(d) {
            axpy(&mut grads.b_dec, 1.0, row);
        }
        if settings.architecture == Architecture::Relu && settings.l1 > 0.0 {
            stats.sparsity = self.add_penalty(&codes, &mut g_codes, &mut grads, settings, n);
        }
        if settings.architecture != Architecture::Relu && dead.iter().any(|&d| d) {
            let residual: Vec<f32> = x.iter().zip(&x_hat).map(|(x, h)| x - h).collect();
            let (aux, aux_codes, g_aux) =
                self.aux_loss(&pre, &residual, dead, settings, &mut grads);
            stats.aux = aux;
            self.encoder_grads(&aux_codes, &g_aux, xc, &mut grads, false);
        }
        self.encoder_grads(&codes, &g_codes, xc, &mut grads, dense);
        (grads, codes, stats)
    }

    /// Each latent's weight in the L1 penalty: its decoder norm, or 1.
    pub(super) fn penalty_weights(&self, settings: &LossSettings) -> Vec<f32> {
        if settings.norm_weighted_penalty {
            self.decoder_norms()
        } else {
            vec![1.0; self.d_sae]
        }
    }

    /// Adds the (decoder-norm weighted) L1 penalty's gradients; returns its value.
    fn add_penalty(
        &self,
        codes: &Codes,
        g_codes: &mut Codes,
        grads: &mut Grads,
        settings: &LossSettings,
        n: usize,
    ) -> f64 {
        let d = self.d_in;
        let norms = self.penalty_weights(settings);
        let coefficient = settings.l1 / n as f32;
        let mut totals = vec![0.0f32; self.d_sae];
        let mut penalty = 0.0f64;
        for (row, g_row) in codes.rows.iter().zip(&mut g_codes.rows) {
            for (&(j, v), g) in row.iter().zip(g_row.iter_mut()) {
                g.1 += coefficient * norms[j as usize];
                totals[j as usize] += v;
                penalty += f64::from(v * norms[j as usize]);
            }
        }
        if settings.norm_weighted_penalty {
            for (j, total) in totals.iter().enumerate() {
                if *total > 0.0 && norms[j] > 0.0 {
                    let scale = coefficient * total / norms[j];
                    let (row, grad) = (&self.w_dec[j * d..][..d], &mut grads.w_dec[j * d..][..d]);
                    axpy(grad, scale, row);
                }
            }
        }
        penalty * f64::from(settings.l1) / n as f64
    }

    /// AuxK: the top `aux_k` dead latents per token reconstruct the residual error; returns
    /// the loss, those codes and the gradient reaching them (decoder gradients added).
    fn aux_loss(
        &self,
        pre: &[f32],
        residual: &[f32],
        dead: &[bool],
        settings: &LossSettings,
        grads: &mut Grads,
    ) -> (f64, Codes, Codes) {
        let (d, m) = (self.d_in, self.d_sae);
        let n = residual.len() / d;
        let dead_count = dead.iter().filter(|&&x| x).count();
        let k_aux = settings.aux_k.min(dead_count);
        let masked: Vec<f32> = pre
            .par_chunks(m)
            .flat_map_iter(|row| {
                row.iter()
                    .zip(dead)
                    .map(|(&v, &is_dead)| if is_dead { v } else { f32::NEG_INFINITY })
            })
            .collect();
        let (aux_codes, _) = select(&masked, m, Architecture::Topk, k_aux);
        let reconstruction = {
            let mut out = vec![0.0; n * d];
            sparse_decode(&mut out, &aux_codes, &self.w_dec, d);
            out
        };
        let weight =
            settings.aux_coefficient * (dead_count as f32 / settings.aux_k as f32).min(1.0);
        let scale = 2.0 * weight / n as f32;
        let mut loss = 0.0f64;
        let g_out: Vec<f32> = reconstruction
            .iter()
            .zip(residual)
            .map(|(r, e)| {
                loss += f64::from((r - e) * (r - e));
                scale * (r - e)
            })
            .collect();
        sparse_outer(&mut grads.w_dec, &aux_codes.by_latent(), &g_out, d);
        let g_aux = sparse_project(&aux_codes, &g_out, &self.w_dec, d);
        (loss * f64::from(weight) / n as f64, aux_codes, g_aux)
    }

    /// Gradients of the encoder and biases from the gradient at the active codes (the ReLU
    /// passes it only there).
    fn encoder_grads(
        &self,
        codes: &Codes,
        g_codes: &Codes,
        xc: &[f32],
        grads: &mut Grads,
        dense: bool,
    ) {
        let (d, m) = (self.d_in, self.d_sae);
        let n = xc.len() / d;
        let mut g_b_enc = vec![0.0f32; m];
        for row in &g_codes.rows {
            for &(j, g) in row {
                g_b_enc[j as usize] += g;
            }
        }
        if dense {
            let g_pre = g_codes.dense();
            matmul(
                &mut grads.w_enc,
                View::new(&g_pre, n, m).t(),
                View::new(xc, n, d),
                true,
            );
        } else {
            sparse_outer(&mut grads.w_enc, &g_codes.by_latent(), xc, d);
        }
        debug_assert_eq!(codes.rows.len(), g_codes.rows.len());
        // x_c = x - b_dec: the decoder bias also reaches the output through the encoder.
        for (j, g) in g_b_enc.iter().enumerate() {
            if *g != 0.0 {
                axpy(&mut grads.b_dec, -g, &self.w_enc[j * d..][..d]);
            }
        }
        axpy(&mut grads.b_enc, 1.0, &g_b_enc);
    }
}

/// The values of `full` (`n x m`) at the codes' active entries.
fn gather(codes: &Codes, full: &[f32], m: usize) -> Codes {
    Codes {
        latents: m,
        rows: codes
            .rows
            .iter()
            .enumerate()
            .map(|(i, row)| {
                row.iter()
                    .map(|&(j, _)| (j, full[i * m + j as usize]))
                    .collect()
            })
            .collect(),
    }
}

/// Codes from pre-activations, and the smallest value kept (BatchTopK's threshold sample).
pub fn select(pre: &[f32], m: usize, architecture: Architecture, k: usize) -> (Codes, f32) {
    let rows: Vec<Vec<(u32, f32)>> = match architecture {
        Architecture::Relu => pre
            .par_chunks(m)
            .map(|row| positive_entries(row.iter().copied().enumerate()))
            .collect(),
        Architecture::Topk => pre.par_chunks(m).map(|row| top_k(row, k)).collect(),
        Architecture::BatchTopk => {
            let n = pre.len() / m;
            let cut = kth_largest(pre, (k * n).min(pre.len()));
            let codes = threshold_codes_at(pre, m, cut);
            let smallest = codes
                .iter()
                .flatten()
                .map(|&(_, v)| v)
                .fold(f32::INFINITY, f32::min);
            return (
                Codes {
                    latents: m,
                    rows: codes,
                },
                smallest,
            );
        }
    };
    (Codes { latents: m, rows }, f32::NAN)
}

fn positive_entries(values: impl Iterator<Item = (usize, f32)>) -> Vec<(u32, f32)> {
    values
        .filter(|(_, v)| *v > 0.0)
        .map(|(j, v)| (j as u32, v))
        .collect()
}

/// The `k` largest entries (ties to the lower index), kept if positive, by index.
fn top_k(row: &[f32], k: usize) -> Vec<(u32, f32)> {
    if k == 0 {
        return vec![];
    }
    let mut order: Vec<u32> = (0..row.len() as u32).collect();
    let by_value = |a: &u32, b: &u32| row[*b as usize].total_cmp(&row[*a as usize]).then(a.cmp(b));
    if k < order.len() {
        order.select_nth_unstable_by(k - 1, by_value);
        order.truncate(k);
    }
    order.sort_unstable();
    positive_entries(order.iter().map(|&j| (j as usize, row[j as usize])))
}

/// The `k`-th largest value of `values` (`k >= 1`).
fn kth_largest(values: &[f32], k: usize) -> f32 {
    if k == 0 {
        return f32::INFINITY;
    }
    let mut copy = values.to_vec();
    let (_, kth, _) = copy.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
    *kth
}

fn threshold_codes_at(pre: &[f32], m: usize, cut: f32) -> Vec<Vec<(u32, f32)>> {
    pre.par_chunks(m)
        .map(|row| positive_entries(row.iter().copied().enumerate().filter(|(_, v)| *v >= cut)))
        .collect()
}

/// BatchTopK at inference: every pre-activation above the learned threshold.
fn threshold_codes(pre: &[f32], m: usize, threshold: f32) -> Codes {
    Codes {
        latents: m,
        rows: threshold_codes_at(pre, m, threshold.max(f32::MIN_POSITIVE)),
    }
}

/// Squared error, spread about the batch mean and the norm ratio of a reconstruction.
pub fn reconstruction_stats(x: &[f32], x_hat: &[f32], d: usize) -> StepStats {
    let n = x.len() / d;
    let mut mean = vec![0.0f64; d];
    for row in x.chunks(d) {
        for (m, v) in mean.iter_mut().zip(row) {
            *m += f64::from(*v) / n as f64;
        }
    }
    // Per row in parallel, then summed in row order: the same figures whatever the threads.
    let per_row: Vec<(f64, f64, f64)> = x
        .par_chunks(d)
        .zip(x_hat.par_chunks(d))
        .map(|(row, hat)| {
            let (mut err, mut spread, mut norm_x, mut norm_hat) = (0.0f64, 0.0, 0.0, 0.0);
            for ((v, h), m) in row.iter().zip(hat).zip(&mean) {
                let (v, h) = (f64::from(*v), f64::from(*h));
                err += (v - h) * (v - h);
                spread += (v - m) * (v - m);
                norm_x += v * v;
                norm_hat += h * h;
            }
            let ratio = if norm_x > 0.0 { norm_hat / norm_x } else { 1.0 };
            (err, spread, ratio)
        })
        .collect();
    let mut stats = StepStats {
        rows: n,
        ..StepStats::default()
    };
    for (err, spread, ratio) in per_row {
        stats.sse += err;
        stats.sst += spread;
        stats.norm_ratio += ratio;
    }
    stats.mse = stats.sse / n as f64;
    stats
}

pub fn normalize(row: &mut [f32]) {
    let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
    if norm > 0.0 {
        row.iter_mut().for_each(|v| *v /= norm);
    }
}

/// A standard normal draw (Box-Muller) from the run's seeded generator.
pub fn normal(rng: &mut trainyard_data::SeededRng) -> f32 {
    let u1 = rng.next_f64().max(f64::MIN_POSITIVE);
    let u2 = rng.next_f64();
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}
