use serde_json::Value;
use sqlx::AnyConnection;
use sqlx::{AssertSqlSafe, Row};

use crate::{AttemptRow, CheckpointRow, Result, RunRow, Store, StoreError, new_id, now_ms};

const RUN_COLUMNS: &str = "id, model_id, project_id, status, stage, hyperparameters, epoch, total_epochs, progress, \
     metrics, error, attempt, artifact, created_at, started_at, finished_at, updated_at";

/// A worker's progress report for its run.
#[derive(Debug, Clone, Default)]
pub struct RunProgress {
    pub stage: String,
    pub epoch: i64,
    pub progress: f64,
    pub metrics: Option<Value>,
}

/// Runs per status and jobs per queue state, for the Prometheus endpoint.
#[derive(Debug, Clone, Default)]
pub struct StatusCounts {
    pub runs: Vec<(String, i64)>,
    pub jobs_queued: i64,
    pub jobs_running: i64,
}

/// Fails with `Fenced` unless the statement touched a row: the worker's attempt is stale.
pub(crate) fn fenced(affected: u64, run_id: &str, attempt: i64) -> Result<()> {
    if affected == 0 {
        Err(StoreError::Fenced {
            run_id: run_id.to_string(),
            attempt,
        })
    } else {
        Ok(())
    }
}

/// What a train request found and did.
#[derive(Debug, Clone)]
pub enum RunStart {
    /// A new run was queued.
    Created(RunRow),
    /// The paused run was cancelled and a new run queued.
    Restarted {
        run: RunRow,
        cancelled_run_id: String,
    },
    /// A run is already pending, initializing or training; nothing changed.
    Active(RunRow),
    /// The latest run is paused; nothing changed. Resume it, or restart (which cancels it).
    Paused(RunRow),
}

impl Store {
    /// Starts a run of a model unless one is already pending, initializing or training, or one is paused and
    /// `restart` is false. The checks, the cancel of a paused run on restart and the insert
    /// happen in one write transaction, so two concurrent requests cannot both create a run.
    pub async fn create_run(
        &self,
        model_id: &str,
        project_id: &str,
        hyperparameters: &Value,
        total_epochs: i64,
        restart: bool,
    ) -> Result<RunStart> {
        let mut tx = self.write_tx().await?;
        let open = sqlx::query(AssertSqlSafe(format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE model_id = $1 AND status IN ('pending', 'initializing', 'training', 'paused') ORDER BY created_at DESC LIMIT 1"
        )))
        .bind(model_id)
        .fetch_optional(&mut *tx)
        .await?;
        let mut cancelled = None;
        if let Some(row) = open {
            let row = RunRow::from_row(&row)?;
            if row.status != "paused" {
                tx.commit().await?;
                return Ok(RunStart::Active(row));
            }
            if !restart {
                tx.commit().await?;
                return Ok(RunStart::Paused(row));
            }
            crate::queue::cancel_waiting_run(
                &mut tx,
                &row.id,
                "cancelled: the model was restarted",
            )
            .await?;
            cancelled = Some(row.id);
        }
        let now = now_ms();
        let run_id = new_id();
        sqlx::query(
            "INSERT INTO runs (id, model_id, project_id, status, stage, hyperparameters, total_epochs, created_at, updated_at) \
             VALUES ($1, $2, $3, 'pending', 'queued', $4, $5, $6, $7)",
        )
        .bind(&run_id)
        .bind(model_id)
        .bind(project_id)
        .bind(hyperparameters.to_string())
        .bind(total_epochs)
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query("INSERT INTO jobs (id, run_id, state, available_at, created_at) VALUES ($1, $2, 'queued', $3, $4)")
            .bind(new_id())
            .bind(&run_id)
            .bind(now)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE models SET latest_run_id = $1, updated_at = $2 WHERE id = $3")
            .bind(&run_id)
            .bind(now)
            .bind(model_id)
            .execute(&mut *tx)
            .await?;
        let row = fetch_run(&mut tx, &run_id).await?.expect("inserted run");
        tx.commit().await?;
        Ok(match cancelled {
            Some(cancelled_run_id) => RunStart::Restarted {
                run: row,
                cancelled_run_id,
            },
            None => RunStart::Created(row),
        })
    }

    pub async fn get_run(&self, project_id: &str, run_id: &str) -> Result<Option<RunRow>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE id = $1 AND project_id = $2"
        )))
        .bind(run_id)
        .bind(project_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(RunRow::from_row).transpose()
    }

    /// A run in whichever project it belongs to: for workers, which serve every project.
    pub async fn run_by_id(&self, run_id: &str) -> Result<Option<RunRow>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE id = $1"
        )))
        .bind(run_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(RunRow::from_row).transpose()
    }

    pub async fn list_runs(&self, model_id: &str) -> Result<Vec<RunRow>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE model_id = $1 ORDER BY created_at DESC, id DESC"
        )))
        .bind(model_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(RunRow::from_row).collect()
    }

    /// Per-epoch metrics of a run, in epoch order.
    pub async fn epoch_metrics(&self, run_id: &str) -> Result<Vec<Value>> {
        let rows =
            sqlx::query("SELECT metrics FROM epoch_metrics WHERE run_id = $1 ORDER BY epoch")
                .bind(run_id)
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| {
                let text: String = r.try_get("metrics")?;
                serde_json::from_str(&text)
                    .map_err(|e| StoreError::Corrupt(format!("epoch metrics: {e}")))
            })
            .collect()
    }

    pub async fn attempts(&self, run_id: &str) -> Result<Vec<AttemptRow>> {
        let rows = sqlx::query("SELECT attempt, worker, started_at, ended_at, outcome, reason, note FROM run_attempts WHERE run_id = $1 ORDER BY attempt")
            .bind(run_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(AttemptRow::from_row).collect()
    }

    pub async fn set_stage(&self, run_id: &str, attempt: i64, stage: &str) -> Result<()> {
        let done = sqlx::query("UPDATE runs SET stage = $1, updated_at = $2 WHERE id = $3 AND attempt = $4 AND status IN ('initializing', 'training')")
            .bind(stage)
            .bind(now_ms())
            .bind(run_id)
            .bind(attempt)
            .execute(&self.pool)
            .await?;
        fenced(done.rows_affected(), run_id, attempt)
    }

    /// The run's preparation is over and its first step is next: initializing becomes training.
    pub async fn start_training(&self, run_id: &str, attempt: i64) -> Result<()> {
        let done = sqlx::query("UPDATE runs SET status = 'training', stage = 'training', updated_at = $1 WHERE id = $2 AND attempt = $3 AND status IN ('initializing', 'training')")
            .bind(now_ms())
            .bind(run_id)
            .bind(attempt)
            .execute(&self.pool)
            .await?;
        fenced(done.rows_affected(), run_id, attempt)
    }

    pub async fn record_progress(&self, run_id: &str, attempt: i64, p: &RunProgress) -> Result<()> {
        let done = sqlx::query(
            "UPDATE runs SET stage = $1, epoch = $2, progress = $3, metrics = COALESCE($4, metrics), updated_at = $5 \
             WHERE id = $6 AND attempt = $7 AND status IN ('initializing', 'training')",
        )
        .bind(&p.stage)
        .bind(p.epoch)
        .bind(p.progress)
        .bind(p.metrics.as_ref().map(Value::to_string))
        .bind(now_ms())
        .bind(run_id)
        .bind(attempt)
        .execute(&self.pool)
        .await?;
        fenced(done.rows_affected(), run_id, attempt)
    }

    /// Stores one epoch's metrics (replacing an entry a previous attempt wrote for the same
    /// epoch) and makes them the run's latest.
    pub async fn record_epoch(
        &self,
        run_id: &str,
        attempt: i64,
        epoch: i64,
        progress: f64,
        metrics: &Value,
    ) -> Result<()> {
        let mut tx = self.write_tx().await?;
        let done = sqlx::query(
            "UPDATE runs SET epoch = $1, progress = $2, metrics = $3, updated_at = $4 WHERE id = $5 AND attempt = $6 AND status IN ('initializing', 'training')",
        )
        .bind(epoch)
        .bind(progress)
        .bind(metrics.to_string())
        .bind(now_ms())
        .bind(run_id)
        .bind(attempt)
        .execute(&mut *tx)
        .await?;
        fenced(done.rows_affected(), run_id, attempt)?;
        sqlx::query(
            "INSERT INTO epoch_metrics (run_id, epoch, metrics) VALUES ($1, $2, $3) \
             ON CONFLICT (run_id, epoch) DO UPDATE SET metrics = excluded.metrics",
        )
        .bind(run_id)
        .bind(epoch)
        .bind(metrics.to_string())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// A new attempt that starts over forgets epochs beyond where it starts.
    pub async fn truncate_history(
        &self,
        run_id: &str,
        attempt: i64,
        after_epoch: i64,
    ) -> Result<()> {
        let mut tx = self.write_tx().await?;
        let done = sqlx::query(
            "UPDATE runs SET epoch = $1, updated_at = $2 WHERE id = $3 AND attempt = $4",
        )
        .bind(after_epoch)
        .bind(now_ms())
        .bind(run_id)
        .bind(attempt)
        .execute(&mut *tx)
        .await?;
        fenced(done.rows_affected(), run_id, attempt)?;
        sqlx::query("DELETE FROM epoch_metrics WHERE run_id = $1 AND epoch > $2")
            .bind(run_id)
            .bind(after_epoch)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Ends a run with a terminal status; `job_attempt` fences the write and closes the job.
    pub async fn finish_run(
        &self,
        run_id: &str,
        attempt: i64,
        status: &str,
        metrics: Option<&Value>,
        artifact: Option<&str>,
        error: Option<&str>,
    ) -> Result<()> {
        let mut tx = self.write_tx().await?;
        let now = now_ms();
        let done = sqlx::query(
            "UPDATE runs SET status = $1, stage = 'done', progress = CASE WHEN $1 = 'completed' THEN 1.0 ELSE progress END, \
             epoch = CASE WHEN $1 = 'completed' AND epoch = 0 THEN total_epochs ELSE epoch END, \
             metrics = COALESCE($2, metrics), artifact = COALESCE($3, artifact), error = $4, finished_at = $5, updated_at = $5 \
             WHERE id = $6 AND attempt = $7 AND status IN ('initializing', 'training')",
        )
        .bind(status)
        .bind(metrics.map(Value::to_string))
        .bind(artifact)
        .bind(error)
        .bind(now)
        .bind(run_id)
        .bind(attempt)
        .execute(&mut *tx)
        .await?;
        fenced(done.rows_affected(), run_id, attempt)?;
        close_job_and_attempt(&mut tx, run_id, attempt, status, error).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn insert_checkpoint(&self, row: &CheckpointRow) -> Result<()> {
        let mut tx = self.write_tx().await?;
        let current: Option<(i64,)> = sqlx::query_as("SELECT attempt FROM runs WHERE id = $1")
            .bind(&row.run_id)
            .fetch_optional(&mut *tx)
            .await?;
        fenced(
            u64::from(current == Some((row.attempt,))),
            &row.run_id,
            row.attempt,
        )?;
        sqlx::query(
            "INSERT INTO checkpoints (id, run_id, attempt, epoch, step, path, sha256, bytes, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&row.id)
        .bind(&row.run_id)
        .bind(row.attempt)
        .bind(row.epoch)
        .bind(row.step)
        .bind(&row.path)
        .bind(&row.sha256)
        .bind(row.bytes)
        .bind(row.created_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn checkpoints(&self, run_id: &str) -> Result<Vec<CheckpointRow>> {
        let rows = sqlx::query("SELECT id, run_id, attempt, epoch, step, path, sha256, bytes, created_at FROM checkpoints WHERE run_id = $1 ORDER BY step DESC, created_at DESC, id DESC")
            .bind(run_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(CheckpointRow::from_row).collect()
    }

    /// Adds a note to the current attempt (what it resumed from, rollbacks, batch-size cuts).
    /// Fenced: only the attempt that owns the run may add to its note.
    pub async fn add_attempt_note(&self, run_id: &str, attempt: i64, note: &str) -> Result<()> {
        let done = sqlx::query(
            "UPDATE run_attempts SET note = COALESCE(note || '; ', '') || $1 WHERE run_id = $2 AND attempt = $3 \
             AND EXISTS (SELECT 1 FROM runs WHERE id = $2 AND attempt = $3)",
        )
        .bind(note)
        .bind(run_id)
        .bind(attempt)
        .execute(&self.pool)
        .await?;
        fenced(done.rows_affected(), run_id, attempt)
    }

    /// Forgets checkpoints (rows) by id, after their files were removed.
    pub async fn delete_checkpoints(&self, ids: &[String]) -> Result<()> {
        for id in ids {
            sqlx::query("DELETE FROM checkpoints WHERE id = $1")
                .bind(id)
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    pub async fn status_counts(&self) -> Result<StatusCounts> {
        let runs = sqlx::query_as::<_, (String, i64)>(
            "SELECT status, COUNT(*) FROM runs GROUP BY status ORDER BY status",
        )
        .fetch_all(&self.pool)
        .await?;
        let jobs = sqlx::query_as::<_, (String, i64)>(
            "SELECT state, COUNT(*) FROM jobs WHERE state != 'done' GROUP BY state",
        )
        .fetch_all(&self.pool)
        .await?;
        let count = |state: &str| jobs.iter().find(|(s, _)| s == state).map_or(0, |(_, n)| *n);
        Ok(StatusCounts {
            runs,
            jobs_queued: count("queued"),
            jobs_running: count("leased"),
        })
    }
}

pub(crate) async fn fetch_run(conn: &mut AnyConnection, run_id: &str) -> Result<Option<RunRow>> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {RUN_COLUMNS} FROM runs WHERE id = $1"
    )))
    .bind(run_id)
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(RunRow::from_row).transpose()
}

pub(crate) async fn close_job_and_attempt(
    conn: &mut AnyConnection,
    run_id: &str,
    attempt: i64,
    outcome: &str,
    reason: Option<&str>,
) -> Result<()> {
    sqlx::query("UPDATE jobs SET state = 'done', lease_owner = NULL, lease_expires_at = NULL WHERE run_id = $1")
        .bind(run_id)
        .execute(&mut *conn)
        .await?;
    end_attempt(conn, run_id, attempt, outcome, reason).await
}

/// Records how an attempt ended (once: an attempt that already ended keeps its outcome).
pub(crate) async fn end_attempt(
    conn: &mut AnyConnection,
    run_id: &str,
    attempt: i64,
    outcome: &str,
    reason: Option<&str>,
) -> Result<()> {
    sqlx::query("UPDATE run_attempts SET ended_at = $1, outcome = $2, reason = $3 WHERE run_id = $4 AND attempt = $5 AND ended_at IS NULL")
        .bind(now_ms())
        .bind(outcome)
        .bind(reason)
        .bind(run_id)
        .bind(attempt)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
