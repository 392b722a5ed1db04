//! How a job survives failures: where it resumes from, which failures it retries and when it
//! gives up.

use std::sync::Arc;

use trainyard_engine::family::{Family, SavedCheckpoint};
use trainyard_store::{AttemptRow, ClaimedJob, StoreError};

use crate::state::SharedState;

pub(super) async fn cancelled(state: &SharedState, job: &ClaimedJob) -> Result<(), StoreError> {
    state
        .store
        .finish_run(
            &job.run_id,
            job.attempt,
            "cancelled",
            None,
            None,
            Some("cancelled by request"),
        )
        .await
}

pub(super) async fn fail(
    state: &SharedState,
    job: &ClaimedJob,
    reason: &str,
) -> Result<(), StoreError> {
    state
        .store
        .finish_run(&job.run_id, job.attempt, "failed", None, None, Some(reason))
        .await
}

/// The newest checkpoint of a run that reads back intact, and a note on what was used or
/// skipped. A damaged file (truncated, bit-flipped, missing) is skipped for the one before it.
pub(super) async fn newest_valid_checkpoint(
    state: &SharedState,
    family: &Arc<dyn Family>,
    run_id: &str,
) -> Result<(Option<SavedCheckpoint>, Option<String>), StoreError> {
    let rows = state.store.checkpoints(run_id).await?;
    let mut skipped = Vec::new();
    for row in rows {
        let artifacts = state.artifacts.clone();
        let path = row.path.clone();
        let family = family.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            let bytes = artifacts.get(&path).map_err(|e| e.to_string())?;
            let (epoch, step) = family.checkpoint_position(&bytes)?;
            Ok::<_, String>(SavedCheckpoint { epoch, step, bytes })
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
        match loaded {
            Ok(ckpt) => {
                let mut note = format!(
                    "resumed from the checkpoint at epoch {}, step {}",
                    ckpt.epoch, ckpt.step
                );
                if !skipped.is_empty() {
                    note.push_str(&format!(
                        " after skipping {} damaged: {}",
                        skipped.len(),
                        skipped.join("; ")
                    ));
                }
                return Ok((Some(ckpt), Some(note)));
            }
            Err(e) => skipped.push(format!("epoch {} ({e})", row.epoch)),
        }
    }
    let note = (!skipped.is_empty())
        .then(|| format!("started over: no valid checkpoint ({})", skipped.join("; ")));
    Ok((None, note))
}

/// Attempts that ended by failing or losing their worker; pauses and shutdowns do not count.
fn failed_count(attempts: &[AttemptRow]) -> u32 {
    attempts
        .iter()
        .filter(|a| matches!(a.outcome.as_deref(), Some("failed" | "lost")))
        .count() as u32
}

async fn failed_attempts(state: &SharedState, job: &ClaimedJob) -> Result<u32, StoreError> {
    Ok(failed_count(&state.store.attempts(&job.run_id).await?))
}

/// Attempts lost because the kernel killed their worker, most likely for memory: each halves
/// the batch of the attempts after it.
pub(super) fn killed_for_memory(attempts: &[AttemptRow]) -> u32 {
    attempts
        .iter()
        .filter(|a| {
            a.outcome.as_deref() == Some("lost")
                && a.reason
                    .as_deref()
                    .is_some_and(|r| r.contains(crate::supervisor::KILLED_FOR_MEMORY))
        })
        .count() as u32
}

/// Why the run may not start another attempt, if it may not.
pub(super) fn restart_budget_exhausted(
    state: &SharedState,
    attempts: &[AttemptRow],
) -> Option<String> {
    let failures = failed_count(attempts);
    (failures > state.config.max_restarts).then(|| {
        format!(
            "gave up after {failures} failed or lost attempts (max_restarts is {}); see the run's attempts",
            state.config.max_restarts
        )
    })
}

/// A retryable failure (storage, I/O) goes back to the queue with exponential backoff until
/// `max_restarts` is spent.
pub(super) async fn retry_or_fail(
    state: &SharedState,
    job: &ClaimedJob,
    reason: &str,
) -> Result<(), StoreError> {
    let failures = failed_attempts(state, job).await?;
    if failures < state.config.max_restarts {
        let delay = state.config.retry_backoff * 2u32.pow(failures);
        tracing::warn!(run_id = %job.run_id, attempt = job.attempt, ?delay, reason, "retryable failure; retrying");
        state.store.retry_later(job, delay, reason).await
    } else {
        let message = format!("{reason} (gave up after {} attempts)", failures + 1);
        fail(state, job, &message).await
    }
}

/// Failpoint support: waits (at most two minutes) until a later attempt has finished the run.
pub(super) async fn wait_until_taken_over(state: &SharedState, job: &ClaimedJob) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(120);
    while tokio::time::Instant::now() < deadline {
        if let Ok(Some(run)) = state.store.run_by_id(&job.run_id).await
            && run.attempt > job.attempt
            && run.finished_at.is_some()
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
