//! The JSON bodies the API returns. Field names here are the public contract.

use serde::Serialize;
use serde_json::Value;
use trainyard_store::{AttemptRow, CheckpointRow, ModelRow, RunRow};

/// Milliseconds since the epoch as RFC 3339 UTC.
pub fn timestamp(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ModelView {
    pub id: String,
    pub project: String,
    pub name: String,
    pub dataset: String,
    pub algorithm: String,
    /// Every hyperparameter of the algorithm, defaults filled in.
    #[schema(value_type = Object)]
    pub hyperparameters: Value,
    /// The latest run's status; `pending` before the first run.
    pub status: String,
    pub latest_run_id: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl ModelView {
    pub fn new(model: ModelRow, latest: Option<&RunRow>) -> Self {
        ModelView {
            status: latest.map_or("pending".to_string(), |r| r.status.clone()),
            id: model.id,
            project: model.project_id,
            name: model.name,
            dataset: model.dataset,
            algorithm: model.algorithm,
            hyperparameters: model.hyperparameters,
            latest_run_id: model.latest_run_id,
            created_at: timestamp(model.created_at),
            updated_at: timestamp(model.updated_at),
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ModelList {
    pub models: Vec<ModelView>,
    pub total: i64,
    pub limit: i64,
    pub offset: i64,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Progress {
    pub epoch: i64,
    pub total_epochs: i64,
    /// 0 to 100.
    pub percent: f64,
    /// Models trained by steps (language models): steps done, where each evaluation is an
    /// epoch of `eval_interval` steps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_steps: Option<i64>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct AttemptView {
    pub attempt: i64,
    pub worker: String,
    pub started_at: String,
    pub ended_at: Option<String>,
    pub outcome: Option<String>,
    pub reason: Option<String>,
    /// What the attempt started from: a checkpoint, or over after damaged ones.
    pub note: Option<String>,
}

impl From<AttemptRow> for AttemptView {
    fn from(a: AttemptRow) -> Self {
        AttemptView {
            attempt: a.attempt,
            worker: a.worker,
            started_at: timestamp(a.started_at),
            ended_at: a.ended_at.map(timestamp),
            outcome: a.outcome,
            reason: a.reason,
            note: a.note,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct RunView {
    pub id: String,
    pub model_id: String,
    pub status: String,
    pub stage: String,
    pub attempt: i64,
    pub progress: Progress,
    /// Latest epoch metrics while training; final metrics once completed.
    #[schema(value_type = Option<Object>)]
    pub metrics: Option<Value>,
    pub error: Option<String>,
    #[schema(value_type = Object)]
    pub hyperparameters: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<Vec<AttemptView>>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub updated_at: String,
}

pub fn progress(run: &RunRow) -> Progress {
    let (step, total_steps) = steps(run).unzip();
    Progress {
        epoch: run.epoch,
        total_epochs: run.total_epochs,
        percent: (run.progress * 1000.0).round() / 10.0,
        step,
        total_steps,
    }
}

/// Steps done and planned for a run trained by steps. Progress is `(e - 1 + batch / batches)`
/// evaluations of `total_epochs`, each window `eval_interval` steps (the last one shorter), so
/// the step is `(e - 1) * eval_interval + batch`.
fn steps(run: &RunRow) -> Option<(i64, i64)> {
    let hp = &run.hyperparameters;
    let max_steps = hp.get("max_steps")?.as_i64()?;
    let interval = hp.get("eval_interval")?.as_i64()?.max(1);
    let windows = run.progress.clamp(0.0, 1.0) * run.total_epochs.max(1) as f64;
    let done_windows = (windows + 1e-9).floor() as i64;
    let window_start = done_windows * interval;
    let window = interval.min(max_steps - window_start).max(0);
    let into_window = ((windows - done_windows as f64) * window as f64).round() as i64;
    Some(((window_start + into_window).min(max_steps), max_steps))
}

impl RunView {
    pub fn new(run: RunRow, attempts: Option<Vec<AttemptRow>>) -> Self {
        RunView {
            progress: progress(&run),
            id: run.id,
            model_id: run.model_id,
            status: run.status,
            stage: run.stage,
            attempt: run.attempt,
            metrics: run.metrics,
            error: run.error,
            hyperparameters: run.hyperparameters,
            attempts: attempts.map(|a| a.into_iter().map(AttemptView::from).collect()),
            created_at: timestamp(run.created_at),
            started_at: run.started_at.map(timestamp),
            finished_at: run.finished_at.map(timestamp),
            updated_at: timestamp(run.updated_at),
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct StatusView {
    pub model_id: String,
    pub run_id: Option<String>,
    /// pending, initializing (a worker prepares data and model), training, paused, completed, failed or cancelled.
    pub status: String,
    /// queued, loading_data, what the family prepares (encoding, probing batch sizes,
    /// extracting_activations), training, evaluating, checkpointing, paused or done.
    pub stage: String,
    pub progress: Progress,
    #[schema(value_type = Option<Object>)]
    pub metrics: Option<Value>,
    pub error: Option<String>,
    pub attempt: i64,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub updated_at: String,
}

impl StatusView {
    pub fn new(model: &ModelRow, run: Option<RunRow>) -> Self {
        match run {
            Some(run) => StatusView {
                model_id: model.id.clone(),
                progress: progress(&run),
                run_id: Some(run.id),
                status: run.status,
                stage: run.stage,
                metrics: run.metrics,
                error: run.error,
                attempt: run.attempt,
                created_at: timestamp(run.created_at),
                started_at: run.started_at.map(timestamp),
                finished_at: run.finished_at.map(timestamp),
                updated_at: timestamp(run.updated_at),
            },
            None => StatusView {
                model_id: model.id.clone(),
                run_id: None,
                status: "pending".into(),
                stage: "created".into(),
                progress: Progress {
                    epoch: 0,
                    total_epochs: 0,
                    percent: 0.0,
                    step: None,
                    total_steps: None,
                },
                metrics: None,
                error: None,
                attempt: 0,
                created_at: timestamp(model.created_at),
                started_at: None,
                finished_at: None,
                updated_at: timestamp(model.updated_at),
            },
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct MetricsHistory {
    pub model_id: String,
    pub run_id: Option<String>,
    /// One entry per finished epoch, in order.
    #[schema(value_type = Vec<Object>)]
    pub epochs: Vec<Value>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct CheckpointView {
    pub id: String,
    pub run_id: String,
    pub attempt: i64,
    pub epoch: i64,
    pub step: i64,
    pub sha256: String,
    pub bytes: i64,
    pub created_at: String,
}

impl From<CheckpointRow> for CheckpointView {
    fn from(c: CheckpointRow) -> Self {
        CheckpointView {
            id: c.id,
            run_id: c.run_id,
            attempt: c.attempt,
            epoch: c.epoch,
            step: c.step,
            sha256: c.sha256,
            bytes: c.bytes,
            created_at: timestamp(c.created_at),
        }
    }
}

/// `GET /api/models/{id}/runs`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct RunList {
    pub model_id: String,
    /// Newest first.
    pub runs: Vec<RunView>,
}

/// `GET /api/models/{id}/checkpoints`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CheckpointList {
    pub model_id: String,
    /// The run the checkpoints belong to (the latest); null before the first training.
    pub run_id: Option<String>,
    /// Newest first.
    pub checkpoints: Vec<CheckpointView>,
}

/// `POST /api/models/{id}/predict`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Predictions {
    pub model_id: String,
    /// The completed run whose model answered.
    pub run_id: String,
    /// One per input row, in order. A classifier answers `label`, `class_index` and
    /// `probabilities`; a regressor `value`; an anomaly detector `score` (higher is more
    /// anomalous) and `is_anomaly`.
    #[schema(value_type = Vec<Object>)]
    pub predictions: Vec<serde_json::Value>,
}

/// A batch scoring job: `POST /api/models/{id}/score`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ScoreJobView {
    pub id: String,
    pub model_id: String,
    pub run_id: String,
    pub dataset: String,
    /// running, completed or failed.
    pub status: String,
    pub rows: i64,
    pub rows_done: i64,
    /// Where to download the CSV once completed.
    pub csv_url: Option<String>,
    pub error: Option<String>,
    pub created_at: String,
    pub finished_at: Option<String>,
}

impl ScoreJobView {
    pub fn new(row: trainyard_store::ScoreJobRow) -> Self {
        ScoreJobView {
            csv_url: row
                .artifact
                .as_ref()
                .map(|_| format!("/api/models/{}/score/{}/csv", row.model_id, row.id)),
            id: row.id,
            model_id: row.model_id,
            run_id: row.run_id,
            dataset: row.dataset,
            status: row.status,
            rows: row.rows,
            rows_done: row.rows_done,
            error: row.error,
            created_at: timestamp(row.created_at),
            finished_at: row.finished_at.map(timestamp),
        }
    }
}

/// A dataset as the API shows it: the dataset's description, whether it is built in and, for
/// uploads, the stored file's size and hash. (The handlers build this JSON from the dataset's
/// description; this type documents it.)
#[derive(Serialize, utoipa::ToSchema)]
pub struct DatasetView {
    pub name: String,
    pub description: String,
    /// classification or regression.
    pub task: String,
    pub n_rows: usize,
    pub n_features: usize,
    /// Feature names in column order (a summary string in listings of wide datasets).
    #[schema(value_type = Value)]
    pub feature_names: Value,
    pub target_name: String,
    /// Class labels in index order, for classification.
    pub classes: Option<Vec<String>>,
    /// `[channels, height, width]` for image datasets.
    pub image_shape: Option<Vec<usize>>,
    /// Rows of a held-out test split shipped with the dataset.
    pub test_rows: Option<usize>,
    pub license: String,
    pub builtin: bool,
    /// Uploads only: the stored file's size.
    pub bytes: Option<i64>,
    /// Uploads only: the stored file's sha256.
    pub sha256: Option<String>,
    /// Uploads only: `ready`, or for an activation dataset `initializing` while it is
    /// extracted, then `ready`, `failed` or `cancelled`.
    pub status: Option<String>,
    /// Activation datasets only: the request, shards and tokens done of the total,
    /// `progress` (0 to 1) and the error of a failed extraction.
    #[schema(value_type = Option<Object>)]
    pub extraction: Option<Value>,
    /// Activation datasets only: the source model, corpus, layers, site, token counts, width
    /// and per-layer statistics (mean norm, mean row).
    #[schema(value_type = Option<Object>)]
    pub extracted_from: Option<Value>,
}

/// `GET /api/datasets`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct DatasetList {
    pub datasets: Vec<DatasetView>,
}
