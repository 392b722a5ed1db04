//! Language models: a decoder-only transformer (`model`) trained by steps on tokenised text
//! (`train`). Text comes from `trainyard_data::text`.

pub mod bundle;
pub mod classifier;
pub mod classify;
mod corpus_cache;
pub mod decode;
pub mod family;
pub mod generate;
pub mod model;
mod native;
pub mod spec;
pub mod steps;
pub mod train;
pub mod weights;

pub use decode::Decoder;
pub use family::Language;
pub use model::{Gpt, GptConfig, Hook, Site};
pub use train::{
    Evaluation, LmCheckpoint, LmData, LmHyperparameters, LmObserver, LmRun, evaluate, train,
};
pub use weights::GptWeights;
