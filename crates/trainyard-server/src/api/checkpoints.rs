//! Listing and downloading a model's checkpoints.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::access::Caller;
use crate::api::models::find_model;
use crate::error::{ApiError, ApiResult};
use crate::state::SharedState;
use crate::views::{CheckpointList, CheckpointView};

#[utoipa::path(get, path = "/api/models/{id}/checkpoints", params(("id" = String, Path, description = "the model's id")), tag = "models",
    responses((status = 200, description = "the latest run's checkpoints, newest first", body = CheckpointList), (status = 404, body = crate::error::ErrorBody)))]
pub async fn list_checkpoints(
    caller: Caller,
    State(state): State<SharedState>,
    Path(id): Path<String>,
) -> ApiResult<Json<CheckpointList>> {
    let model = find_model(&state, &caller, &id).await?;
    let rows = match &model.latest_run_id {
        Some(run) => state.store.checkpoints(run).await?,
        None => vec![],
    };
    let checkpoints: Vec<CheckpointView> = rows.into_iter().map(CheckpointView::from).collect();
    Ok(Json(CheckpointList {
        model_id: model.id,
        run_id: model.latest_run_id,
        checkpoints,
    }))
}

#[utoipa::path(get, path = "/api/models/{id}/checkpoints/{checkpoint_id}", params(("id" = String, Path, description = "the model's id"), ("checkpoint_id" = String, Path, description = "the checkpoint's id")), tag = "models",
    responses((status = 200, description = "the checkpoint file", content_type = "application/octet-stream"), (status = 404, body = crate::error::ErrorBody)))]
pub async fn download_checkpoint(
    caller: Caller,
    State(state): State<SharedState>,
    Path((id, checkpoint_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let model = find_model(&state, &caller, &id).await?;
    let run = model.latest_run_id.clone().unwrap_or_default();
    let row = state
        .store
        .checkpoints(&run)
        .await?
        .into_iter()
        .find(|c| c.id == checkpoint_id)
        .ok_or_else(|| ApiError::not_found("checkpoint", &checkpoint_id))?;
    let artifacts = state.artifacts.clone();
    let path = row.path.clone();
    let bytes = tokio::task::spawn_blocking(move || artifacts.get(&path))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| ApiError::not_found("checkpoint file", &format!("{} ({e})", row.path)))?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!(
                    "attachment; filename=\"{}-epoch{}.tyck\"",
                    row.run_id, row.epoch
                ),
            ),
            (
                header::HeaderName::from_static("x-checkpoint-sha256"),
                row.sha256.clone(),
            ),
        ],
        Body::from(bytes),
    )
        .into_response())
}
