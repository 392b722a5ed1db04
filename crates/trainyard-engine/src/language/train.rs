//! Training a language model by steps: seeded windows (and seeded dropout masks), gradient
//! accumulation, AdamW with weight decay on matrices only, warm-up then cosine (or constant)
//! learning rate, gradient clipping by global norm, validation loss every `eval_interval`
//! steps, and early stopping on it.

use std::collections::BTreeMap;

use burn::nn::loss::{CrossEntropyLoss, CrossEntropyLossConfig};
use burn::tensor::{Device, Tensor, activation};
use serde::{Deserialize, Serialize};
use trainyard_core::hyperparameters::EarlyStopping;
use trainyard_data::SeededRng;
use trainyard_data::text::{Windows, windows};
use trainyard_data::tokenizer::TokenizerKind;

use super::classifier::Pooling;
use super::model::{Dropout, Gpt, GptConfig, token_tensor};
use super::steps::{Objective, StepRun, train_steps};
pub use super::steps::{load_weights, weights};
use crate::{Control, TrainError};

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
    /// Dropout on the attention probabilities (nanoGPT applies its one `dropout` here too).
    pub attention_dropout: f64,
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
    /// Classifiers: how a text's states are pooled.
    pub pooling: Pooling,
    /// Classifiers: per-class loss weights, or `balanced` (inverse class frequency).
    pub class_weights: Option<ClassWeights>,
    /// Classifiers: the id of a trained `transformer_lm` whose weights the body starts from
    /// (its shape and tokenizer are taken too).
    pub init_from: Option<String>,
    /// Classifiers: parts left exactly as initialised (`embeddings`, `blocks.N`, `ln_final`).
    pub freeze: Vec<String>,
}

/// Per-class loss weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClassWeights {
    /// Each class weighted by `rows / (classes * rows of the class)` in the training split.
    Balanced,
    #[serde(untagged)]
    Given(Vec<f64>),
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
    /// Further validation metrics (a classifier's accuracy and macro-F1).
    #[serde(default)]
    pub values: BTreeMap<String, f64>,
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

/// How a language-model run ended.
pub type LmRun = StepRun<Gpt>;

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

/// Next-token prediction on windows of the text (and, with a teacher, its distribution).
struct NextToken<'a> {
    hp: &'a LmHyperparameters,
    data: &'a LmData<'a>,
    loss_fn: CrossEntropyLoss,
}

impl Objective for NextToken<'_> {
    type Model = Gpt;

    fn init(&self, device: &Device) -> Result<Gpt, TrainError> {
        Ok(Gpt::new(&self.hp.config(self.data.vocab_size), device))
    }

    /// Windows of draw `draw` at seeded positions; dropout masks seeded by the draw too.
    fn loss(&self, model: &Gpt, draw: u64, device: &Device) -> Tensor<1> {
        let hp = self.hp;
        let batch = windows(self.data.train, hp.block_size, hp.batch_size, hp.seed, draw);
        let inputs = token_tensor(&batch.inputs, hp.batch_size, hp.block_size, device);
        let targets = token_tensor(&batch.targets, 1, hp.batch_size * hp.block_size, device)
            .reshape([hp.batch_size * hp.block_size]);
        let mut dropout = Dropout::for_draw(hp.dropout, hp.attention_dropout, hp.seed, draw);
        let logits = model.forward_with(inputs, dropout.as_mut());
        let loss = self.loss_fn.forward(logits.clone(), targets);
        match self.data.teacher {
            Some(teacher) => {
                let soft = distillation_loss(teacher, &batch.inputs, logits, hp, device);
                let alpha = hp.distillation_alpha as f32;
                loss.mul_scalar(1.0 - alpha) + soft.mul_scalar(alpha)
            }
            None => loss,
        }
    }

    fn evaluate(&self, model: &Gpt) -> (f64, BTreeMap<String, f64>) {
        (
            evaluate(model, self.data.validation, self.hp),
            BTreeMap::new(),
        )
    }

    fn tokens_per_draw(&self) -> usize {
        self.hp.batch_size * self.hp.block_size
    }
}

/// Trains a language model from `resume` (or from scratch) until `max_steps`, early
/// stopping, or a stop from `control`.
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
    if super::native::handles(data, resume) {
        return super::native::train(hp, data, resume, control, observer);
    }
    let smoothing = (hp.label_smoothing > 0.0).then_some(hp.label_smoothing as f32);
    let objective = NextToken {
        hp,
        data,
        loss_fn: CrossEntropyLossConfig::new()
            .with_smoothing(smoothing)
            .init(&Device::flex().autodiff()),
    };
    train_steps(hp, &objective, resume, control, observer)
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

/// Mean next-token loss over `eval_batches` windows drawn from a stream of their own (the same
/// windows at every evaluation, so evaluations compare like with like), computed as a run's
/// own evaluations are.
pub fn evaluate(model: &Gpt, tokens: &[u32], hp: &LmHyperparameters) -> f64 {
    super::native::validation_loss(model, tokens, hp)
}

/// The windows every evaluation reads: `eval_batches` draws from a stream of their own.
pub fn validation_windows<'a>(
    tokens: &'a [u32],
    hp: &'a LmHyperparameters,
) -> impl Iterator<Item = Windows> + 'a {
    let seed = SeededRng::derive(hp.seed, 3_000_000).next_u64();
    (0..hp.eval_batches).map(move |i| windows(tokens, hp.block_size, hp.batch_size, seed, i as u64))
}
