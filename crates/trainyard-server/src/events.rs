//! Live events: every model's events are appended to the store (which numbers them) and then
//! broadcast in process. A subscriber replays what it missed from the store and follows the
//! broadcast, filling any gap from the store, so the join between history and live events has
//! neither gaps nor duplicates. Each subscriber has its own bounded buffer: one that stops
//! reading is dropped when its buffer fills (and may reconnect from its last sequence number);
//! training and other subscribers never wait for it.

use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};
use trainyard_store::{EventRow, RunRow};

use crate::state::SharedState;
use crate::views::timestamp;

/// Events a subscriber may fall behind by before it is dropped.
pub const SUBSCRIBER_BUFFER: usize = 1024;
const REPLAY_PAGE: i64 = 500;

pub fn bus() -> broadcast::Sender<Arc<EventRow>> {
    broadcast::channel(4096).0
}

/// Appends an event for a model and broadcasts it. Failures are logged, never fatal: events
/// describe training, they do not steer it.
pub async fn publish(
    state: &SharedState,
    model_id: &str,
    run_id: Option<&str>,
    kind: &str,
    data: Value,
) {
    match state
        .store
        .append_event(model_id, run_id, kind, &data)
        .await
    {
        Ok(Some(row)) => broadcast_local(state, row),
        Ok(None) => {} // the model was deleted
        Err(e) => tracing::warn!(model_id, kind, error = %e, "could not record an event"),
    }
}

/// Appends an event for a worker's attempt and broadcasts it; `Fenced` when the attempt no
/// longer owns the run (nothing is written or sent).
pub async fn publish_for_attempt(
    state: &SharedState,
    job: &trainyard_store::ClaimedJob,
    kind: &str,
    data: Value,
) -> Result<(), trainyard_store::StoreError> {
    let row = state
        .store
        .append_attempt_event(&job.model_id, &job.run_id, job.attempt, kind, &data)
        .await?;
    broadcast_local(state, row);
    Ok(())
}

/// Broadcasts an event this process wrote, remembering it so the tailer does not send it again.
fn broadcast_local(state: &SharedState, row: EventRow) {
    if let Some(here) = &state.published_here {
        here.lock().unwrap().insert(row.id);
    }
    let _ = state.events.send(Arc::new(row));
}

/// How often the API looks for events written by other processes (worker processes, other API
/// nodes sharing the database).
const TAIL_INTERVAL: std::time::Duration = std::time::Duration::from_millis(20);

/// Broadcasts events other processes wrote to the shared database, so subscribers here see a
/// worker process's training like this process's own. Subscribers skip what they already have,
/// so an event seen twice is harmless; one this process wrote is not sent again.
pub async fn tail_other_processes(
    state: SharedState,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let Some(published_here) = &state.published_here else {
        return;
    };
    let mut last = match state.store.latest_event_id().await {
        Ok(id) => id,
        Err(e) => {
            tracing::warn!(error = %e, "cannot tail events from other processes");
            return;
        }
    };
    loop {
        match state.store.all_events(last, REPLAY_PAGE).await {
            Ok(rows) => {
                for row in rows {
                    last = last.max(row.id);
                    if !published_here.lock().unwrap().remove(&row.id) {
                        let _ = state.events.send(Arc::new(row));
                    }
                }
                // Forget local ids the tail has passed (their rows were deleted or compacted).
                let mut here = published_here.lock().unwrap();
                *here = here.split_off(&(last + 1));
            }
            Err(e) => tracing::warn!(error = %e, "reading events from other processes failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(TAIL_INTERVAL) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Publishes a run's current status and stage (after any transition).
pub async fn publish_status(state: &SharedState, run: &RunRow) {
    let data = json!({
        "status": run.status,
        "stage": run.stage,
        "attempt": run.attempt,
        "epoch": run.epoch,
        "total_epochs": run.total_epochs,
        "error": run.error,
        "metrics": if run.status == "completed" { run.metrics.clone() } else { None },
    });
    publish(state, &run.model_id, Some(&run.id), "status", data).await;
}

pub async fn publish_run_status(state: &SharedState, run_id: &str) {
    if let Ok(Some(run)) = state.store.run_by_id(run_id).await {
        publish_status(state, &run).await;
    }
}

pub fn is_terminal(event: &EventRow) -> bool {
    event.kind == "status"
        && matches!(
            event.data["status"].as_str(),
            Some("completed" | "failed" | "cancelled")
        )
}

/// The last message of a stream closed by a server shutdown. It is not stored: its position is
/// the last one the client received, so a reconnect continues exactly where this stream ended.
fn shutdown_event(scope: &Scope, last: i64) -> EventRow {
    let (model_id, project_id) = match scope {
        Scope::Model(id) => (id.clone(), String::new()),
        Scope::Project(project) => (String::new(), project.clone()),
    };
    EventRow {
        id: last,
        model_id,
        project_id,
        seq: last,
        run_id: None,
        kind: "shutdown".into(),
        data: json!({"message": "the server is shutting down; reconnect with Last-Event-ID (or ?after=) to continue where this stream ended"}),
        created_at: trainyard_store::now_ms(),
    }
}

/// The JSON a client receives for one event.
pub fn event_json(event: &EventRow) -> Value {
    json!({
        "seq": event.seq,
        "id": event.id,
        "model_id": event.model_id,
        "run_id": event.run_id,
        "type": event.kind,
        "data": event.data,
        "time": timestamp(event.created_at),
    })
}

/// Which events a subscription follows.
#[derive(Clone)]
pub enum Scope {
    /// One model, by per-model sequence number; ends after a terminal status.
    Model(String),
    /// Every model of a project, by global event id; never ends by itself.
    Project(String),
}

impl Scope {
    fn position(&self, event: &EventRow) -> i64 {
        match self {
            Scope::Model(_) => event.seq,
            Scope::Project(_) => event.id,
        }
    }

    fn matches(&self, event: &EventRow) -> bool {
        match self {
            Scope::Model(id) => &event.model_id == id,
            Scope::Project(project) => &event.project_id == project,
        }
    }

    async fn page(
        &self,
        state: &SharedState,
        after: i64,
    ) -> trainyard_store::Result<Vec<EventRow>> {
        match self {
            Scope::Model(id) => state.store.model_events(id, after, REPLAY_PAGE).await,
            Scope::Project(project) => {
                state
                    .store
                    .project_events(project, after, REPLAY_PAGE)
                    .await
            }
        }
    }
}

/// Starts a subscription: events after `after`, then live ones, into a bounded channel.
pub fn subscribe(state: SharedState, scope: Scope, after: i64) -> mpsc::Receiver<Arc<EventRow>> {
    let (tx, rx) = mpsc::channel(SUBSCRIBER_BUFFER);
    // Subscribe before reading history so nothing published in between is missed.
    let live = state.events.subscribe();
    tokio::spawn(follow(state, scope, after, live, tx));
    rx
}

enum Sent {
    Continue,
    Stop,
}

/// How a subscriber that is not keeping up is treated.
#[derive(Clone, Copy, PartialEq)]
enum Pace {
    /// Replay reads the database and holds back no one: wait for the client.
    Wait,
    /// Live events: a client whose buffer is full is dropped (it reconnects from its position).
    Drop,
}

/// Sends one event unless already sent; stops on a full live buffer, a gone client or the end.
async fn deliver(
    state: &SharedState,
    scope: &Scope,
    event: Arc<EventRow>,
    last: &mut i64,
    tx: &mpsc::Sender<Arc<EventRow>>,
    pace: Pace,
) -> Sent {
    let position = scope.position(&event);
    if position <= *last {
        return Sent::Continue;
    }
    *last = position;
    let terminal = matches!(scope, Scope::Model(_)) && is_terminal(&event);
    let sent = match pace {
        Pace::Wait => tx.send(event).await.is_ok(),
        Pace::Drop => tx.try_send(event).is_ok(),
    };
    if !sent {
        return Sent::Stop;
    }
    if terminal {
        // End only if nothing newer exists (a model trained again continues).
        match scope.page(state, *last).await {
            Ok(rest) if rest.is_empty() => return Sent::Stop,
            _ => {}
        }
    }
    Sent::Continue
}

/// Replays from the store until caught up.
async fn catch_up(
    state: &SharedState,
    scope: &Scope,
    last: &mut i64,
    tx: &mpsc::Sender<Arc<EventRow>>,
    pace: Pace,
) -> Sent {
    loop {
        let page = match scope.page(state, *last).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "event replay failed; closing the stream");
                return Sent::Stop;
            }
        };
        let full = page.len() as i64 == REPLAY_PAGE;
        for event in page {
            if let Sent::Stop = deliver(state, scope, Arc::new(event), last, tx, pace).await {
                return Sent::Stop;
            }
        }
        if !full {
            return Sent::Continue;
        }
    }
}

async fn follow(
    state: SharedState,
    scope: Scope,
    after: i64,
    mut live: broadcast::Receiver<Arc<EventRow>>,
    tx: mpsc::Sender<Arc<EventRow>>,
) {
    let mut last = after;
    // The first replay waits on the client however long the history; once live, a gap read
    // back from the store is live traffic and a client too slow for it is dropped.
    if let Sent::Stop = catch_up(&state, &scope, &mut last, &tx, Pace::Wait).await {
        return;
    }
    let mut shutdown = state.shutdown.subscribe();
    loop {
        let event = tokio::select! {
            received = live.recv() => received,
            _ = tx.closed() => return,
            _ = shutdown.wait_for(|s| *s) => {
                let _ = tx.try_send(Arc::new(shutdown_event(&scope, last)));
                return;
            }
        };
        let sent = match event {
            Ok(event) if !scope.matches(&event) => Sent::Continue,
            // In order: deliver directly. Ahead (a concurrent writer published out of order):
            // read the gap from the store, which has every event.
            Ok(event) if scope.position(&event) == last + 1 => {
                deliver(&state, &scope, event, &mut last, &tx, Pace::Drop).await
            }
            Ok(event) if scope.position(&event) <= last => Sent::Continue,
            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {
                catch_up(&state, &scope, &mut last, &tx, Pace::Drop).await
            }
            Err(broadcast::error::RecvError::Closed) => Sent::Stop,
        };
        if let Sent::Stop = sent {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use trainyard_store::{ModelRow, NewModel, Store};

    use super::*;
    use crate::ServerConfig;
    use crate::artifacts::LocalArtifacts;

    async fn state(dir: &std::path::Path) -> SharedState {
        let config = ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir.to_path_buf());
        let store = Store::open(&config.database_url).await.unwrap();
        let artifacts = std::sync::Arc::new(LocalArtifacts::new(dir.join("artifacts")).unwrap());
        crate::app_state(config, store, artifacts, true).unwrap()
    }

    async fn model(state: &SharedState) -> ModelRow {
        state
            .store
            .insert_model(NewModel {
                project_id: "default".into(),
                name: "m".into(),
                dataset: "iris".into(),
                algorithm: "mlp".into(),
                hyperparameters: json!({}),
            })
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_subscriber_that_stops_reading_is_dropped_and_can_reconnect() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(dir.path()).await;
        let model = model(&state).await;
        let mut stalled = subscribe(state.clone(), Scope::Model(model.id.clone()), 0);
        let total = SUBSCRIBER_BUFFER as i64 + 200;
        for i in 0..total {
            publish(&state, &model.id, None, "progress", json!({ "i": i })).await;
        }
        // It never read while the events were published: it got a full buffer, then was cut off.
        let mut received = Vec::new();
        while let Some(event) = stalled.recv().await {
            received.push(event.seq);
        }
        assert_eq!(received, (1..=SUBSCRIBER_BUFFER as i64).collect::<Vec<_>>());

        // Reconnecting from its last sequence number delivers the rest, without gaps.
        let mut again = subscribe(
            state.clone(),
            Scope::Model(model.id.clone()),
            *received.last().unwrap(),
        );
        let mut rest = Vec::new();
        while rest.len() < 200 {
            rest.push(again.recv().await.unwrap().seq);
        }
        assert_eq!(
            rest,
            (SUBSCRIBER_BUFFER as i64 + 1..=total).collect::<Vec<_>>()
        );
    }

    #[tokio::test]
    async fn a_long_replay_reaches_a_slow_reader_complete() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(dir.path()).await;
        let model = model(&state).await;
        for i in 0..5_000 {
            publish(&state, &model.id, None, "progress", json!({ "i": i })).await;
        }
        let mut reader = subscribe(state.clone(), Scope::Model(model.id.clone()), 0);
        let mut received = Vec::new();
        while received.len() < 5_000 {
            if received.len() % 500 == 0 {
                // A reader slower than the replay: the replay must wait, not drop it.
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            match reader.recv().await {
                Some(event) => received.push(event.seq),
                None => panic!("the replay was cut off after {} events", received.len()),
            }
        }
        assert_eq!(received, (1..=5_000).collect::<Vec<_>>());
    }
}
