//! `GET /api/models/{id}/export`: the newest completed run's export bundle as a tar archive,
//! its files under one folder named after the model id. What the bundle holds is the family's
//! business (`Served::export`).

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use trainyard_engine::family::{BundleFile, ExportInfo};

use crate::access::Caller;
use crate::api::serving::{answer_error, served_model};
use crate::error::{ApiError, ApiResult};
use crate::state::SharedState;

/// A tar archive of `files` under `folder/`, each entry dated `mtime` (so the same model
/// exports to the same bytes).
fn archive(folder: &str, files: &[BundleFile], mtime: u64) -> std::io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    for file in files {
        let mut header = tar::Header::new_ustar();
        header.set_size(file.bytes.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(mtime);
        builder.append_data(
            &mut header,
            format!("{folder}/{}", file.name),
            &file.bytes[..],
        )?;
    }
    builder.into_inner()
}

#[utoipa::path(get, path = "/api/models/{id}/export", params(("id" = String, Path, description = "the model's id")), tag = "models",
    responses((status = 200, description = "a tar archive: model.safetensors, config.json, tokenizer.json, metrics.json, training_args.json and README.md (a model card), under a folder named after the model id", content_type = "application/x-tar"),
              (status = 400, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
pub async fn export_model(
    caller: Caller,
    State(state): State<SharedState>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let (model, run, served) = served_model(&state, &caller, &id).await?;
    let about = ExportInfo {
        model_id: model.id.clone(),
        model_name: model.name.clone(),
        dataset: model.dataset.clone(),
        run_id: run.id.clone(),
    };
    let folder = model.id.clone();
    let mtime = u64::try_from(run.finished_at.unwrap_or(run.created_at) / 1000).unwrap_or(0);
    let archive = tokio::task::spawn_blocking(move || {
        let files = served
            .export(&about)
            .map_err(|e| answer_error(e, "model"))?;
        archive(&folder, &files, mtime).map_err(ApiError::internal)
    })
    .await
    .map_err(ApiError::internal)??;
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-tar".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{}.tar\"", model.id),
            ),
        ],
        Body::from(archive),
    )
        .into_response())
}
