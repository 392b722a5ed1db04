//! The Trainyard training engine: trains a model spec on a dataset on the CPU, reports progress
//! as [`TrainingEvent`]s, writes [`Checkpoint`]s through an [`Observer`], obeys a [`Control`]
//! handle between batches, and resumes from a checkpoint exactly.
//!
//! The engine knows nothing of HTTP, SQL or files: callers decide where events and checkpoints go.

mod checkpoint;
mod container;
mod forest;
mod metrics;
mod model;
mod network;
mod neural;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Instant;

use trainyard_core::{Algorithm, EpochMetrics, Hyperparameters, Task, TrainingEvent};
use trainyard_data::{Dataset, DatasetInfo, Scaler, prepare};

pub use checkpoint::{Checkpoint, LoopState};
pub use container::ContainerError;
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
        "the model needs about {needed_mb:.0} MB even at batch size 1, over the memory budget of {budget_mb} MB; raise memory_budget_mb or use a smaller model"
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
pub trait Observer {
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

/// Trains `request` to completion, cancellation or pause. Emits `Finished` on success and
/// `Failed` on error before returning.
pub fn train(
    request: TrainRequest,
    control: &Control,
    observer: &mut dyn Observer,
) -> Result<Outcome, TrainError> {
    let result = if request.algorithm.is_gradient_based() {
        neural::train_network(request, control, observer)
    } else {
        train_forest(request, observer)
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

fn train_forest(req: TrainRequest, observer: &mut dyn Observer) -> Result<Outcome, TrainError> {
    let hp = &req.hyperparameters;
    let info = &req.dataset.info;
    let prepared = prepare(&req.dataset, hp.validation_split, hp.seed);
    observer.event(TrainingEvent::Started {
        total_epochs: 1,
        start_epoch: 0,
        train_samples: prepared.train.len(),
        validation_samples: prepared.validation.len(),
    });
    let started = Instant::now();
    let forest = forest::Forest::fit(&prepared.train, info.task, info.n_classes(), hp)
        .map_err(TrainError::Fit)?;
    let d = prepared.train.n_features;
    let score = |table: &trainyard_data::Table| {
        metrics::task_metrics(
            info.task,
            &forest.predict_outputs(&table.x, d),
            &table.y,
            &prepared.scaler,
        )
    };
    let mut metrics = score(&prepared.validation);
    let train_metrics = score(&prepared.train);
    let key = if info.task == Task::Classification {
        "accuracy"
    } else {
        "r2"
    };
    metrics.insert(format!("train_{key}"), train_metrics[key]);
    if let Some(test) = &prepared.test {
        metrics.extend(
            score(test)
                .into_iter()
                .map(|(k, v)| (format!("test_{k}"), v)),
        );
    }
    metrics.insert("fit_seconds".into(), started.elapsed().as_secs_f64());
    let header = ModelHeader {
        metrics,
        ..final_metrics_header(info, req.algorithm, hp, prepared.scaler)
    };
    Ok(Outcome::Completed(TrainedModel {
        header,
        weights: forest.to_bytes(),
    }))
}
