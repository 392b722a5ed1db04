//! The training loop: one autoencoder per layer over a shared token stream, batches drawn from
//! (seed, step), Adam with warm-up and decay, the adaptive L1 coefficient, dead-latent windows
//! and resampling, evaluations every `log_interval` steps, checkpoints and exact resume.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use trainyard_data::SeededRng;

use super::model::{Architecture, LossSettings, Sae, StepStats, reconstruction_stats};
use super::optim::{Adam, clip, normalize_decoder, project_decoder_gradient};
use super::spec::{DecoderNorm, SaeHyperparameters};
use crate::{Control, Stop, TrainError};

/// One layer's activations, already scaled by `scale` (see `normalize_activations`).
pub struct LayerData {
    pub layer: usize,
    pub d_in: usize,
    pub scale: f32,
    /// `n x d_in`, row-major.
    pub train: Vec<f32>,
    pub validation: Vec<f32>,
}

impl LayerData {
    pub fn rows(&self) -> usize {
        self.train.len() / self.d_in
    }
}

/// What one layer's training has accumulated since the last evaluation.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Interval {
    pub steps: u64,
    /// Each step's statistics, summed.
    pub sums: StepStats,
    pub grad_norm: f64,
    /// Times each latent fired.
    pub fired: Vec<u64>,
}

impl Interval {
    fn new(d_sae: usize) -> Interval {
        Interval {
            fired: vec![0; d_sae],
            ..Interval::default()
        }
    }
}

/// Everything one layer's training carries from step to step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerState {
    pub layer: usize,
    pub sae: Sae,
    pub adam: Adam,
    /// Tokens seen since each latent last fired.
    pub since_fired: Vec<u64>,
    /// The L1 coefficient in force before warm-up (adapted when `target_l0` is set).
    pub l1: f64,
    pub interval: Interval,
    /// Buffers the steps reuse (not saved).
    #[serde(skip)]
    pub scratch: super::Scratch,
}

/// Where a run stood at one evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SaeEvaluation {
    pub step: u64,
    pub train_loss: f64,
    pub val_loss: f64,
    pub learning_rate: f64,
    pub tokens_per_second: f64,
    pub seconds: f64,
    pub values: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SaeCheckpoint {
    pub step: u64,
    pub evaluations: Vec<SaeEvaluation>,
    pub layers: Vec<LayerState>,
}

pub trait SaeObserver {
    fn step(&mut self, done: u64);
    fn evaluation(&mut self, evaluation: &SaeEvaluation);
    fn checkpoint(&mut self, checkpoint: &SaeCheckpoint) -> Result<(), TrainError>;
    fn resampled(&mut self, step: u64, layer: usize, latents: usize);
}

pub struct SaeRun {
    pub layers: Vec<LayerState>,
    pub evaluations: Vec<SaeEvaluation>,
    pub stopped: Option<Stop>,
}

/// A fresh layer: decoder bias at the data's centre.
pub fn init_layer(hp: &SaeHyperparameters, data: &LayerData) -> LayerState {
    let mut rng = SeededRng::derive(hp.seed, data.layer as u64);
    let mut sae = Sae::init(data.d_in, hp.d_sae(data.d_in), &mut rng);
    sae.b_dec = super::stats::centre(&data.train, data.d_in, hp.decoder_bias_init);
    let d_sae = sae.d_sae;
    LayerState {
        layer: data.layer,
        adam: Adam::new(&sae),
        sae,
        since_fired: vec![0; d_sae],
        l1: hp.l1_coefficient,
        interval: Interval::new(d_sae),
        scratch: Default::default(),
    }
}

/// The rows of step `step`: consecutive slices of a permutation of all rows, a new
/// permutation per pass, so the order is a pure function of (seed, step).
struct Batches {
    seed: u64,
    rows: usize,
    pass: Option<(u64, Vec<u32>)>,
}

impl Batches {
    fn indices(&mut self, step: u64, batch: usize) -> Vec<u32> {
        (0..batch as u64)
            .map(|b| {
                let global = step * batch as u64 + b;
                let pass = global / self.rows as u64;
                if self.pass.as_ref().is_none_or(|(p, _)| *p != pass) {
                    let mut order: Vec<u32> = (0..self.rows as u32).collect();
                    SeededRng::derive(self.seed ^ 0x5AE, pass).shuffle(&mut order);
                    self.pass = Some((pass, order));
                }
                let (_, order) = self.pass.as_ref().expect("pass set above");
                order[(global % self.rows as u64) as usize]
            })
            .collect()
    }
}

fn gather_rows(data: &[f32], d: usize, rows: &[u32]) -> Vec<f32> {
    rows.iter()
        .flat_map(|&r| data[r as usize * d..][..d].iter().copied())
        .collect()
}

/// Trains every layer to `max_steps`, or until `control` stops it (a pause writes a
/// checkpoint first).
pub fn train(
    hp: &SaeHyperparameters,
    data: &[LayerData],
    resume: Option<SaeCheckpoint>,
    control: &Control,
    observer: &mut dyn SaeObserver,
) -> Result<SaeRun, TrainError> {
    let (mut step, mut evaluations, mut layers) = match resume {
        Some(c) => (c.step, c.evaluations, c.layers),
        None => (0, vec![], data.iter().map(|d| init_layer(hp, d)).collect()),
    };
    let mut batches = Batches {
        seed: hp.seed,
        rows: data[0].rows(),
        pass: None,
    };
    let mut window_start = Instant::now();
    let mut window_steps = 0u64;
    while step < hp.max_steps {
        if let Some(stop) = control.requested() {
            if stop == Stop::Pause {
                observer.checkpoint(&checkpoint(step, &evaluations, &layers))?;
            }
            return Ok(SaeRun {
                layers,
                evaluations,
                stopped: Some(stop),
            });
        }
        let rows = batches.indices(step, hp.batch_size);
        let learning_rate = hp.learning_rate_at(step);
        for (state, layer) in layers.iter_mut().zip(data) {
            let batch = gather_rows(&layer.train, layer.d_in, &rows);
            train_step(hp, state, &batch, step, learning_rate);
            if hp.resample_dead && (step + 1) % hp.resample_interval == 0 {
                let latents = super::resample::resample(hp, state, &batch, step);
                if latents > 0 {
                    observer.resampled(step + 1, state.layer, latents);
                }
            }
        }
        step += 1;
        window_steps += 1;
        observer.step(step);
        if step % hp.log_interval == 0 || step == hp.max_steps {
            let seconds = window_start.elapsed().as_secs_f64();
            let evaluation = evaluate(
                hp,
                &mut layers,
                data,
                step,
                learning_rate,
                seconds,
                window_steps,
            );
            observer.evaluation(&evaluation);
            evaluations.push(evaluation);
            observer.checkpoint(&checkpoint(step, &evaluations, &layers))?;
            window_start = Instant::now();
            window_steps = 0;
        }
    }
    Ok(SaeRun {
        layers,
        evaluations,
        stopped: None,
    })
}

fn checkpoint(step: u64, evaluations: &[SaeEvaluation], layers: &[LayerState]) -> SaeCheckpoint {
    SaeCheckpoint {
        step,
        evaluations: evaluations.to_vec(),
        layers: layers.to_vec(),
    }
}

/// One optimisation step of one layer's autoencoder on `batch`.
pub fn train_step(
    hp: &SaeHyperparameters,
    state: &mut LayerState,
    batch: &[f32],
    step: u64,
    learning_rate: f64,
) -> StepStats {
    let warmup = if hp.l1_warmup_steps == 0 {
        1.0
    } else {
        ((step + 1) as f64 / hp.l1_warmup_steps as f64).min(1.0)
    };
    let settings = LossSettings {
        architecture: hp.architecture,
        k: hp.k,
        l1: (state.l1 * warmup) as f32,
        norm_weighted_penalty: hp.decoder_norm == DecoderNorm::Penalty,
        aux_k: hp.aux_k(state.sae.d_in),
        aux_coefficient: hp.aux_coefficient as f32,
    };
    let dead: Vec<bool> = state
        .since_fired
        .iter()
        .map(|&s| s >= hp.dead_window_tokens)
        .collect();
    let (mut grads, firing, stats) = state.sae.step(batch, &settings, &dead, &mut state.scratch);
    let grad_norm = clip(&mut grads, hp.grad_clip);
    let unit = hp.decoder_norm == DecoderNorm::Unit;
    if unit {
        project_decoder_gradient(&state.sae, &mut grads);
    }
    state.adam.step(&mut state.sae, &grads, learning_rate);
    if unit {
        normalize_decoder(&mut state.sae);
    }
    state.scratch.keep(grads);
    let n = stats.rows as u64;
    state.since_fired.iter_mut().for_each(|s| *s += n);
    for (j, &rows) in firing.iter().enumerate().filter(|(_, rows)| **rows > 0) {
        state.since_fired[j] = 0;
        state.interval.fired[j] += u64::from(rows);
    }
    if let Some(target) = hp.target_l0
        && step >= hp.l1_warmup_steps
    {
        // Multiplicative control in log space: L0 twice the target raises the
        // coefficient by about 1.4% per step.
        let error = ((stats.l0 + 1.0) / (target + 1.0)).ln();
        state.l1 = (state.l1 * (0.02 * error).exp()).clamp(1e-6, 1e6);
    }
    let i = &mut state.interval;
    i.steps += 1;
    i.sums.add(&stats);
    i.grad_norm += grad_norm;
    stats
}

/// Validation rows per evaluation, at most.
const VALIDATION_ROWS: usize = 8192;

/// Closes the interval: each layer's training averages and validation reconstruction, keyed
/// `layer{L}.{metric}`, with the unprefixed metric the mean over layers.
fn evaluate(
    hp: &SaeHyperparameters,
    layers: &mut [LayerState],
    data: &[LayerData],
    step: u64,
    learning_rate: f64,
    seconds: f64,
    steps: u64,
) -> SaeEvaluation {
    let mut values: BTreeMap<String, f64> = BTreeMap::new();
    let (mut train_loss, mut val_loss) = (0.0, 0.0);
    let count = data.len() as f64;
    for (state, layer) in layers.iter_mut().zip(data) {
        let metrics = layer_metrics(hp, state, layer);
        train_loss += metrics["loss"] / count;
        val_loss += metrics["val_mse"] / count;
        for (name, value) in metrics {
            *values.entry(name.clone()).or_default() += value / count;
            values.insert(format!("layer{}.{name}", state.layer), value);
        }
        state.interval = Interval::new(state.sae.d_sae);
    }
    values.insert("step".into(), step as f64);
    let tokens_per_second = (steps * hp.batch_size as u64) as f64 / seconds.max(1e-9);
    values.insert("tokens_per_second".into(), tokens_per_second);
    SaeEvaluation {
        step,
        train_loss,
        val_loss,
        learning_rate,
        tokens_per_second,
        seconds,
        values,
    }
}

fn layer_metrics(
    hp: &SaeHyperparameters,
    state: &LayerState,
    layer: &LayerData,
) -> BTreeMap<String, f64> {
    let i = &state.interval;
    let steps = i.steps.max(1) as f64;
    let dead = state
        .since_fired
        .iter()
        .filter(|&&s| s >= hp.dead_window_tokens)
        .count();
    let dense = i
        .fired
        .iter()
        .filter(|&&f| i.sums.rows > 0 && f as f64 / i.sums.rows as f64 > 0.1)
        .count();
    let rows = (layer.validation.len() / layer.d_in).min(VALIDATION_ROWS);
    let validation = &layer.validation[..rows * layer.d_in];
    let codes = state.sae.encode(validation, hp.architecture, hp.k);
    let reconstruction = state.sae.decode(&codes);
    let val = reconstruction_stats(validation, &reconstruction, layer.d_in);
    let mut m = BTreeMap::from([
        ("loss".to_string(), i.sums.loss() / steps),
        ("mse".to_string(), i.sums.mse / steps),
        ("sparsity_loss".to_string(), i.sums.sparsity / steps),
        ("l0".to_string(), i.sums.l0 / steps),
        (
            "explained_variance".to_string(),
            1.0 - i.sums.sse / i.sums.sst.max(1e-12),
        ),
        (
            "norm_ratio".to_string(),
            i.sums.norm_ratio / i.sums.rows.max(1) as f64,
        ),
        ("grad_norm".to_string(), i.grad_norm / steps),
        ("dead_latents".to_string(), dead as f64),
        ("dense_latents".to_string(), dense as f64),
        ("val_mse".to_string(), val.mse),
        (
            "val_explained_variance".to_string(),
            1.0 - val.sse / val.sst.max(1e-12),
        ),
        (
            "val_l0".to_string(),
            codes.nonzeros() as f64 / rows.max(1) as f64,
        ),
    ]);
    if hp.architecture != Architecture::Relu {
        m.insert("aux_loss".into(), i.sums.aux / steps);
    } else {
        m.insert("l1_coefficient".into(), state.l1);
    }
    m
}
