use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ValidationError;

/// What a dataset's target is, and so which algorithms and metrics apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    Classification,
    Regression,
    /// No target column: rows of features only (anomaly detection fits these).
    Unlabeled,
    /// A text corpus (language models learn these).
    Text,
}

impl fmt::Display for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Task::Classification => "classification",
            Task::Regression => "regression",
            Task::Unlabeled => "unlabeled",
            Task::Text => "text",
        })
    }
}

/// The shape facts about a dataset that decide whether an algorithm fits it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetShape {
    pub task: Task,
    pub n_features: usize,
    pub n_classes: Option<usize>,
    /// `[channels, height, width]` for image datasets.
    pub image_shape: Option<[usize; 3]>,
    pub n_rows: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    LinearRegression,
    LogisticRegression,
    Mlp,
    Cnn,
    RandomForest,
}

impl Algorithm {
    pub const ALL: [Algorithm; 5] = [
        Algorithm::LinearRegression,
        Algorithm::LogisticRegression,
        Algorithm::Mlp,
        Algorithm::Cnn,
        Algorithm::RandomForest,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Algorithm::LinearRegression => "linear_regression",
            Algorithm::LogisticRegression => "logistic_regression",
            Algorithm::Mlp => "mlp",
            Algorithm::Cnn => "cnn",
            Algorithm::RandomForest => "random_forest",
        }
    }

    /// Whether the algorithm trains by gradient descent over epochs (and so has optimisers,
    /// schedules and resumable checkpoints mid-run).
    pub fn is_gradient_based(self) -> bool {
        !matches!(self, Algorithm::RandomForest)
    }

    /// Checks that this algorithm can learn the dataset's task and shape. An algorithm never
    /// silently switches task: logistic regression on a regression target is an error.
    pub fn check_fits(self, dataset: &str, shape: &DatasetShape) -> Result<(), ValidationError> {
        let mismatch = |need: &str| {
            ValidationError::new(
                "algorithm",
                format!(
                    "{} needs a {need} dataset, but '{dataset}' is a {} dataset",
                    self.name(),
                    shape.task
                ),
            )
        };
        if shape.task == Task::Text {
            return Err(ValidationError::new(
                "algorithm",
                format!(
                    "{} learns from tables, but '{dataset}' is a text corpus; train transformer_lm on it",
                    self.name()
                ),
            ));
        }
        if shape.task == Task::Unlabeled {
            return Err(ValidationError::new(
                "algorithm",
                format!(
                    "{} learns a target, but '{dataset}' has none; upload it with target=COLUMN, \
                     or fit an anomaly detector (isolation_forest, ecod, hbos, half_space_trees)",
                    self.name()
                ),
            ));
        }
        match self {
            Algorithm::LinearRegression if shape.task != Task::Regression => {
                Err(mismatch("regression"))
            }
            Algorithm::LogisticRegression if shape.task != Task::Classification => {
                Err(mismatch("classification"))
            }
            Algorithm::Cnn if shape.image_shape.is_none() => Err(ValidationError::new(
                "algorithm",
                format!("cnn needs an image dataset such as mnist, but '{dataset}' is tabular"),
            )),
            _ => Ok(()),
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Algorithm {
    type Err = ValidationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Algorithm::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Algorithm::ALL.iter().map(|a| a.name()).collect();
                ValidationError::new(
                    "algorithm",
                    format!(
                        "unknown algorithm '{s}'; expected one of {}",
                        names.join(", ")
                    ),
                )
            })
    }
}
