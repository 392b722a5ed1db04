use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The metrics of one finished epoch. `values` holds the task's metrics: `accuracy` for
/// classification; `r2`, `mae`, `rmse` for regression (all on the validation split).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    pub epoch: u32,
    pub train_loss: f64,
    pub val_loss: f64,
    pub learning_rate: f64,
    pub samples_per_second: f64,
    pub epoch_seconds: f64,
    #[serde(flatten)]
    pub values: BTreeMap<String, f64>,
}

impl EpochMetrics {
    /// Looks up a metric by the name early stopping uses (`val_loss`, `val_accuracy`, ...).
    pub fn monitored(&self, name: &str) -> Option<f64> {
        match name {
            "val_loss" => Some(self.val_loss),
            "train_loss" => Some(self.train_loss),
            other => self
                .values
                .get(other.strip_prefix("val_").unwrap_or(other))
                .copied(),
        }
    }
}

/// One batch size tried by `batch_size: "auto"`, and the training speed it gave.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbedBatchSize {
    pub batch_size: u32,
    pub samples_per_second: f64,
}

/// What training reports while it runs, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TrainingEvent {
    Started {
        total_epochs: u32,
        start_epoch: u32,
        train_samples: usize,
        validation_samples: usize,
    },
    /// Progress inside an epoch, throttled by the engine.
    Progress {
        epoch: u32,
        batch: u32,
        batches: u32,
        fraction: f64,
    },
    Epoch(EpochMetrics),
    CheckpointWritten {
        epoch: u32,
        step: u64,
        bytes: u64,
    },
    EarlyStopped {
        epoch: u32,
        best_epoch: u32,
    },
    /// A non-finite loss rolled training back to the last good checkpoint.
    RolledBack {
        epoch: u32,
        batch: u32,
        resumed_at_epoch: u32,
        learning_rate_scale: f64,
    },
    /// The batch size was halved to fit the memory budget.
    BatchSizeReduced {
        from: u32,
        to: u32,
        estimated_mb: f64,
        budget_mb: u32,
    },
    /// `batch_size: "auto"` measured these batch sizes (each fits the memory budget) and
    /// trains with the fastest.
    BatchSizeProbed {
        chosen: u32,
        probed: Vec<ProbedBatchSize>,
        budget_mb: u32,
    },
    /// Work before the first step (extracting a language model's activations), with its
    /// progress; the run's stage shows `stage` until training starts.
    Preparing {
        stage: String,
        done: u64,
        total: u64,
    },
    /// Dead latents of an autoencoder were re-initialised.
    Resampled {
        step: u64,
        layer: usize,
        latents: usize,
    },
    /// Something the run's attempt should say about how it went (work taken from the cache).
    Note {
        message: String,
    },
    Finished {
        metrics: BTreeMap<String, f64>,
    },
    Failed {
        reason: String,
    },
}
