//! The anomaly-detection family: detectors fitted on unlabeled rows. A dataset's binary target
//! (0/1, or classes such as `outlier`/`normal`) is only an evaluation label: it picks no rows
//! and changes no value the fit sees, and it measures quality on a seeded held-out part.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use trainyard_core::{Task, TrainingEvent, ValidationError};
use trainyard_data::{DatasetInfo, OutlierSplit, Table, outlier_split};

use super::model::{AnomalyHeader, AnomalyModel, FittedDetector, threshold_for};
use super::spec::{AnomalyAlgorithm, AnomalySpec};
use super::{Ecod, HalfSpaceTrees, Hbos, IsolationForest, Rows};
use crate::container::{read_sections, write_sections};
use crate::family::{Family, Finished, Job, Limits, Plan, Reporter, SavedCheckpoint, Served};
use crate::{Control, PredictError, Stop, TrainError};

pub struct AnomalyFamily;

const CHECKPOINT_MAGIC: &[u8; 8] = b"TYANCK01";
const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);

/// Class names that mark the outlier class of a two-class label.
const OUTLIER_NAMES: [&str; 6] = ["1", "true", "yes", "outlier", "anomaly", "anomalous"];

/// Which rows are outliers, when the dataset's target is a two-class label naming one.
pub fn outlier_labels(info: &DatasetInfo, table: &Table) -> Option<Vec<bool>> {
    let classes = info.classes.as_ref().filter(|c| c.len() == 2)?;
    if info.task != Task::Classification {
        return None;
    }
    let outlier = classes
        .iter()
        .position(|c| OUTLIER_NAMES.contains(&c.to_ascii_lowercase().as_str()))?;
    Some(table.y.iter().map(|y| *y as usize == outlier).collect())
}

fn labeled(info: &DatasetInfo) -> bool {
    info.task == Task::Classification
        && info.classes.as_ref().is_some_and(|c| {
            c.len() == 2
                && c.iter()
                    .any(|c| OUTLIER_NAMES.contains(&c.to_ascii_lowercase().as_str()))
        })
}

fn resolve(
    algorithm: &str,
    info: &DatasetInfo,
    user: &Map<String, Value>,
) -> Result<AnomalySpec, ValidationError> {
    let algorithm = AnomalyAlgorithm::parse(algorithm).ok_or_else(|| {
        ValidationError::new(
            "algorithm",
            format!("'{algorithm}' is not an anomaly detector"),
        )
    })?;
    if info.image_shape.is_some() {
        return Err(ValidationError::new(
            "dataset",
            format!(
                "{} scores rows of tabular features; '{}' is an image dataset",
                algorithm.name(),
                info.name
            ),
        ));
    }
    AnomalySpec::resolve(algorithm, labeled(info), user).map_err(|e| e.within("hyperparameters"))
}

/// The isolation forest's progress, as its checkpoint holds it.
#[derive(Serialize, Deserialize)]
struct CheckpointHeader {
    spec: AnomalySpec,
    trees: usize,
}

fn checkpoint(spec: &AnomalySpec, forest: Option<&IsolationForest>) -> SavedCheckpoint {
    let trees = forest.map_or(0, IsolationForest::trees_grown);
    let header = serde_json::to_vec(&CheckpointHeader {
        spec: spec.clone(),
        trees,
    })
    .expect("header serializes");
    let body = serde_json::to_vec(&forest).expect("forest serializes");
    SavedCheckpoint {
        epoch: 0,
        step: trees as u64,
        bytes: write_sections(CHECKPOINT_MAGIC, &[&header, &body]),
    }
}

fn read_checkpoint(bytes: &[u8]) -> Result<(CheckpointHeader, Option<IsolationForest>), String> {
    let sections =
        read_sections(CHECKPOINT_MAGIC, "checkpoint", bytes).map_err(|e| e.to_string())?;
    let [header, body] = sections.as_slice() else {
        return Err("checkpoint: expected 2 sections".into());
    };
    let header = serde_json::from_slice(header).map_err(|e| format!("checkpoint header: {e}"))?;
    let forest = serde_json::from_slice(body).map_err(|e| format!("checkpoint trees: {e}"))?;
    Ok((header, forest))
}

/// Stops for a requested cancel or pause; a pause saves `forest` (the trees so far) first.
fn stop_requested(
    control: &Control,
    spec: &AnomalySpec,
    forest: Option<&IsolationForest>,
    reporter: &mut dyn Reporter,
) -> Result<Option<Finished>, TrainError> {
    Ok(match control.requested() {
        None => None,
        Some(Stop::Cancel) => Some(Finished::Cancelled),
        Some(Stop::Pause) => {
            let saved = checkpoint(spec, forest);
            let bytes = reporter
                .checkpoint(&saved)
                .map_err(TrainError::Checkpoint)?;
            reporter.event(TrainingEvent::CheckpointWritten {
                epoch: 0,
                step: saved.step,
                bytes,
            });
            Some(Finished::Paused)
        }
    })
}

fn progress(reporter: &mut dyn Reporter, done: usize, total: usize) {
    reporter.event(TrainingEvent::Progress {
        epoch: 1,
        batch: done as u32,
        batches: total as u32,
        fraction: done as f64 / total.max(1) as f64,
    });
}

/// Grows the forest tree by tree from `resumed`, checkpointing every `checkpoint_seconds`.
fn grow_forest(
    spec: &AnomalySpec,
    train: Rows<'_>,
    resumed: Option<IsolationForest>,
    control: &Control,
    reporter: &mut dyn Reporter,
) -> Result<Result<IsolationForest, Finished>, TrainError> {
    let mut forest =
        resumed.unwrap_or_else(|| IsolationForest::new(spec.isolation_forest(), train.len()));
    let every =
        (spec.checkpoint_seconds > 0).then(|| Duration::from_secs(spec.checkpoint_seconds as u64));
    let (mut last_checkpoint, mut last_progress) = (Instant::now(), Instant::now());
    while forest.trees_grown() < spec.n_estimators {
        if let Some(stopped) = stop_requested(control, spec, Some(&forest), reporter)? {
            return Ok(Err(stopped));
        }
        forest.grow_tree(train);
        let grown = forest.trees_grown();
        if grown == 1 || grown == spec.n_estimators || last_progress.elapsed() >= PROGRESS_INTERVAL
        {
            last_progress = Instant::now();
            progress(reporter, grown, spec.n_estimators);
        }
        if every.is_some_and(|e| last_checkpoint.elapsed() >= e) && grown < spec.n_estimators {
            let saved = checkpoint(spec, Some(&forest));
            reporter
                .checkpoint(&saved)
                .map_err(TrainError::Checkpoint)?;
            last_checkpoint = Instant::now();
        }
    }
    Ok(Ok(forest))
}

/// Fits the detector on the split's training rows, or stops as `control` asks.
fn fit(
    spec: &AnomalySpec,
    split: &OutlierSplit,
    resume: Option<Vec<u8>>,
    control: &Control,
    reporter: &mut dyn Reporter,
) -> Result<Result<FittedDetector, Finished>, TrainError> {
    let train = Rows::new(&split.train, split.d);
    let resumed = match resume {
        Some(bytes) => {
            let (header, forest) = read_checkpoint(&bytes).map_err(TrainError::Resume)?;
            if header.spec != *spec {
                return Err(TrainError::Resume(
                    "the checkpoint was written with different hyperparameters".into(),
                ));
            }
            forest
        }
        None => None,
    };
    if spec.algorithm == AnomalyAlgorithm::IsolationForest {
        return Ok(grow_forest(spec, train, resumed, control, reporter)?
            .map(FittedDetector::IsolationForest));
    }
    // The other detectors fit in one pass (well under a second on shuttle): a pause before it
    // saves an empty checkpoint and the resumed run fits from the start.
    if let Some(stopped) = stop_requested(control, spec, None, reporter)? {
        return Ok(Err(stopped));
    }
    let detector = match spec.algorithm {
        AnomalyAlgorithm::Ecod => FittedDetector::Ecod(Ecod::fit(train)),
        AnomalyAlgorithm::Hbos => {
            FittedDetector::Hbos(Hbos::fit(train, spec.n_bins, spec.alpha, spec.tol))
        }
        AnomalyAlgorithm::HalfSpaceTrees => {
            FittedDetector::HalfSpaceTrees(HalfSpaceTrees::fit(train, spec.half_space_trees()))
        }
        AnomalyAlgorithm::IsolationForest => unreachable!("grown above"),
    };
    progress(reporter, 1, 1);
    Ok(Ok(detector))
}

/// What a fit holds: the standardised split, the scores of every row (sorted and held-out
/// copies, and again in the model file being written), the detector (ECOD: each column sorted;
/// a forest: its nodes; histograms are small), and about 1 MB of working state. ECOD keeps
/// each column sorted and both tails of its empirical distribution.
fn estimated_bytes(spec: &AnomalySpec, rows: usize, d: usize) -> f64 {
    let (rows, d) = (rows as f64, d as f64);
    let split = rows * d * 4.0 + rows * 2.0;
    let scores = rows * 8.0 * 5.0 + 1024.0 * 1024.0;
    let detector = match spec.algorithm {
        AnomalyAlgorithm::Ecod => rows * d * 8.0 * 3.0,
        AnomalyAlgorithm::IsolationForest => {
            let samples = spec.max_samples.unwrap_or(256).min(rows as usize) as f64;
            spec.n_estimators as f64 * 2.0 * samples * 48.0
        }
        AnomalyAlgorithm::Hbos => d * spec.n_bins as f64 * 8.0 * 2.0,
        AnomalyAlgorithm::HalfSpaceTrees => {
            spec.n_trees as f64 * 2f64.powi(spec.height as i32 + 1) * 48.0
        }
    };
    split + scores + detector
}

impl Family for AnomalyFamily {
    fn name(&self) -> &'static str {
        "anomaly"
    }

    fn algorithms(&self) -> Vec<&'static str> {
        AnomalyAlgorithm::ALL.iter().map(|a| a.name()).collect()
    }

    fn plan(
        &self,
        algorithm: &str,
        dataset: &DatasetInfo,
        hyperparameters: &Map<String, Value>,
        _limits: &Limits,
    ) -> Result<Plan, ValidationError> {
        if dataset.task == trainyard_core::Task::Text {
            return Err(ValidationError::new(
                "dataset",
                format!(
                    "'{}' is a text corpus; anomaly detectors fit tables of numbers",
                    dataset.name
                ),
            ));
        }
        let spec = resolve(algorithm, dataset, hyperparameters)?;
        let fitted = dataset.n_rows - (dataset.n_rows as f64 * spec.holdout) as usize;
        if fitted < 1 {
            return Err(ValidationError::new(
                "hyperparameters.holdout",
                format!("leaves no row of '{}' to fit on", dataset.name),
            ));
        }
        Ok(Plan {
            hyperparameters: spec.to_json(),
            epochs: 1,
        })
    }

    fn memory_estimate_mb(&self, job: &Job) -> Option<f64> {
        let info = &job.dataset.info;
        let spec = resolve(&job.algorithm, info, &job.hyperparameters).ok()?;
        Some(estimated_bytes(&spec, info.n_rows, info.n_features) / (1 << 20) as f64)
    }

    fn train(
        &self,
        job: Job,
        control: &Control,
        reporter: &mut dyn Reporter,
    ) -> Result<Finished, TrainError> {
        let info = &job.dataset.info;
        let spec = resolve(&job.algorithm, info, &job.hyperparameters)
            .map_err(|e| TrainError::Fit(e.to_string()))?;
        let labels = outlier_labels(info, &job.dataset.table).unwrap_or_default();
        let d = info.n_features;
        let split = outlier_split(
            &job.dataset.table.x,
            d,
            &labels,
            spec.seed,
            1.0 - spec.holdout,
        );
        reporter.event(TrainingEvent::Started {
            total_epochs: 1,
            start_epoch: 0,
            train_samples: split.train.len() / d,
            validation_samples: split.test.len() / d,
        });
        let started = Instant::now();
        let detector = match fit(&spec, &split, job.resume, control, reporter)? {
            Ok(detector) => detector,
            Err(stopped) => return Ok(stopped),
        };
        let fit_seconds = started.elapsed().as_secs_f64();
        let scoring = Instant::now();
        let mut train_scores = detector.score(Rows::new(&split.train, d));
        let holdout_scores = if split.test.is_empty() {
            vec![]
        } else {
            detector.score(Rows::new(&split.test, d))
        };
        let scored = (split.train.len() + split.test.len()) / d;
        let rows_per_second = scored as f64 / scoring.elapsed().as_secs_f64().max(1e-9);
        train_scores.sort_by(f64::total_cmp);
        let mut header = AnomalyHeader {
            threshold: threshold_for(spec.algorithm, spec.contamination, &train_scores),
            spec,
            dataset: info.name.clone(),
            feature_names: info.feature_names.clone(),
            mean: split.mean.clone(),
            std: split.std.clone(),
            train_scores,
            holdout_scores,
            holdout_outlier: split.test_outlier.clone(),
            metrics: Default::default(),
        };
        header.metrics = header.threshold_metrics();
        header.metrics.insert("fit_seconds".into(), fit_seconds);
        header
            .metrics
            .insert("score_rows_per_second".into(), rows_per_second);
        let model = AnomalyModel { header, detector };
        Ok(Finished::Completed(model.artifact()))
    }

    fn checkpoint_position(&self, bytes: &[u8]) -> Result<(u32, u64), String> {
        let (header, _) = read_checkpoint(bytes)?;
        Ok((0, header.trees as u64))
    }

    fn load(&self, bytes: &[u8]) -> Result<Arc<dyn Served>, PredictError> {
        Ok(Arc::new(AnomalyModel::from_bytes(bytes)?))
    }
}
