//! Rows for user-uploaded datasets.

use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};

use crate::{Result, Store, StoreError, now_ms};

#[derive(Debug, Clone, PartialEq)]
pub struct DatasetRow {
    pub name: String,
    pub project_id: String,
    /// The dataset's description (task, shape, features) as the data crate reports it.
    pub info: Value,
    pub path: String,
    pub bytes: i64,
    pub sha256: String,
    pub created_at: i64,
    /// `ready`, or for an extracted activation dataset `initializing` while its job runs,
    /// then `ready`, `failed` or `cancelled`.
    pub status: String,
    /// An extraction's request and progress (what to read, shards done, the error).
    pub extraction: Option<Value>,
}

pub const DATASET_READY: &str = "ready";
pub const DATASET_INITIALIZING: &str = "initializing";

const COLUMNS: &str = "name, project_id, info, path, bytes, sha256, created_at, status, extraction";

impl DatasetRow {
    fn from_row(row: &AnyRow) -> Result<Self> {
        let info: String = row.try_get("info")?;
        Ok(DatasetRow {
            name: row.try_get("name")?,
            project_id: row.try_get("project_id")?,
            info: serde_json::from_str(&info)
                .map_err(|e| StoreError::Corrupt(format!("dataset info: {e}")))?,
            path: row.try_get("path")?,
            bytes: row.try_get("bytes")?,
            sha256: row.try_get("sha256")?,
            created_at: row.try_get("created_at")?,
            status: row.try_get("status")?,
            extraction: row
                .try_get::<Option<String>, _>("extraction")?
                .map(|e| serde_json::from_str(&e))
                .transpose()
                .map_err(|e| StoreError::Corrupt(format!("dataset extraction: {e}")))?,
        })
    }
}

impl Store {
    /// Records an uploaded dataset; false when the name is taken.
    pub async fn insert_dataset(&self, row: &DatasetRow) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO datasets (name, project_id, info, path, bytes, sha256, created_at, status, extraction) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
        )
        .bind(&row.name)
        .bind(&row.project_id)
        .bind(row.info.to_string())
        .bind(&row.path)
        .bind(row.bytes)
        .bind(&row.sha256)
        .bind(now_ms())
        .bind(&row.status)
        .bind(row.extraction.as_ref().map(Value::to_string))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn get_dataset(&self, project_id: &str, name: &str) -> Result<Option<DatasetRow>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM datasets WHERE project_id = $1 AND name = $2"
        )))
        .bind(project_id)
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(DatasetRow::from_row).transpose()
    }

    pub async fn list_datasets(&self, project_id: &str) -> Result<Vec<DatasetRow>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM datasets WHERE project_id = $1 ORDER BY name"
        )))
        .bind(project_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(DatasetRow::from_row).collect()
    }

    /// Deletes a dataset unless a model uses it (checked in the same transaction). Returns the
    /// number of models using it; 0 means it was deleted.
    pub async fn delete_dataset_if_unused(&self, project_id: &str, name: &str) -> Result<i64> {
        let mut tx = self.write_tx().await?;
        let (users,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM models WHERE project_id = $1 AND dataset = $2")
                .bind(project_id)
                .bind(name)
                .fetch_one(&mut *tx)
                .await?;
        if users == 0 {
            sqlx::query("DELETE FROM datasets WHERE project_id = $1 AND name = $2")
                .bind(project_id)
                .bind(name)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(users)
    }
}

impl Store {
    /// Takes one extraction that no node holds (new, or its node's lease ran out) and leases
    /// it for `lease_ms`.
    pub async fn claim_extraction(&self, lease_ms: i64) -> Result<Option<DatasetRow>> {
        let now = now_ms();
        let mut tx = self.write_tx().await?;
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM datasets WHERE status = $1 \
             AND (lease_expires_at IS NULL OR lease_expires_at < $2) ORDER BY created_at LIMIT 1"
        )))
        .bind(DATASET_INITIALIZING)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row.as_ref().map(DatasetRow::from_row).transpose()? else {
            return Ok(None);
        };
        sqlx::query(
            "UPDATE datasets SET lease_expires_at = $1 WHERE project_id = $2 AND name = $3",
        )
        .bind(now + lease_ms)
        .bind(&row.project_id)
        .bind(&row.name)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(row))
    }

    /// Records an extraction's progress and extends its lease; false when it was cancelled
    /// or deleted meanwhile (the extraction should stop).
    pub async fn extraction_progress(
        &self,
        project_id: &str,
        name: &str,
        extraction: &Value,
        lease_ms: i64,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE datasets SET extraction = $1, lease_expires_at = $2 \
             WHERE project_id = $3 AND name = $4 AND status = $5",
        )
        .bind(extraction.to_string())
        .bind(now_ms() + lease_ms)
        .bind(project_id)
        .bind(name)
        .bind(DATASET_INITIALIZING)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Ends an extraction as `status` (`ready` with the dataset's description and size, or
    /// `failed`); false when it was cancelled or deleted meanwhile.
    pub async fn finish_extraction(
        &self,
        row: &DatasetRow,
        status: &str,
        extraction: &Value,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE datasets SET status = $1, extraction = $2, info = $3, bytes = $4, \
             lease_expires_at = NULL WHERE project_id = $5 AND name = $6 AND status = $7",
        )
        .bind(status)
        .bind(extraction.to_string())
        .bind(row.info.to_string())
        .bind(row.bytes)
        .bind(&row.project_id)
        .bind(&row.name)
        .bind(DATASET_INITIALIZING)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Cancels an extraction still running; false when it is not.
    pub async fn cancel_extraction(&self, project_id: &str, name: &str) -> Result<bool> {
        self.update_initializing(
            project_id,
            name,
            "status = 'cancelled', lease_expires_at = NULL",
        )
        .await
    }

    /// Gives an extraction back (a graceful stop): the next node to look takes it at once.
    pub async fn release_extraction(&self, project_id: &str, name: &str) -> Result<()> {
        self.update_initializing(project_id, name, "lease_expires_at = NULL")
            .await
            .map(|_| ())
    }

    async fn update_initializing(&self, project_id: &str, name: &str, set: &str) -> Result<bool> {
        let done = sqlx::query(AssertSqlSafe(format!(
            "UPDATE datasets SET {set} WHERE project_id = $1 AND name = $2 AND status = $3"
        )))
        .bind(project_id)
        .bind(name)
        .bind(DATASET_INITIALIZING)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }
}
