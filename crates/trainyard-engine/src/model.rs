//! A trained model as stored and served: its header (what it was trained on, how inputs are
//! scaled, final metrics) and its weights, plus prediction and safetensors export.

use std::collections::BTreeMap;

use burn::module::Module;
use burn::store::{ModuleRecord, ModuleSnapshot, SafetensorsStore};
use burn::tensor::{Bytes, Device, Tensor, TensorData, activation};
use serde::{Deserialize, Serialize};
use trainyard_core::{Algorithm, Hyperparameters, Task};
use trainyard_data::Scaler;

use crate::container::{ContainerError, read_sections, write_sections};
use crate::forest::Forest;
use crate::network::{Architecture, Network};

const MAGIC: &[u8; 8] = b"TYMODEL1";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelHeader {
    pub algorithm: Algorithm,
    pub architecture: Option<Architecture>,
    pub hyperparameters: Hyperparameters,
    pub dataset: String,
    pub task: Task,
    pub feature_names: Vec<String>,
    pub target_name: String,
    pub classes: Option<Vec<String>>,
    pub scaler: Scaler,
    pub metrics: BTreeMap<String, f64>,
}

/// A trained model: header plus weights (a burnpack record, or the serialized forest).
#[derive(Debug, Clone, PartialEq)]
pub struct TrainedModel {
    pub header: ModelHeader,
    pub weights: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PredictError {
    #[error("model has {expected} features ({names}), but row {row} has {given}")]
    FeatureCount {
        expected: usize,
        given: usize,
        row: usize,
        names: String,
    },
    #[error("row {row}, feature {feature}: {value} is not a finite 32-bit number")]
    NotFinite {
        row: usize,
        feature: usize,
        value: f64,
    },
    #[error("no input rows: send at least one row")]
    Empty,
    #[error("model artifact is unusable: {0}")]
    Artifact(String),
    /// The request does not fit this kind of model (predict on a language model, say).
    #[error("{0}")]
    Unsupported(String),
    /// A request field is out of range for this model (a layer it was not trained on).
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// The request names a part of the model that does not exist (a feature index).
    #[error("{0}")]
    NotFound(String),
}

impl From<ContainerError> for PredictError {
    fn from(e: ContainerError) -> Self {
        PredictError::Artifact(e.to_string())
    }
}

/// One prediction: a class with its probabilities, or a value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Prediction {
    Class {
        label: String,
        class_index: usize,
        probabilities: Vec<f64>,
    },
    Value {
        value: f64,
    },
}

impl TrainedModel {
    pub fn to_bytes(&self) -> Vec<u8> {
        let header = serde_json::to_vec(&self.header).expect("model header serializes");
        write_sections(MAGIC, &[&header, &self.weights])
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ContainerError> {
        let sections = read_sections(MAGIC, "model", bytes)?;
        let [header, weights] = sections.as_slice() else {
            return Err(ContainerError::Truncated {
                kind: "model",
                detail: "expected 2 sections".into(),
            });
        };
        let header = serde_json::from_slice(header).map_err(|e| ContainerError::Truncated {
            kind: "model",
            detail: format!("header: {e}"),
        })?;
        Ok(TrainedModel {
            header,
            weights: weights.to_vec(),
        })
    }

    /// Builds a ready-to-call predictor (weights decoded once).
    pub fn predictor(&self) -> Result<Predictor, PredictError> {
        let inner = match &self.header.architecture {
            Some(arch) => {
                let device = Device::flex();
                let network = load_network(arch, &self.weights, &device)?;
                Inner::Network {
                    network,
                    arch: arch.clone(),
                    device,
                }
            }
            None => {
                Inner::Forest(Forest::from_bytes(&self.weights).map_err(PredictError::Artifact)?)
            }
        };
        Ok(Predictor {
            header: self.header.clone(),
            inner,
        })
    }

    /// The weights as a safetensors file, for use outside Trainyard.
    pub fn export_safetensors(&self) -> Result<Vec<u8>, String> {
        let arch = self
            .header
            .architecture
            .as_ref()
            .ok_or("random_forest has no tensor weights to export")?;
        let network =
            load_network(arch, &self.weights, &Device::flex()).map_err(|e| e.to_string())?;
        let mut store = SafetensorsStore::from_bytes(None);
        network.save_into(&mut store).map_err(|e| e.to_string())?;
        store.get_bytes().map_err(|e| e.to_string())
    }
}

pub(crate) fn load_network(
    arch: &Architecture,
    weights: &[u8],
    device: &Device,
) -> Result<Network, PredictError> {
    let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(weights.to_vec()))
        .map_err(|e| PredictError::Artifact(e.to_string()))?;
    Network::new(arch, device)
        .try_load_record(record)
        .map_err(|e| PredictError::Artifact(e.to_string()))
}

enum Inner {
    Network {
        network: Network,
        arch: Architecture,
        device: Device,
    },
    Forest(Forest),
}

pub struct Predictor {
    header: ModelHeader,
    inner: Inner,
}

impl Predictor {
    pub fn header(&self) -> &ModelHeader {
        &self.header
    }

    pub fn predict(&self, rows: &[Vec<f64>]) -> Result<Vec<Prediction>, PredictError> {
        let d = self.header.scaler.n_features();
        let mut x = crate::family::check_rows(rows, &self.header.feature_names)?;
        self.header.scaler.transform(&mut x);
        let outputs = match &self.inner {
            Inner::Network {
                network,
                arch,
                device,
            } => {
                let input = Tensor::<2>::from_data(TensorData::new(x, [rows.len(), d]), device);
                let out = network.forward(arch, input, None);
                let out = if self.header.task == Task::Classification {
                    activation::softmax(out, 1)
                } else {
                    out
                };
                out.into_data()
                    .try_to_vec::<f32>()
                    .map_err(|e| PredictError::Artifact(format!("{e:?}")))?
            }
            Inner::Forest(forest) => forest
                .predict_outputs(&x, d)
                .map_err(PredictError::Artifact)?,
        };
        self.decode(&outputs, rows.len())
    }

    fn decode(&self, outputs: &[f32], n: usize) -> Result<Vec<Prediction>, PredictError> {
        let width = match &self.header.classes {
            Some(classes) if self.header.task == Task::Classification => classes.len(),
            _ => 1,
        };
        if outputs.len() != n * width {
            return Err(PredictError::Artifact(format!(
                "the model produced {} outputs for {n} rows of {width}",
                outputs.len()
            )));
        }
        Ok(match &self.header.classes {
            Some(classes) if self.header.task == Task::Classification => outputs
                .chunks_exact(outputs.len() / n)
                .map(|probs| {
                    let class_index = argmax(probs);
                    Prediction::Class {
                        label: classes[class_index].clone(),
                        class_index,
                        probabilities: probs.iter().map(|p| *p as f64).collect(),
                    }
                })
                .collect(),
            _ => outputs
                .iter()
                .map(|y| Prediction::Value {
                    value: self.header.scaler.inverse_target(*y) as f64,
                })
                .collect(),
        })
    }
}

pub(crate) fn summarize(names: &[String]) -> String {
    if names.len() <= 12 {
        names.join(", ")
    } else {
        format!("{}, ... {}", names[..6].join(", "), names[names.len() - 1])
    }
}

pub(crate) fn argmax(values: &[f32]) -> usize {
    values
        .iter()
        .enumerate()
        .fold(0, |best, (i, v)| if *v > values[best] { i } else { best })
}
