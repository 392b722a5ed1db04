//! Resume checkpoints: the model and optimiser as burnpack records plus the loop's own state
//! (epoch, data-order cursor, step, early-stopping bookkeeping, metric history), so a resumed run
//! continues exactly as if it had never stopped.

use serde::{Deserialize, Serialize};
use trainyard_core::{Algorithm, EpochMetrics, Hyperparameters};
use trainyard_data::Scaler;

use crate::container::{ContainerError, read_sections, write_sections};
use crate::network::Architecture;

const MAGIC: &[u8; 8] = b"TYCKPT01";

/// Where the training loop stood when the checkpoint was written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoopState {
    pub algorithm: Algorithm,
    pub hyperparameters: Hyperparameters,
    pub architecture: Architecture,
    pub scaler: Scaler,
    /// Epochs fully completed.
    pub epoch: u32,
    /// Next batch to run within epoch `epoch` (non-zero only for a mid-epoch pause).
    pub next_batch: u32,
    pub global_step: u64,
    /// Running train-loss sum and batch count of the interrupted epoch.
    pub epoch_loss_sum: f64,
    pub epoch_batches: u32,
    /// The newest epochs' metrics, at most `HISTORY_KEPT` of them.
    pub history: Vec<EpochMetrics>,
    pub best_value: Option<f64>,
    pub best_epoch: u32,
    pub epochs_without_improvement: u32,
    /// Learning-rate multiplier left by NaN rollbacks (1 when there were none).
    #[serde(default = "one")]
    pub lr_scale: f64,
    #[serde(default)]
    pub nan_rollbacks: u32,
    /// The batch size training settled on (after halving to fit, or probing for `"auto"`), so
    /// a resumed run keeps it; 0 in checkpoints written before it was recorded.
    #[serde(default)]
    pub batch_size: u32,
    /// Halvings already applied to `batch_size` after the worker was killed.
    #[serde(default)]
    pub batch_halvings: u32,
}

impl LoopState {
    /// Where a fresh run starts: nothing trained, nothing remembered.
    pub fn start(
        algorithm: Algorithm,
        hyperparameters: Hyperparameters,
        architecture: Architecture,
        scaler: Scaler,
    ) -> Self {
        LoopState {
            algorithm,
            hyperparameters,
            architecture,
            scaler,
            epoch: 0,
            next_batch: 0,
            global_step: 0,
            epoch_loss_sum: 0.0,
            epoch_batches: 0,
            history: vec![],
            best_value: None,
            best_epoch: 0,
            epochs_without_improvement: 0,
            lr_scale: 1.0,
            nan_rollbacks: 0,
            batch_size: 0,
            batch_halvings: 0,
        }
    }
}

fn one() -> f64 {
    1.0
}

/// A complete resume point.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    pub state: LoopState,
    /// Burnpack record of the model.
    pub model: Vec<u8>,
    /// Burnpack record of the optimiser state (keyed by parameter id, which the model record
    /// preserves).
    pub optimizer: Vec<u8>,
    /// Burnpack record of the best model so far, when early stopping tracks one.
    pub best_model: Option<Vec<u8>>,
}

impl Checkpoint {
    pub fn to_bytes(&self) -> Vec<u8> {
        let state = serde_json::to_vec(&self.state).expect("loop state serializes");
        let best = self.best_model.as_deref().unwrap_or_default();
        write_sections(MAGIC, &[&state, &self.model, &self.optimizer, best])
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ContainerError> {
        let sections = read_sections(MAGIC, "checkpoint", bytes)?;
        let [state, model, optimizer, best] = sections.as_slice() else {
            return Err(ContainerError::Truncated {
                kind: "checkpoint",
                detail: format!("{} sections, expected 4", sections.len()),
            });
        };
        let state = serde_json::from_slice(state).map_err(|e| ContainerError::Truncated {
            kind: "checkpoint",
            detail: format!("state: {e}"),
        })?;
        Ok(Checkpoint {
            state,
            model: model.to_vec(),
            optimizer: optimizer.to_vec(),
            best_model: (!best.is_empty()).then(|| best.to_vec()),
        })
    }

    /// Epochs completed plus the fraction of the current one, for display and ordering.
    pub fn position(&self) -> (u32, u32) {
        (self.state.epoch, self.state.next_batch)
    }
}
