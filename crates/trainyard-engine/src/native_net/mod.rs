//! The tabular family's networks (linear models, perceptrons, CNNs) trained on hand-written
//! passes: one flat parameter vector, the products through gemm (or `bf16`), no autodiff graph.
//! The run is the burn path's: the same initial weights (drawn by burn), dropout masks, losses and optimiser
//! rules; only float rounding differs. Weights are written as burn records, so model files
//! and checkpoints read the same; the optimiser state is this module's own, marked, so a run
//! resumes on the path that wrote its checkpoint.

mod conv;
mod direct;
mod optim;
mod pass;

use burn::tensor::Device;
use trainyard_core::hyperparameters::Precision;
use trainyard_core::{Hyperparameters, Task};
use trainyard_data::Table;

use crate::TrainError;
use crate::augment::Augment;
use crate::buffers::Buffers;
use crate::learner::{Learner, gather_into, load_record, outputs_by_chunk, record_bytes};
use crate::network::{Architecture, DropoutMasks, Network};
use crate::neural::EVAL_BATCH;
use conv::{ConvSpan, conv_spans};
use optim::Optimizer;
pub(crate) use pass::loss;
use pass::{Span, Stack, spans};

/// Rows per evaluation pass through convolutions: their unfolded patches hold nine times a
/// block's input, so `EVAL_BATCH` rows of the default CNN would take 400 MB (measured: the
/// job's peak went 53% past its estimate).
const CONV_EVAL_BATCH: usize = 256;

/// Set to `burn` to train these networks on burn instead (for comparisons).
pub const PATH_VARIABLE: &str = "TRAINYARD_DENSE_PATH";

/// Whether a run trains here: a fresh run or a checkpoint this path wrote (convolutions
/// need their image's shape).
pub(crate) fn handles(arch: &Architecture, resume_optimizer: Option<&[u8]>) -> bool {
    let forced_burn = std::env::var(PATH_VARIABLE).is_ok_and(|v| v == "burn");
    (arch.conv_channels.is_empty() || arch.image_shape.is_some())
        && !forced_burn
        && resume_optimizer.is_none_or(optim::is_native_state)
}

pub(crate) struct DenseLearner {
    /// Holds the layer shapes; values are copied in to write a record.
    template: Network,
    /// The template's device.
    device: Device,
    arch: Architecture,
    task: Task,
    hp: Hyperparameters,
    convs: Vec<ConvSpan>,
    spans: Vec<Span>,
    params: Vec<f32>,
    optimizer: Optimizer,
    buffers: Buffers,
}

impl DenseLearner {
    /// Starts from `network`'s weights (burn's initialisation).
    pub fn new(
        network: Network,
        device: &Device,
        hp: &Hyperparameters,
        arch: &Architecture,
        task: Task,
    ) -> Self {
        let (convs, dense_start) = match arch.image_shape {
            Some(image) => conv_spans(image, &arch.conv_channels, hp.precision),
            None => (vec![], 0),
        };
        let features = convs.last().map_or(arch.n_inputs, |c| {
            let (height, width) = c.pooled();
            c.c_out * height * width
        });
        let sizes: Vec<usize> = std::iter::once(features)
            .chain(arch.hidden.iter().copied())
            .chain(std::iter::once(arch.n_outputs))
            .collect();
        let params = network.flat_values();
        let spans = spans(&sizes, dense_start);
        let last = spans.last().expect("at least the output layer");
        assert_eq!(params.len(), last.bias + last.d_out, "parameter layout");
        DenseLearner {
            optimizer: Optimizer::new(hp, params.len()),
            template: network,
            device: device.clone(),
            arch: arch.clone(),
            task,
            hp: hp.clone(),
            convs,
            spans,
            params,
            buffers: Buffers::default(),
        }
    }

    /// The network over `params`, its passes reusing `buffers`.
    fn stack<'a>(
        (convs, spans, params): (&'a [ConvSpan], &'a [Span], &'a [f32]),
        arch: &Architecture,
        precision: Precision,
        buffers: &'a mut Buffers,
    ) -> Stack<'a> {
        Stack {
            convs,
            image: arch.image_shape,
            spans,
            params,
            activation: arch.activation,
            precision,
            buffers,
        }
    }
}

impl Learner for DenseLearner {
    /// Into a buffer a step handed back (a fresh one would be faulted in every step).
    fn batch(
        &mut self,
        table: &Table,
        rows: &[usize],
        augment: Option<(&Augment, u32)>,
    ) -> (Vec<f32>, Vec<f32>) {
        let mut x = self.buffers.stale(rows.len() * table.n_features);
        let y = gather_into(table, rows, augment, &mut x);
        (x, y)
    }

    fn step(
        &mut self,
        x: Vec<f32>,
        y: &[f32],
        learning_rate: f64,
        masks: &mut DropoutMasks,
    ) -> f64 {
        let layers = (&self.convs[..], &self.spans[..], &self.params[..]);
        let mut stack = Self::stack(layers, &self.arch, self.hp.precision, &mut self.buffers);
        let tape = stack.forward(x, y.len(), Some((self.arch.dropout, &mut masks.rng)));
        let (value, g) = pass::loss(self.task, &tape.logits, y, true);
        // The backward runs either way, so the tape's buffers go back.
        let grads = stack.backward(tape, g);
        if value.is_finite() {
            self.optimizer.step(&mut self.params, &grads, learning_rate);
        }
        self.buffers.give(grads);
        value
    }

    fn outputs(&self, table: &Table) -> Vec<f32> {
        let mut buffers = Buffers::default();
        let layers = (&self.convs[..], &self.spans[..], &self.params[..]);
        let mut stack = Self::stack(layers, &self.arch, self.hp.precision, &mut buffers);
        let chunk_rows = if self.convs.is_empty() {
            EVAL_BATCH
        } else {
            CONV_EVAL_BATCH
        };
        outputs_by_chunk(table, chunk_rows, |x, rows| stack.outputs(x, rows))
    }

    fn weights(&self) -> Result<Vec<u8>, TrainError> {
        let network = self.template.clone();
        record_bytes(&network.with_flat_values(&self.params, &self.device))
    }

    fn load_weights(&mut self, record: &[u8]) -> Result<(), TrainError> {
        let params = load_record(self.template.clone(), record)?.flat_values();
        if params.len() != self.params.len() {
            return Err(TrainError::Resume(format!(
                "model record: {} parameters, this network has {}",
                params.len(),
                self.params.len()
            )));
        }
        self.params = params;
        Ok(())
    }

    fn optimizer_state(&self) -> Result<Vec<u8>, TrainError> {
        Ok(self.optimizer.to_bytes())
    }

    fn load_optimizer_state(&mut self, bytes: &[u8]) -> Result<(), TrainError> {
        self.optimizer
            .restore(bytes)
            .map_err(|e| TrainError::Resume(format!("optimizer state: {e}")))
    }

    fn fresh_copy(&self) -> Box<dyn Learner> {
        Box::new(DenseLearner {
            template: self.template.clone(),
            device: self.device.clone(),
            arch: self.arch.clone(),
            task: self.task,
            hp: self.hp.clone(),
            convs: self.convs.clone(),
            spans: self.spans.clone(),
            params: self.params.clone(),
            optimizer: Optimizer::new(&self.hp, self.params.len()),
            buffers: Buffers::default(),
        })
    }
}

#[cfg(test)]
mod tests;
