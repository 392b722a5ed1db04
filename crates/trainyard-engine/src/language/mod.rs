//! Language models: a decoder-only transformer (`model`) trained by steps on tokenised text
//! (`train`). Text comes from `trainyard_data::text`.

pub mod family;
pub mod model;
pub mod spec;
pub mod train;

pub use family::Language;
pub use model::{Gpt, GptConfig};
pub use train::{
    Evaluation, LmCheckpoint, LmData, LmHyperparameters, LmObserver, LmRun, evaluate, train,
};
