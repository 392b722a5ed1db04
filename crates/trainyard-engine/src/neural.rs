//! The training loop for gradient-trained networks: seeded batching, optimiser steps, per-epoch
//! evaluation, early stopping, checkpoints, and exact resume from a checkpoint.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use burn::nn::loss::CrossEntropyLoss;
use burn::optim::{
    AdamConfig, AdamWConfig, ModuleOptimizer, SgdConfig, decay::WeightDecayConfig,
    momentum::MomentumConfig,
};
use burn::tensor::{Device, Int, Tensor, TensorData};
use trainyard_core::hyperparameters::{LrSchedule, OptimizerKind, Precision};
use trainyard_core::{Algorithm, EpochMetrics, Hyperparameters, Task, TrainingEvent};
use trainyard_data::{DatasetInfo, Prepared, SeededRng, Table, prepare};

use crate::augment::Augment;
use crate::batch_probe::{self, ProbeSetup};
use crate::checkpoint::{Checkpoint, LoopState};
use crate::learner::{BurnLearner, Learner};
use crate::memory::MemoryEstimate;
use crate::metrics::task_metrics;
use crate::model::{ModelHeader, TrainedModel};
use crate::native_net::DenseLearner;
use crate::network::{Architecture, DropoutMasks, Network};
use crate::{Control, Observer, Outcome, Stop, TrainError, TrainRequest, final_metrics_header};

/// How often training reports progress between epochs (or evaluations).
pub(crate) const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);
pub(crate) const EVAL_BATCH: usize = 2048;

/// The backend's random generator is process-global; initialising weights under this lock with
/// a fixed seed keeps concurrent runs from drawing from each other's stream.
static INIT_LOCK: Mutex<()> = Mutex::new(());

/// Held while a module's weights are drawn from the backend's seeded generator.
pub(crate) fn init_lock() -> std::sync::MutexGuard<'static, ()> {
    INIT_LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn init_network(arch: &Architecture, device: &Device, seed: u64) -> Network {
    let _guard = init_lock();
    device.seed(seed);
    Network::new(arch, device)
}

pub(crate) fn build_optimizer(hp: &Hyperparameters) -> ModuleOptimizer {
    let decay = (hp.weight_decay > 0.0).then(|| WeightDecayConfig::new(hp.weight_decay as f32));
    match hp.optimizer {
        OptimizerKind::Sgd => SgdConfig::new()
            .with_momentum((hp.momentum > 0.0).then(|| {
                MomentumConfig::new()
                    .with_momentum(hp.momentum)
                    .with_dampening(0.0)
            }))
            .with_weight_decay(decay)
            .init(),
        OptimizerKind::Adam => AdamConfig::new().with_weight_decay(decay).init(),
        OptimizerKind::Adamw => AdamWConfig::new()
            .with_weight_decay(hp.weight_decay as f32)
            .init(),
    }
}

/// Learning rate of a 0-based epoch; a pure function, so it needs no saved state.
pub fn learning_rate(hp: &Hyperparameters, epoch: u32) -> f64 {
    match hp.lr_schedule {
        LrSchedule::Constant => hp.learning_rate,
        LrSchedule::Cosine => {
            let t = epoch as f64 / hp.epochs.max(1) as f64;
            hp.learning_rate * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
        }
        LrSchedule::Step => hp.learning_rate * hp.lr_gamma.powi((epoch / hp.lr_step_size) as i32),
    }
}

/// The order rows are visited in during a 0-based epoch: derived from the seed and the epoch,
/// so the data-order cursor is just (epoch, batch).
fn epoch_order(n: usize, seed: u64, epoch: u32) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    SeededRng::derive(seed, 10_000 + epoch as u64).shuffle(&mut order);
    order
}

pub(crate) fn loss(task: Task, out: Tensor<2>, y: Vec<f32>, device: &Device) -> Tensor<1> {
    let n = y.len();
    match task {
        Task::Classification => {
            let targets: Vec<i64> = y.into_iter().map(|v| v as i64).collect();
            let targets = Tensor::<1, Int>::from_data(TensorData::new(targets, [n]), device);
            CrossEntropyLoss::new(None, device).forward(out, targets)
        }
        // `Algorithm::check_fits` keeps unlabeled datasets away from gradient training.
        Task::Regression | Task::Unlabeled | Task::Text => {
            let targets = Tensor::<2>::from_data(TensorData::new(y, [n, 1]), device);
            (out - targets).powi_scalar(2).mean()
        }
    }
}

/// Mean loss and task metrics of the learner's outputs over a table.
fn evaluate(
    learner: &dyn Learner,
    table: &Table,
    task: Task,
    prepared: &Prepared,
) -> (f64, std::collections::BTreeMap<String, f64>) {
    let outputs = learner.outputs(table);
    let (loss, _) = crate::native_net::loss(task, &outputs, &table.y, false);
    let metrics = task_metrics(task, &outputs, &table.y, &prepared.scaler);
    (loss, metrics)
}

/// The learner a run trains on: the hand-written dense stack where it applies, else burn.
/// `native`: `native_net::handles` this run.
fn learner_for(req: &TrainRequest, arch: &Architecture, native: bool) -> Box<dyn Learner> {
    let hp = &req.hyperparameters;
    let device = Device::flex().autodiff();
    let network = init_network(arch, &device, hp.seed);
    let task = req.dataset.info.task;
    if native {
        Box::new(DenseLearner::new(network, &device, hp, arch, task))
    } else {
        Box::new(BurnLearner::new(network, hp, arch, task))
    }
}

pub(crate) fn train_network(
    req: TrainRequest,
    control: &Control,
    observer: &mut dyn Observer,
) -> Result<Outcome, TrainError> {
    let hp = &req.hyperparameters;
    let info = &req.dataset.info;
    let task = info.task;
    let prepared = prepare(&req.dataset, hp.validation_split, hp.seed);
    let arch = Architecture::new(req.algorithm, hp, info);
    let augment = Augment::new(hp, info.image_shape);
    let resume_optimizer = req.resume.as_ref().map(|c| c.optimizer.as_slice());
    let native = crate::native_net::handles(&arch, resume_optimizer);
    let mut learner = learner_for(&req, &arch, native);
    let mut state = LoopState::start(
        req.algorithm,
        hp.clone(),
        arch.clone(),
        prepared.scaler.clone(),
    );
    let mut best_model: Option<Vec<u8>> = None;
    if let Some(ckpt) = req.resume {
        check_resumable(&ckpt.state, &state)?;
        learner.load_weights(&ckpt.model)?;
        learner.load_optimizer_state(&ckpt.optimizer)?;
        state = ckpt.state;
        best_model = ckpt.best_model;
    }

    observer.event(TrainingEvent::Started {
        total_epochs: hp.epochs,
        start_epoch: state.epoch,
        train_samples: prepared.train.len(),
        validation_samples: prepared.validation.len(),
    });
    if hp.precision == Precision::Bf16 {
        observer.event(TrainingEvent::Note {
            message: crate::bf16::describe(native),
        });
    }
    let n_train = prepared.train.len();
    let batch = match state.batch_size {
        0 => {
            let setup = ProbeSetup {
                learner: learner.as_ref(),
                hp,
                train: &prepared.train,
            };
            choose_batch_size(req.algorithm, &setup, info, observer)?
        }
        recorded => recorded as usize,
    };
    let batch = halve_after_kills(batch, req.batch_halvings, &mut state, observer);
    state.batch_size = batch as u32;
    let n_batches = n_train.div_ceil(batch) as u32;
    let mut last_progress = Instant::now();
    // Where a non-finite loss rolls back to: the newest checkpoint, or the start.
    let mut last_good = snapshot(&state, learner.as_ref(), &best_model)?;
    let checkpoint_interval =
        (hp.checkpoint_seconds > 0).then(|| Duration::from_secs(hp.checkpoint_seconds as u64));
    let mut last_checkpoint = Instant::now();

    'epochs: while state.epoch < hp.epochs {
        let epoch = state.epoch;
        let lr = learning_rate(hp, epoch) * state.lr_scale;
        let order = epoch_order(n_train, hp.seed, epoch);
        let started = Instant::now();
        let mut samples = 0usize;
        for b in state.next_batch..n_batches {
            if let Some(stop) = control.requested() {
                return match stop {
                    Stop::Cancel => Ok(Outcome::Cancelled),
                    Stop::Pause => {
                        let ckpt = snapshot(&state, learner.as_ref(), &best_model)?;
                        write_checkpoint(observer, &ckpt)?;
                        Ok(Outcome::Paused(ckpt))
                    }
                };
            }
            let rows = &order[b as usize * batch..((b as usize + 1) * batch).min(n_train)];
            let augmented = augment.as_ref().map(|a| (a, epoch));
            let (x, y) = learner.batch(&prepared.train, rows, augmented);
            let mut masks = DropoutMasks {
                rng: SeededRng::derive(hp.seed, 1 << 40 | state.global_step),
            };
            let value = learner.step(x, &y, lr, &mut masks);
            if !value.is_finite() {
                if state.nan_rollbacks >= hp.nan_rollbacks {
                    return Err(TrainError::NonFinite {
                        epoch: epoch + 1,
                        batch: b + 1,
                        value,
                        rollbacks: state.nan_rollbacks,
                    });
                }
                let (rollbacks, scale) = (state.nan_rollbacks + 1, state.lr_scale * 0.5);
                let good = last_good.clone();
                learner.load_weights(&good.model)?;
                learner.load_optimizer_state(&good.optimizer)?;
                state = good.state;
                best_model = good.best_model;
                state.nan_rollbacks = rollbacks;
                state.lr_scale = scale;
                observer.event(TrainingEvent::RolledBack {
                    epoch: epoch + 1,
                    batch: b + 1,
                    resumed_at_epoch: state.epoch,
                    learning_rate_scale: scale,
                });
                continue 'epochs;
            }
            state.epoch_loss_sum += value;
            state.epoch_batches += 1;
            state.global_step += 1;
            state.next_batch = b + 1;
            samples += rows.len();
            if checkpoint_interval.is_some_and(|every| last_checkpoint.elapsed() >= every)
                && b + 1 < n_batches
            {
                let ckpt = snapshot(&state, learner.as_ref(), &best_model)?;
                write_checkpoint(observer, &ckpt)?;
                last_good = ckpt;
                last_checkpoint = Instant::now();
            }
            if last_progress.elapsed() >= PROGRESS_INTERVAL {
                last_progress = Instant::now();
                observer.event(TrainingEvent::Progress {
                    epoch: epoch + 1,
                    batch: b + 1,
                    batches: n_batches,
                    fraction: (b + 1) as f64 / n_batches as f64,
                });
            }
        }
        let train_seconds = started.elapsed().as_secs_f64();
        let (val_loss, values) = evaluate(learner.as_ref(), &prepared.validation, task, &prepared);
        let metrics = EpochMetrics {
            epoch: epoch + 1,
            train_loss: state.epoch_loss_sum / state.epoch_batches.max(1) as f64,
            val_loss,
            learning_rate: lr,
            samples_per_second: samples as f64 / train_seconds.max(1e-9),
            epoch_seconds: started.elapsed().as_secs_f64(),
            values,
        };
        state.history.push(metrics.clone());
        if state.history.len() > HISTORY_KEPT {
            state.history.remove(0);
        }
        state.epoch += 1;
        state.next_batch = 0;
        state.epoch_loss_sum = 0.0;
        state.epoch_batches = 0;
        observer.event(TrainingEvent::Epoch(metrics.clone()));

        let mut stop_early = false;
        if let Some(es) = &hp.early_stopping {
            let value = metrics.monitored(&es.monitor).unwrap_or(metrics.val_loss);
            let improved = match state.best_value {
                None => true,
                Some(best) if es.maximize() => value > best + es.min_delta,
                Some(best) => value < best - es.min_delta,
            };
            if improved {
                state.best_value = Some(value);
                state.best_epoch = state.epoch;
                state.epochs_without_improvement = 0;
                best_model = Some(learner.weights()?);
            } else {
                state.epochs_without_improvement += 1;
                stop_early = state.epochs_without_improvement >= es.patience;
            }
        }
        let finished = stop_early || state.epoch == hp.epochs;
        if !finished && state.epoch.is_multiple_of(hp.checkpoint_every) {
            let ckpt = snapshot(&state, learner.as_ref(), &best_model)?;
            write_checkpoint(observer, &ckpt)?;
            last_good = ckpt;
            last_checkpoint = Instant::now();
        }
        if stop_early {
            observer.event(TrainingEvent::EarlyStopped {
                epoch: state.epoch,
                best_epoch: state.best_epoch,
            });
            break;
        }
    }

    if let Some(best) = &best_model {
        learner.load_weights(best)?;
    }
    let inference = learner.as_ref();
    let (val_loss, mut metrics) = evaluate(inference, &prepared.validation, task, &prepared);
    metrics.insert("val_loss".into(), val_loss);
    if let Some(last) = state.history.last() {
        metrics.insert("train_loss".into(), last.train_loss);
    }
    if let Some(test) = &prepared.test {
        let (test_loss, test_metrics) = evaluate(inference, test, task, &prepared);
        metrics.insert("test_loss".into(), test_loss);
        metrics.extend(
            test_metrics
                .into_iter()
                .map(|(k, v)| (format!("test_{k}"), v)),
        );
    }
    metrics.insert("epochs_trained".into(), state.epoch as f64);
    if hp.batch_size_auto {
        metrics.insert("batch_size".into(), batch as f64);
    }
    let header = ModelHeader {
        architecture: Some(arch),
        metrics,
        ..final_metrics_header(&req.dataset.info, req.algorithm, hp, prepared.scaler)
    };
    Ok(Outcome::Completed(TrainedModel {
        header,
        weights: inference.weights()?,
    }))
}

fn snapshot(
    state: &LoopState,
    learner: &dyn Learner,
    best: &Option<Vec<u8>>,
) -> Result<Checkpoint, TrainError> {
    Ok(Checkpoint {
        state: state.clone(),
        model: learner.weights()?,
        optimizer: learner.optimizer_state()?,
        best_model: best.clone(),
    })
}

/// Epochs of metric history a checkpoint carries (the newest): every checkpoint holds it, so an
/// unbounded one would make checkpoints of long runs grow without end. The full history is in
/// the store; the engine only needs the latest epoch.
pub const HISTORY_KEPT: usize = 1_000;

pub(crate) fn write_checkpoint(
    observer: &mut dyn Observer,
    ckpt: &Checkpoint,
) -> Result<(), TrainError> {
    let bytes = observer.checkpoint(ckpt).map_err(TrainError::Checkpoint)?;
    observer.event(TrainingEvent::CheckpointWritten {
        epoch: ckpt.state.epoch,
        step: ckpt.state.global_step,
        bytes,
    });
    Ok(())
}

/// Steps smaller than this many multiply-adds (forward) train faster on one thread: the
/// backend's per-operation split costs more than a second core gives back. Measured on 2
/// cores: the reference MLP at batch 128 (26M) 75k samples/s on one thread, 59k on two; at
/// batch 512 (104M) 119k on one, 131k on two.
const ONE_THREAD_BELOW_MACS: f64 = 64e6;

/// A one-thread pool for burn-path jobs that train faster on one thread than on two (small
/// dense steps; burn's convolutions, which gain nothing from a second thread: the default CNN
/// trains at 2,040 samples/s on one thread, 1,660 on two); None to use every thread, as the
/// hand-written path (`native_net`) always does. Only measured against two threads, so a
/// machine with more keeps using all of them.
pub(crate) fn one_thread_pool(req: &TrainRequest) -> Option<rayon::ThreadPool> {
    if rayon::current_num_threads() != 2 {
        return None;
    }
    let arch = Architecture::new(req.algorithm, &req.hyperparameters, &req.dataset.info);
    let resume_optimizer = req.resume.as_ref().map(|c| c.optimizer.as_slice());
    if crate::native_net::handles(&arch, resume_optimizer) {
        return None;
    }
    let step = arch.multiply_adds_per_sample() * req.hyperparameters.batch_size as f64;
    let convolutional = !arch.conv_channels.is_empty();
    if !convolutional && step >= ONE_THREAD_BELOW_MACS {
        return None;
    }
    rayon::ThreadPoolBuilder::new().num_threads(1).build().ok()
}

/// Halves the batch once for each time the job's worker was killed since the checkpoint's
/// batch was chosen; a mid-epoch position moves to the same sample at the new size.
fn halve_after_kills(
    batch: usize,
    halvings: u32,
    state: &mut LoopState,
    observer: &mut dyn Observer,
) -> usize {
    let new = halvings.saturating_sub(state.batch_halvings);
    let halved = (batch >> new.min(31)).max(1);
    state.batch_halvings = state.batch_halvings.max(halvings);
    if halved == batch {
        return batch;
    }
    state.next_batch = (state.next_batch as usize * batch / halved) as u32;
    observer.event(crate::family::halved_after_kills(halvings, batch, halved));
    halved
}

/// The batch size a fresh run trains with: probed for `"auto"`, else the requested one halved
/// until it fits the memory budget; never more than the training rows.
fn choose_batch_size(
    algorithm: Algorithm,
    setup: &ProbeSetup,
    info: &DatasetInfo,
    observer: &mut dyn Observer,
) -> Result<usize, TrainError> {
    let hp = setup.hp;
    let n_train = setup.train.len();
    let memory = crate::memory::estimate(algorithm, hp, info);
    if !hp.batch_size_auto {
        return Ok(fit_batch_size(&memory, hp, observer)?.min(n_train).max(1));
    }
    let tried = batch_probe::candidates(&memory, hp.memory_budget_mb as u64, n_train);
    let probed = batch_probe::probe(setup, &tried, |done, total| {
        observer.event(TrainingEvent::Preparing {
            stage: "probing batch sizes".into(),
            done: done as u64,
            total: total as u64,
        })
    });
    let chosen = batch_probe::fastest(&probed);
    observer.event(TrainingEvent::BatchSizeProbed {
        chosen,
        probed,
        budget_mb: hp.memory_budget_mb,
    });
    Ok(chosen as usize)
}

/// Halves the batch size until the memory estimate fits `memory_budget_mb` (0: no budget).
fn fit_batch_size(
    estimate: &MemoryEstimate,
    hp: &Hyperparameters,
    observer: &mut dyn Observer,
) -> Result<usize, TrainError> {
    let requested = hp.batch_size as usize;
    if hp.memory_budget_mb == 0 {
        return Ok(requested);
    }
    let Some(batch) = estimate.fitting_batch(requested, hp.memory_budget_mb as u64) else {
        return Err(TrainError::OutOfMemory {
            needed_mb: estimate.mb_at(1),
            budget_mb: hp.memory_budget_mb,
        });
    };
    if batch != requested {
        observer.event(TrainingEvent::BatchSizeReduced {
            from: requested as u32,
            to: batch as u32,
            estimated_mb: estimate.mb_at(requested),
            budget_mb: hp.memory_budget_mb,
        });
    }
    Ok(batch)
}

/// A checkpoint may only resume the run it came from: same algorithm, shape, preprocessing and
/// hyperparameters (apart from the epoch budget, which may grow).
pub(crate) fn check_resumable(saved: &LoopState, fresh: &LoopState) -> Result<(), TrainError> {
    let mismatch = |what: &str| {
        Err(TrainError::Resume(format!(
            "the checkpoint's {what} differs from this run's"
        )))
    };
    if saved.algorithm != fresh.algorithm {
        return mismatch("algorithm");
    }
    if saved.architecture != fresh.architecture {
        return mismatch("architecture");
    }
    if saved.scaler != fresh.scaler {
        return mismatch("data preprocessing (dataset, validation_split or seed)");
    }
    // The epoch budget may grow, and the memory budget is the server's, not the model's.
    let mut saved_hp = saved.hyperparameters.clone();
    saved_hp.epochs = fresh.hyperparameters.epochs;
    saved_hp.memory_budget_mb = fresh.hyperparameters.memory_budget_mb;
    if saved_hp != fresh.hyperparameters {
        return mismatch("hyperparameters");
    }
    Ok(())
}
