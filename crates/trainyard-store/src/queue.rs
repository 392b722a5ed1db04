//! The durable job queue. A job is leased to one worker at a time; the lease expires unless the
//! worker heartbeats, and an expired lease makes the job claimable again as a new attempt.
//! Claiming is one `UPDATE ... WHERE id = (SELECT ...) RETURNING` statement, which SQLite runs
//! atomically (and PostgreSQL can run with `FOR UPDATE SKIP LOCKED` in the subquery).

use std::time::Duration;

use sqlx::AnyConnection;
use sqlx::Row;

use crate::runs::{close_job_and_attempt, end_attempt, fenced};
use crate::{Result, Store, StoreError, now_ms};

#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedJob {
    pub job_id: String,
    pub run_id: String,
    pub model_id: String,
    /// Fencing token: every write for this job carries it.
    pub attempt: i64,
    pub cancel_requested: bool,
    pub pause_requested: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct JobFlags {
    pub cancel_requested: bool,
    pub pause_requested: bool,
}

/// The flags of the job row a leased attempt read, or `Fenced` when there was none.
fn flags_of(job: &ClaimedJob, row: Option<sqlx::any::AnyRow>) -> Result<JobFlags> {
    let Some(row) = row else {
        return Err(StoreError::Fenced {
            run_id: job.run_id.clone(),
            attempt: job.attempt,
        });
    };
    Ok(JobFlags {
        cancel_requested: row.try_get::<i64, _>("cancel_requested")? != 0,
        pause_requested: row.try_get::<i64, _>("pause_requested")? != 0,
    })
}

impl Store {
    /// Leases the oldest available job to `worker`: a queued one, or one whose lease expired
    /// (its worker died). Marks the run `training` under the new attempt number.
    pub async fn claim_job(&self, worker: &str, lease: Duration) -> Result<Option<ClaimedJob>> {
        let now = now_ms();
        // Idle workers poll often: look before taking the writers' lock, so an empty queue
        // costs a read, not a write transaction that every other writer waits behind.
        let claimable: Option<(i64,)> = sqlx::query_as(
            "SELECT 1 FROM jobs WHERE (state = 'queued' AND available_at <= $1) \
             OR (state = 'leased' AND lease_expires_at < $1) LIMIT 1",
        )
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        if claimable.is_none() {
            return Ok(None);
        }
        let mut tx = self.write_tx().await?;
        let row = sqlx::query(
            "UPDATE jobs SET state = 'leased', lease_owner = $1, lease_expires_at = $2 + $3, attempt = attempt + 1 \
             WHERE id = (SELECT id FROM jobs \
                         WHERE (state = 'queued' AND available_at <= $2) OR (state = 'leased' AND lease_expires_at < $2) \
                         ORDER BY available_at, created_at LIMIT 1) \
             RETURNING id, run_id, attempt, cancel_requested, pause_requested",
        )
        .bind(worker)
        .bind(now)
        .bind(lease.as_millis() as i64)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            tx.commit().await?;
            return Ok(None);
        };
        let job_id: String = row.try_get("id")?;
        let run_id: String = row.try_get("run_id")?;
        let attempt: i64 = row.try_get("attempt")?;
        // A previous attempt that never ended lost its worker.
        sqlx::query(
            "UPDATE run_attempts SET ended_at = $1, outcome = 'lost', reason = 'lease expired: the worker stopped heartbeating' \
             WHERE run_id = $2 AND ended_at IS NULL",
        )
        .bind(now)
        .bind(&run_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO run_attempts (run_id, attempt, worker, started_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(&run_id)
        .bind(attempt)
        .bind(worker)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let model: (String,) = sqlx::query_as(
            "UPDATE runs SET status = 'initializing', stage = 'loading_data', attempt = $1, error = NULL, \
             started_at = COALESCE(started_at, $2), updated_at = $3 WHERE id = $4 RETURNING model_id",
        )
        .bind(attempt)
        .bind(now)
        .bind(now)
        .bind(&run_id)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(ClaimedJob {
            job_id,
            run_id,
            model_id: model.0,
            attempt,
            cancel_requested: row.try_get::<i64, _>("cancel_requested")? != 0,
            pause_requested: row.try_get::<i64, _>("pause_requested")? != 0,
        }))
    }

    /// The flags the API set on a leased job, without touching the lease (cheap enough to poll
    /// between heartbeats). Fails with `Fenced` when this attempt no longer holds the job.
    pub async fn job_flags(&self, job: &ClaimedJob) -> Result<JobFlags> {
        let row = sqlx::query(
            "SELECT cancel_requested, pause_requested FROM jobs WHERE id = $1 AND attempt = $2 AND state = 'leased'",
        )
        .bind(&job.job_id)
        .bind(job.attempt)
        .fetch_optional(&self.pool)
        .await?;
        flags_of(job, row)
    }

    /// Extends the lease and returns the flags the API set. Fails with `Fenced` when this
    /// attempt no longer holds the job.
    pub async fn heartbeat(&self, job: &ClaimedJob, lease: Duration) -> Result<JobFlags> {
        let row = sqlx::query(
            "UPDATE jobs SET lease_expires_at = $1 WHERE id = $2 AND attempt = $3 AND state = 'leased' \
             RETURNING cancel_requested, pause_requested",
        )
        .bind(now_ms() + lease.as_millis() as i64)
        .bind(&job.job_id)
        .bind(job.attempt)
        .fetch_optional(&self.pool)
        .await?;
        flags_of(job, row)
    }

    /// Puts a leased job back in the queue (graceful shutdown): the run becomes `pending` again
    /// and the attempt is recorded as interrupted.
    pub async fn release_job(&self, job: &ClaimedJob, reason: &str) -> Result<()> {
        self.requeue(job, now_ms(), None, "interrupted", reason)
            .await
    }

    /// A worker process died (its supervisor saw it exit): its leased jobs go back to the queue
    /// at once instead of waiting for their leases, each attempt recorded as `lost` with
    /// `reason`. Returns the runs requeued.
    pub async fn requeue_dead_worker(&self, owner: &str, reason: &str) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT j.id, j.run_id, j.attempt, r.model_id FROM jobs j JOIN runs r ON r.id = j.run_id \
             WHERE j.state = 'leased' AND j.lease_owner = $1",
        )
        .bind(owner)
        .fetch_all(&self.pool)
        .await?;
        let mut requeued = Vec::new();
        for row in rows {
            let job = ClaimedJob {
                job_id: row.try_get("id")?,
                run_id: row.try_get("run_id")?,
                model_id: row.try_get("model_id")?,
                attempt: row.try_get("attempt")?,
                cancel_requested: false,
                pause_requested: false,
            };
            match self
                .requeue(&job, now_ms(), Some(reason.to_string()), "lost", reason)
                .await
            {
                Ok(()) => requeued.push(job.run_id),
                // Claimed again meanwhile (its lease had expired): nothing left to do.
                Err(StoreError::Fenced { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(requeued)
    }

    /// Ends an attempt and puts its job back in the queue, available from `available_at`: the
    /// run is `pending` again (with `run_error` shown on it, if any).
    async fn requeue(
        &self,
        job: &ClaimedJob,
        available_at: i64,
        run_error: Option<String>,
        outcome: &str,
        reason: &str,
    ) -> Result<()> {
        let now = now_ms();
        let mut tx = self.write_tx().await?;
        let done = sqlx::query(
            "UPDATE jobs SET state = 'queued', lease_owner = NULL, lease_expires_at = NULL, available_at = $1 \
             WHERE id = $2 AND attempt = $3 AND state = 'leased'",
        )
        .bind(available_at)
        .bind(&job.job_id)
        .bind(job.attempt)
        .execute(&mut *tx)
        .await?;
        fenced(done.rows_affected(), &job.run_id, job.attempt)?;
        sqlx::query(
            "UPDATE runs SET status = 'pending', stage = 'queued', error = COALESCE($1, error), updated_at = $2 WHERE id = $3 AND attempt = $4",
        )
        .bind(run_error)
        .bind(now)
        .bind(&job.run_id)
        .bind(job.attempt)
        .execute(&mut *tx)
        .await?;
        end_attempt(&mut tx, &job.run_id, job.attempt, outcome, Some(reason)).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Asks for a run to be cancelled. A run waiting in the queue or paused is cancelled at once
    /// (returns true); a leased one gets the flag its worker reads (returns false).
    pub async fn request_cancel(&self, run_id: &str) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        let queued: Option<(i64,)> = sqlx::query_as(
            "SELECT 1 FROM jobs WHERE run_id = $1 AND state IN ('queued', 'paused')",
        )
        .bind(run_id)
        .fetch_optional(&mut *tx)
        .await?;
        let queued = queued.is_some();
        if queued {
            cancel_waiting_run(&mut tx, run_id, "cancelled by request").await?;
        } else {
            sqlx::query(
                "UPDATE jobs SET cancel_requested = 1 WHERE run_id = $1 AND state = 'leased'",
            )
            .bind(run_id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(queued)
    }
}

/// Cancels a run no worker holds (queued or paused): the run ends `cancelled`, its job closes
/// and its last attempt records `reason`.
pub(crate) async fn cancel_waiting_run(
    conn: &mut AnyConnection,
    run_id: &str,
    reason: &str,
) -> Result<()> {
    let now = now_ms();
    sqlx::query(
        "UPDATE runs SET status = 'cancelled', stage = 'done', finished_at = $1, updated_at = $2 WHERE id = $3 AND status IN ('pending', 'paused')",
    )
    .bind(now)
    .bind(now)
    .bind(run_id)
    .execute(&mut *conn)
    .await?;
    let attempt: (i64,) = sqlx::query_as("SELECT attempt FROM runs WHERE id = $1")
        .bind(run_id)
        .fetch_one(&mut *conn)
        .await?;
    close_job_and_attempt(conn, run_id, attempt.0, "cancelled", Some(reason)).await
}

#[cfg(test)]
mod tests;

impl Store {
    /// Flags a leased job for pausing; its worker checkpoints at the next batch boundary.
    /// Returns false when no worker holds the job.
    pub async fn request_pause(&self, run_id: &str) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE jobs SET pause_requested = 1 WHERE run_id = $1 AND state = 'leased'",
        )
        .bind(run_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// The worker stopped at a checkpoint because a pause was requested: the run is `paused`,
    /// the job waits (not queued) until resumed, and the worker is free.
    pub async fn pause_run(&self, job: &ClaimedJob) -> Result<()> {
        let now = now_ms();
        let mut tx = self.write_tx().await?;
        let done = sqlx::query(
            "UPDATE jobs SET state = 'paused', pause_requested = 0, lease_owner = NULL, lease_expires_at = NULL \
             WHERE id = $1 AND attempt = $2 AND state = 'leased'",
        )
        .bind(&job.job_id)
        .bind(job.attempt)
        .execute(&mut *tx)
        .await?;
        fenced(done.rows_affected(), &job.run_id, job.attempt)?;
        sqlx::query("UPDATE runs SET status = 'paused', stage = 'paused', updated_at = $1 WHERE id = $2 AND attempt = $3")
            .bind(now)
            .bind(&job.run_id)
            .bind(job.attempt)
            .execute(&mut *tx)
            .await?;
        end_attempt(
            &mut tx,
            &job.run_id,
            job.attempt,
            "paused",
            Some("paused by request"),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Queues a paused run again; it continues from its checkpoint. False if it was not paused.
    pub async fn resume_run(&self, run_id: &str) -> Result<bool> {
        let now = now_ms();
        let mut tx = self.write_tx().await?;
        let done = sqlx::query("UPDATE runs SET status = 'pending', stage = 'queued', updated_at = $1 WHERE id = $2 AND status = 'paused'")
            .bind(now)
            .bind(run_id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            tx.commit().await?;
            return Ok(false);
        }
        sqlx::query("UPDATE jobs SET state = 'queued', available_at = $1 WHERE run_id = $2 AND state = 'paused'")
            .bind(now)
            .bind(run_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// A retryable failure: the job goes back to the queue after `delay` and the attempt records why.
    pub async fn retry_later(&self, job: &ClaimedJob, delay: Duration, reason: &str) -> Result<()> {
        let message = format!(
            "attempt {} failed, retrying in {:.0?}: {reason}",
            job.attempt, delay
        );
        self.requeue(
            job,
            now_ms() + delay.as_millis() as i64,
            Some(message),
            "failed",
            reason,
        )
        .await
    }
}

impl Store {
    /// Records that an attempt's late writes were refused (it lost the run to a successor).
    pub async fn record_fenced(&self, run_id: &str, attempt: i64, worker: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO fenced_attempts (run_id, attempt, worker, at) VALUES ($1, $2, $3, $4)",
        )
        .bind(run_id)
        .bind(attempt)
        .bind(worker)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Attempts ever refused by fencing, by every process on this database.
    pub async fn fenced_attempts_total(&self) -> Result<i64> {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM fenced_attempts")
            .fetch_one(&self.pool)
            .await?;
        Ok(n)
    }
}
