//! The HTTP surface: routes, the JSON extractor with our error shape, request logging and
//! metrics, and `Idempotency-Key` replay for every POST.

pub mod access;
pub mod activation_datasets;
pub mod checkpoints;
pub mod control;
pub mod datasets;
pub mod export;
pub mod features;
pub mod generate;
pub mod model_stream;
pub mod models;
pub mod serving;
pub mod streams;
pub mod system;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, to_bytes};
use axum::extract::{DefaultBodyLimit, FromRequest, MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use sha2::{Digest, Sha256};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use trainyard_store::StoredResponse;

use crate::access::Caller;
use crate::error::ApiError;
use crate::state::SharedState;

/// Largest request body accepted (JSON bodies; dataset uploads get their own limit).
const BODY_LIMIT: usize = 16 * 1024 * 1024;

/// `Json` whose rejections use the API's error shape (400 naming `body`).
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    Json<T>: FromRequest<S, Rejection = axum::extract::rejection::JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let Json(value) = Json::<T>::from_request(req, state).await?;
        Ok(ApiJson(value))
    }
}

pub fn router(state: SharedState) -> Router {
    let upload_limit = state.config.max_upload_mb * 1024 * 1024;
    let api = Router::new()
        .route(
            "/api/models",
            post(models::create_model).get(models::list_models),
        )
        .route(
            "/api/models/{id}",
            get(models::get_model)
                .delete(models::delete_model)
                .patch(serving::adjust_model),
        )
        .route("/api/models/{id}/train", post(models::train_model))
        .route("/api/models/{id}/status", get(models::model_status))
        .route("/api/models/{id}/metrics", get(models::model_metrics))
        .route("/api/models/{id}/runs", get(models::model_runs))
        .route("/api/models/{id}/cancel", post(control::cancel_model))
        .route("/api/models/{id}/pause", post(control::pause_model))
        .route("/api/models/{id}/resume", post(control::resume_model))
        .route(
            "/api/models/{id}/checkpoints",
            get(checkpoints::list_checkpoints),
        )
        .route(
            "/api/models/{id}/checkpoints/{checkpoint_id}",
            get(checkpoints::download_checkpoint),
        )
        .route("/api/models/{id}/predict", post(serving::predict))
        .route("/api/models/{id}/generate", post(generate::generate))
        .route("/api/models/{id}/export", get(export::export_model))
        .route("/api/models/{id}/features", get(features::list_features))
        .route(
            "/api/models/{id}/features/{index}",
            get(features::get_feature),
        )
        .route("/api/models/{id}/encode", post(features::encode))
        .route("/api/models/{id}/score", post(serving::start_score))
        .route("/api/models/{id}/score/{job_id}", get(serving::get_score))
        .route(
            "/api/models/{id}/score/{job_id}/csv",
            get(serving::download_scores),
        )
        .route("/api/models/{id}/stream", get(model_stream::model_stream))
        .route("/api/runs/{id}", get(models::get_run))
        .route("/api/models/{id}/events", get(streams::model_events))
        .route("/api/models/{id}/ws", get(streams::model_ws))
        .route("/api/events", get(streams::all_events))
        .route(
            "/api/datasets",
            get(datasets::list_datasets)
                .post(datasets::upload_dataset)
                .layer(DefaultBodyLimit::max(upload_limit)),
        )
        .route(
            "/api/datasets/{name}",
            get(datasets::get_dataset).delete(datasets::delete_dataset),
        )
        .route(
            "/api/datasets/{name}/cancel",
            post(activation_datasets::cancel_dataset),
        )
        .route("/api/keys", post(access::create_key).get(access::list_keys))
        .route("/api/keys/{id}", axum::routing::delete(access::revoke_key))
        .route("/api/audit", get(access::list_audit))
        .route("/api/projects", get(access::list_projects))
        .route("/health", get(system::health))
        .route("/ready", get(system::ready))
        .route("/metrics", get(system::prometheus))
        .route("/openapi.json", get(system::openapi))
        .fallback(|| async { ApiError::not_found("route", "this path") });
    api.layer(middleware::from_fn_with_state(state.clone(), idempotency))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::access::middleware::authorize,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::access::middleware::guard,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), deadline))
        .layer(middleware::from_fn(observe))
        .layer(middleware::from_fn(security_headers))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .with_state(state)
}

/// OWASP's secure headers on every response: nothing is sniffed, framed, cached, referred or
/// shared across origins, and no script or style may load (the API serves data, not pages).
async fn security_headers(req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    let headers = response.headers_mut();
    for (name, value) in [
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        (
            "content-security-policy",
            "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        ),
        ("referrer-policy", "no-referrer"),
        ("cache-control", "no-store"),
        ("cross-origin-opener-policy", "same-origin"),
        ("cross-origin-resource-policy", "same-origin"),
        ("cross-origin-embedder-policy", "require-corp"),
    ] {
        headers
            .entry(name)
            .or_insert(HeaderValue::from_static(value));
    }
    response
}

/// Every request but a stream ends within `--request-timeout-seconds`: a 503 says so, and the
/// handler is dropped (its transaction rolls back).
async fn deadline(State(state): State<SharedState>, req: Request, next: Next) -> Response {
    let streams = req.extensions().get::<MatchedPath>().is_some_and(|p| {
        let p = p.as_str();
        p.ends_with("/events") || p.ends_with("/ws") || p.ends_with("/stream")
    });
    if streams {
        return next.run(req).await;
    }
    let limit = state.config.request_timeout;
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::unavailable(format!(
            "the request took longer than {} s and was stopped; retry it, or raise --request-timeout-seconds",
            limit.as_secs()
        ))
        .into_response(),
    }
}

/// One log line and one latency sample per request.
async fn observe(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let path = req.uri().path().to_string();
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string();
    let response = next.run(req).await;
    let seconds = started.elapsed().as_secs_f64();
    let status = response.status().as_u16();
    tracing::info!(target: "trainyard::http", %method, %path, status, latency_ms = seconds * 1000.0, %request_id, "request");
    metrics::histogram!("trainyard_http_request_duration_seconds", "method" => method.to_string(), "route" => route, "status" => status.to_string())
        .record(seconds);
    response
}

fn replay(stored: &StoredResponse) -> Response {
    let mut response = (
        StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK),
        stored.body.clone(),
    )
        .into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
        .headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    response
}

/// The same key with the same body replays the first response; with another body it is a 422.
/// Requests sharing a key are serialised so that concurrent duplicates also replay.
async fn idempotency(State(state): State<SharedState>, req: Request, next: Next) -> Response {
    if req.method() != Method::POST {
        return next.run(req).await;
    }
    let Some(key) = req.headers().get("idempotency-key").cloned() else {
        return next.run(req).await;
    };
    let key = match key.to_str() {
        Ok(k) if !k.is_empty() && k.len() <= 255 => k.to_string(),
        _ => {
            return ApiError::bad_request(
                "Idempotency-Key",
                "must be 1 to 255 visible ASCII characters",
            )
            .into_response();
        }
    };
    // Keys are per project: two projects may use the same key for different requests.
    let project = req
        .extensions()
        .get::<Caller>()
        .map_or_else(String::new, |c| c.project.clone());
    let (parts, body) = req.into_parts();
    let limit = BODY_LIMIT.max(state.config.max_upload_mb * 1024 * 1024);
    let bytes = match to_bytes(body, limit).await {
        Ok(b) => b,
        Err(e) => return ApiError::bad_request("body", e.to_string()).into_response(),
    };
    let scope = format!("{project} {} {}", parts.method, parts.uri.path());
    let hash = hex::encode(Sha256::digest(&bytes));
    let lock = {
        let mut locks = state.idempotency_locks.lock().unwrap();
        locks.retain(|_, l| Arc::strong_count(l) > 1);
        locks.entry(format!("{scope} {key}")).or_default().clone()
    };
    let _held = lock.lock().await;
    match state
        .store
        .idempotent_response(&scope, &key, state.config.idempotency_ttl)
        .await
    {
        Ok(Some(stored)) if stored.request_hash == hash => return replay(&stored),
        Ok(Some(_)) => {
            return ApiError::unprocessable(
                "idempotency_key_reused",
                format!("Idempotency-Key '{key}' was already used with a different request body"),
            )
            .into_response();
        }
        Ok(None) => {}
        Err(e) => return ApiError::internal(e).into_response(),
    }
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    let (parts, body) = response.into_parts();
    let body = match to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(e) => return ApiError::internal(e).into_response(),
    };
    if !parts.status.is_server_error() {
        let stored = StoredResponse {
            request_hash: hash,
            status: parts.status.as_u16(),
            body: String::from_utf8_lossy(&body).into_owned(),
        };
        if let Err(e) = state
            .store
            .save_idempotent_response(&scope, &key, &stored, state.config.idempotency_ttl)
            .await
        {
            tracing::warn!(error = %e, "could not store idempotent response");
        }
    }
    Response::from_parts(parts, Body::from(body))
}

pub type KeyLocks = std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>;
