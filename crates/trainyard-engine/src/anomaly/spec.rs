//! The anomaly family's hyperparameters: per algorithm, with defaults, bounds and errors that
//! name the field, like the tabular family's.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use trainyard_core::ValidationError;
use trainyard_core::hyperparameters::{apply_keys, float, type_error, uint};

use super::{HalfSpaceTreesParams, IsolationForestParams};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnomalyAlgorithm {
    IsolationForest,
    Ecod,
    Hbos,
    HalfSpaceTrees,
}

impl AnomalyAlgorithm {
    pub const ALL: [AnomalyAlgorithm; 4] = [
        AnomalyAlgorithm::IsolationForest,
        AnomalyAlgorithm::Ecod,
        AnomalyAlgorithm::Hbos,
        AnomalyAlgorithm::HalfSpaceTrees,
    ];

    pub fn name(self) -> &'static str {
        match self {
            AnomalyAlgorithm::IsolationForest => "isolation_forest",
            AnomalyAlgorithm::Ecod => "ecod",
            AnomalyAlgorithm::Hbos => "hbos",
            AnomalyAlgorithm::HalfSpaceTrees => "half_space_trees",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }
}

/// What share of rows the threshold flags: "auto" (the isolation forest's score 0.5, as in the
/// paper and scikit-learn; 10% of the training rows for the others, as in PyOD), or a fraction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Contamination {
    Auto,
    Fraction(f64),
}

impl Serialize for Contamination {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Contamination::Auto => s.serialize_str("auto"),
            Contamination::Fraction(x) => s.serialize_f64(*x),
        }
    }
}

impl<'de> Deserialize<'de> for Contamination {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Contamination::parse(&Value::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl Contamination {
    pub fn parse(value: &Value) -> Result<Self, ValidationError> {
        const KEY: &str = "contamination";
        if value.as_str() == Some("auto") {
            return Ok(Contamination::Auto);
        }
        let x = value
            .as_f64()
            .ok_or_else(|| type_error(KEY, "\"auto\" or a fraction in (0, 0.5]", value))?;
        if !(x > 0.0 && x <= 0.5) {
            return Err(ValidationError::new(
                KEY,
                format!("must be \"auto\" or a fraction in (0, 0.5], got {x}"),
            ));
        }
        Ok(Contamination::Fraction(x))
    }
}

/// The complete hyperparameters of one detector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnomalySpec {
    pub algorithm: AnomalyAlgorithm,
    pub seed: u64,
    /// Share of rows held out (never fitted) to measure quality against the labels.
    pub holdout: f64,
    pub contamination: Contamination,
    pub n_estimators: usize,
    /// Rows per isolation tree; None: min(256, n).
    pub max_samples: Option<usize>,
    pub n_bins: usize,
    pub alpha: f64,
    pub tol: f64,
    pub n_trees: usize,
    pub height: u32,
    pub window_size: usize,
    pub checkpoint_seconds: u32,
}

impl AnomalySpec {
    fn allowed_keys(algorithm: AnomalyAlgorithm) -> Vec<&'static str> {
        let mut keys = vec!["seed", "holdout", "contamination"];
        keys.extend(match algorithm {
            AnomalyAlgorithm::IsolationForest => {
                &["n_estimators", "max_samples", "checkpoint_seconds"][..]
            }
            AnomalyAlgorithm::Ecod => &[][..],
            AnomalyAlgorithm::Hbos => &["n_bins", "alpha", "tol"][..],
            AnomalyAlgorithm::HalfSpaceTrees => &["n_trees", "height", "window_size"][..],
        });
        keys
    }

    /// Defaults; `labeled` datasets hold 40% out for evaluation, unlabeled ones fit on all rows.
    pub fn defaults(algorithm: AnomalyAlgorithm, labeled: bool) -> Self {
        AnomalySpec {
            algorithm,
            seed: 42,
            holdout: if labeled { 0.4 } else { 0.0 },
            contamination: Contamination::Auto,
            n_estimators: 100,
            max_samples: None,
            n_bins: 10,
            alpha: 0.1,
            tol: 0.5,
            n_trees: 25,
            height: 10,
            window_size: 250,
            checkpoint_seconds: 30,
        }
    }

    pub fn resolve(
        algorithm: AnomalyAlgorithm,
        labeled: bool,
        user: &Map<String, Value>,
    ) -> Result<Self, ValidationError> {
        let mut spec = Self::defaults(algorithm, labeled);
        let allowed = Self::allowed_keys(algorithm);
        apply_keys(user, algorithm.name(), &allowed, |key, value| {
            spec.set(key, value)
        })?;
        Ok(spec)
    }

    fn set(&mut self, key: &str, value: &Value) -> Result<(), ValidationError> {
        match key {
            "seed" => self.seed = uint(key, value, 0, u64::MAX)?,
            "holdout" => self.holdout = float(key, value, 0.0, 0.9)?,
            "contamination" => self.contamination = Contamination::parse(value)?,
            "n_estimators" => self.n_estimators = uint(key, value, 1, 1000)? as usize,
            "max_samples" => {
                self.max_samples = match value.as_str() {
                    Some("auto") => None,
                    _ => Some(uint(key, value, 1, 1_000_000)? as usize),
                }
            }
            "n_bins" => self.n_bins = uint(key, value, 2, 1000)? as usize,
            "alpha" => self.alpha = float(key, value, 1e-12, 1.0)?,
            "tol" => self.tol = float(key, value, 0.0, 10.0)?,
            "n_trees" => self.n_trees = uint(key, value, 1, 200)? as usize,
            "height" => self.height = uint(key, value, 1, 16)? as u32,
            "window_size" => self.window_size = uint(key, value, 10, 100_000)? as usize,
            "checkpoint_seconds" => self.checkpoint_seconds = uint(key, value, 0, 86_400)? as u32,
            other => unreachable!("key '{other}' is in allowed_keys but has no setter"),
        }
        Ok(())
    }

    /// The spec as users see it: only the keys that apply, defaults filled in.
    pub fn to_json(&self) -> Value {
        let mut out = Map::new();
        for key in Self::allowed_keys(self.algorithm) {
            let value = match key {
                "seed" => json!(self.seed),
                "holdout" => json!(self.holdout),
                "contamination" => serde_json::to_value(self.contamination).unwrap(),
                "n_estimators" => json!(self.n_estimators),
                "max_samples" => self.max_samples.map_or(json!("auto"), |m| json!(m)),
                "n_bins" => json!(self.n_bins),
                "alpha" => json!(self.alpha),
                "tol" => json!(self.tol),
                "n_trees" => json!(self.n_trees),
                "height" => json!(self.height),
                "window_size" => json!(self.window_size),
                "checkpoint_seconds" => json!(self.checkpoint_seconds),
                other => unreachable!("{other}"),
            };
            out.insert(key.to_string(), value);
        }
        Value::Object(out)
    }

    pub fn isolation_forest(&self) -> IsolationForestParams {
        IsolationForestParams {
            n_estimators: self.n_estimators,
            max_samples: self.max_samples,
            seed: self.seed,
        }
    }

    pub fn half_space_trees(&self) -> HalfSpaceTreesParams {
        HalfSpaceTreesParams {
            n_trees: self.n_trees,
            height: self.height,
            window_size: self.window_size,
            seed: self.seed,
        }
    }
}
