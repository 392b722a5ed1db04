//! What a training job needs in memory, so a server can refuse or shrink a job before it runs
//! instead of letting it exhaust the machine.

use trainyard_core::{Algorithm, Hyperparameters};
use trainyard_data::DatasetInfo;

use crate::network::Architecture;

const F32: f64 = 4.0;
const MB: f64 = 1024.0 * 1024.0;

/// What the first job in a process allocates for the tensor backend (its thread pool, caches and
/// autodiff bookkeeping), measured at about 6.6 MB with a tiny MLP in a fresh worker process.
pub(crate) const BACKEND_RUNTIME_BYTES: f64 = 8.0 * MB;

/// Bytes a job needs: a fixed part (data, weights, optimiser state, trees) plus a part per
/// sample in a batch (activations kept for the backward pass).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MemoryEstimate {
    pub fixed_bytes: f64,
    pub per_sample_bytes: f64,
}

impl MemoryEstimate {
    pub fn bytes_at(&self, batch: usize) -> f64 {
        self.fixed_bytes + self.per_sample_bytes * batch as f64
    }

    pub fn mb_at(&self, batch: usize) -> f64 {
        self.bytes_at(batch) / MB
    }

    /// The largest batch size reached by halving `requested` whose estimate fits `budget_mb`,
    /// or None when not even a batch of one fits.
    pub fn fitting_batch(&self, requested: usize, budget_mb: u64) -> Option<usize> {
        let budget = budget_mb as f64 * MB;
        let mut batch = requested.max(1);
        while self.bytes_at(batch) > budget && batch > 1 {
            batch /= 2;
        }
        (self.bytes_at(batch) <= budget).then_some(batch)
    }
}

pub fn estimate(algorithm: Algorithm, hp: &Hyperparameters, info: &DatasetInfo) -> MemoryEstimate {
    let rows = info.n_rows as f64;
    let features = info.n_features as f64;
    // The job's prepared (split, scaled) copy of the table and of its test split; the parsed
    // table itself is shared.
    let test_rows = info.test_rows.unwrap_or(0) as f64;
    let data = (rows + test_rows) * (features + 1.0) * F32;
    if !algorithm.is_gradient_based() {
        // smartcore sorts every column once per tree (usize indices) and copies the matrix,
        // for each tree growing at once (one per thread); each tree holds at most one node per
        // training row or per level of depth, up to 112 bytes a node with the JSON it is kept
        // as (50 to 99 MB measured for 20 trees on california_housing, on 1 or 2 threads,
        // depending on what the worker ran before).
        let growing = rayon::current_num_threads().max(1) as f64;
        let per_tree_working_set = rows * features * (F32 + 8.0);
        let nodes = (2.0 * rows).min(2f64.powi(hp.max_depth.min(30) as i32 + 1));
        let trees = hp.n_estimators as f64 * nodes * 112.0;
        return MemoryEstimate {
            fixed_bytes: data + growing * per_tree_working_set + trees,
            per_sample_bytes: 0.0,
        };
    }
    let arch = Architecture::new(algorithm, hp, info);
    let model = arch.estimated_bytes(0);
    let per_sample = arch.estimated_bytes(1) - model;
    MemoryEstimate {
        fixed_bytes: BACKEND_RUNTIME_BYTES
            + data
            + model
            + evaluation_bytes(per_sample, rows + test_rows, features),
        per_sample_bytes: per_sample,
    }
}

/// An evaluation pass: a batch of up to `EVAL_BATCH` rows gathered and copied into a tensor,
/// and its forward activations (kept for no backward pass).
fn evaluation_bytes(training_per_sample: f64, rows: f64, features: f64) -> f64 {
    let batch = rows.min(crate::neural::EVAL_BATCH as f64);
    batch * (2.0 * features * F32 + training_per_sample / crate::network::AUTODIFF_FACTOR)
}
