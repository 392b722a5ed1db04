//! Sparse autoencoders trained on a language model's activations: the math (`model`,
//! `linalg`, `optim`), the loop (`train`, `resample`), reading activations (`extract`),
//! features and loss recovered (`features`), files (`codec`), and the family (`family`,
//! `served`).

pub mod cache;
pub mod codec;
mod dataset;
pub mod extract;
pub mod family;
pub mod features;
pub mod linalg;
mod memory;
pub mod model;
pub mod optim;
mod relu_dense;
pub mod resample;
pub mod served;
pub mod shards;
pub mod spec;
pub mod stats;
pub mod train;

pub use family::SparseAutoencoders;
pub use model::{Architecture, Sae};
pub use relu_dense::Scratch;
pub use spec::SaeHyperparameters;
pub use train::{LayerData, SaeCheckpoint, SaeObserver, SaeRun};
