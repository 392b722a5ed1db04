//! Domain types shared by every Trainyard crate: what a model is made of (dataset, algorithm,
//! hyperparameters), how a run moves through its statuses, and the events training emits.
//! Nothing here performs I/O.

mod algorithm;
mod error;
mod events;
pub mod hyperparameters;
mod status;

pub use algorithm::{Algorithm, DatasetShape, Task};
pub use error::ValidationError;
pub use events::{EpochMetrics, ProbedBatchSize, TrainingEvent};
pub use hyperparameters::Hyperparameters;
pub use status::{RunStatus, Stage};
