//! Language models: a decoder-only transformer (`model`) trained by steps on tokenised text
//! (`train`). Text comes from `trainyard_data::text`.

pub mod model;
pub mod train;

pub use model::{Gpt, GptConfig};
pub use train::{Evaluation, LmData, LmHyperparameters, LmRun, evaluate, train};
