//! Typed hyperparameters with per-algorithm defaults and bounds.
//!
//! Users send a loose JSON object; [`Hyperparameters::resolve`] turns it into a complete, typed
//! spec or names the first offending field. Unknown keys, wrong types and out-of-range values are
//! errors: nothing is silently ignored.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::{Algorithm, DatasetShape, Task, ValidationError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerKind {
    Sgd,
    Adam,
    Adamw,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LrSchedule {
    Constant,
    Cosine,
    Step,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    Relu,
    Tanh,
    Gelu,
    Sigmoid,
}

/// The number format of a network's products. `Bf16` rounds both factors of every product
/// large enough to gain from it to bfloat16 and sums in f32 (on AMX or AVX-512 BF16 where the
/// CPU has them); weights, optimiser state and everything between the products stay f32.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    #[default]
    Fp32,
    Bf16,
}

/// Stop when the monitored validation metric has not improved by `min_delta` for `patience`
/// epochs; the best weights are restored at the end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EarlyStopping {
    pub monitor: String,
    pub patience: u32,
    pub min_delta: f64,
}

impl EarlyStopping {
    /// Whether a larger value of the monitored metric is better.
    pub fn maximize(&self) -> bool {
        metric_is_maximized(&self.monitor)
    }
}

/// Whether a larger value of a validation metric is better (accuracy, r2) or worse (losses).
pub fn metric_is_maximized(metric: &str) -> bool {
    matches!(metric, "val_accuracy" | "val_r2")
}

/// The complete hyperparameters of one model. Fields that do not apply to the algorithm keep
/// their defaults and are left out of [`Hyperparameters::to_json`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hyperparameters {
    pub epochs: u32,
    pub batch_size: u32,
    pub learning_rate: f64,
    pub optimizer: OptimizerKind,
    pub momentum: f64,
    pub weight_decay: f64,
    pub lr_schedule: LrSchedule,
    pub lr_step_size: u32,
    pub lr_gamma: f64,
    pub seed: u64,
    pub validation_split: f64,
    pub early_stopping: Option<EarlyStopping>,
    pub hidden_layers: Vec<u32>,
    pub activation: Activation,
    pub dropout: f64,
    pub conv_channels: Vec<u32>,
    pub n_estimators: u32,
    pub max_depth: u32,
    pub checkpoint_every: u32,
    /// Also checkpoint mid-epoch when this many seconds passed since the last one (0: off), so
    /// a crash during a long epoch loses at most this much work.
    pub checkpoint_seconds: u32,
    /// Times a non-finite loss may roll training back to the last checkpoint (halving the
    /// learning rate) before the run fails.
    pub nan_rollbacks: u32,
    /// Memory the job may use; the batch size halves until the estimate fits. 0: no limit.
    pub memory_budget_mb: u32,
    /// CNN training-image augmentation (0: off): a random shift of up to this many pixels,
    /// a rotation of up to this many degrees, and the chance of erasing a random rectangle.
    /// Defaulted when absent, so checkpoints written before they existed still load.
    #[serde(default)]
    pub augment_shift: u32,
    #[serde(default)]
    pub augment_rotate: f64,
    #[serde(default)]
    pub augment_erase: f64,
    /// `batch_size: "auto"`: training probes the batch sizes that fit the memory budget and
    /// takes the fastest; `batch_size` is then only the fallback.
    #[serde(default)]
    pub batch_size_auto: bool,
    /// Defaulted when absent, so checkpoints written before it existed still load.
    #[serde(default)]
    pub precision: Precision,
}

/// Keys every gradient-trained algorithm accepts.
const GRADIENT_KEYS: &[&str] = &[
    "epochs",
    "batch_size",
    "learning_rate",
    "optimizer",
    "momentum",
    "weight_decay",
    "lr_schedule",
    "lr_step_size",
    "lr_gamma",
    "seed",
    "validation_split",
    "early_stopping",
    "checkpoint_every",
    "checkpoint_seconds",
    "nan_rollbacks",
    "memory_budget_mb",
    "precision",
];

impl Hyperparameters {
    /// The keys a user may set for `algorithm`.
    pub fn allowed_keys(algorithm: Algorithm) -> Vec<&'static str> {
        let mut keys: Vec<&'static str> = match algorithm {
            Algorithm::RandomForest => {
                vec![
                    "n_estimators",
                    "max_depth",
                    "seed",
                    "validation_split",
                    "checkpoint_seconds",
                ]
            }
            _ => GRADIENT_KEYS.to_vec(),
        };
        match algorithm {
            Algorithm::Mlp => keys.extend(["hidden_layers", "activation", "dropout"]),
            Algorithm::Cnn => keys.extend([
                "conv_channels",
                "hidden_layers",
                "dropout",
                "augment_shift",
                "augment_rotate",
                "augment_erase",
            ]),
            _ => {}
        }
        keys
    }

    /// Defaults chosen to reach the documented quality bars on the built-in datasets while
    /// finishing in seconds on a laptop CPU.
    pub fn defaults(algorithm: Algorithm, shape: &DatasetShape) -> Self {
        let n = shape.n_rows;
        let small = n <= 5_000;
        let epochs = match algorithm {
            Algorithm::Cnn => 3,
            Algorithm::RandomForest => 1,
            _ if n <= 2_000 => 100,
            _ if n <= 50_000 => 40,
            _ => 5,
        };
        let (learning_rate, optimizer) = match algorithm {
            Algorithm::LinearRegression | Algorithm::LogisticRegression => {
                (0.01, OptimizerKind::Adam)
            }
            Algorithm::Mlp if small => (0.005, OptimizerKind::Adam),
            _ => (0.001, OptimizerKind::Adam),
        };
        let hidden_layers = match algorithm {
            Algorithm::Mlp if shape.image_shape.is_some() => vec![256],
            Algorithm::Mlp => vec![64, 64],
            Algorithm::Cnn => vec![128],
            _ => vec![],
        };
        Hyperparameters {
            epochs,
            batch_size: if small {
                32
            } else if shape.image_shape.is_some() {
                128
            } else {
                64
            },
            learning_rate,
            optimizer,
            momentum: 0.9,
            weight_decay: 0.0,
            lr_schedule: LrSchedule::Constant,
            lr_step_size: 10,
            lr_gamma: 0.5,
            seed: 42,
            // Large datasets need fewer rows to validate reliably; keep the rest for training.
            validation_split: if n > 50_000 { 0.1 } else { 0.2 },
            early_stopping: None,
            hidden_layers,
            activation: Activation::Relu,
            dropout: 0.0,
            conv_channels: if algorithm == Algorithm::Cnn {
                vec![16, 32]
            } else {
                vec![]
            },
            n_estimators: 100,
            max_depth: 16,
            checkpoint_every: 1,
            checkpoint_seconds: 30,
            nan_rollbacks: 3,
            memory_budget_mb: 0,
            augment_shift: 0,
            augment_rotate: 0.0,
            augment_erase: 0.0,
            batch_size_auto: false,
            precision: Precision::Fp32,
        }
    }

    /// Builds the full spec from the user's object: defaults first, then each user key checked
    /// for name, type and range.
    pub fn resolve(
        algorithm: Algorithm,
        shape: &DatasetShape,
        user: &Map<String, Value>,
    ) -> Result<Self, ValidationError> {
        let mut hp = Self::defaults(algorithm, shape);
        apply_keys(
            user,
            algorithm.name(),
            &Self::allowed_keys(algorithm),
            |key, value| hp.set(key, value, shape.task),
        )?;
        Ok(hp)
    }

    fn set(&mut self, key: &str, value: &Value, task: Task) -> Result<(), ValidationError> {
        match key {
            "epochs" => self.epochs = uint(key, value, 1, 100_000)? as u32,
            "batch_size" if value.as_str() == Some("auto") => self.batch_size_auto = true,
            "batch_size" => {
                self.batch_size = value
                    .as_u64()
                    .ok_or_else(|| type_error(key, "an integer in [1, 65536] or \"auto\"", value))
                    .and_then(|_| uint(key, value, 1, 65_536))?
                    as u32;
                self.batch_size_auto = false;
            }
            "learning_rate" => self.learning_rate = float(key, value, 1e-7, 10.0)?,
            "optimizer" => {
                self.optimizer = match choice(key, value, &["sgd", "adam", "adamw"])? {
                    "sgd" => OptimizerKind::Sgd,
                    "adam" => OptimizerKind::Adam,
                    _ => OptimizerKind::Adamw,
                }
            }
            "momentum" => self.momentum = float(key, value, 0.0, 0.999)?,
            "weight_decay" => self.weight_decay = float(key, value, 0.0, 1.0)?,
            "lr_schedule" => {
                self.lr_schedule = match choice(key, value, &["constant", "cosine", "step"])? {
                    "constant" => LrSchedule::Constant,
                    "cosine" => LrSchedule::Cosine,
                    _ => LrSchedule::Step,
                }
            }
            "lr_step_size" => self.lr_step_size = uint(key, value, 1, 100_000)? as u32,
            "lr_gamma" => self.lr_gamma = float(key, value, 0.01, 1.0)?,
            "seed" => self.seed = uint(key, value, 0, u64::MAX)?,
            "validation_split" => self.validation_split = float(key, value, 0.05, 0.5)?,
            "early_stopping" => self.early_stopping = early_stopping(value, task)?,
            "hidden_layers" => self.hidden_layers = uint_list(key, value, 0, 8, 1, 4096)?,
            "conv_channels" => self.conv_channels = uint_list(key, value, 1, 4, 1, 256)?,
            "activation" => {
                self.activation = match choice(key, value, &["relu", "tanh", "gelu", "sigmoid"])? {
                    "relu" => Activation::Relu,
                    "tanh" => Activation::Tanh,
                    "gelu" => Activation::Gelu,
                    _ => Activation::Sigmoid,
                }
            }
            "precision" => {
                self.precision = match choice(key, value, &["fp32", "bf16"])? {
                    "fp32" => Precision::Fp32,
                    _ => Precision::Bf16,
                }
            }
            "dropout" => self.dropout = float(key, value, 0.0, 0.9)?,
            "n_estimators" => self.n_estimators = uint(key, value, 1, 1000)? as u32,
            "max_depth" => self.max_depth = uint(key, value, 1, 64)? as u32,
            "checkpoint_every" => self.checkpoint_every = uint(key, value, 1, 100_000)? as u32,
            "checkpoint_seconds" => self.checkpoint_seconds = uint(key, value, 0, 86_400)? as u32,
            "nan_rollbacks" => self.nan_rollbacks = uint(key, value, 0, 10)? as u32,
            "memory_budget_mb" => self.memory_budget_mb = uint(key, value, 0, 1_000_000)? as u32,
            "augment_shift" => self.augment_shift = uint(key, value, 0, 8)? as u32,
            "augment_rotate" => self.augment_rotate = float(key, value, 0.0, 45.0)?,
            "augment_erase" => self.augment_erase = float(key, value, 0.0, 1.0)?,
            other => unreachable!("key '{other}' is in allowed_keys but has no setter"),
        }
        Ok(())
    }

    /// The spec as users see it: only the keys that apply to `algorithm`, defaults filled in.
    pub fn to_json(&self, algorithm: Algorithm) -> Value {
        let full = serde_json::to_value(self).expect("hyperparameters serialize");
        let mut out = Map::new();
        for key in Self::allowed_keys(algorithm) {
            out.insert(key.to_string(), full[key].clone());
        }
        if self.batch_size_auto && out.contains_key("batch_size") {
            out.insert("batch_size".into(), Value::from("auto"));
        }
        Value::Object(out)
    }
}

/// Applies each of the user's keys with `set`, in sorted order (so the reported error does not
/// depend on map order); a key outside `allowed` is an error naming it and listing the allowed.
pub fn apply_keys(
    user: &Map<String, Value>,
    algorithm: &str,
    allowed: &[&str],
    mut set: impl FnMut(&str, &Value) -> Result<(), ValidationError>,
) -> Result<(), ValidationError> {
    let mut keys: Vec<&String> = user.keys().collect();
    keys.sort();
    for key in keys {
        if !allowed.contains(&key.as_str()) {
            return Err(ValidationError::new(
                key.as_str(),
                format!(
                    "not a hyperparameter of {algorithm}; allowed: {}",
                    allowed.join(", ")
                ),
            ));
        }
        set(key, &user[key])?;
    }
    Ok(())
}

pub fn type_error(key: &str, expected: &str, value: &Value) -> ValidationError {
    ValidationError::new(key, format!("expected {expected}, got {value}"))
}

/// An integer field in `[min, max]`; the error names `key` and the range.
pub fn uint(key: &str, value: &Value, min: u64, max: u64) -> Result<u64, ValidationError> {
    let n = value
        .as_u64()
        .ok_or_else(|| type_error(key, &format!("an integer in [{min}, {max}]"), value))?;
    if n < min || n > max {
        return Err(ValidationError::new(
            key,
            format!("must be in [{min}, {max}], got {n}"),
        ));
    }
    Ok(n)
}

/// A number field in `[min, max]`.
pub fn float(key: &str, value: &Value, min: f64, max: f64) -> Result<f64, ValidationError> {
    let x = value
        .as_f64()
        .ok_or_else(|| type_error(key, &format!("a number in [{min}, {max}]"), value))?;
    if !(min..=max).contains(&x) {
        return Err(ValidationError::new(
            key,
            format!("must be in [{min}, {max}], got {x}"),
        ));
    }
    Ok(x)
}

/// A string field that must be one of `options`.
pub fn choice<'a>(
    key: &str,
    value: &Value,
    options: &[&'a str],
) -> Result<&'a str, ValidationError> {
    let expected = format!("one of {}", options.join(", "));
    let s = value
        .as_str()
        .ok_or_else(|| type_error(key, &expected, value))?;
    options
        .iter()
        .find(|o| **o == s)
        .copied()
        .ok_or_else(|| ValidationError::new(key, format!("must be {expected}, got '{s}'")))
}

pub fn uint_list(
    key: &str,
    value: &Value,
    min_len: usize,
    max_len: usize,
    min: u64,
    max: u64,
) -> Result<Vec<u32>, ValidationError> {
    let expected = format!("a list of {min_len} to {max_len} integers in [{min}, {max}]");
    let items = value
        .as_array()
        .ok_or_else(|| type_error(key, &expected, value))?;
    if items.len() < min_len || items.len() > max_len {
        return Err(ValidationError::new(
            key,
            format!(
                "must have {min_len} to {max_len} entries, got {}",
                items.len()
            ),
        ));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, v)| uint(&format!("{key}[{i}]"), v, min, max).map(|n| n as u32))
        .collect()
}

/// `early_stopping`: null/false (off), true (defaults) or `{monitor, patience, min_delta}`.
pub fn early_stopping(value: &Value, task: Task) -> Result<Option<EarlyStopping>, ValidationError> {
    const KEY: &str = "early_stopping";
    if value.is_null() || value == &json!(false) {
        return Ok(None);
    }
    let monitors: &[&str] = match task {
        Task::Classification => &["val_loss", "val_accuracy"],
        Task::Regression => &["val_loss", "val_r2", "val_rmse", "val_mae"],
        Task::Unlabeled | Task::Text => &["val_loss"],
    };
    let default = EarlyStopping {
        monitor: "val_loss".into(),
        patience: 5,
        min_delta: 0.0,
    };
    if value == &json!(true) {
        return Ok(Some(default));
    }
    let obj = value.as_object().ok_or_else(|| {
        type_error(
            KEY,
            "an object {monitor, patience, min_delta}, true or null",
            value,
        )
    })?;
    let mut es = default;
    for (k, v) in obj {
        let field = format!("{KEY}.{k}");
        match k.as_str() {
            "monitor" => es.monitor = choice(&field, v, monitors)?.to_string(),
            "patience" => es.patience = uint(&field, v, 1, 10_000)? as u32,
            "min_delta" => es.min_delta = float(&field, v, 0.0, 1e6)?,
            _ => {
                return Err(ValidationError::new(
                    field,
                    "unknown key; allowed: monitor, patience, min_delta",
                ));
            }
        }
    }
    Ok(Some(es))
}

#[cfg(test)]
mod tests;
