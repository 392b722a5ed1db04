//! Steering a model's latest run: cancel, pause, resume. Each answers 409 naming the current
//! status when the run is not in a state the action applies to.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;

use crate::access::Caller;
use crate::api::models::{find_model, latest_run, parse_status};
use crate::error::{ApiError, ApiResult};
use crate::state::SharedState;
use crate::views::StatusView;
use trainyard_store::{ModelRow, RunRow};

fn status_name(run: &Option<RunRow>) -> String {
    run.as_ref()
        .map_or("pending (never trained)".to_string(), |r| r.status.clone())
}

/// The model's status after the action (its run re-read, as the action changed it).
async fn current_status(
    state: &SharedState,
    model: &ModelRow,
) -> ApiResult<(StatusCode, Json<StatusView>)> {
    let run = latest_run(state, model).await?;
    Ok((StatusCode::ACCEPTED, Json(StatusView::new(model, run))))
}

#[utoipa::path(post, path = "/api/models/{id}/cancel", params(("id" = String, Path, description = "the model's id")), tag = "models",
    responses((status = 202, body = StatusView), (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody)))]
pub async fn cancel_model(
    caller: Caller,
    State(state): State<SharedState>,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<StatusView>)> {
    let model = find_model(&state, &caller, &id).await?;
    let run = latest_run(&state, &model).await?;
    let Some(run) = run
        .as_ref()
        .filter(|r| !parse_status(&r.status).is_terminal())
    else {
        return Err(ApiError::conflict(format!(
            "model has no active run to cancel; its status is {}",
            status_name(&run)
        )));
    };
    if state.store.request_cancel(&run.id).await? {
        // Cancelled while queued or paused: no worker will report it.
        crate::events::publish_run_status(&state, &run.id).await;
    }
    if let Some(control) = state.control(&run.id) {
        control.cancel();
    }
    current_status(&state, &model).await
}

#[utoipa::path(post, path = "/api/models/{id}/pause", params(("id" = String, Path, description = "the model's id")), tag = "models",
    responses((status = 202, description = "the run checkpoints at the next batch boundary and becomes paused", body = StatusView),
              (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody)))]
pub async fn pause_model(
    caller: Caller,
    State(state): State<SharedState>,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<StatusView>)> {
    let model = find_model(&state, &caller, &id).await?;
    let run = latest_run(&state, &model).await?;
    let Some(run) = run.as_ref().filter(|r| parse_status(&r.status).is_held()) else {
        return Err(ApiError::conflict(format!(
            "only an initializing or training run can be paused; its status is {}",
            status_name(&run)
        )));
    };
    if !state.store.request_pause(&run.id).await? {
        return Err(ApiError::conflict(
            "the run is between workers; try again in a moment",
        ));
    }
    if let Some(control) = state.control(&run.id) {
        control.pause();
    }
    current_status(&state, &model).await
}

#[utoipa::path(post, path = "/api/models/{id}/resume", params(("id" = String, Path, description = "the model's id")), tag = "models",
    responses((status = 202, description = "the paused run is queued and continues from its checkpoint", body = StatusView),
              (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody)))]
pub async fn resume_model(
    caller: Caller,
    State(state): State<SharedState>,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<StatusView>)> {
    let model = find_model(&state, &caller, &id).await?;
    let run = latest_run(&state, &model).await?;
    let resumed = match &run {
        Some(r) => state.store.resume_run(&r.id).await?,
        None => false,
    };
    if !resumed {
        return Err(ApiError::conflict(format!(
            "only a paused run can be resumed; its status is {}",
            status_name(&run)
        )));
    }
    if let Some(run) = &run {
        crate::events::publish_run_status(&state, &run.id).await;
    }
    state.job_queued.notify_one();
    current_status(&state, &model).await
}
