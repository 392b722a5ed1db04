//! Live training events over Server-Sent Events and WebSocket.
//!
//! `GET /api/models/{id}/events` and `GET /api/models/{id}/ws` send the model's events from the
//! start (or after `Last-Event-ID` / `?after=SEQ`), then live ones, and end after a terminal
//! status. `GET /api/events` follows every model (by global event id).

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use serde::Deserialize;

use crate::access::Caller;
use crate::access::streams::{StreamPermit, open_stream};
use crate::api::models::find_model;
use crate::error::{ApiError, ApiResult};
use crate::events::{Scope, event_json, subscribe};
use crate::state::SharedState;

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// Send events after this sequence number (per model) or event id (`/api/events`).
    pub after: Option<i64>,
}

/// `Last-Event-ID` wins over `?after=`, as browsers send it on reconnect.
fn start_position(headers: &HeaderMap, query: &StreamQuery) -> ApiResult<Option<i64>> {
    match headers.get("last-event-id") {
        Some(v) => {
            let text = v.to_str().unwrap_or_default();
            text.parse::<i64>().map(Some).map_err(|_| {
                ApiError::bad_request(
                    "Last-Event-ID",
                    format!("expected an integer, got '{text}'"),
                )
            })
        }
        None => Ok(query.after),
    }
}

fn sse_stream(
    rx: tokio::sync::mpsc::Receiver<std::sync::Arc<trainyard_store::EventRow>>,
    global: bool,
    permit: StreamPermit,
) -> impl Stream<Item = Result<Event, Infallible>> {
    futures_util::stream::unfold((rx, permit), move |(mut rx, permit)| async move {
        let event = rx.recv().await?;
        let id = if global { event.id } else { event.seq };
        let sse = Event::default()
            .id(id.to_string())
            .event(event.kind.clone())
            .data(event_json(&event).to_string());
        Some((Ok(sse), (rx, permit)))
    })
}

#[utoipa::path(get, path = "/api/models/{id}/events", params(("id" = String, Path, description = "the model's id"), StreamQuery), tag = "events",
    responses((status = 200, description = "text/event-stream of the model's events", content_type = "text/event-stream"), (status = 404, body = crate::error::ErrorBody)))]
pub async fn model_events(
    caller: Caller,
    State(state): State<SharedState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    query: Result<Query<StreamQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let Query(query) = query?;
    let after = start_position(&headers, &query)?.unwrap_or(0);
    let model = find_model(&state, &caller, &id).await?;
    let permit = open_stream(&state, &caller)?;
    let rx = subscribe(state, Scope::Model(model.id), after);
    Ok(Sse::new(sse_stream(rx, false, permit))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

#[utoipa::path(get, path = "/api/events", params(StreamQuery), tag = "events",
    responses((status = 200, description = "text/event-stream of every model's events", content_type = "text/event-stream")))]
pub async fn all_events(
    caller: Caller,
    State(state): State<SharedState>,
    headers: HeaderMap,
    query: Result<Query<StreamQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let Query(query) = query?;
    let after = match start_position(&headers, &query)? {
        Some(after) => after,
        None => state.store.latest_event_id().await?,
    };
    let permit = open_stream(&state, &caller)?;
    let rx = subscribe(state, Scope::Project(caller.project), after);
    Ok(Sse::new(sse_stream(rx, true, permit))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

#[utoipa::path(get, path = "/api/models/{id}/ws", params(("id" = String, Path, description = "the model's id"), StreamQuery), tag = "events",
    responses((status = 101, description = "WebSocket of the model's events, one JSON text message each"), (status = 404, body = crate::error::ErrorBody)))]
pub async fn model_ws(
    caller: Caller,
    State(state): State<SharedState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    query: Result<Query<StreamQuery>, axum::extract::rejection::QueryRejection>,
    upgrade: WebSocketUpgrade,
) -> ApiResult<Response> {
    let Query(query) = query?;
    let after = start_position(&headers, &query)?.unwrap_or(0);
    let model = find_model(&state, &caller, &id).await?;
    let permit = open_stream(&state, &caller)?;
    // Clients only listen here: anything they send is small.
    Ok(upgrade
        .max_message_size(64 << 10)
        .on_upgrade(move |socket| async move {
            forward_to_socket(state, model.id, after, socket).await;
            drop(permit);
        }))
}

async fn forward_to_socket(
    state: SharedState,
    model_id: String,
    after: i64,
    mut socket: WebSocket,
) {
    let mut rx = subscribe(state, Scope::Model(model_id), after);
    while let Some(event) = rx.recv().await {
        if socket
            .send(Message::Text(event_json(&event).to_string().into()))
            .await
            .is_err()
        {
            return;
        }
    }
    let _ = socket.send(Message::Close(None)).await;
}
