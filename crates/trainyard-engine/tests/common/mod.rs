#![allow(dead_code)]

use std::sync::Arc;

use serde_json::{Value, json};
use trainyard_core::{Algorithm, Hyperparameters};
use trainyard_data::{Dataset, load_builtin};
use trainyard_engine::{Control, Outcome, Recorder, TrainRequest, TrainedModel, train};

pub fn request(dataset: &str, algorithm: Algorithm, overrides: Value) -> TrainRequest {
    let ds: Arc<Dataset> = load_builtin(dataset).unwrap();
    request_on(ds, algorithm, overrides)
}

pub fn request_on(ds: Arc<Dataset>, algorithm: Algorithm, overrides: Value) -> TrainRequest {
    let hp = Hyperparameters::resolve(algorithm, &ds.info.shape(), overrides.as_object().unwrap()).unwrap();
    TrainRequest { dataset: ds, algorithm, hyperparameters: hp, resume: None }
}

pub fn train_to_completion(req: TrainRequest) -> (TrainedModel, Recorder) {
    let mut rec = Recorder::default();
    match train(req, &Control::default(), &mut rec).unwrap() {
        Outcome::Completed(model) => (model, rec),
        other => panic!("expected completion, got {other:?}"),
    }
}

pub fn metric(model: &TrainedModel, name: &str) -> f64 {
    *model.header.metrics.get(name).unwrap_or_else(|| panic!("no metric {name} in {:?}", model.header.metrics))
}

pub fn defaults() -> Value {
    json!({})
}
