//! What the training thread reports, stored (fenced by the attempt) and then published to event
//! subscribers; and the checkpoint retention policy.

use serde_json::{Value, json};
use trainyard_core::{EpochMetrics, TrainingEvent};
use trainyard_store::{CheckpointRow, ClaimedJob, RunProgress, StoreError};

use crate::events;
use crate::state::SharedState;

/// What the training thread tells the async side.
pub(super) enum Report {
    /// An engine event and when the training thread emitted it (ms since the epoch).
    Event(TrainingEvent, i64),
    Checkpoint(CheckpointRow),
}

/// Stores a training report, then publishes it to event subscribers.
pub(super) async fn persist(
    state: &SharedState,
    job: &ClaimedJob,
    total_epochs: i64,
    report: Report,
) -> Result<(), StoreError> {
    let published = describe(&report, total_epochs);
    let started = matches!(report, Report::Event(TrainingEvent::Started { .. }, _));
    store_report(state, job, total_epochs, report).await?;
    if let Some((kind, data)) = published {
        events::publish_for_attempt(state, job, kind, data).await?;
    }
    if started {
        events::publish_run_status(state, &job.run_id).await;
    }
    Ok(())
}

/// What subscribers see of a report: its event type and data.
fn describe(report: &Report, total_epochs: i64) -> Option<(&'static str, Value)> {
    match report {
        Report::Event(
            TrainingEvent::Progress {
                epoch,
                batch,
                batches,
                fraction,
            },
            _,
        ) => {
            let percent = 100.0
                * ((*epoch as f64 - 1.0 + fraction) / total_epochs.max(1) as f64).clamp(0.0, 1.0);
            Some((
                "progress",
                json!({"epoch": epoch, "batch": batch, "batches": batches, "fraction": fraction, "percent": percent}),
            ))
        }
        Report::Event(TrainingEvent::Preparing { stage, done, total }, _) => Some((
            "preparing",
            json!({"stage": stage, "done": done, "total": total,
                   "fraction": *done as f64 / (*total).max(1) as f64}),
        )),
        Report::Event(TrainingEvent::Epoch(m), at) => {
            let mut data = epoch_json(m);
            data["emitted_at_ms"] = json!(at);
            Some(("epoch", data))
        }
        Report::Event(TrainingEvent::EarlyStopped { epoch, best_epoch }, _) => Some((
            "note",
            json!({"message": format!("early stopping after epoch {epoch}; restoring epoch {best_epoch}'s weights")}),
        )),
        Report::Event(event, _) => {
            note_text(event).map(|message| ("note", json!({ "message": message })))
        }
        Report::Checkpoint(row) => Some((
            "checkpoint",
            json!({"id": row.id, "epoch": row.epoch, "step": row.step, "bytes": row.bytes, "sha256": row.sha256}),
        )),
    }
}

/// The attempt note for events that change how the run proceeds.
fn note_text(event: &TrainingEvent) -> Option<String> {
    match event {
        TrainingEvent::RolledBack {
            epoch,
            batch,
            resumed_at_epoch,
            learning_rate_scale,
        } => Some(format!(
            "non-finite loss at epoch {epoch}, batch {batch}: rolled back to epoch {resumed_at_epoch} with the learning rate scaled by {learning_rate_scale}"
        )),
        TrainingEvent::Resampled {
            step,
            layer,
            latents,
        } => Some(format!(
            "step {step}: resampled {latents} dead latents of layer {layer}'s autoencoder"
        )),
        TrainingEvent::BatchSizeReduced {
            from,
            to,
            estimated_mb,
            budget_mb,
        } => Some(format!(
            "batch size reduced from {from} to {to}: about {estimated_mb:.0} MB needed, budget {budget_mb} MB"
        )),
        TrainingEvent::Note { message } => Some(message.clone()),
        TrainingEvent::BatchSizeProbed {
            chosen,
            probed,
            budget_mb,
        } => {
            let tried: Vec<String> = probed
                .iter()
                .map(|p| format!("{} ({:.0} samples/s)", p.batch_size, p.samples_per_second))
                .collect();
            Some(format!(
                "batch size auto: chose {chosen}, the fastest of {} (each fits the {budget_mb} MB budget)",
                tried.join(", ")
            ))
        }
        _ => None,
    }
}

async fn store_report(
    state: &SharedState,
    job: &ClaimedJob,
    total_epochs: i64,
    report: Report,
) -> Result<(), StoreError> {
    let store = &state.store;
    let total = total_epochs.max(1) as f64;
    match report {
        Report::Event(
            TrainingEvent::Progress {
                epoch, fraction, ..
            },
            _,
        ) => {
            let progress = ((epoch as f64 - 1.0 + fraction) / total).clamp(0.0, 1.0);
            let p = RunProgress {
                stage: "training".into(),
                epoch: epoch as i64 - 1,
                progress,
                metrics: None,
            };
            store.record_progress(&job.run_id, job.attempt, &p).await
        }
        Report::Event(TrainingEvent::Epoch(m), _) => {
            let progress = (m.epoch as f64 / total).clamp(0.0, 1.0);
            store
                .record_epoch(
                    &job.run_id,
                    job.attempt,
                    m.epoch as i64,
                    progress,
                    &epoch_json(&m),
                )
                .await
        }
        Report::Event(TrainingEvent::Started { .. }, _) => {
            store.start_training(&job.run_id, job.attempt).await
        }
        Report::Event(
            event @ TrainingEvent::RolledBack {
                resumed_at_epoch, ..
            },
            _,
        ) => {
            store
                .truncate_history(&job.run_id, job.attempt, resumed_at_epoch as i64)
                .await?;
            let note = note_text(&event).unwrap_or_default();
            store
                .add_attempt_note(&job.run_id, job.attempt, &note)
                .await
        }
        Report::Event(TrainingEvent::Preparing { stage, .. }, _) => {
            store.set_stage(&job.run_id, job.attempt, &stage).await
        }
        Report::Event(
            event @ (TrainingEvent::BatchSizeReduced { .. }
            | TrainingEvent::BatchSizeProbed { .. }
            | TrainingEvent::Note { .. }
            | TrainingEvent::Resampled { .. }),
            _,
        ) => {
            let note = note_text(&event).unwrap_or_default();
            store
                .add_attempt_note(&job.run_id, job.attempt, &note)
                .await
        }
        Report::Event(_, _) => Ok(()),
        Report::Checkpoint(row) => {
            if let Err(e) = store.insert_checkpoint(&row).await {
                // Not recorded, so not ours to keep: a stale attempt's file must not linger.
                if let Err(io) = state.artifacts.delete(&row.path) {
                    tracing::warn!(path = %row.path, error = %io, "could not remove a refused checkpoint");
                }
                return Err(e);
            }
            prune_checkpoints(state, &job.run_id).await
        }
    }
}

/// Keeps the newest `keep_checkpoints` of a run and the best one by the monitored metric;
/// older files and rows go.
async fn prune_checkpoints(state: &SharedState, run_id: &str) -> Result<(), StoreError> {
    let rows = state.store.checkpoints(run_id).await?;
    if rows.len() <= state.config.keep_checkpoints {
        return Ok(());
    }
    let best = best_checkpoint_epoch(state, run_id).await?;
    let mut kept_best = false;
    let old: Vec<_> = rows
        .into_iter()
        .enumerate()
        .filter(|(i, row)| {
            // Keep the newest checkpoint at the best epoch (an epoch-end one, not a mid-epoch one).
            let is_best = !kept_best && Some(row.epoch) == best;
            kept_best |= is_best;
            *i >= state.config.keep_checkpoints && !is_best
        })
        .map(|(_, row)| row)
        .collect();
    for row in &old {
        if let Err(e) = state.artifacts.delete(&row.path) {
            tracing::warn!(path = %row.path, error = %e, "could not remove an old checkpoint");
        }
    }
    state
        .store
        .delete_checkpoints(&old.into_iter().map(|r| r.id).collect::<Vec<_>>())
        .await
}

/// The epoch with the best monitored validation metric (early stopping's, else `val_loss`).
async fn best_checkpoint_epoch(
    state: &SharedState,
    run_id: &str,
) -> Result<Option<i64>, StoreError> {
    let Some(run) = state.store.run_by_id(run_id).await? else {
        return Ok(None);
    };
    let monitor = run.hyperparameters["early_stopping"]["monitor"]
        .as_str()
        .unwrap_or("val_loss")
        .to_string();
    let key = if monitor == "val_loss" {
        "val_loss"
    } else {
        monitor.trim_start_matches("val_")
    };
    let maximize = trainyard_core::hyperparameters::metric_is_maximized(&monitor);
    let history = state.store.epoch_metrics(run_id).await?;
    let best = history
        .iter()
        .filter_map(|m| Some((m["epoch"].as_i64()?, m[key].as_f64()?)))
        .filter(|(_, v)| v.is_finite())
        .reduce(|a, b| {
            if (b.1 > a.1) == maximize && b.1 != a.1 {
                b
            } else {
                a
            }
        });
    Ok(best.map(|(epoch, _)| epoch))
}

fn epoch_json(m: &EpochMetrics) -> Value {
    serde_json::to_value(m).unwrap_or_else(|_| json!({"epoch": m.epoch}))
}
