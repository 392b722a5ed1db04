//! Random forests (smartcore): a model family with no epochs and no gradients. It is fitted in
//! one go, so it reports a start, its metrics and its finish, and has nothing to pause.

use serde::{Deserialize, Serialize};
use smartcore::ensemble::random_forest_classifier::{
    RandomForestClassifier, RandomForestClassifierParameters,
};
use smartcore::ensemble::random_forest_regressor::{
    RandomForestRegressor, RandomForestRegressorParameters,
};
use smartcore::linalg::basic::matrix::DenseMatrix;
use trainyard_core::{Hyperparameters, Task};
use trainyard_data::Table;

type Classifier = RandomForestClassifier<f32, u32, DenseMatrix<f32>, Vec<u32>>;
type Regressor = RandomForestRegressor<f32, f32, DenseMatrix<f32>, Vec<f32>>;

#[derive(Debug, Serialize, Deserialize)]
pub enum Forest {
    Classifier { model: Classifier, n_classes: usize },
    Regressor(Regressor),
}

fn matrix(x: &[f32], d: usize) -> Result<DenseMatrix<f32>, String> {
    DenseMatrix::new(x.len() / d, d, x.to_vec(), false).map_err(|e| e.to_string())
}

impl Forest {
    pub fn fit(
        train: &Table,
        task: Task,
        n_classes: usize,
        hp: &Hyperparameters,
    ) -> Result<Self, String> {
        let x = matrix(&train.x, train.n_features)?;
        let depth = hp.max_depth.min(u16::MAX as u32) as u16;
        let trees = hp.n_estimators as u16;
        match task {
            Task::Classification => {
                let y: Vec<u32> = train.y.iter().map(|v| *v as u32).collect();
                let params = RandomForestClassifierParameters::default()
                    .with_n_trees(trees)
                    .with_seed(hp.seed)
                    .with_max_depth(depth);
                let model = Classifier::fit(&x, &y, params).map_err(|e| e.to_string())?;
                Ok(Forest::Classifier { model, n_classes })
            }
            Task::Regression => {
                let params = RandomForestRegressorParameters {
                    n_trees: trees as usize,
                    seed: hp.seed,
                    max_depth: Some(depth),
                    ..Default::default()
                };
                Regressor::fit(&x, &train.y, params)
                    .map(Forest::Regressor)
                    .map_err(|e| e.to_string())
            }
        }
    }

    /// Per-row outputs in the network's layout: one-hot votes per class, or the value.
    pub fn predict_outputs(&self, x: &[f32], d: usize) -> Vec<f32> {
        let Ok(m) = matrix(x, d) else { return vec![] };
        match self {
            Forest::Classifier { model, n_classes } => {
                let classes = model.predict(&m).unwrap_or_default();
                let mut out = vec![0.0; classes.len() * n_classes];
                for (i, c) in classes.iter().enumerate() {
                    out[i * n_classes + *c as usize] = 1.0;
                }
                out
            }
            Forest::Regressor(model) => model.predict(&m).unwrap_or_default(),
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("forest serializes")
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("random forest weights: {e}"))
    }
}
