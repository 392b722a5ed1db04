//! Training a language model by steps: seeded windows, AdamW with warm-up then cosine decay,
//! gradient clipping by global norm, and validation loss every `eval_interval` steps.

use std::time::Instant;

use burn::module::Module;
use burn::nn::loss::CrossEntropyLoss;
use burn::optim::{
    AdamWConfig, GradientsParams, ModuleOptimizer, grad_clipping::GradientClippingConfig,
};
use burn::store::ModuleRecord;
use burn::tensor::{Bytes, Device, Tensor};
use serde::{Deserialize, Serialize};
use trainyard_data::SeededRng;
use trainyard_data::text::windows;

use super::model::{Gpt, GptConfig, token_tensor};
use crate::{Control, Stop, TrainError};

/// What shapes a language-model run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LmHyperparameters {
    pub n_layer: usize,
    pub n_head: usize,
    pub n_embd: usize,
    pub block_size: usize,
    pub bias: bool,
    pub batch_size: usize,
    pub max_steps: u64,
    pub learning_rate: f64,
    pub min_lr: f64,
    pub warmup_steps: u64,
    pub weight_decay: f64,
    pub grad_clip: f64,
    pub eval_interval: u64,
    pub eval_batches: usize,
    pub seed: u64,
}

impl LmHyperparameters {
    pub fn config(&self, vocab_size: usize) -> GptConfig {
        GptConfig {
            vocab_size,
            n_layer: self.n_layer,
            n_head: self.n_head,
            n_embd: self.n_embd,
            block_size: self.block_size,
            bias: self.bias,
        }
    }

    /// Linear warm-up to `learning_rate`, then cosine decay to `min_lr` at `max_steps`; a pure
    /// function of the step, so it needs no saved state.
    pub fn learning_rate(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            return self.learning_rate * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let span = self.max_steps.saturating_sub(self.warmup_steps).max(1);
        let t = ((step - self.warmup_steps) as f64 / span as f64).min(1.0);
        self.min_lr
            + 0.5 * (1.0 + (std::f64::consts::PI * t).cos()) * (self.learning_rate - self.min_lr)
    }
}

/// Where a run stood at one evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub step: u64,
    /// Mean training loss over the steps since the last evaluation.
    pub train_loss: f64,
    pub val_loss: f64,
    pub learning_rate: f64,
    pub tokens_per_second: f64,
    /// Seconds of training since the previous evaluation.
    pub seconds: f64,
}

/// Token streams to learn from: training and validation, already encoded.
pub struct LmData<'a> {
    pub train: &'a [u32],
    pub validation: &'a [u32],
    pub vocab_size: usize,
}

/// How a run ended: the inference model, every evaluation, and the stop that ended it early.
pub struct LmRun {
    pub model: Gpt,
    pub evaluations: Vec<Evaluation>,
    pub stopped: Option<Stop>,
}

/// Where a run stood: enough to continue exactly (batches and the learning rate are pure
/// functions of the step; the weights and AdamW's moments are saved).
#[derive(Debug, Clone, PartialEq)]
pub struct LmCheckpoint {
    pub step: u64,
    pub evaluations: Vec<Evaluation>,
    pub model: Vec<u8>,
    pub optimizer: Vec<u8>,
}

/// Where a run reports: each evaluation, and a checkpoint after each evaluation and on pause
/// (an error there fails the run).
pub trait LmObserver {
    fn evaluation(&mut self, evaluation: &Evaluation);
    fn checkpoint(&mut self, checkpoint: &LmCheckpoint) -> Result<(), TrainError>;
}

/// Trains from `resume` (or from scratch) until `max_steps` or a stop from `control`.
pub fn train(
    hp: &LmHyperparameters,
    data: &LmData<'_>,
    resume: Option<&LmCheckpoint>,
    control: &Control,
    observer: &mut dyn LmObserver,
) -> Result<LmRun, TrainError> {
    if data.train.len() <= hp.block_size || data.validation.len() <= hp.block_size {
        return Err(TrainError::Fit(format!(
            "the text must be longer than block_size ({}) in both splits",
            hp.block_size
        )));
    }
    let device = Device::flex().autodiff();
    let mut model = {
        let _guard = crate::neural::init_lock();
        device.seed(hp.seed);
        Gpt::new(&hp.config(data.vocab_size), &device)
    };
    let mut optimizer: ModuleOptimizer = AdamWConfig::new()
        .with_beta_2(0.99)
        .with_weight_decay(hp.weight_decay as f32)
        .with_grad_clipping(
            (hp.grad_clip > 0.0).then_some(GradientClippingConfig::Norm(hp.grad_clip as f32)),
        )
        .init();
    let (mut first_step, mut evaluations) = (0, Vec::new());
    if let Some(checkpoint) = resume {
        model = load_weights(model, &checkpoint.model)?;
        optimizer = optimizer
            .from_bytes(Bytes::from_bytes_vec(checkpoint.optimizer.clone()))
            .map_err(|e| TrainError::Resume(format!("optimizer record: {e}")))?;
        first_step = checkpoint.step;
        evaluations = checkpoint.evaluations.clone();
    }
    let loss_fn = CrossEntropyLoss::new(None, &device);
    let (mut loss_sum, mut losses, mut window_tokens) = (0.0, 0u64, 0usize);
    let mut window_start = Instant::now();
    for step in first_step..hp.max_steps {
        if let Some(stop) = control.requested() {
            if stop == Stop::Pause {
                observer.checkpoint(&snapshot(step, &evaluations, &model, &optimizer)?)?;
            }
            return Ok(LmRun {
                model: model.valid(),
                evaluations,
                stopped: Some(stop),
            });
        }
        let batch = windows(data.train, hp.block_size, hp.batch_size, hp.seed, step);
        let inputs = token_tensor(&batch.inputs, hp.batch_size, hp.block_size, &device);
        let targets = token_tensor(&batch.targets, 1, hp.batch_size * hp.block_size, &device)
            .reshape([hp.batch_size * hp.block_size]);
        let loss = loss_fn.forward(model.forward(inputs), targets);
        loss_sum += loss.clone().into_scalar::<f32>() as f64;
        losses += 1;
        window_tokens += hp.batch_size * hp.block_size;
        let lr = hp.learning_rate(step);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optimizer.step(lr, model, grads);
        let done = step + 1;
        if done % hp.eval_interval == 0 || done == hp.max_steps {
            let seconds = window_start.elapsed().as_secs_f64();
            let evaluation = Evaluation {
                seconds,
                step: done,
                train_loss: loss_sum / losses as f64,
                val_loss: evaluate(&model.valid(), data.validation, hp),
                learning_rate: lr,
                tokens_per_second: window_tokens as f64 / seconds.max(1e-9),
            };
            observer.evaluation(&evaluation);
            evaluations.push(evaluation);
            if done < hp.max_steps {
                observer.checkpoint(&snapshot(done, &evaluations, &model, &optimizer)?)?;
            }
            (loss_sum, losses, window_tokens) = (0.0, 0, 0);
            window_start = Instant::now();
        }
    }
    Ok(LmRun {
        model: model.valid(),
        evaluations,
        stopped: None,
    })
}

fn snapshot(
    step: u64,
    evaluations: &[Evaluation],
    model: &Gpt,
    optimizer: &ModuleOptimizer,
) -> Result<LmCheckpoint, TrainError> {
    let optimizer = optimizer
        .into_bytes()
        .map_err(|e| TrainError::Checkpoint(e.to_string()))?
        .to_vec();
    Ok(LmCheckpoint {
        step,
        evaluations: evaluations.to_vec(),
        model: weights(model)?,
        optimizer,
    })
}

/// A model's weights as a burn record.
pub fn weights(model: &Gpt) -> Result<Vec<u8>, TrainError> {
    let bytes = model
        .clone()
        .into_record()
        .into_bytes()
        .map_err(|e| TrainError::Checkpoint(e.to_string()))?;
    Ok(bytes.to_vec())
}

/// Loads weights written by [`weights`] into a model of the same shape.
pub fn load_weights(model: Gpt, bytes: &[u8]) -> Result<Gpt, TrainError> {
    let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(bytes.to_vec()))
        .map_err(|e| TrainError::Resume(format!("model record: {e}")))?;
    model
        .try_load_record(record)
        .map_err(|e| TrainError::Resume(format!("model record: {e}")))
}

/// Mean next-token loss over `eval_batches` windows drawn from a stream of their own (the same
/// windows at every evaluation, so evaluations compare like with like).
pub fn evaluate(model: &Gpt, tokens: &[u32], hp: &LmHyperparameters) -> f64 {
    let device = Device::flex();
    let loss_fn = CrossEntropyLoss::new(None, &device);
    let mut sum = 0.0;
    let seed = SeededRng::derive(hp.seed, 3_000_000).next_u64();
    for i in 0..hp.eval_batches {
        let batch = windows(tokens, hp.block_size, hp.batch_size, seed, i as u64);
        let inputs = token_tensor(&batch.inputs, hp.batch_size, hp.block_size, &device);
        let targets: Tensor<1, burn::tensor::Int> =
            token_tensor(&batch.targets, 1, hp.batch_size * hp.block_size, &device)
                .reshape([hp.batch_size * hp.block_size]);
        sum += loss_fn
            .forward(model.forward(inputs), targets)
            .into_scalar::<f32>() as f64;
    }
    sum / hp.eval_batches.max(1) as f64
}
