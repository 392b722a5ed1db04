//! What the training loop (`neural`) asks of a network and its optimiser: a step on a batch,
//! outputs without gradients, and the weights and optimiser state as bytes for checkpoints.
//! Two implementations: burn's autodiff (`BurnLearner`, every architecture) and the
//! hand-written dense stack (`native_net::DenseLearner`, perceptrons and linear models).
//! Weights are burn records on both, so model files and checkpoints read the same.

use burn::module::Module;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::store::ModuleRecord;
use burn::tensor::{Bytes, Device, Tensor, TensorData};
use trainyard_core::{Hyperparameters, Task};
use trainyard_data::Table;

use crate::TrainError;
use crate::augment::Augment;
use crate::network::{Architecture, DropoutMasks, Network};
use crate::neural::{EVAL_BATCH, build_optimizer, loss};

pub(crate) trait Learner {
    /// The rows of `table` as a batch for `step`, and their targets.
    fn batch(
        &mut self,
        table: &Table,
        rows: &[usize],
        augment: Option<(&Augment, u32)>,
    ) -> (Vec<f32>, Vec<f32>) {
        let mut x = vec![0.0; rows.len() * table.n_features];
        let y = gather_into(table, rows, augment, &mut x);
        (x, y)
    }

    /// One optimiser step on a batch (`x` row-major, one row per target) with dropout masks
    /// drawn from `masks`; returns the batch's mean loss. A non-finite loss changes nothing.
    fn step(&mut self, x: Vec<f32>, y: &[f32], learning_rate: f64, masks: &mut DropoutMasks)
    -> f64;

    /// Every row's outputs (logits or the standardised value), without dropout.
    fn outputs(&self, table: &Table) -> Vec<f32>;

    /// The weights as a burn record: what model files and checkpoints hold.
    fn weights(&self) -> Result<Vec<u8>, TrainError>;

    fn load_weights(&mut self, record: &[u8]) -> Result<(), TrainError>;

    fn optimizer_state(&self) -> Result<Vec<u8>, TrainError>;

    fn load_optimizer_state(&mut self, bytes: &[u8]) -> Result<(), TrainError>;

    /// The same weights with a fresh optimiser (batch-size probes train on it).
    fn fresh_copy(&self) -> Box<dyn Learner>;
}

/// Every row's outputs, `chunk_rows` rows at a time through `forward(x, rows)`. A table's
/// rows are already one row-major matrix, so each chunk is a slice of it, not a copy.
pub(crate) fn outputs_by_chunk(
    table: &Table,
    chunk_rows: usize,
    mut forward: impl FnMut(&[f32], usize) -> Vec<f32>,
) -> Vec<f32> {
    let d = table.n_features.max(1);
    table
        .x
        .chunks(chunk_rows * d)
        .flat_map(|x| forward(x, x.len() / d))
        .collect()
}

/// Copies the rows into `x` (row-major, every entry written) and returns their targets;
/// training rows are augmented when `augment` says so.
pub(crate) fn gather_into(
    table: &Table,
    rows: &[usize],
    augment: Option<(&Augment, u32)>,
    x: &mut [f32],
) -> Vec<f32> {
    let d = table.n_features;
    for (&r, out) in rows.iter().zip(x.chunks_mut(d)) {
        out.copy_from_slice(table.row(r));
        if let Some((augment, epoch)) = augment {
            augment.apply(out, epoch, r);
        }
    }
    rows.iter().map(|&r| table.y[r]).collect()
}

pub(crate) fn record_bytes(network: &Network) -> Result<Vec<u8>, TrainError> {
    let bytes = network
        .clone()
        .into_record()
        .into_bytes()
        .map_err(|e| TrainError::Checkpoint(e.to_string()))?;
    Ok(bytes.to_vec())
}

pub(crate) fn load_record(network: Network, bytes: &[u8]) -> Result<Network, TrainError> {
    let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(bytes.to_vec()))
        .map_err(|e| TrainError::Resume(format!("model record: {e}")))?;
    network
        .try_load_record(record)
        .map_err(|e| TrainError::Resume(format!("model record: {e}")))
}

/// Every architecture, on burn's autodiff backend.
pub(crate) struct BurnLearner {
    /// Taken out for each optimiser step (which consumes the module) and put back.
    network: Option<Network>,
    optimizer: ModuleOptimizer,
    hp: Hyperparameters,
    arch: Architecture,
    task: Task,
    device: Device,
}

impl BurnLearner {
    pub fn new(network: Network, hp: &Hyperparameters, arch: &Architecture, task: Task) -> Self {
        BurnLearner {
            network: Some(network),
            optimizer: build_optimizer(hp),
            hp: hp.clone(),
            arch: arch.clone(),
            task,
            device: Device::flex().autodiff(),
        }
    }

    fn network(&self) -> &Network {
        self.network
            .as_ref()
            .expect("the network is back after each step")
    }
}

impl Learner for BurnLearner {
    fn step(
        &mut self,
        x: Vec<f32>,
        y: &[f32],
        learning_rate: f64,
        masks: &mut DropoutMasks,
    ) -> f64 {
        let rows = y.len();
        let x = Tensor::from_data(TensorData::new(x, [rows, self.arch.n_inputs]), &self.device);
        let network = self
            .network
            .take()
            .expect("the network is back after each step");
        let out = network.forward(&self.arch, x, Some(masks));
        let batch_loss = loss(self.task, out, y.to_vec(), &self.device);
        let value = batch_loss.clone().into_scalar::<f32>() as f64;
        if !value.is_finite() {
            self.network = Some(network);
            return value;
        }
        let grads = GradientsParams::from_grads(batch_loss.backward(), &network);
        self.network = Some(self.optimizer.step(learning_rate, network, grads));
        value
    }

    fn outputs(&self, table: &Table) -> Vec<f32> {
        let device = Device::flex();
        let inference = self.network().valid();
        outputs_by_chunk(table, EVAL_BATCH, |x, rows| {
            let x = TensorData::new(x.to_vec(), [rows, table.n_features]);
            let out = inference.forward(&self.arch, Tensor::from_data(x, &device), None);
            out.into_data().try_to_vec::<f32>().expect("f32 outputs")
        })
    }

    fn weights(&self) -> Result<Vec<u8>, TrainError> {
        record_bytes(self.network())
    }

    fn load_weights(&mut self, record: &[u8]) -> Result<(), TrainError> {
        let network = self
            .network
            .take()
            .expect("the network is back after each step");
        self.network = Some(load_record(network, record)?);
        Ok(())
    }

    fn optimizer_state(&self) -> Result<Vec<u8>, TrainError> {
        let bytes = self
            .optimizer
            .into_bytes()
            .map_err(|e| TrainError::Checkpoint(e.to_string()))?;
        Ok(bytes.to_vec())
    }

    fn load_optimizer_state(&mut self, bytes: &[u8]) -> Result<(), TrainError> {
        self.optimizer = build_optimizer(&self.hp)
            .from_bytes(Bytes::from_bytes_vec(bytes.to_vec()))
            .map_err(|e| TrainError::Resume(format!("optimizer record: {e}")))?;
        Ok(())
    }

    fn fresh_copy(&self) -> Box<dyn Learner> {
        Box::new(BurnLearner::new(
            self.network().clone(),
            &self.hp,
            &self.arch,
            self.task,
        ))
    }
}
