//! A trained detector as stored and served: the fitted detector, the standardisation it was
//! fitted with, its threshold, and the scores that let the threshold move without a refit.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use trainyard_core::ValidationError;

use super::metrics::{average_precision, precision_at_n, roc_auc};
use super::spec::{AnomalyAlgorithm, AnomalySpec, Contamination};
use super::{Detector, Ecod, HalfSpaceTrees, Hbos, IsolationForest, Rows};
use crate::PredictError;
use crate::container::{ContainerError, read_sections, write_sections};
use crate::family::{
    AdjustError, Adjusted, Artifact, Served, StatelessSession, StreamSession, check_rows,
};

const MAGIC: &[u8; 8] = b"TYANOM01";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FittedDetector {
    IsolationForest(IsolationForest),
    Ecod(Ecod),
    Hbos(Hbos),
    HalfSpaceTrees(HalfSpaceTrees),
}

impl FittedDetector {
    pub fn score(&self, rows: Rows<'_>) -> Vec<f64> {
        match self {
            FittedDetector::IsolationForest(d) => d.score(rows),
            FittedDetector::Ecod(d) => d.score(rows),
            FittedDetector::Hbos(d) => d.score(rows),
            FittedDetector::HalfSpaceTrees(d) => d.score(rows),
        }
    }
}

/// Everything but the detector itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnomalyHeader {
    pub spec: AnomalySpec,
    pub dataset: String,
    pub feature_names: Vec<String>,
    /// Standardisation fitted on the training rows, applied to every row scored.
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
    /// Rows scoring above it are anomalies.
    pub threshold: f64,
    /// The training rows' scores, sorted: what share a new threshold flags.
    pub train_scores: Vec<f64>,
    /// Held-out rows' scores and labels, when the dataset has labels.
    pub holdout_scores: Vec<f64>,
    pub holdout_outlier: Vec<bool>,
    pub metrics: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AnomalyModel {
    pub header: AnomalyHeader,
    pub detector: FittedDetector,
}

/// The `q` quantile of sorted values, interpolating linearly (numpy's default).
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// The threshold a contamination setting gives on the training scores.
pub fn threshold_for(
    algorithm: AnomalyAlgorithm,
    contamination: Contamination,
    train_sorted: &[f64],
) -> f64 {
    match (contamination, algorithm) {
        (Contamination::Auto, AnomalyAlgorithm::IsolationForest) => 0.5,
        (Contamination::Auto, _) => quantile(train_sorted, 0.9),
        (Contamination::Fraction(c), _) => quantile(train_sorted, 1.0 - c),
    }
}

impl AnomalyHeader {
    /// Share of training rows scoring above the threshold.
    pub fn fraction_flagged(&self) -> f64 {
        let n = self.train_scores.len();
        let below = self.train_scores.partition_point(|s| *s <= self.threshold);
        if n == 0 {
            0.0
        } else {
            (n - below) as f64 / n as f64
        }
    }

    /// Metrics that depend on the threshold or the scores (fit time and speed are added by the
    /// trainer and kept across threshold changes).
    pub fn threshold_metrics(&self) -> BTreeMap<String, f64> {
        let mut m = BTreeMap::new();
        let s = &self.train_scores;
        m.insert("threshold".into(), self.threshold);
        m.insert("fraction_flagged".into(), self.fraction_flagged());
        for (name, q) in [
            ("min", 0.0),
            ("p50", 0.5),
            ("p90", 0.9),
            ("p99", 0.99),
            ("max", 1.0),
        ] {
            m.insert(format!("score_{name}"), quantile(s, q));
        }
        let (scores, outlier) = (&self.holdout_scores, &self.holdout_outlier);
        if !outlier.is_empty() {
            m.insert("test_rows".into(), outlier.len() as f64);
            m.insert(
                "test_outliers".into(),
                outlier.iter().filter(|o| **o).count() as f64,
            );
            let ranked = [
                ("roc_auc", roc_auc(scores, outlier)),
                ("average_precision", average_precision(scores, outlier)),
                ("precision_at_n", precision_at_n(scores, outlier)),
            ];
            for (name, value) in ranked {
                if let Some(v) = value {
                    m.insert(name.into(), v);
                }
            }
            let flagged = |i: usize| scores[i] > self.threshold;
            let tp = (0..scores.len())
                .filter(|i| flagged(*i) && outlier[*i])
                .count() as f64;
            let fp = (0..scores.len())
                .filter(|i| flagged(*i) && !outlier[*i])
                .count() as f64;
            let positives = outlier.iter().filter(|o| **o).count() as f64;
            let precision = if tp + fp > 0.0 { tp / (tp + fp) } else { 0.0 };
            let recall = if positives > 0.0 { tp / positives } else { 0.0 };
            let f1 = if precision + recall > 0.0 {
                2.0 * precision * recall / (precision + recall)
            } else {
                0.0
            };
            m.insert("precision".into(), precision);
            m.insert("recall".into(), recall);
            m.insert("f1".into(), f1);
        }
        m
    }
}

impl AnomalyModel {
    pub fn to_bytes(&self) -> Vec<u8> {
        let header = serde_json::to_vec(&self.header).expect("header serializes");
        let detector = serde_json::to_vec(&self.detector).expect("detector serializes");
        write_sections(MAGIC, &[&header, &detector])
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ContainerError> {
        let sections = read_sections(MAGIC, "anomaly model", bytes)?;
        let bad = |detail: String| ContainerError::Truncated {
            kind: "anomaly model",
            detail,
        };
        let [header, detector] = sections.as_slice() else {
            return Err(bad("expected 2 sections".into()));
        };
        Ok(AnomalyModel {
            header: serde_json::from_slice(header).map_err(|e| bad(format!("header: {e}")))?,
            detector: serde_json::from_slice(detector)
                .map_err(|e| bad(format!("detector: {e}")))?,
        })
    }

    pub fn artifact(&self) -> Artifact {
        Artifact {
            bytes: self.to_bytes(),
            metrics: self.header.metrics.clone(),
        }
    }

    /// Checks and standardises raw rows.
    fn standardised(&self, rows: &[Vec<f64>]) -> Result<Vec<f32>, PredictError> {
        let mut x = check_rows(rows, &self.header.feature_names)?;
        let d = self.header.mean.len();
        for row in x.chunks_exact_mut(d) {
            for (j, v) in row.iter_mut().enumerate() {
                *v = ((*v as f64 - self.header.mean[j]) / self.header.std[j]) as f32;
            }
        }
        Ok(x)
    }

    fn answer(&self, score: f64) -> Value {
        json!({"score": score, "is_anomaly": score > self.header.threshold})
    }
}

impl Served for AnomalyModel {
    fn predict(&self, rows: &[Vec<f64>]) -> Result<Vec<Value>, PredictError> {
        let x = self.standardised(rows)?;
        let scores = self.detector.score(Rows::new(&x, self.header.mean.len()));
        Ok(scores.into_iter().map(|s| self.answer(s)).collect())
    }

    fn output_columns(&self) -> Vec<String> {
        vec!["score".into(), "is_anomaly".into()]
    }

    fn feature_names(&self) -> Vec<String> {
        self.header.feature_names.clone()
    }

    /// `{"contamination": "auto" | fraction}` or `{"threshold": score}`: the threshold moves,
    /// the detector stays as fitted.
    fn adjust(&self, changes: &Map<String, Value>) -> Result<Adjusted, AdjustError> {
        let mut header = self.header.clone();
        match (changes.get("contamination"), changes.get("threshold")) {
            (Some(_), Some(_)) => {
                return Err(ValidationError::new(
                    "threshold",
                    "send contamination or threshold, not both",
                )
                .into());
            }
            (Some(c), None) => {
                header.spec.contamination = Contamination::parse(c)?;
                header.threshold = threshold_for(
                    header.spec.algorithm,
                    header.spec.contamination,
                    &header.train_scores,
                );
            }
            (None, Some(t)) => {
                header.threshold = t.as_f64().filter(|t| t.is_finite()).ok_or_else(|| {
                    ValidationError::new("threshold", format!("expected a finite number, got {t}"))
                })?;
            }
            (None, None) => {
                return Err(ValidationError::new(
                    "contamination",
                    "send {\"contamination\": \"auto\" or a fraction in (0, 0.5]} or {\"threshold\": a score}",
                )
                .into());
            }
        }
        if let Some(key) = changes
            .keys()
            .find(|k| !matches!(k.as_str(), "contamination" | "threshold"))
        {
            return Err(ValidationError::new(
                key.as_str(),
                "not adjustable; an anomaly detector accepts contamination or threshold",
            )
            .into());
        }
        let kept: Vec<(String, f64)> = ["fit_seconds", "score_rows_per_second"]
            .iter()
            .filter_map(|k| header.metrics.get(*k).map(|v| (k.to_string(), *v)))
            .collect();
        header.metrics = header.threshold_metrics();
        header.metrics.extend(kept);
        let summary = json!({
            "threshold": header.threshold,
            "contamination": header.spec.contamination,
            "fraction_flagged": header.fraction_flagged(),
        });
        let model = AnomalyModel {
            header,
            detector: self.detector.clone(),
        };
        Ok(Adjusted {
            artifact: model.artifact(),
            summary,
        })
    }

    fn open_stream(
        self: Arc<Self>,
        state: Option<&[u8]>,
    ) -> Result<Box<dyn StreamSession>, String> {
        let FittedDetector::HalfSpaceTrees(fitted) = &self.detector else {
            return Ok(Box::new(StatelessSession(self)));
        };
        let trees = match state {
            Some(bytes) => serde_json::from_slice(bytes)
                .map_err(|e| format!("the session's saved state is unreadable: {e}"))?,
            None => fitted.clone(),
        };
        Ok(Box::new(LearningSession { model: self, trees }))
    }
}

/// Half-space trees on a stream: each row is scored, then learned.
struct LearningSession {
    model: Arc<AnomalyModel>,
    trees: HalfSpaceTrees,
}

impl StreamSession for LearningSession {
    fn process(&mut self, rows: &[Vec<f64>]) -> Result<Vec<Value>, PredictError> {
        let x = self.model.standardised(rows)?;
        let d = self.model.header.mean.len();
        let mut answers = Vec::with_capacity(rows.len());
        for row in x.chunks_exact(d) {
            let score = self.trees.score(Rows::new(row, d))[0];
            self.trees.learn(row);
            answers.push(self.model.answer(score));
        }
        Ok(answers)
    }

    fn state(&self) -> Option<Vec<u8>> {
        Some(serde_json::to_vec(&self.trees).expect("trees serialize"))
    }
}

#[cfg(test)]
mod tests {
    use super::quantile;

    #[test]
    fn quantiles_interpolate_like_numpy() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(quantile(&v, 0.5), 2.5);
        assert_eq!(quantile(&v, 0.0), 1.0);
        assert_eq!(quantile(&v, 1.0), 4.0);
        assert!((quantile(&v, 0.9) - 3.7).abs() < 1e-12);
    }
}
