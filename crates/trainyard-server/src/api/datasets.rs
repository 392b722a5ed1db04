//! Datasets: the built-ins, and CSV files users upload (raw body or multipart), validated with
//! the engine's CSV checks and then usable by models exactly like a built-in.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use trainyard_core::Task;
use trainyard_data::labeled_text::parse_labeled_texts;
use trainyard_data::text::parse_corpus;
use trainyard_data::{BUILTIN_NAMES, DatasetInfo, builtin_info, is_parquet, parse_table};
use trainyard_store::DatasetRow;

use crate::access::Caller;
use crate::api::ApiJson;
use crate::datasets::csv_options;
use crate::error::{ApiError, ApiResult};
use crate::extraction::Extraction;
use crate::state::SharedState;

/// What the dataset listing shows: everything but the per-feature names of wide datasets.
fn summary(info: &DatasetInfo, builtin: bool) -> Value {
    let mut v = serde_json::to_value(info).unwrap_or(Value::Null);
    if info.n_features > 50 && info.feature_names.len() == info.n_features {
        v["feature_names"] = json!(format!(
            "{} features: {} ... {}",
            info.n_features,
            info.feature_names[0],
            info.feature_names[info.n_features - 1]
        ));
    }
    v["builtin"] = json!(builtin);
    v
}

#[utoipa::path(get, path = "/api/datasets", tag = "datasets", responses((status = 200, description = "built-in and uploaded datasets", body = crate::views::DatasetList)))]
pub async fn list_datasets(
    caller: Caller,
    State(state): State<SharedState>,
) -> ApiResult<Json<Value>> {
    let builtins = tokio::task::spawn_blocking(|| {
        BUILTIN_NAMES
            .iter()
            .map(|n| builtin_info(n))
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)?;
    let mut datasets: Vec<Value> = builtins.iter().map(|i| summary(i, true)).collect();
    for row in state.store.list_datasets(&caller.project).await? {
        let info = crate::datasets::upload_info(&row)?;
        let mut view = summary(&info, false);
        add_state(&mut view, &row);
        datasets.push(view);
    }
    Ok(Json(json!({ "datasets": datasets })))
}

#[utoipa::path(get, path = "/api/datasets/{name}", params(("name" = String, Path, description = "the dataset's name")), tag = "datasets",
    responses((status = 200, description = "one dataset with its task, shape and features", body = crate::views::DatasetView), (status = 404, body = crate::error::ErrorBody)))]
pub async fn get_dataset(
    caller: Caller,
    State(state): State<SharedState>,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    if BUILTIN_NAMES.contains(&name.as_str()) {
        let info = crate::datasets::info(&state, &caller.project, &name, "name").await?;
        let mut v = serde_json::to_value(info).map_err(ApiError::internal)?;
        v["builtin"] = json!(true);
        return Ok(Json(v));
    }
    let row = state
        .store
        .get_dataset(&caller.project, &name)
        .await?
        .ok_or_else(|| ApiError::not_found("dataset", &name))?;
    Ok(Json(row_view(&row)?))
}

/// An uploaded or extracted dataset as the API shows it.
pub(super) fn row_view(row: &DatasetRow) -> ApiResult<Value> {
    let info = crate::datasets::upload_info(row)?;
    let mut v = serde_json::to_value(info).map_err(ApiError::internal)?;
    v["builtin"] = json!(false);
    v["bytes"] = json!(row.bytes);
    v["sha256"] = json!(row.sha256);
    add_state(&mut v, row);
    Ok(v)
}

/// The dataset's status, and an extraction's progress.
fn add_state(view: &mut Value, row: &DatasetRow) {
    view["status"] = json!(row.status);
    if let Some(e) = Extraction::of(row) {
        let progress = match e.tokens_total {
            Some(total) if total > 0 => e.tokens_done as f64 / total as f64,
            _ => 0.0,
        };
        view["extraction"] = json!({
            "request": e.request,
            "shards_done": e.shards_done,
            "shards_total": e.shards_total,
            "tokens_done": e.tokens_done,
            "tokens_total": e.tokens_total,
            "progress": progress,
            "error": e.error,
            "resumed_at": e.resumed_at,
        });
    }
}

#[derive(Deserialize, Default, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UploadQuery {
    /// 1-64 characters: lowercase letters, digits, `_`, `-`, `.`; not a built-in name. (In
    /// the form instead for multipart uploads.)
    #[param(required = true, pattern = "^[a-z0-9][a-z0-9_.-]{0,63}$")]
    pub name: Option<String>,
    /// The target column's header. Leave it (and `label`) out for an unlabeled dataset,
    /// which anomaly detectors fit. (In the form instead for multipart uploads.)
    #[param(min_length = 1)]
    pub target: Option<String>,
    /// A label column used only to evaluate anomaly detectors (two classes, e.g. 0/1): the
    /// same as `target` with `task=classification`; fitting never sees it.
    #[param(min_length = 1)]
    pub label: Option<String>,
    /// classification or regression (inferred when absent); text: the body is a UTF-8 text
    /// corpus for language models (or labeled texts with `target`); activations: the body is a
    /// `.npy` or `.safetensors` float32/float16 matrix (tokens x width) for sparse
    /// autoencoders, stored as an unlabeled table.
    pub task: Option<String>,
}

pub(super) fn validate_name(name: &str) -> ApiResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-' | '.'))
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && !name.contains("..");
    if !ok {
        return Err(ApiError::bad_request(
            "name",
            "must be 1 to 64 characters of a-z, 0-9, '_', '-', '.', starting with a letter or digit",
        ));
    }
    if BUILTIN_NAMES.contains(&name) {
        return Err(ApiError::conflict(format!(
            "'{name}' is a built-in dataset; choose another name"
        )));
    }
    Ok(())
}

fn too_large(state: &SharedState) -> ApiError {
    ApiError {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        code: "payload_too_large",
        message: format!(
            "the upload is larger than the {} MB limit; raise --max-upload-mb",
            state.config.max_upload_mb
        ),
        field: Some("file".into()),
    }
}

/// Reads the upload: multipart fields `name`, `target`, `task`, `file`, or the raw CSV body
/// with the same fields as query parameters.
async fn read_upload(
    state: &SharedState,
    mut query: UploadQuery,
    req: Request,
) -> ApiResult<(UploadQuery, Bytes)> {
    let multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("multipart/form-data"));
    if !multipart {
        let body = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                too_large(state)
            } else {
                ApiError::bad_request("file", e.body_text())
            }
        })?;
        return Ok((query, body));
    }
    let mut form = Multipart::from_request(req, state)
        .await
        .map_err(|e| ApiError::bad_request("body", e.body_text()))?;
    let mut file = None;
    loop {
        let field = form.next_field().await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                too_large(state)
            } else {
                ApiError::bad_request("body", e.body_text())
            }
        })?;
        let Some(field) = field else { break };
        let key = field.name().unwrap_or_default().to_string();
        let bytes = field.bytes().await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                too_large(state)
            } else {
                ApiError::bad_request(&key, e.body_text())
            }
        })?;
        let text = || String::from_utf8_lossy(&bytes).trim().to_string();
        match key.as_str() {
            "file" => file = Some(bytes.clone()),
            "name" => query.name = Some(text()),
            "target" => query.target = Some(text()),
            "label" => query.label = Some(text()),
            "task" => query.task = Some(text()),
            other => {
                return Err(ApiError::bad_request(
                    other,
                    "unknown form field; expected name, target, label, task, file",
                ));
            }
        }
    }
    let file = file.ok_or_else(|| {
        ApiError::bad_request("file", "the form has no 'file' field with the CSV")
    })?;
    Ok((query, file))
}

#[utoipa::path(post, path = "/api/datasets", params(UploadQuery), tag = "datasets",
    request_body(content(
        (String = "text/csv"),
        (crate::api::activation_datasets::CreateActivationDataset = "application/json")),
        description = "the CSV or Parquet file (or multipart/form-data with name, target, label, task and file); or, as JSON without query parameters, an activation dataset to extract from a trained language model"),
    responses((status = 201, description = "the stored dataset", body = crate::views::DatasetView),
              (status = 202, description = "the activation dataset, initializing: its extraction is queued", body = crate::views::DatasetView), (status = 400, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody), (status = 413, body = crate::error::ErrorBody)))]
pub async fn upload_dataset(
    caller: Caller,
    State(state): State<SharedState>,
    query: Result<Query<UploadQuery>, axum::extract::rejection::QueryRejection>,
    req: Request,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let Query(query) = query?;
    if is_json(&req) && query.name.is_none() {
        let ApiJson(body) = ApiJson::<Value>::from_request(req, &state).await?;
        return super::activation_datasets::create(&caller, &state, body).await;
    }
    let (form, csv) = read_upload(&state, query, req).await?;
    let name = form
        .name
        .clone()
        .ok_or_else(|| ApiError::bad_request("name", "required: the dataset's name"))?;
    validate_name(&name)?;
    let activations = form.task.as_deref() == Some("activations");
    let (target, task) = if activations {
        if form.target.is_some() || form.label.is_some() {
            return Err(ApiError::bad_request(
                "target",
                "an activation matrix has no target column; leave target and label out",
            ));
        }
        (None, None)
    } else {
        upload_target(&form)?
    };
    if state
        .store
        .get_dataset(&caller.project, &name)
        .await?
        .is_some()
    {
        return Err(ApiError::conflict(format!(
            "a dataset named '{name}' exists; delete it first or choose another name"
        )));
    }
    if task == Some(Task::Text) {
        let parse_input = csv.clone();
        let parse_name = name.clone();
        let corpus = tokio::task::spawn_blocking(move || match target {
            Some(label) => parse_labeled_texts(&parse_name, &parse_input, &label),
            None => parse_corpus(&parse_name, &parse_input),
        })
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| ApiError::bad_request("file", e.to_string()))?;
        return store_upload(&state, &caller, name, csv, corpus).await;
    }
    // An activation matrix (.npy, .safetensors) is kept as the unlabeled table it is.
    let csv = if activations {
        tokio::task::spawn_blocking(move || {
            trainyard_data::activations::parse_activation_matrix(&csv)
                .map(|m| Bytes::from(trainyard_data::activations::to_csv(&m)))
        })
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| ApiError::bad_request("file", e.to_string()))?
    } else {
        csv
    };
    let options = csv_options(&name, target.as_deref(), task);
    let parse_input = csv.clone();
    let dataset = tokio::task::spawn_blocking(move || parse_table(&parse_input, &options))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| {
            let hint = if target.is_none() {
                "; no target column was named, so every column is read as a feature \
                 (name one with target= or label=)"
            } else {
                ""
            };
            ApiError::bad_request("file", format!("{e}{hint}"))
        })?;
    if form.label.is_some() && dataset.info.n_classes() != 2 {
        return Err(ApiError::bad_request(
            "label",
            format!(
                "a label column has two classes (such as 0 and 1); '{}' has {}",
                dataset.info.target_name,
                dataset.info.n_classes()
            ),
        ));
    }
    store_upload(&state, &caller, name, csv, dataset).await
}

/// A JSON body without a `name` query parameter asks for an extraction.
fn is_json(req: &Request) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"))
}

/// The column to learn (or evaluate with) and its task; neither for an unlabeled upload.
fn upload_target(form: &UploadQuery) -> ApiResult<(Option<String>, Option<Task>)> {
    if let Some(label) = &form.label {
        if form.target.is_some() {
            return Err(ApiError::bad_request(
                "label",
                "name a target or a label column, not both",
            ));
        }
        if form.task.as_deref().is_some_and(|t| t != "classification") {
            return Err(ApiError::bad_request(
                "task",
                "a label column is a two-class classification target; leave task out",
            ));
        }
        return Ok((Some(label.clone()), Some(Task::Classification)));
    }
    let task = match form.task.as_deref() {
        None | Some("") => None,
        Some("classification") => Some(Task::Classification),
        Some("regression") => Some(Task::Regression),
        // With a label column: labeled texts (CSV or JSON Lines); without: a corpus.
        Some("text") => return Ok((form.target.clone(), Some(Task::Text))),
        Some(other) => {
            return Err(ApiError::bad_request(
                "task",
                format!("must be classification, regression, text or activations, got '{other}'"),
            ));
        }
    };
    if task.is_some() && form.target.is_none() {
        return Err(ApiError::bad_request(
            "task",
            "applies to a target column; name one with target=",
        ));
    }
    Ok((form.target.clone(), task))
}

/// Stores a parsed upload's file and row.
async fn store_upload(
    state: &SharedState,
    caller: &Caller,
    name: String,
    csv: Bytes,
    dataset: trainyard_data::Dataset,
) -> ApiResult<(StatusCode, Json<Value>)> {
    // A file per upload: a concurrent upload under the same name writes its own file, and only
    // the one whose row is inserted keeps it.
    let extension = if dataset.info.task == Task::Text {
        "txt"
    } else if is_parquet(&csv) {
        "parquet"
    } else {
        "csv"
    };
    let key = format!(
        "datasets/{name}-{}.{extension}",
        uuid::Uuid::now_v7().simple()
    );
    let artifacts = state.artifacts.clone();
    let put_key = key.clone();
    let stored = csv.clone();
    tokio::task::spawn_blocking(move || artifacts.put(&put_key, &stored))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| ApiError::internal(format!("storing the dataset: {e}")))?;
    let info = serde_json::to_value(&dataset.info).map_err(ApiError::internal)?;
    let row = DatasetRow {
        name: name.clone(),
        project_id: caller.project.clone(),
        info: info.clone(),
        path: key,
        bytes: csv.len() as i64,
        sha256: hex::encode(Sha256::digest(&csv)),
        created_at: 0,
        status: trainyard_store::DATASET_READY.into(),
        extraction: None,
    };
    if !state.store.insert_dataset(&row).await? {
        let removed = if row.path.ends_with('/') {
            state.artifacts.delete_prefix(&row.path)
        } else {
            state.artifacts.delete(&row.path)
        };
        if let Err(e) = removed {
            tracing::warn!(path = %row.path, error = %e, "could not remove a losing upload's file");
        }
        return Err(ApiError::conflict(format!(
            "a dataset named '{name}' was uploaded concurrently"
        )));
    }
    let mut body = info;
    body["builtin"] = json!(false);
    body["bytes"] = json!(row.bytes);
    body["sha256"] = json!(row.sha256);
    Ok((StatusCode::CREATED, Json(body)))
}

#[utoipa::path(delete, path = "/api/datasets/{name}", params(("name" = String, Path, description = "the dataset's name")), tag = "datasets",
    responses((status = 204), (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody)))]
pub async fn delete_dataset(
    caller: Caller,
    State(state): State<SharedState>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    if BUILTIN_NAMES.contains(&name.as_str()) {
        return Err(ApiError::conflict(format!(
            "'{name}' is built in and cannot be deleted"
        )));
    }
    let Some(row) = state.store.get_dataset(&caller.project, &name).await? else {
        return Err(ApiError::not_found("dataset", &name));
    };
    // A running extraction notices at its next shard; what it writes after that the
    // garbage collector removes.
    state
        .store
        .cancel_extraction(&caller.project, &name)
        .await?;
    let users = state
        .store
        .delete_dataset_if_unused(&caller.project, &name)
        .await?;
    if users > 0 {
        return Err(ApiError::conflict(format!(
            "{users} model(s) use dataset '{name}'; delete them first"
        )));
    }
    if let Err(e) = state.artifacts.delete(&row.path) {
        tracing::warn!(path = %row.path, error = %e, "could not remove a deleted dataset's file");
    }
    state
        .uploaded
        .remove(&crate::datasets::upload_cache_key(&row));
    Ok(StatusCode::NO_CONTENT)
}
