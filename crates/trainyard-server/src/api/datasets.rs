use axum::Json;
use axum::extract::Path;
use serde_json::{Value, json};
use trainyard_data::{BUILTIN_NAMES, DatasetInfo, builtin_info};

use crate::error::{ApiError, ApiResult};

/// What the dataset listing shows: everything but the per-feature names of wide datasets.
fn summary(info: &DatasetInfo) -> Value {
    let mut v = serde_json::to_value(info).unwrap_or(Value::Null);
    if info.n_features > 50 {
        v["feature_names"] = json!(format!(
            "{} features: {} ... {}",
            info.n_features,
            info.feature_names[0],
            info.feature_names[info.n_features - 1]
        ));
    }
    v
}

#[utoipa::path(get, path = "/api/datasets", tag = "datasets", responses((status = 200, description = "the built-in datasets")))]
pub async fn list_datasets() -> ApiResult<Json<Value>> {
    let infos = tokio::task::spawn_blocking(|| {
        BUILTIN_NAMES
            .iter()
            .map(|n| builtin_info(n))
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)?;
    Ok(Json(
        json!({ "datasets": infos.iter().map(summary).collect::<Vec<_>>() }),
    ))
}

#[utoipa::path(get, path = "/api/datasets/{name}", tag = "datasets",
    responses((status = 200, description = "one dataset with its task, shape and features"), (status = 404, body = crate::error::ErrorBody)))]
pub async fn get_dataset(Path(name): Path<String>) -> ApiResult<Json<Value>> {
    if !BUILTIN_NAMES.contains(&name.as_str()) {
        return Err(ApiError::not_found("dataset", &name));
    }
    let info = tokio::task::spawn_blocking(move || builtin_info(&name))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    Ok(Json(
        serde_json::to_value(info).map_err(ApiError::internal)?,
    ))
}
