//! What serving a trained model keeps: streaming sessions' learned state, batch scoring jobs,
//! and a completed run's model file when its settings change after training.

use serde_json::Value;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::{Result, Store, new_id, now_ms};

#[derive(Debug, Clone, PartialEq)]
pub struct StreamSessionRow {
    pub id: String,
    pub model_id: String,
    pub run_id: String,
    /// Rows answered (and, for learning models, learned) when `state` was saved.
    pub rows: i64,
    pub state: Option<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ScoreJobRow {
    pub id: String,
    pub model_id: String,
    pub run_id: String,
    pub dataset: String,
    /// running, completed or failed.
    pub status: String,
    pub rows: i64,
    pub rows_done: i64,
    pub artifact: Option<String>,
    pub error: Option<String>,
    pub created_at: i64,
    pub finished_at: Option<i64>,
}

impl ScoreJobRow {
    fn from_row(row: &AnyRow) -> Result<Self> {
        Ok(ScoreJobRow {
            id: row.try_get("id")?,
            model_id: row.try_get("model_id")?,
            run_id: row.try_get("run_id")?,
            dataset: row.try_get("dataset")?,
            status: row.try_get("status")?,
            rows: row.try_get("rows")?,
            rows_done: row.try_get("rows_done")?,
            artifact: row.try_get("artifact")?,
            error: row.try_get("error")?,
            created_at: row.try_get("created_at")?,
            finished_at: row.try_get("finished_at")?,
        })
    }
}

impl Store {
    pub async fn create_stream_session(
        &self,
        model_id: &str,
        run_id: &str,
    ) -> Result<StreamSessionRow> {
        let id = new_id();
        let now = now_ms();
        sqlx::query("INSERT INTO stream_sessions (id, model_id, run_id, rows, created_at, updated_at) VALUES ($1, $2, $3, 0, $4, $5)")
            .bind(&id)
            .bind(model_id)
            .bind(run_id)
            .bind(now)
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(StreamSessionRow {
            id,
            model_id: model_id.into(),
            run_id: run_id.into(),
            rows: 0,
            state: None,
        })
    }

    pub async fn stream_session(
        &self,
        model_id: &str,
        id: &str,
    ) -> Result<Option<StreamSessionRow>> {
        let row = sqlx::query("SELECT id, model_id, run_id, rows, state FROM stream_sessions WHERE id = $1 AND model_id = $2")
            .bind(id)
            .bind(model_id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            Ok(StreamSessionRow {
                id: r.try_get("id")?,
                model_id: r.try_get("model_id")?,
                run_id: r.try_get("run_id")?,
                rows: r.try_get("rows")?,
                state: r.try_get("state")?,
            })
        })
        .transpose()
    }

    /// Saves a session's position and learned state together.
    pub async fn save_stream_session(
        &self,
        id: &str,
        rows: i64,
        state: Option<&[u8]>,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE stream_sessions SET rows = $1, state = $2, updated_at = $3 WHERE id = $4",
        )
        .bind(rows)
        .bind(state)
        .bind(now_ms())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn create_score_job(
        &self,
        model_id: &str,
        run_id: &str,
        dataset: &str,
        rows: i64,
    ) -> Result<ScoreJobRow> {
        let id = new_id();
        sqlx::query("INSERT INTO score_jobs (id, model_id, run_id, dataset, status, rows, created_at) VALUES ($1, $2, $3, $4, 'running', $5, $6)")
            .bind(&id)
            .bind(model_id)
            .bind(run_id)
            .bind(dataset)
            .bind(rows)
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        Ok(self.score_job(model_id, &id).await?.expect("just inserted"))
    }

    pub async fn score_job(&self, model_id: &str, id: &str) -> Result<Option<ScoreJobRow>> {
        sqlx::query("SELECT * FROM score_jobs WHERE id = $1 AND model_id = $2")
            .bind(id)
            .bind(model_id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(ScoreJobRow::from_row)
            .transpose()
    }

    pub async fn score_job_progress(&self, id: &str, rows_done: i64) -> Result<()> {
        sqlx::query("UPDATE score_jobs SET rows_done = $1 WHERE id = $2")
            .bind(rows_done)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Ends a score job: completed with its CSV, or failed with the reason.
    pub async fn finish_score_job(
        &self,
        id: &str,
        artifact: Option<&str>,
        error: Option<&str>,
    ) -> Result<()> {
        let status = if error.is_some() {
            "failed"
        } else {
            "completed"
        };
        sqlx::query("UPDATE score_jobs SET status = $1, artifact = $2, error = $3, finished_at = $4, rows_done = CASE WHEN $5 IS NULL THEN rows ELSE rows_done END WHERE id = $6")
            .bind(status)
            .bind(artifact)
            .bind(error)
            .bind(now_ms())
            .bind(error)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Score jobs a stopped process left running fail, saying to submit them again.
    pub async fn fail_interrupted_score_jobs(&self) -> Result<u64> {
        let done = sqlx::query("UPDATE score_jobs SET status = 'failed', error = 'the server stopped while scoring; submit the job again', finished_at = $1 WHERE status = 'running'")
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// Points a completed run at a new model file (its settings changed without a refit).
    /// Returns the file it replaced; None when the run is not completed.
    pub async fn replace_run_artifact(
        &self,
        run_id: &str,
        artifact: &str,
        metrics: &Value,
    ) -> Result<Option<String>> {
        let mut tx = self.write_tx().await?;
        let old: Option<(Option<String>,)> =
            sqlx::query_as("SELECT artifact FROM runs WHERE id = $1 AND status = 'completed'")
                .bind(run_id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some((old,)) = old else {
            return Ok(None);
        };
        sqlx::query("UPDATE runs SET artifact = $1, metrics = $2, updated_at = $3 WHERE id = $4")
            .bind(artifact)
            .bind(metrics.to_string())
            .bind(now_ms())
            .bind(run_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(old.unwrap_or_default()))
    }

    /// Every artifact a row points at: checkpoints, run models, score CSVs, uploaded datasets.
    pub async fn referenced_artifacts(&self) -> Result<std::collections::HashSet<String>> {
        let rows = sqlx::query(
            "SELECT path AS key FROM checkpoints \
             UNION SELECT artifact FROM runs WHERE artifact IS NOT NULL \
             UNION SELECT artifact FROM score_jobs WHERE artifact IS NOT NULL \
             UNION SELECT path FROM datasets",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok(r.try_get::<String, _>(0)?))
            .collect()
    }
}
