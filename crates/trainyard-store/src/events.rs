//! The per-model event log behind the SSE and WebSocket streams.

use std::time::Duration;

use serde_json::Value;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::{Result, Store, StoreError, now_ms};

#[derive(Debug, Clone, PartialEq)]
pub struct EventRow {
    /// Orders events across all models.
    pub id: i64,
    pub model_id: String,
    pub project_id: String,
    /// Increases by one per event of a model.
    pub seq: i64,
    pub run_id: Option<String>,
    pub kind: String,
    pub data: Value,
    pub created_at: i64,
}

impl EventRow {
    fn from_row(row: &AnyRow) -> Result<Self> {
        let data: String = row.try_get("data")?;
        Ok(EventRow {
            id: row.try_get("id")?,
            model_id: row.try_get("model_id")?,
            project_id: row.try_get("project_id")?,
            seq: row.try_get("seq")?,
            run_id: row.try_get("run_id")?,
            kind: row.try_get("kind")?,
            data: serde_json::from_str(&data)
                .map_err(|e| StoreError::Corrupt(format!("event data: {e}")))?,
            created_at: row.try_get("created_at")?,
        })
    }
}

impl Store {
    /// Appends an event with the model's next sequence number (under the writers' lock, so
    /// concurrent writers never share or skip a number). Returns `None` when the model no longer exists.
    pub async fn append_event(
        &self,
        model_id: &str,
        run_id: Option<&str>,
        kind: &str,
        data: &Value,
    ) -> Result<Option<EventRow>> {
        self.insert_event(model_id, run_id, None, kind, data).await
    }

    /// Appends an event for a worker's attempt: refused with `Fenced` unless `attempt` still
    /// owns the run, so a worker that lost its lease cannot add to the run's history.
    pub async fn append_attempt_event(
        &self,
        model_id: &str,
        run_id: &str,
        attempt: i64,
        kind: &str,
        data: &Value,
    ) -> Result<EventRow> {
        self.insert_event(model_id, Some(run_id), Some(attempt), kind, data)
            .await?
            .ok_or_else(|| StoreError::Fenced {
                run_id: run_id.to_string(),
                attempt,
            })
    }

    /// The insert behind both appends: nothing is written unless the model exists and, when
    /// `attempt` is given, that attempt still owns the run.
    async fn insert_event(
        &self,
        model_id: &str,
        run_id: Option<&str>,
        attempt: Option<i64>,
        kind: &str,
        data: &Value,
    ) -> Result<Option<EventRow>> {
        // Under the writers' lock, so the next sequence number is this writer's alone.
        let mut tx = self.write_tx().await?;
        let row = sqlx::query(
            "INSERT INTO events (model_id, project_id, seq, run_id, kind, data, created_at) \
             SELECT $1, (SELECT project_id FROM models WHERE id = $1), \
             COALESCE((SELECT MAX(seq) FROM events WHERE model_id = $1), 0) + 1, $2, $3, $4, $5 \
             WHERE EXISTS (SELECT 1 FROM models WHERE id = $1) \
             AND ($6 IS NULL OR EXISTS (SELECT 1 FROM runs WHERE id = $2 AND model_id = $1 AND attempt = $6)) \
             RETURNING id, model_id, project_id, seq, run_id, kind, data, created_at",
        )
        .bind(model_id)
        .bind(run_id)
        .bind(kind)
        .bind(data.to_string())
        .bind(now_ms())
        .bind(attempt)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        row.as_ref().map(EventRow::from_row).transpose()
    }

    /// A model's events after `after_seq`, oldest first.
    pub async fn model_events(
        &self,
        model_id: &str,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<EventRow>> {
        let rows = sqlx::query(
            "SELECT id, model_id, project_id, seq, run_id, kind, data, created_at FROM events WHERE model_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(model_id)
        .bind(after_seq)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(EventRow::from_row).collect()
    }

    /// Events of every model in every project after the global id `after_id`, oldest first
    /// (for the process that relays other processes' events to its subscribers).
    pub async fn all_events(&self, after_id: i64, limit: i64) -> Result<Vec<EventRow>> {
        let rows = sqlx::query("SELECT id, model_id, project_id, seq, run_id, kind, data, created_at FROM events WHERE id > $1 ORDER BY id LIMIT $2")
            .bind(after_id)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(EventRow::from_row).collect()
    }

    /// Events of every model of a project after the global id `after_id`, oldest first.
    pub async fn project_events(
        &self,
        project_id: &str,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<EventRow>> {
        let rows = sqlx::query("SELECT id, model_id, project_id, seq, run_id, kind, data, created_at FROM events WHERE project_id = $1 AND id > $2 ORDER BY id LIMIT $3")
            .bind(project_id)
            .bind(after_id)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(EventRow::from_row).collect()
    }
}

impl Store {
    /// Deletes the progress events of runs that finished more than `older_than` ago. Progress
    /// (about ten a second while a run trains) says nothing its epochs, statuses, checkpoints
    /// and notes do not, so a finished run's log is bounded by its epochs, not by how long it
    /// trained. The delay lets a watcher that reconnects just after the end replay everything.
    pub async fn compact_finished_runs(&self, older_than: Duration) -> Result<u64> {
        let done = sqlx::query(
            "DELETE FROM events WHERE kind = 'progress' AND run_id IN \
             (SELECT id FROM runs WHERE finished_at IS NOT NULL AND finished_at <= $1)",
        )
        .bind(now_ms() - older_than.as_millis() as i64)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// The newest global event id (0 when there are none): where a live-only stream starts.
    pub async fn latest_event_id(&self) -> Result<i64> {
        let row: (Option<i64>,) = sqlx::query_as("SELECT MAX(id) FROM events")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.0.unwrap_or(0))
    }
}
