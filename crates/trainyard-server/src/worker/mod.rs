//! The worker pool: each worker leases a job from the database queue, trains it on a blocking
//! thread, and persists what the engine reports. Writes carry the job's attempt number, so a
//! worker that lost its lease cannot overwrite its successor.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch};
use trainyard_core::TrainingEvent;
use trainyard_engine::family::{Family, Finished, Job, Reporter, SavedCheckpoint};
use trainyard_engine::{Control, TrainError};
use trainyard_store::{CheckpointRow, ClaimedJob, StoreError};

use crate::artifacts::{ArtifactCache, checkpoint_key, model_key, run_prefix};
use crate::events;
use crate::state::SharedState;

mod recovery;
mod reports;

use recovery::{
    cancelled, fail, killed_for_memory, newest_valid_checkpoint, restart_budget_exhausted,
    retry_or_fail,
};
use reports::{Report, persist};

/// How often an idle worker looks for a job (an in-process one is also woken when a job is
/// queued); short, so a worker process picks up a job within about this long.
const IDLE_POLL: Duration = Duration::from_millis(100);

/// Runs on the training thread: forwards events and writes checkpoints to the artifact store.
struct JobObserver {
    state: SharedState,
    run_id: String,
    attempt: i64,
    tx: mpsc::UnboundedSender<Report>,
    /// Failpoint for the crash-isolation test: panic inside the training thread.
    panic_after_first_epoch: bool,
    /// Failpoint for the worker-process test: abort the whole process after the first epoch.
    abort_after_first_epoch: bool,
    kill_after_first_epoch: bool,
}

/// Models with this name abort their worker process after their first epoch; it exists so the
/// test suite can prove that a crash that takes down a process takes down only a worker.
const FAILPOINT_ABORT_MODEL: &str = "TRAINYARD_FAILPOINT_ABORT_MODEL";

/// The first attempt of a model with this name has its worker process killed (SIGKILL, as the
/// kernel kills for memory) after its first epoch; the test suite uses it to prove the next
/// attempt trains at half the batch.
const FAILPOINT_KILL_MODEL: &str = "TRAINYARD_FAILPOINT_KILL_MODEL";

/// Models with this name panic inside training after their first epoch; it exists so the test
/// suite can prove that a crashing job fails alone and the worker survives.
const FAILPOINT_PANIC_MODEL: &str = "TRAINYARD_FAILPOINT_PANIC_MODEL";

/// The first attempt of a model with this name stalls after training, before saving its model,
/// until another attempt has taken the run over and finished it: a worker paused past its
/// lease. The test suite uses it to prove that a stale attempt cannot replace anything.
const FAILPOINT_STALL_BEFORE_MODEL: &str = "TRAINYARD_FAILPOINT_STALL_BEFORE_MODEL";

/// A run's `Control` in the shared map for as long as this value lives.
struct RegisteredControl<'a> {
    state: &'a SharedState,
    run_id: String,
}

impl<'a> RegisteredControl<'a> {
    fn new(state: &'a SharedState, run_id: &str, control: Arc<Control>) -> Self {
        state
            .controls
            .lock()
            .unwrap()
            .insert(run_id.to_string(), control);
        RegisteredControl {
            state,
            run_id: run_id.to_string(),
        }
    }
}

impl Drop for RegisteredControl<'_> {
    fn drop(&mut self) {
        self.state.controls.lock().unwrap().remove(&self.run_id);
    }
}

fn failpoint_matches(failpoint: &str, model_name: &str) -> bool {
    std::env::var(failpoint).is_ok_and(|name| name == model_name)
}

impl Reporter for JobObserver {
    fn event(&mut self, event: TrainingEvent) {
        let epoch_done = matches!(event, TrainingEvent::Epoch(_));
        let _ = self
            .tx
            .send(Report::Event(event, trainyard_store::now_ms()));
        if epoch_done && self.panic_after_first_epoch {
            panic!("injected failure ({FAILPOINT_PANIC_MODEL})");
        }
        if epoch_done && self.abort_after_first_epoch {
            std::process::abort();
        }
        if epoch_done && self.kill_after_first_epoch {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &std::process::id().to_string()])
                .status();
        }
    }

    fn checkpoint(&mut self, checkpoint: &SavedCheckpoint) -> Result<u64, String> {
        let bytes = &checkpoint.bytes;
        let key = checkpoint_key(&self.run_id, self.attempt, checkpoint.step);
        self.state
            .artifacts
            .put(&key, bytes)
            .map_err(|e| format!("{key}: {e}"))?;
        let row = CheckpointRow {
            id: uuid::Uuid::now_v7().to_string(),
            run_id: self.run_id.clone(),
            attempt: self.attempt,
            epoch: checkpoint.epoch as i64,
            step: checkpoint.step as i64,
            path: key,
            sha256: hex::encode(Sha256::digest(bytes)),
            bytes: bytes.len() as i64,
            created_at: trainyard_store::now_ms(),
        };
        let _ = self.tx.send(Report::Checkpoint(row));
        Ok(bytes.len() as u64)
    }
}

pub async fn worker_loop(state: SharedState, name: String, mut shutdown: watch::Receiver<bool>) {
    loop {
        if *shutdown.borrow() {
            break;
        }
        match state.store.claim_job(&name, state.config.lease).await {
            Ok(Some(job)) => {
                let run_id = job.run_id.clone();
                tracing::info!(worker = %name, run_id = %run_id, attempt = job.attempt, "claimed job");
                let announced = json!({"attempt": job.attempt, "worker": name});
                if let Err(e) =
                    events::publish_for_attempt(&state, &job, "attempt", announced).await
                {
                    tracing::warn!(run_id = %run_id, error = %e, "could not record the attempt");
                }
                events::publish_run_status(&state, &run_id).await;
                let result = run_job(&state, job, shutdown.clone()).await;
                match result {
                    // Whatever happened (completed, failed, paused, back in the queue), say so.
                    Ok(()) => events::publish_run_status(&state, &run_id).await,
                    // The model was deleted mid-run: remove what this attempt wrote after the delete swept.
                    Err(StoreError::Fenced { .. })
                        if matches!(state.store.run_by_id(&run_id).await, Ok(None)) =>
                    {
                        remove_run_artifacts(&state, &run_id);
                    }
                    // A successor owns the run: this attempt's writes were refused and its
                    // files removed; it says nothing more about the run.
                    Err(StoreError::Fenced { attempt, .. }) => {
                        if let Err(e) = state.store.record_fenced(&run_id, attempt, &name).await {
                            tracing::warn!(error = %e, "could not record a fenced attempt");
                        }
                        tracing::warn!(worker = %name, run_id = %run_id, attempt, "attempt lost its lease; its late writes were refused");
                    }
                    Err(e) => {
                        events::publish_run_status(&state, &run_id).await;
                        tracing::warn!(worker = %name, run_id = %run_id, error = %e, "job ended with a store error")
                    }
                }
            }
            Ok(None) => {
                tokio::select! {
                    _ = state.job_queued.notified() => {}
                    _ = tokio::time::sleep(IDLE_POLL) => {}
                    _ = shutdown.changed() => {}
                }
            }
            Err(e) => {
                tracing::error!(worker = %name, error = %e, "claiming a job failed; retrying");
                tokio::time::sleep(IDLE_POLL).await;
            }
        }
    }
}

/// What a claimed job needs before training starts.
struct PreparedJob {
    family: Arc<dyn Family>,
    job: Job,
    model_name: String,
    total_epochs: i64,
}

/// Builds the family's job from the stored model and run, or says why it cannot be trained.
async fn prepare_job(state: &SharedState, claimed: &ClaimedJob) -> Result<PreparedJob, String> {
    let model = state
        .store
        .model_by_id(&claimed.model_id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("model was deleted")?;
    let run = state
        .store
        .run_by_id(&claimed.run_id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("run was deleted")?;
    let family = state
        .config
        .families
        .for_algorithm(&model.algorithm)
        .map_err(|e| format!("{e}; this server does not train it"))?
        .clone();
    let dataset = crate::datasets::load(state, &model.project_id, &model.dataset).await?;
    let hyperparameters = run.hyperparameters.as_object().cloned().unwrap_or_default();
    let mut dependencies = BTreeMap::new();
    for dependency in family.dependencies(&hyperparameters) {
        let bytes = dependency_file(state, &model.project_id, &dependency.model_id)
            .await
            .map_err(|e| format!("{}: {e}", dependency.field))?;
        dependencies.insert(dependency.field, bytes);
    }
    let job = Job {
        dataset,
        algorithm: model.algorithm.clone(),
        hyperparameters,
        limits: state.config.limits(),
        resume: None,
        dependencies,
        cache: Some(Arc::new(ArtifactCache::new(state.artifacts.clone()))),
    };
    Ok(PreparedJob {
        family,
        job,
        model_name: model.name,
        total_epochs: run.total_epochs,
    })
}

/// The newest completed model file of a model another job reads.
pub(crate) async fn dependency_file(
    state: &SharedState,
    project: &str,
    model_id: &str,
) -> Result<Vec<u8>, String> {
    let model = state
        .store
        .get_model(project, model_id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("model '{model_id}' was deleted"))?;
    let runs = state
        .store
        .list_runs(&model.id)
        .await
        .map_err(|e| e.to_string())?;
    let key = runs
        .into_iter()
        .find(|r| r.status == "completed")
        .and_then(|r| r.artifact)
        .ok_or_else(|| format!("model '{model_id}' has no completed run; train it first"))?;
    let artifacts = state.artifacts.clone();
    tokio::task::spawn_blocking(move || artifacts.get(&key))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("model '{model_id}': its file cannot be read ({e})"))
}

async fn run_job(
    state: &SharedState,
    job: ClaimedJob,
    shutdown: watch::Receiver<bool>,
) -> Result<(), StoreError> {
    let store = &state.store;
    if job.cancel_requested {
        return cancelled(state, &job).await;
    }
    // Registered before the dataset loads, so a cancel while it loads reaches training at its
    // first batch; removed whichever way this attempt ends.
    let control = Control::new();
    let _registered = RegisteredControl::new(state, &job.run_id, control.clone());
    let attempts = store.attempts(&job.run_id).await?;
    if let Some(reason) = restart_budget_exhausted(state, &attempts) {
        return fail(state, &job, &reason).await;
    }
    let PreparedJob {
        family,
        job: mut request,
        model_name,
        total_epochs,
    } = match prepare_job(state, &job).await {
        Ok(r) => r,
        Err(reason) => return fail(state, &job, &reason).await,
    };
    request.limits.batch_halvings = killed_for_memory(&attempts);
    let (checkpoint, mut note) = newest_valid_checkpoint(state, &family, &job.run_id).await?;
    if note.is_none() && job.attempt > 1 {
        note = Some("started over: no checkpoint had been written yet".to_string());
    }
    if let Some(note) = &note {
        tracing::info!(run_id = %job.run_id, attempt = job.attempt, %note, "resuming");
        store
            .add_attempt_note(&job.run_id, job.attempt, note)
            .await?;
        events::publish_for_attempt(state, &job, "note", json!({ "message": note })).await?;
    }
    // Keep the history the checkpoint covers; forget epochs an earlier attempt ran past it.
    let resume_epoch = checkpoint.as_ref().map_or(0, |c| c.epoch as i64);
    request.resume = checkpoint.map(|c| c.bytes);
    store
        .truncate_history(&job.run_id, job.attempt, resume_epoch)
        .await?;

    let (tx, mut rx) = mpsc::unbounded_channel();
    let observer = JobObserver {
        state: state.clone(),
        run_id: job.run_id.clone(),
        attempt: job.attempt,
        tx,
        panic_after_first_epoch: failpoint_matches(FAILPOINT_PANIC_MODEL, &model_name),
        abort_after_first_epoch: failpoint_matches(FAILPOINT_ABORT_MODEL, &model_name),
        kill_after_first_epoch: job.attempt == 1
            && failpoint_matches(FAILPOINT_KILL_MODEL, &model_name),
    };
    let heartbeat = tokio::spawn(heartbeat_loop(
        state.clone(),
        job.clone(),
        control.clone(),
        shutdown,
    ));
    let train_control = control.clone();
    let training = tokio::task::spawn_blocking(move || {
        let mut observer = observer;
        trainyard_engine::family::run(family.as_ref(), request, &train_control, &mut observer)
    });

    let mut fenced = false;
    while let Some(report) = rx.recv().await {
        if let Err(e) = persist(state, &job, total_epochs, report).await {
            if matches!(e, StoreError::Fenced { .. }) {
                // Another attempt owns the run now (or it was deleted): stop training.
                control.cancel();
                fenced = true;
            } else {
                tracing::warn!(run_id = %job.run_id, error = %e, "could not persist a training report");
            }
        }
    }
    let result = training.await;
    heartbeat.abort();
    if fenced {
        return Err(StoreError::Fenced {
            run_id: job.run_id,
            attempt: job.attempt,
        });
    }

    let outcome = match result {
        Ok(outcome) => outcome,
        Err(join) => {
            let message = panic_message(join);
            tracing::error!(run_id = %job.run_id, %message, "training panicked");
            return store
                .finish_run(
                    &job.run_id,
                    job.attempt,
                    "failed",
                    None,
                    None,
                    Some(&format!("training crashed: {message}")),
                )
                .await;
        }
    };
    match outcome {
        Ok(Finished::Completed(model)) => {
            if job.attempt == 1 && failpoint_matches(FAILPOINT_STALL_BEFORE_MODEL, &model_name) {
                recovery::wait_until_taken_over(state, &job).await;
            }
            let key = model_key(&job.run_id, job.attempt);
            let bytes = model.bytes;
            let artifacts = state.artifacts.clone();
            let put_key = key.clone();
            let saved = tokio::task::spawn_blocking(move || artifacts.put(&put_key, &bytes)).await;
            match saved {
                Ok(Ok(())) => {
                    let metrics = serde_json::to_value(&model.metrics).unwrap_or(Value::Null);
                    let finished = store
                        .finish_run(
                            &job.run_id,
                            job.attempt,
                            "completed",
                            Some(&metrics),
                            Some(&key),
                            None,
                        )
                        .await;
                    if finished.is_err() {
                        // Refused (a successor owns the run) or unrecorded: the file is not the
                        // run's model, so it must not stay.
                        if let Err(e) = state.artifacts.delete(&key) {
                            tracing::warn!(path = %key, error = %e, "could not remove an unpublished model file");
                        }
                    }
                    finished
                }
                Ok(Err(e)) => {
                    let reason = format!(
                        "saving the trained model failed: {e}; check the artifact store (free space in a folder, the bucket and its credentials for S3)"
                    );
                    fail(state, &job, &reason).await
                }
                Err(e) => fail(state, &job, &e.to_string()).await,
            }
        }
        Ok(Finished::Cancelled) => {
            if state.is_shutting_down() {
                store.release_job(&job, "server shut down").await
            } else {
                cancelled(state, &job).await
            }
        }
        Ok(Finished::Paused) if state.is_shutting_down() => {
            store
                .release_job(&job, "server shut down; resumes from its checkpoint")
                .await
        }
        Ok(Finished::Paused) => store.pause_run(&job).await,
        Err(e @ TrainError::Checkpoint(_)) => retry_or_fail(state, &job, &e.to_string()).await,
        Err(e) => fail(state, &job, &e.to_string()).await,
    }
}

/// How often a worker reads its job's cancel/pause flags between heartbeats, so a request made
/// through another process (an API node, when training runs in a worker process) lands fast.
const FLAG_POLL: Duration = Duration::from_millis(100);

/// Keeps the lease alive and relays cancel/pause flags set through the database (by this or
/// another server process). Shutdown pauses the run so it checkpoints before the job is released.
async fn heartbeat_loop(
    state: SharedState,
    job: ClaimedJob,
    control: Arc<Control>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(FLAG_POLL.min(state.config.heartbeat));
    let mut last_heartbeat = tokio::time::Instant::now();
    let mut stopping = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            // Once: after the signal the loop keeps to its tick (the lease must stay alive while
            // training reaches a checkpoint) instead of waking on a settled channel.
            _ = shutdown.wait_for(|s| *s), if !stopping => {}
        }
        if !stopping && *shutdown.borrow() {
            stopping = true;
            control.pause();
        }
        let lease_due = last_heartbeat.elapsed() >= state.config.heartbeat;
        let flags = if lease_due {
            last_heartbeat = tokio::time::Instant::now();
            state.store.heartbeat(&job, state.config.lease).await
        } else {
            state.store.job_flags(&job).await
        };
        match flags {
            Ok(flags) => {
                if flags.cancel_requested {
                    control.cancel();
                } else if flags.pause_requested {
                    control.pause();
                }
            }
            Err(StoreError::Fenced { .. }) => {
                tracing::warn!(run_id = %job.run_id, attempt = job.attempt, "lost the job's lease; stopping this attempt");
                control.cancel();
                return;
            }
            Err(e) => {
                tracing::warn!(run_id = %job.run_id, error = %e, "heartbeat failed; will retry")
            }
        }
    }
}

fn panic_message(join: tokio::task::JoinError) -> String {
    match join.try_into_panic() {
        Ok(payload) => payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "unknown panic".into()),
        Err(e) => e.to_string(),
    }
}

/// Removes a run's files after its rows are gone.
pub fn remove_run_artifacts(state: &SharedState, run_id: &str) {
    if let Err(e) = state.artifacts.delete_prefix(&run_prefix(run_id)) {
        tracing::warn!(run_id, error = %e, "could not remove run artifacts");
    }
    state.predictors.remove(run_id);
}
