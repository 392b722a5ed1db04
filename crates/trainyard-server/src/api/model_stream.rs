//! `GET /api/models/{id}/stream`: a WebSocket that answers rows as they arrive, in order. A
//! model that learns online (half-space trees) scores each row, then learns it. Sessions are
//! durable: their position and learned state are saved at least every second and when the
//! socket closes or the server stops, so `?session=ID` continues where the session left off,
//! also after a restart.
//!
//! Protocol (JSON text messages): the server opens with
//! `{"type":"session","session":ID,"seq":N,"learning":bool}` (N rows answered so far); the
//! client sends `{"rows":[[...],...]}`; the server answers `{"type":"scores","seq":first row's
//! number,"results":[...]}` or, for a message it cannot use, `{"type":"error","message":...}`
//! and keeps the connection and the session as they were.

use std::time::{Duration, Instant};

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};
use trainyard_engine::family::StreamSession;
use trainyard_store::StreamSessionRow;

use crate::access::Caller;
use crate::access::streams::open_stream;
use crate::api::models::find_model;
use crate::api::serving::{load_served, serving_run};
use crate::error::{ApiError, ApiResult};
use crate::state::SharedState;

const SAVE_EVERY: Duration = Duration::from_secs(1);
const MAX_ROWS_PER_MESSAGE: usize = 10_000;
const MAX_MESSAGE_BYTES: usize = 16 << 20;

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StreamSessionQuery {
    /// Continue this session (its id came in the first message of an earlier connection).
    pub session: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RowsMessage {
    rows: Vec<Vec<f64>>,
}

#[utoipa::path(get, path = "/api/models/{id}/stream", params(("id" = String, Path, description = "the model's id"), StreamSessionQuery), tag = "models",
    responses((status = 101, description = "WebSocket: send {\"rows\": [[...]]}, receive {\"type\":\"scores\",\"seq\",\"results\"} in order"),
              (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody),
              (status = 422, description = "the model file or the session's saved state is unusable", body = crate::error::ErrorBody)))]
pub async fn model_stream(
    caller: Caller,
    State(state): State<SharedState>,
    Path(id): Path<String>,
    query: Result<Query<StreamSessionQuery>, axum::extract::rejection::QueryRejection>,
    upgrade: WebSocketUpgrade,
) -> ApiResult<Response> {
    let Query(query) = query?;
    let model = find_model(&state, &caller, &id).await?;
    let run = serving_run(&state, &model.id).await?;
    let row = match &query.session {
        Some(session) => state
            .store
            .stream_session(&model.id, session)
            .await?
            .ok_or_else(|| ApiError::not_found("stream session", session))?,
        None => {
            state
                .store
                .create_stream_session(&model.id, &run.id)
                .await?
        }
    };
    // A session continues on the model it learned with, even when a newer run completed since.
    let run = if row.run_id == run.id {
        run
    } else {
        state
            .store
            .get_run(&model.project_id, &row.run_id)
            .await?
            .ok_or_else(|| {
                ApiError::conflict("the session's run was deleted; open a new session")
            })?
    };
    let served = load_served(&state, &model.algorithm, &run).await?;
    let session = served
        .open_stream(row.state.as_deref())
        .map_err(|e| ApiError::unprocessable("session_unusable", e))?;
    let Some(claim) = OpenSession::claim(&state, &row.id) else {
        return Err(ApiError::conflict(format!(
            "session {} is open on another connection; close it first",
            row.id
        )));
    };
    let permit = open_stream(&state, &caller)?;
    // 10,000 rows of a few dozen numbers fit; anything larger is refused by the socket.
    Ok(upgrade
        .max_message_size(MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| async move {
            serve_session(state, row, session, socket, claim).await;
            drop(permit);
        }))
}

/// Marks a session as open on this server for as long as it lives.
struct OpenSession {
    state: SharedState,
    id: String,
}

impl OpenSession {
    fn claim(state: &SharedState, id: &str) -> Option<Self> {
        let fresh = state.open_streams.lock().unwrap().insert(id.to_string());
        fresh.then(|| OpenSession {
            state: state.clone(),
            id: id.to_string(),
        })
    }
}

impl Drop for OpenSession {
    fn drop(&mut self) {
        self.state.open_streams.lock().unwrap().remove(&self.id);
    }
}

async fn serve_session(
    state: SharedState,
    row: StreamSessionRow,
    mut session: Box<dyn StreamSession>,
    mut socket: WebSocket,
    claim: OpenSession,
) {
    let mut rows = row.rows;
    let hello = json!({"type": "session", "session": row.id, "seq": rows, "learning": session.state().is_some()});
    if send(&mut socket, &hello).await.is_err() {
        return;
    }
    let mut shutdown = state.shutdown.subscribe();
    let (mut saved_rows, mut last_save) = (rows, Instant::now());
    loop {
        let message = tokio::select! {
            m = socket.recv() => m,
            _ = shutdown.wait_for(|s| *s) => None,
        };
        let Some(Ok(message)) = message else { break };
        let text = match message {
            Message::Text(t) => t,
            Message::Close(_) => break,
            Message::Binary(_) => {
                let _ = send(&mut socket, &error("send JSON text messages, not binary")).await;
                continue;
            }
            _ => continue,
        };
        let (back, result) = answer(session, rows, text.as_str()).await;
        session = back;
        let answer = match result {
            Ok((answer, n)) => {
                rows += n as i64;
                answer
            }
            Err(message) => error(&message),
        };
        if send(&mut socket, &answer).await.is_err() {
            break;
        }
        if rows != saved_rows && last_save.elapsed() >= SAVE_EVERY {
            save(&state, &row.id, rows, session.state()).await;
            (saved_rows, last_save) = (rows, Instant::now());
        }
    }
    if rows != saved_rows {
        save(&state, &row.id, rows, session.state()).await;
    }
    // Saved and released before the client hears the close, so it can reconnect at once.
    drop(claim);
    let _ = socket.send(Message::Close(None)).await;
}

/// Answers one message on a blocking thread; the session comes back either way, unchanged
/// when the message was unusable.
async fn answer(
    mut session: Box<dyn StreamSession>,
    first: i64,
    text: &str,
) -> (Box<dyn StreamSession>, Result<(Value, usize), String>) {
    let message: RowsMessage = match serde_json::from_str(text) {
        Ok(m) => m,
        Err(e) => {
            return (
                session,
                Err(format!("expected {{\"rows\": [[numbers]]}}: {e}")),
            );
        }
    };
    let n = message.rows.len();
    if n > MAX_ROWS_PER_MESSAGE {
        let e = format!("at most {MAX_ROWS_PER_MESSAGE} rows per message, got {n}");
        return (session, Err(e));
    }
    let joined = tokio::task::spawn_blocking(move || {
        let scored = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            session.process(&message.rows)
        }));
        (session, scored)
    })
    .await;
    let (session, scored) = joined.expect("the blocking pool runs the task");
    let result = match scored {
        Ok(Ok(results)) => Ok((
            json!({"type": "scores", "seq": first, "results": results}),
            n,
        )),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("the model failed on this message".into()),
    };
    (session, result)
}

async fn save(state: &SharedState, id: &str, rows: i64, learned: Option<Vec<u8>>) {
    if let Err(e) = state
        .store
        .save_stream_session(id, rows, learned.as_deref())
        .await
    {
        tracing::warn!(session = id, error = %e, "could not save a stream session");
    }
}

fn error(message: &str) -> Value {
    json!({"type": "error", "message": message})
}

async fn send(socket: &mut WebSocket, value: &Value) -> Result<(), axum::Error> {
    socket.send(Message::Text(value.to_string().into())).await
}
