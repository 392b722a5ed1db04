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
    let hp = Hyperparameters::resolve(algorithm, &ds.info.shape(), overrides.as_object().unwrap())
        .unwrap();
    TrainRequest {
        dataset: ds,
        algorithm,
        hyperparameters: hp,
        resume: None,
        batch_halvings: 0,
    }
}

pub fn train_to_completion(req: TrainRequest) -> (TrainedModel, Recorder) {
    let mut rec = Recorder::default();
    match train(req, &Control::default(), &mut rec).unwrap() {
        Outcome::Completed(model) => (model, rec),
        other => panic!("expected completion, got {other:?}"),
    }
}

pub fn metric(model: &TrainedModel, name: &str) -> f64 {
    *model
        .header
        .metrics
        .get(name)
        .unwrap_or_else(|| panic!("no metric {name} in {:?}", model.header.metrics))
}

pub fn defaults() -> Value {
    json!({})
}

/// A digest of a network's weight values (not of record bytes or export metadata, which carry
/// random parameter ids), so two models compare equal exactly when every weight is identical.
pub fn weights_fingerprint(model: &TrainedModel) -> String {
    use sha2::{Digest, Sha256};
    let file = model.export_safetensors().unwrap();
    let header_len = u64::from_le_bytes(file[..8].try_into().unwrap()) as usize;
    let header: serde_json::Map<String, Value> =
        serde_json::from_slice(&file[8..8 + header_len]).unwrap();
    let data = &file[8 + header_len..];
    let mut names: Vec<&String> = header.keys().filter(|k| *k != "__metadata__").collect();
    names.sort();
    let mut hasher = Sha256::new();
    for name in names {
        let offsets = &header[name]["data_offsets"];
        let (start, end) = (
            offsets[0].as_u64().unwrap() as usize,
            offsets[1].as_u64().unwrap() as usize,
        );
        hasher.update(name.as_bytes());
        hasher.update(&data[start..end]);
    }
    hex::encode(hasher.finalize())
}
