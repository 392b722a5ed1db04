//! The Trainyard training engine: trains a model spec on a dataset on the CPU, reports progress
//! as [`TrainingEvent`]s, writes [`Checkpoint`]s through an [`Observer`], obeys a [`Control`]
//! handle between batches, and resumes from a checkpoint exactly.
//!
//! The engine knows nothing of HTTP, SQL or files: callers decide where events and checkpoints go.

pub mod anomaly;
mod augment;
mod batch_probe;
pub mod bf16;
mod buffers;
mod checkpoint;
mod container;
pub mod family;
mod forest;
mod forest_training;
pub mod language;
mod learner;
mod memory;
mod metrics;
mod model;
mod native_net;
mod network;
mod neural;
pub mod resident;
pub mod sae;
mod simd;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use trainyard_core::{Algorithm, EpochMetrics, Hyperparameters, TrainingEvent};
use trainyard_data::{Dataset, DatasetInfo, Scaler};

pub use checkpoint::{Checkpoint, LoopState};
pub use container::ContainerError;
pub use memory::{MemoryEstimate, estimate as estimate_memory};
pub use model::{ModelHeader, PredictError, Prediction, Predictor, TrainedModel};
pub use network::Architecture;
pub use neural::learning_rate;

/// What to train.
#[derive(Clone)]
pub struct TrainRequest {
    pub dataset: Arc<Dataset>,
    pub algorithm: Algorithm,
    pub hyperparameters: Hyperparameters,
    /// Continue from this checkpoint instead of starting fresh.
    pub resume: Option<Checkpoint>,
    /// Halve the batch this many times in all (see `family::Limits::batch_halvings`).
    pub batch_halvings: u32,
}

/// How a training call ended, when it did not fail.
#[derive(Debug)]
pub enum Outcome {
    Completed(TrainedModel),
    Cancelled,
    /// Stopped at a batch boundary after writing this checkpoint.
    Paused(Checkpoint),
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TrainError {
    #[error(
        "loss became {value} at epoch {epoch}, batch {batch} after {rollbacks} rollbacks to the last checkpoint with the learning rate halved each time; lower learning_rate or check the data for extreme values"
    )]
    NonFinite {
        epoch: u32,
        batch: u32,
        value: f64,
        rollbacks: u32,
    },
    #[error(
        "the job needs about {needed_mb:.0} MB even at batch size 1, over the memory budget of {budget_mb} MB; use a smaller model or raise the budget (memory_budget_mb, or the server's --job-memory-mb)"
    )]
    OutOfMemory { needed_mb: f64, budget_mb: u32 },
    #[error("writing a checkpoint failed: {0}")]
    Checkpoint(String),
    #[error("cannot resume: {0}")]
    Resume(String),
    #[error("fitting failed: {0}")]
    Fit(String),
}

/// Requests a running training checks between batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    Cancel,
    /// Write a checkpoint, then stop.
    Pause,
}

/// A handle shared between the trainer and whoever may stop it.
#[derive(Debug, Default)]
pub struct Control {
    stop: AtomicU8,
}

impl Control {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    pub fn cancel(&self) {
        self.stop.store(1, Ordering::SeqCst);
    }

    /// Has no effect once a cancel was requested: cancelling wins.
    pub fn pause(&self) {
        let _ = self
            .stop
            .compare_exchange(0, 2, Ordering::SeqCst, Ordering::SeqCst);
    }

    pub fn requested(&self) -> Option<Stop> {
        match self.stop.load(Ordering::SeqCst) {
            1 => Some(Stop::Cancel),
            2 => Some(Stop::Pause),
            _ => None,
        }
    }
}

/// Receives what training produces. `checkpoint` persists one and returns its size in bytes;
/// an error there fails the run.
pub trait Observer: Send {
    fn event(&mut self, event: TrainingEvent);
    fn checkpoint(&mut self, checkpoint: &Checkpoint) -> Result<u64, String>;
}

/// Collects events in memory and keeps checkpoints; for tests and scripts.
#[derive(Default)]
pub struct Recorder {
    pub events: Vec<TrainingEvent>,
    pub checkpoints: Vec<Checkpoint>,
}

impl Recorder {
    pub fn epochs(&self) -> Vec<EpochMetrics> {
        self.events
            .iter()
            .filter_map(|e| match e {
                TrainingEvent::Epoch(m) => Some(m.clone()),
                _ => None,
            })
            .collect()
    }
}

impl Observer for Recorder {
    fn event(&mut self, event: TrainingEvent) {
        self.events.push(event);
    }

    fn checkpoint(&mut self, checkpoint: &Checkpoint) -> Result<u64, String> {
        let size = checkpoint.to_bytes().len() as u64;
        self.checkpoints.push(checkpoint.clone());
        Ok(size)
    }
}

/// Runs `work` on a worker of the global thread pool (in place when already on one). A
/// training loop run from outside the pool hands each parallel operation of a step to the pool
/// and sleeps until it is done: a wake-up per operation, a quarter of a small network's step.
/// From a worker the operations are split among the workers directly.
pub fn on_pool_worker<R: Send>(work: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| work())
}

/// Trains `request` to completion, cancellation or pause. Emits `Finished` on success and
/// `Failed` on error before returning.
pub fn train(
    request: TrainRequest,
    control: &Control,
    observer: &mut dyn Observer,
) -> Result<Outcome, TrainError> {
    let result = if request.algorithm.is_gradient_based() {
        match neural::one_thread_pool(&request) {
            Some(pool) => pool.install(|| neural::train_network(request, control, observer)),
            None => neural::train_network(request, control, observer),
        }
    } else {
        forest_training::train_forest(request, control, observer)
    };
    match &result {
        Ok(Outcome::Completed(model)) => observer.event(TrainingEvent::Finished {
            metrics: model.header.metrics.clone(),
        }),
        Err(e) => observer.event(TrainingEvent::Failed {
            reason: e.to_string(),
        }),
        Ok(_) => {}
    }
    result
}

pub(crate) fn final_metrics_header(
    info: &DatasetInfo,
    algorithm: Algorithm,
    hp: &Hyperparameters,
    scaler: Scaler,
) -> ModelHeader {
    ModelHeader {
        algorithm,
        architecture: None,
        hyperparameters: hp.clone(),
        dataset: info.name.clone(),
        task: info.task,
        feature_names: info.feature_names.clone(),
        target_name: info.target_name.clone(),
        classes: info.classes.clone(),
        scaler,
        metrics: BTreeMap::new(),
    }
}
