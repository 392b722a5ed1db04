//! A seeded generator of tabular data, for tests and for trying the service without data.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use trainyard_core::Task;

use crate::{DataError, Dataset, DatasetInfo, SeededRng, Table};

/// Parameters of the `synthetic` dataset. Classification draws Gaussian clusters around random
/// class centres; regression draws `y = x·w + sin(x0) + noise`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyntheticSpec {
    pub task: Task,
    pub n_samples: usize,
    pub n_features: usize,
    pub n_classes: usize,
    pub noise: f64,
    pub seed: u64,
}

impl Default for SyntheticSpec {
    fn default() -> Self {
        Self {
            task: Task::Classification,
            n_samples: 2000,
            n_features: 10,
            n_classes: 3,
            noise: 1.5,
            seed: 7,
        }
    }
}

impl SyntheticSpec {
    /// Reads options such as `{"task": "regression", "n_samples": 500}`; unknown keys and
    /// out-of-range values are errors.
    pub fn from_options(options: &Map<String, Value>) -> Result<Self, DataError> {
        let mut spec = Self::default();
        for (key, value) in options {
            let bad = |message: &str| DataError::Option {
                field: key.clone(),
                message: message.to_string(),
            };
            let uint = |min: u64, max: u64| {
                value
                    .as_u64()
                    .filter(|n| (min..=max).contains(n))
                    .ok_or_else(|| {
                        bad(&format!(
                            "expected an integer in [{min}, {max}], got {value}"
                        ))
                    })
            };
            match key.as_str() {
                "task" => {
                    spec.task = match value.as_str() {
                        Some("classification") => Task::Classification,
                        Some("regression") => Task::Regression,
                        _ => {
                            return Err(bad(&format!(
                                "expected classification or regression, got {value}"
                            )));
                        }
                    }
                }
                "n_samples" => spec.n_samples = uint(10, 1_000_000)? as usize,
                "n_features" => spec.n_features = uint(1, 1000)? as usize,
                "n_classes" => spec.n_classes = uint(2, 100)? as usize,
                "seed" => spec.seed = uint(0, u64::MAX)?,
                "noise" => {
                    spec.noise = value
                        .as_f64()
                        .filter(|x| (0.0..=100.0).contains(x))
                        .ok_or_else(|| {
                            bad(&format!("expected a number in [0, 100], got {value}"))
                        })?
                }
                _ => {
                    return Err(bad(
                        "unknown option; allowed: task, n_samples, n_features, n_classes, noise, seed",
                    ));
                }
            }
        }
        Ok(spec)
    }

    pub fn info(&self) -> DatasetInfo {
        DatasetInfo {
            name: "synthetic".into(),
            description: format!(
                "Seeded synthetic {} data: {} samples, {} features{}",
                self.task,
                self.n_samples,
                self.n_features,
                if self.task == Task::Classification {
                    format!(", {} Gaussian clusters", self.n_classes)
                } else {
                    String::new()
                }
            ),
            task: self.task,
            n_rows: self.n_samples,
            n_features: self.n_features,
            feature_names: (0..self.n_features).map(|i| format!("x{i}")).collect(),
            target_name: "y".into(),
            classes: (self.task == Task::Classification)
                .then(|| (0..self.n_classes).map(|c| c.to_string()).collect()),
            image_shape: None,
            test_rows: None,
            license: "generated".into(),
            extracted_from: None,
        }
    }

    pub fn generate(&self) -> Dataset {
        let mut rng = SeededRng::new(self.seed);
        let d = self.n_features;
        let mut x = Vec::with_capacity(self.n_samples * d);
        let mut y = Vec::with_capacity(self.n_samples);
        match self.task {
            Task::Classification => {
                let centres: Vec<f64> = (0..self.n_classes * d)
                    .map(|_| rng.normal() * 2.0)
                    .collect();
                for i in 0..self.n_samples {
                    let class = i % self.n_classes;
                    for j in 0..d {
                        x.push((centres[class * d + j] + rng.normal() * self.noise) as f32);
                    }
                    y.push(class as f32);
                }
            }
            Task::Regression => {
                let weights: Vec<f64> = (0..d).map(|_| rng.normal()).collect();
                for _ in 0..self.n_samples {
                    let row: Vec<f64> = (0..d).map(|_| rng.normal()).collect();
                    let linear: f64 = row.iter().zip(&weights).map(|(a, w)| a * w).sum();
                    y.push((linear + row[0].sin() + rng.normal() * self.noise * 0.1) as f32);
                    x.extend(row.iter().map(|v| *v as f32));
                }
            }
            Task::Unlabeled | Task::Text => {
                unreachable!("options parse only classification or regression")
            }
        }
        Dataset {
            info: self.info(),
            table: Table {
                x,
                y,
                n_features: d,
            },
            test: None,
            text: None,
            texts: None,
            activations: None,
        }
    }
}
