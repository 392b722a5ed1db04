//! The step loop every transformer shares, whatever it learns: micro-batches and gradient
//! accumulation, AdamW with weight decay on matrices only, frozen parameters, warm-up and the
//! learning-rate schedule, validation every `eval_interval` steps, early stopping, checkpoints
//! (at each evaluation and on pause) and exact resume. What differs (the model, its batches,
//! its loss and metrics) is an [`Objective`].

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::grad_clipping::GradientClippingConfig;
use burn::optim::{AdamWConfig, GradientsAccumulator, GradientsParams, ModuleOptimizer};
use burn::store::ModuleRecord;
use burn::tensor::{Bytes, Device, Tensor};
use trainyard_core::hyperparameters::EarlyStopping;

use super::train::{Evaluation, LmCheckpoint, LmHyperparameters, LmObserver};
use crate::{Control, Stop, TrainError};

/// What a step-trained model learns.
pub trait Objective {
    type Model: Module;

    /// A freshly initialised model (the caller has seeded the backend).
    fn init(&self, device: &Device) -> Result<Self::Model, TrainError>;

    /// The mean loss of micro-batch `draw`: a pure function of `draw`, dropout masks included.
    fn loss(&self, model: &Self::Model, draw: u64, device: &Device) -> Tensor<1>;

    /// Validation loss and any further metrics (accuracy, ...) of the inference model.
    fn evaluate(&self, model: &Self::Model) -> (f64, BTreeMap<String, f64>);

    /// Tokens in one micro-batch, for tokens/s.
    fn tokens_per_draw(&self) -> usize;

    /// Parameters training must leave exactly as they are.
    fn frozen(&self, model: &Self::Model) -> HashSet<ParamId> {
        let _ = model;
        HashSet::new()
    }
}

/// How a run ended: the inference model, every evaluation, and the stop that ended it early.
pub struct StepRun<M> {
    /// With early stopping, the best evaluation's weights.
    pub model: M,
    pub evaluations: Vec<Evaluation>,
    pub stopped: Option<Stop>,
    /// The step whose weights `model` holds, when early stopping chose them.
    pub best_step: Option<u64>,
    /// Early stopping ended the run before `max_steps`.
    pub stopped_early: bool,
}

/// The best evaluation so far under early stopping, and whether patience has run out: a pure
/// function of the evaluations, so a checkpoint needs only the best weights.
pub fn early_stopping_state(
    es: &EarlyStopping,
    evaluations: &[Evaluation],
) -> (Option<usize>, bool) {
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
pub fn train_steps<O: Objective>(
    hp: &LmHyperparameters,
    objective: &O,
    resume: Option<&LmCheckpoint>,
    control: &Control,
    observer: &mut dyn LmObserver,
) -> Result<StepRun<O::Model>, TrainError> {
    let device = if hp.gradient_checkpointing {
        Device::flex().autodiff().gradient_checkpointing()
    } else {
        Device::flex().autodiff()
    };
    let mut model = {
        let _guard = crate::neural::init_lock();
        device.seed(hp.seed);
        let model = objective.init(&device)?;
        // Parameters initialise lazily: reading them here makes their draws happen under the
        // lock, right after seeding, not interleaved with another job's.
        weights(&model)?;
        model
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
    let frozen = objective.frozen(&model);
    let (mut loss_sum, mut losses, mut window_tokens) = (0.0, 0u64, 0usize);
    let mut window_start = Instant::now();
    let mut stopped_early = false;
    for step in first_step..hp.max_steps {
        if let Some(stop) = control.requested() {
            if stop == Stop::Pause {
                let checkpoint = snapshot(step, &evaluations, &model, &optimizer, &best_model)?;
                observer.checkpoint(&checkpoint)?;
            }
            return finish(
                model.valid(),
                evaluations,
                best_model,
                Some(stop),
                false,
                hp,
            );
        }
        let (mut grads, loss) = step_gradients(objective, &model, hp, step, &device);
        for id in &frozen {
            drop_gradient(&model, &mut grads, *id);
        }
        loss_sum += loss;
        losses += 1;
        window_tokens += objective.tokens_per_draw() * hp.grad_accumulation;
        let lr = hp.learning_rate(step);
        let done = step + 1;
        let evaluating = done % hp.eval_interval == 0 || done == hp.max_steps;
        let grad_norm = if evaluating {
            global_norm(&model, &grads)
        } else {
            0.0
        };
        if hp.weight_decay > 0.0 {
            model = decay_matrices(model, (1.0 - lr * hp.weight_decay) as f32, &frozen);
        }
        model = optimizer.step(lr, model, grads);
        observer.step(done);
        if !evaluating {
            continue;
        }
        let seconds = window_start.elapsed().as_secs_f64();
        let (val_loss, values) = objective.evaluate(&model.valid());
        let evaluation = Evaluation {
            seconds,
            step: done,
            train_loss: loss_sum / losses as f64,
            val_loss,
            learning_rate: lr,
            tokens_per_second: window_tokens as f64 / seconds.max(1e-9),
            grad_norm,
            values,
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
    finish(
        model.valid(),
        evaluations,
        best_model,
        None,
        stopped_early,
        hp,
    )
}

/// The run's result from its inference model: under early stopping, the best evaluation's
/// weights.
pub(super) fn finish<M: Module>(
    model: M,
    evaluations: Vec<Evaluation>,
    best_model: Option<Vec<u8>>,
    stopped: Option<Stop>,
    stopped_early: bool,
    hp: &LmHyperparameters,
) -> Result<StepRun<M>, TrainError> {
    let best = hp
        .early_stopping
        .as_ref()
        .and_then(|es| early_stopping_state(es, &evaluations).0);
    let (model, best_step) = match (best, best_model) {
        (Some(index), Some(bytes)) if stopped.is_none() => {
            (load_weights(model, &bytes)?, Some(evaluations[index].step))
        }
        _ => (model, None),
    };
    Ok(StepRun {
        model,
        evaluations,
        stopped,
        best_step,
        stopped_early,
    })
}

/// One step's gradients and mean loss over `grad_accumulation` micro-batches: micro-batch `m`
/// of step `s` is draw `s * grad_accumulation + m`.
fn step_gradients<O: Objective>(
    objective: &O,
    model: &O::Model,
    hp: &LmHyperparameters,
    step: u64,
    device: &Device,
) -> (GradientsParams, f64) {
    let micro_batches = hp.grad_accumulation.max(1);
    let mut accumulator = GradientsAccumulator::new();
    let mut loss_sum = 0.0;
    for micro in 0..micro_batches as u64 {
        let mut loss = objective.loss(model, step * micro_batches as u64 + micro, device);
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

/// Removes a frozen parameter's gradient, whatever its rank, so the optimiser skips it.
fn drop_gradient<M: Module>(model: &M, grads: &mut GradientsParams, id: ParamId) {
    struct Remove<'a> {
        grads: &'a mut GradientsParams,
        id: ParamId,
    }
    impl ModuleVisitor for Remove<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if param.id == self.id {
                self.grads.remove::<D>(self.id);
            }
        }
    }
    model.visit(&mut Remove { grads, id });
}

/// Decoupled weight decay (`w *= 1 - lr * weight_decay`) on matrices and embeddings only, as
/// nanoGPT and most LM recipes do: decaying norms' gains and biases only hurts.
fn decay_matrices<M: Module>(model: M, factor: f32, frozen: &HashSet<ParamId>) -> M {
    struct Decay<'a>(f32, &'a HashSet<ParamId>);
    impl ModuleMapper for Decay<'_> {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            if D < 2 || self.1.contains(&param.id) {
                return param;
            }
            let factor = self.0;
            // The product is a graph node; `detach` makes it a leaf and `require_grad` keeps
            // it trainable.
            param.map(|t| t.mul_scalar(factor).detach().require_grad())
        }
    }
    model.map(&mut Decay(factor, frozen))
}

/// The global L2 norm of the gradients.
fn global_norm<M: Module>(model: &M, grads: &GradientsParams) -> f64 {
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

fn snapshot<M: Module>(
    step: u64,
    evaluations: &[Evaluation],
    model: &M,
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
pub fn weights<M: Module>(model: &M) -> Result<Vec<u8>, TrainError> {
    let bytes = model
        .clone()
        .into_record()
        .into_bytes()
        .map_err(|e| TrainError::Checkpoint(e.to_string()))?;
    Ok(bytes.to_vec())
}

/// Loads weights written by [`weights`] into a model of the same shape.
pub fn load_weights<M: Module>(model: M, bytes: &[u8]) -> Result<M, TrainError> {
    let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(bytes.to_vec()))
        .map_err(|e| TrainError::Resume(format!("model record: {e}")))?;
    model
        .try_load_record(record)
        .map_err(|e| TrainError::Resume(format!("model record: {e}")))
}
