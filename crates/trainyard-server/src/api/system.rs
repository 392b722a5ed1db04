use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serde_json::{Value, json};
use utoipa::OpenApi;

use crate::error::{ApiError, ApiResult};
use crate::state::SharedState;

/// `GET /health`.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Health {
    /// Always `ok`.
    pub status: &'static str,
    pub version: &'static str,
}

/// `GET /ready`.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Ready {
    /// Always `ready`.
    pub status: &'static str,
    /// Always `ok`.
    pub database: &'static str,
}

#[utoipa::path(get, path = "/health", tag = "system", responses((status = 200, description = "the process is up", body = Health)))]
pub async fn health() -> Json<Health> {
    Json(Health {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
    })
}

#[utoipa::path(get, path = "/ready", tag = "system",
    responses((status = 200, description = "the database answers", body = Ready), (status = 503, body = crate::error::ErrorBody)))]
pub async fn ready(State(state): State<SharedState>) -> ApiResult<Json<Ready>> {
    state
        .store
        .ping()
        .await
        .map_err(|e| ApiError::unavailable(format!("database unreachable: {e}")))?;
    Ok(Json(Ready {
        status: "ready",
        database: "ok",
    }))
}

#[utoipa::path(get, path = "/metrics", tag = "system", responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
pub async fn prometheus(State(state): State<SharedState>) -> ApiResult<impl IntoResponse> {
    let counts = state.store.status_counts().await?;
    metrics::gauge!("trainyard_jobs_queued").set(counts.jobs_queued as f64);
    metrics::gauge!("trainyard_jobs_running").set(counts.jobs_running as f64);
    // Recorded in the database by whichever process (this one or a worker) was refused.
    let fenced = state.store.fenced_attempts_total().await?;
    metrics::gauge!("trainyard_fenced_attempts_total").set(fenced as f64);
    for status in trainyard_core::RunStatus::ALL {
        let n = counts
            .runs
            .iter()
            .find(|(s, _)| s == status.as_str())
            .map_or(0, |(_, n)| *n);
        metrics::gauge!("trainyard_runs", "status" => status.as_str()).set(n as f64);
    }
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.prometheus.render(),
    ))
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Trainyard",
        description = "Self-hosted machine-learning training service"
    ),
    paths(
        crate::api::models::create_model,
        crate::api::models::list_models,
        crate::api::models::get_model,
        crate::api::models::delete_model,
        crate::api::models::train_model,
        crate::api::models::model_status,
        crate::api::models::model_metrics,
        crate::api::models::model_runs,
        crate::api::control::cancel_model,
        crate::api::control::pause_model,
        crate::api::control::resume_model,
        crate::api::checkpoints::list_checkpoints,
        crate::api::checkpoints::download_checkpoint,
        crate::api::serving::predict,
        crate::api::generate::generate,
        crate::api::export::export_model,
        crate::api::features::list_features,
        crate::api::features::get_feature,
        crate::api::features::encode,
        crate::api::serving::adjust_model,
        crate::api::serving::start_score,
        crate::api::serving::get_score,
        crate::api::serving::download_scores,
        crate::api::model_stream::model_stream,
        crate::api::models::get_run,
        crate::api::streams::model_events,
        crate::api::streams::model_ws,
        crate::api::streams::all_events,
        crate::api::datasets::list_datasets,
        crate::api::datasets::get_dataset,
        crate::api::datasets::upload_dataset,
        crate::api::datasets::delete_dataset,
        crate::api::activation_datasets::cancel_dataset,
        crate::api::access::create_key,
        crate::api::access::list_keys,
        crate::api::access::revoke_key,
        crate::api::access::list_audit,
        crate::api::access::list_projects,
        health,
        ready,
        prometheus,
        openapi,
    )
)]
pub struct ApiDoc;

#[utoipa::path(get, path = "/openapi.json", tag = "system", responses((status = 200, description = "this document", body = Value)))]
pub async fn openapi(State(state): State<SharedState>) -> ApiResult<Json<Value>> {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).map_err(ApiError::internal)?;
    // Which datasets a model may name is this server's data, not a static fact: list them.
    // Public, so it lists the default project's: a caller's own may differ.
    let names = crate::datasets::known_names(&state, &state.config.project).await?;
    let create = &mut doc["components"]["schemas"]["CreateModel"]["properties"];
    create["dataset"]["enum"] = json!(names);
    // Likewise the algorithms: those of the families this server registered.
    create["algorithm"]["enum"] = json!(state.config.families.algorithms());
    Ok(Json(doc))
}
