use serde_json::Value;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::{Result, StoreError};

fn json(row: &AnyRow, column: &str) -> Result<Option<Value>> {
    let text: Option<String> = row.try_get(column)?;
    text.map(|t| {
        serde_json::from_str(&t).map_err(|e| StoreError::Corrupt(format!("{column}: {e}")))
    })
    .transpose()
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelRow {
    pub id: String,
    pub project_id: String,
    pub name: String,
    pub dataset: String,
    pub algorithm: String,
    pub hyperparameters: Value,
    pub latest_run_id: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl ModelRow {
    pub(crate) fn from_row(row: &AnyRow) -> Result<Self> {
        Ok(ModelRow {
            id: row.try_get("id")?,
            project_id: row.try_get("project_id")?,
            name: row.try_get("name")?,
            dataset: row.try_get("dataset")?,
            algorithm: row.try_get("algorithm")?,
            hyperparameters: json(row, "hyperparameters")?.unwrap_or(Value::Null),
            latest_run_id: row.try_get("latest_run_id")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RunRow {
    pub id: String,
    pub model_id: String,
    pub project_id: String,
    pub status: String,
    pub stage: String,
    pub hyperparameters: Value,
    pub epoch: i64,
    pub total_epochs: i64,
    pub progress: f64,
    pub metrics: Option<Value>,
    pub error: Option<String>,
    pub attempt: i64,
    pub artifact: Option<String>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub updated_at: i64,
}

impl RunRow {
    pub(crate) fn from_row(row: &AnyRow) -> Result<Self> {
        Ok(RunRow {
            id: row.try_get("id")?,
            model_id: row.try_get("model_id")?,
            project_id: row.try_get("project_id")?,
            status: row.try_get("status")?,
            stage: row.try_get("stage")?,
            hyperparameters: json(row, "hyperparameters")?.unwrap_or(Value::Null),
            epoch: row.try_get("epoch")?,
            total_epochs: row.try_get("total_epochs")?,
            progress: row.try_get("progress")?,
            metrics: json(row, "metrics")?,
            error: row.try_get("error")?,
            attempt: row.try_get("attempt")?,
            artifact: row.try_get("artifact")?,
            created_at: row.try_get("created_at")?,
            started_at: row.try_get("started_at")?,
            finished_at: row.try_get("finished_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRow {
    pub attempt: i64,
    pub worker: String,
    pub started_at: i64,
    pub ended_at: Option<i64>,
    pub outcome: Option<String>,
    pub reason: Option<String>,
    pub note: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointRow {
    pub id: String,
    pub run_id: String,
    pub attempt: i64,
    pub epoch: i64,
    pub step: i64,
    pub path: String,
    pub sha256: String,
    pub bytes: i64,
    pub created_at: i64,
}

impl AttemptRow {
    pub(crate) fn from_row(row: &AnyRow) -> Result<Self> {
        Ok(AttemptRow {
            attempt: row.try_get("attempt")?,
            worker: row.try_get("worker")?,
            started_at: row.try_get("started_at")?,
            ended_at: row.try_get("ended_at")?,
            outcome: row.try_get("outcome")?,
            reason: row.try_get("reason")?,
            note: row.try_get("note")?,
        })
    }
}

impl CheckpointRow {
    pub(crate) fn from_row(row: &AnyRow) -> Result<Self> {
        Ok(CheckpointRow {
            id: row.try_get("id")?,
            run_id: row.try_get("run_id")?,
            attempt: row.try_get("attempt")?,
            epoch: row.try_get("epoch")?,
            step: row.try_get("step")?,
            path: row.try_get("path")?,
            sha256: row.try_get("sha256")?,
            bytes: row.try_get("bytes")?,
            created_at: row.try_get("created_at")?,
        })
    }
}
