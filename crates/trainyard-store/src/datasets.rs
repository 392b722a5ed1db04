//! Rows for user-uploaded datasets.

use serde_json::Value;
use sqlx::Row;
use sqlx::any::AnyRow;

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
}

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
        })
    }
}

impl Store {
    /// Records an uploaded dataset; false when the name is taken.
    pub async fn insert_dataset(&self, row: &DatasetRow) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO datasets (name, project_id, info, path, bytes, sha256, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT DO NOTHING",
        )
        .bind(&row.name)
        .bind(&row.project_id)
        .bind(row.info.to_string())
        .bind(&row.path)
        .bind(row.bytes)
        .bind(&row.sha256)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn get_dataset(&self, project_id: &str, name: &str) -> Result<Option<DatasetRow>> {
        let row = sqlx::query("SELECT name, project_id, info, path, bytes, sha256, created_at FROM datasets WHERE project_id = $1 AND name = $2")
            .bind(project_id)
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(DatasetRow::from_row).transpose()
    }

    pub async fn list_datasets(&self, project_id: &str) -> Result<Vec<DatasetRow>> {
        let rows = sqlx::query("SELECT name, project_id, info, path, bytes, sha256, created_at FROM datasets WHERE project_id = $1 ORDER BY name")
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
