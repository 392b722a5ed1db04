//! Training a language model by steps: seeded windows (and seeded dropout masks), gradient
//! accumulation, AdamW with weight decay on matrices only, warm-up then cosine (or constant)
//! learning rate, gradient clipping by global norm, validation loss every `eval_interval`
//! steps, and early stopping on it.

use std::time::Instant;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::nn::loss::{CrossEntropyLoss, CrossEntropyLossConfig};
use burn::optim::{
    AdamWConfig, GradientsAccumulator, GradientsParams, ModuleOptimizer,
    grad_clipping::GradientClippingConfig,
};
use burn::store::ModuleRecord;
use burn::tensor::{Bytes, Device, Tensor, activation};
use serde::{Deserialize, Serialize};
use trainyard_core::hyperparameters::EarlyStopping;
use trainyard_data::SeededRng;
use trainyard_data::text::windows;
use trainyard_data::tokenizer::TokenizerKind;

use super::model::{Dropout, Gpt, GptConfig, token_tensor};
use crate::{Control, Stop, TrainError};

/// How the learning rate moves after warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LrSchedule {
    /// Cosine decay to `min_lr` at `max_steps`.
    #[default]
    Cosine,
    /// `learning_rate` throughout.
    Constant,
}

/// What the model is trained to match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LmLoss {
    /// Next-token cross-entropy against the text.
    #[default]
    CrossEntropy,
    /// A mix of the text's cross-entropy and the KL divergence from a trained teacher's
    /// softened next-token distribution.
    Distillation,
}

/// What shapes a language-model run. Fields added after the first release default when an
/// older model file lacks them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
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
    /// Dropout on the embeddings and on each block's attention and MLP outputs.
    pub dropout: f64,
    /// Micro-batches of `batch_size` windows whose gradients make one step.
    pub grad_accumulation: usize,
    pub lr_schedule: LrSchedule,
    /// Stop when `val_loss` has not improved for `patience` evaluations; the model kept is
    /// the best evaluation's.
    pub early_stopping: Option<EarlyStopping>,
    pub loss: LmLoss,
    /// Targets smoothed towards uniform by this much (0: off).
    pub label_smoothing: f64,
    /// The model id of the distillation teacher.
    pub teacher: Option<String>,
    /// Both distributions are softened by this temperature; the soft loss is scaled by its
    /// square so its gradients keep their size.
    pub distillation_temperature: f64,
    /// The soft (teacher) loss's weight; the text's cross-entropy gets the rest.
    pub distillation_alpha: f64,
    pub tokenizer: TokenizerKind,
    /// The BPE vocabulary's size (the 256 bytes included).
    pub vocab_size: usize,
    /// Recompute memory-bound activations in the backward pass instead of keeping them
    /// (burn's autodiff checkpointing): less memory, more compute, the same results.
    pub gradient_checkpointing: bool,
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
        if self.lr_schedule == LrSchedule::Constant {
            return self.learning_rate;
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
    /// Global L2 norm of the last step's gradients, before clipping.
    #[serde(default)]
    pub grad_norm: f64,
}

/// What to learn from: training and validation token streams, already encoded, and for
/// distillation the teacher (same vocabulary, a context at least as long).
#[derive(Clone, Copy)]
pub struct LmData<'a> {
    pub train: &'a [u32],
    pub validation: &'a [u32],
    pub vocab_size: usize,
    pub teacher: Option<&'a Gpt>,
}

/// How a run ended: the inference model, every evaluation, and the stop that ended it early.
pub struct LmRun {
    /// With early stopping, the best evaluation's weights.
    pub model: Gpt,
    pub evaluations: Vec<Evaluation>,
    pub stopped: Option<Stop>,
    /// The step whose weights `model` holds, when early stopping chose them.
    pub best_step: Option<u64>,
    /// Early stopping ended the run before `max_steps`.
    pub stopped_early: bool,
}

/// Where a run stood: enough to continue exactly (batches and the learning rate are pure
/// functions of the step; the weights and AdamW's moments are saved).
#[derive(Debug, Clone, PartialEq)]
pub struct LmCheckpoint {
    pub step: u64,
    pub evaluations: Vec<Evaluation>,
    pub model: Vec<u8>,
    pub optimizer: Vec<u8>,
    /// The best evaluation's weights so far, under early stopping.
    pub best_model: Option<Vec<u8>>,
}

/// The best evaluation so far under early stopping, and whether patience has run out: a pure
/// function of the evaluations, so a checkpoint needs only the best weights.
fn early_stopping_state(es: &EarlyStopping, evaluations: &[Evaluation]) -> (Option<usize>, bool) {
    let mut best: Option<usize> = None;
    let mut waited = 0;
    for (i, e) in evaluations.iter().enumerate() {
        match best {
            // A NaN loss never counts as an improvement.
            Some(b)
                if e.val_loss.is_nan() || e.val_loss >= evaluations[b].val_loss - es.min_delta =>
            {
                waited += 1
            }
            _ => (best, waited) = (Some(i), 0),
        }
    }
    (best, waited >= es.patience as usize)
}

/// Where a run reports: each evaluation, and a checkpoint after each evaluation and on pause
/// (an error there fails the run).
pub trait LmObserver {
    /// `done` steps of `max_steps` are finished; called after every step (throttle it).
    fn step(&mut self, done: u64) {
        let _ = done;
    }
    fn evaluation(&mut self, evaluation: &Evaluation);
    fn checkpoint(&mut self, checkpoint: &LmCheckpoint) -> Result<(), TrainError>;
}

/// The optimiser: AdamW whose own decay is off, because it would decay every parameter;
/// [`decay_matrices`] applies the decoupled decay to matrices only.
fn optimizer(hp: &LmHyperparameters) -> ModuleOptimizer {
    AdamWConfig::new()
        .with_beta_2(0.99)
        .with_weight_decay(0.0)
        .with_grad_clipping(
            (hp.grad_clip > 0.0).then_some(GradientClippingConfig::Norm(hp.grad_clip as f32)),
        )
        .init()
}

/// Trains from `resume` (or from scratch) until `max_steps`, early stopping, or a stop from
/// `control`.
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
    let device = if hp.gradient_checkpointing {
        Device::flex().autodiff().gradient_checkpointing()
    } else {
        Device::flex().autodiff()
    };
    let mut model = {
        let _guard = crate::neural::init_lock();
        device.seed(hp.seed);
        Gpt::new(&hp.config(data.vocab_size), &device)
    };
    let mut optimizer = optimizer(hp);
    let (mut first_step, mut evaluations, mut best_model) = (0, Vec::new(), None);
    if let Some(checkpoint) = resume {
        model = load_weights(model, &checkpoint.model)?;
        optimizer = optimizer
            .from_bytes(Bytes::from_bytes_vec(checkpoint.optimizer.clone()))
            .map_err(|e| TrainError::Resume(format!("optimizer record: {e}")))?;
        first_step = checkpoint.step;
        evaluations = checkpoint.evaluations.clone();
        best_model = checkpoint.best_model.clone();
    }
    let smoothing = (hp.label_smoothing > 0.0).then_some(hp.label_smoothing as f32);
    let loss_fn = CrossEntropyLossConfig::new()
        .with_smoothing(smoothing)
        .init(&device);
    let (mut loss_sum, mut losses, mut window_tokens) = (0.0, 0u64, 0usize);
    let mut window_start = Instant::now();
    let mut stopped_early = false;
    for step in first_step..hp.max_steps {
        if let Some(stop) = control.requested() {
            if stop == Stop::Pause {
                let checkpoint = snapshot(step, &evaluations, &model, &optimizer, &best_model)?;
                observer.checkpoint(&checkpoint)?;
            }
            return finish(model, evaluations, best_model, Some(stop), false, hp);
        }
        let (grads, loss) = step_gradients(&model, hp, data, step, &loss_fn, &device);
        loss_sum += loss;
        losses += 1;
        window_tokens += hp.batch_size * hp.block_size * hp.grad_accumulation;
        let lr = hp.learning_rate(step);
        let done = step + 1;
        let evaluating = done % hp.eval_interval == 0 || done == hp.max_steps;
        let grad_norm = if evaluating {
            global_norm(&model, &grads)
        } else {
            0.0
        };
        if hp.weight_decay > 0.0 {
            model = decay_matrices(model, (1.0 - lr * hp.weight_decay) as f32);
        }
        model = optimizer.step(lr, model, grads);
        observer.step(done);
        if !evaluating {
            continue;
        }
        let seconds = window_start.elapsed().as_secs_f64();
        let evaluation = Evaluation {
            seconds,
            step: done,
            train_loss: loss_sum / losses as f64,
            val_loss: evaluate(&model.valid(), data.validation, hp),
            learning_rate: lr,
            tokens_per_second: window_tokens as f64 / seconds.max(1e-9),
            grad_norm,
        };
        observer.evaluation(&evaluation);
        evaluations.push(evaluation);
        if let Some(es) = &hp.early_stopping {
            let (best, patience_spent) = early_stopping_state(es, &evaluations);
            if best == Some(evaluations.len() - 1) {
                best_model = Some(weights(&model)?);
            }
            stopped_early = patience_spent;
        }
        if done < hp.max_steps && !stopped_early {
            let checkpoint = snapshot(done, &evaluations, &model, &optimizer, &best_model)?;
            observer.checkpoint(&checkpoint)?;
        }
        if stopped_early {
            break;
        }
        (loss_sum, losses, window_tokens) = (0.0, 0, 0);
        window_start = Instant::now();
    }
    finish(model, evaluations, best_model, None, stopped_early, hp)
}

/// The run's result: under early stopping, the best evaluation's weights.
fn finish(
    model: Gpt,
    evaluations: Vec<Evaluation>,
    best_model: Option<Vec<u8>>,
    stopped: Option<Stop>,
    stopped_early: bool,
    hp: &LmHyperparameters,
) -> Result<LmRun, TrainError> {
    let best = hp
        .early_stopping
        .as_ref()
        .and_then(|es| early_stopping_state(es, &evaluations).0);
    let (model, best_step) = match (best, best_model) {
        (Some(index), Some(bytes)) if stopped.is_none() => (
            load_weights(model.valid(), &bytes)?,
            Some(evaluations[index].step),
        ),
        _ => (model.valid(), None),
    };
    Ok(LmRun {
        model,
        evaluations,
        stopped,
        best_step,
        stopped_early,
    })
}

/// One step's gradients and mean loss over `grad_accumulation` micro-batches. Micro-batch `m`
/// of step `s` is window draw `s * grad_accumulation + m`, and its dropout masks come from a
/// generator seeded by that number.
fn step_gradients(
    model: &Gpt,
    hp: &LmHyperparameters,
    data: &LmData<'_>,
    step: u64,
    loss_fn: &CrossEntropyLoss,
    device: &Device,
) -> (GradientsParams, f64) {
    let micro_batches = hp.grad_accumulation.max(1);
    let mut accumulator = GradientsAccumulator::new();
    let mut loss_sum = 0.0;
    for micro in 0..micro_batches as u64 {
        let draw = step * micro_batches as u64 + micro;
        let batch = windows(data.train, hp.block_size, hp.batch_size, hp.seed, draw);
        let inputs = token_tensor(&batch.inputs, hp.batch_size, hp.block_size, device);
        let targets = token_tensor(&batch.targets, 1, hp.batch_size * hp.block_size, device)
            .reshape([hp.batch_size * hp.block_size]);
        let mut dropout = (hp.dropout > 0.0).then(|| Dropout {
            p: hp.dropout,
            rng: SeededRng::derive(hp.seed, 2_000_000 + draw),
        });
        let logits = model.forward_with(inputs, dropout.as_mut());
        let mut loss = loss_fn.forward(logits.clone(), targets);
        if let Some(teacher) = data.teacher {
            let soft = distillation_loss(teacher, &batch.inputs, logits, hp, device);
            let alpha = hp.distillation_alpha as f32;
            loss = loss.mul_scalar(1.0 - alpha) + soft.mul_scalar(alpha);
        }
        if micro_batches > 1 {
            loss = loss.div_scalar(micro_batches as f32);
        }
        loss_sum += loss.clone().into_scalar::<f32>() as f64;
        let grads = GradientsParams::from_grads(loss.backward(), model);
        if micro_batches == 1 {
            return (grads, loss_sum);
        }
        accumulator.accumulate(model, grads);
    }
    (accumulator.grads(), loss_sum)
}

/// KL(teacher || student) between next-token distributions softened by the temperature,
/// times its square, averaged over positions. The teacher runs without autodiff; its
/// probabilities enter the student's graph as constants.
fn distillation_loss(
    teacher: &Gpt,
    inputs: &[u32],
    student_logits: Tensor<2>,
    hp: &LmHyperparameters,
    device: &Device,
) -> Tensor<1> {
    let t = hp.distillation_temperature as f32;
    let plain = Device::flex();
    let teacher_logits = teacher
        .forward(token_tensor(inputs, hp.batch_size, hp.block_size, &plain))
        .div_scalar(t);
    let target_log_p = Tensor::<2>::from_data(
        activation::log_softmax(teacher_logits, 1).into_data(),
        device,
    );
    let student_log_p = activation::log_softmax(student_logits.div_scalar(t), 1);
    let kl = (target_log_p.clone().exp() * (target_log_p - student_log_p)).sum_dim(1);
    kl.mean().mul_scalar(t * t)
}

/// Decoupled weight decay (`w *= 1 - lr * weight_decay`) on matrices and embeddings only, as
/// nanoGPT and most LM recipes do: decaying norms' gains and biases only hurts.
fn decay_matrices(model: Gpt, factor: f32) -> Gpt {
    struct Decay(f32);
    impl ModuleMapper for Decay {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            if D < 2 {
                return param;
            }
            let factor = self.0;
            // The product is a graph node; `detach` makes it a leaf and `require_grad` keeps
            // it trainable.
            param.map(|t| t.mul_scalar(factor).detach().require_grad())
        }
    }
    model.map(&mut Decay(factor))
}

/// The global L2 norm of the gradients.
fn global_norm(model: &Gpt, grads: &GradientsParams) -> f64 {
    struct Norm<'a> {
        grads: &'a GradientsParams,
        squares: f64,
    }
    impl ModuleVisitor for Norm<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(grad) = self.grads.get::<D>(param.id) {
                self.squares += grad.powi_scalar(2).sum().into_scalar::<f32>() as f64;
            }
        }
    }
    let mut norm = Norm {
        grads,
        squares: 0.0,
    };
    model.visit(&mut norm);
    norm.squares.sqrt()
}

fn snapshot(
    step: u64,
    evaluations: &[Evaluation],
    model: &Gpt,
    optimizer: &ModuleOptimizer,
    best_model: &Option<Vec<u8>>,
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
        best_model: best_model.clone(),
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
