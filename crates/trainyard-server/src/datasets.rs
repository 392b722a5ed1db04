//! Resolving a dataset name: a built-in, or a CSV a user uploaded (stored as an artifact and
//! parsed with the same checks as the built-ins). Parsed uploads are cached per stored file,
//! bounded by bytes.

use std::sync::Arc;

use trainyard_data::{
    BUILTIN_NAMES, CsvOptions, Dataset, DatasetInfo, builtin_info, load_builtin, parse_table,
};
use trainyard_store::DatasetRow;

use crate::error::{ApiError, ApiResult};
use crate::state::SharedState;

/// The description of a dataset by name, or a 400 naming `field` that lists what exists.
pub async fn info(
    state: &SharedState,
    project: &str,
    name: &str,
    field: &str,
) -> ApiResult<DatasetInfo> {
    if BUILTIN_NAMES.contains(&name) {
        let name = name.to_string();
        return tokio::task::spawn_blocking(move || builtin_info(&name))
            .await
            .map_err(ApiError::internal)?
            .map_err(ApiError::internal);
    }
    match state.store.get_dataset(project, name).await? {
        Some(row) if row.status != trainyard_store::DATASET_READY => Err(not_ready(&row)),
        Some(row) => upload_info(&row),
        None => Err(ApiError::bad_request(
            field,
            format!(
                "unknown dataset '{name}'; available: {}",
                known_names(state, project).await?.join(", ")
            ),
        )),
    }
}

/// A dataset still extracting (or whose extraction failed or was cancelled) trains nothing.
fn not_ready(row: &DatasetRow) -> ApiError {
    let extraction = crate::extraction::Extraction::of(row);
    let detail = match (row.status.as_str(), extraction) {
        (trainyard_store::DATASET_INITIALIZING, Some(e)) => format!(
            "is still initializing ({} of {} shards); wait for status ready",
            e.shards_done,
            e.shards_total.map_or("?".to_string(), |t| t.to_string())
        ),
        ("failed", Some(e)) => format!(
            "failed to extract ({}); delete it and create it again",
            e.error.unwrap_or_default()
        ),
        (status, _) => format!("is {status}; delete it and create it again"),
    };
    ApiError::conflict(format!("dataset '{}' {detail}", row.name))
}

/// The description stored with an upload.
pub fn upload_info(row: &DatasetRow) -> ApiResult<DatasetInfo> {
    serde_json::from_value(row.info.clone()).map_err(ApiError::internal)
}

/// Every dataset a model may name: the built-ins, then the uploads.
pub async fn known_names(state: &SharedState, project: &str) -> ApiResult<Vec<String>> {
    let mut names: Vec<String> = BUILTIN_NAMES.iter().map(|n| n.to_string()).collect();
    names.extend(
        state
            .store
            .list_datasets(project)
            .await?
            .into_iter()
            .map(|d| d.name),
    );
    Ok(names)
}

/// How an upload is read: with its target column, or unlabeled (every column a feature) when
/// `target` is None.
pub fn csv_options(
    name: &str,
    target: Option<&str>,
    task: Option<trainyard_core::Task>,
) -> CsvOptions {
    let description = match target {
        Some(target) => format!("uploaded CSV, target column '{target}'"),
        None => "uploaded CSV, unlabeled (every column a feature)".to_string(),
    };
    CsvOptions {
        name: name.to_string(),
        target: target.map(str::to_string),
        task: task.filter(|t| *t != trainyard_core::Task::Unlabeled),
        description,
        license: "provided by the uploader".into(),
    }
}

/// Loads a dataset's rows for training.
pub async fn load(state: &SharedState, project: &str, name: &str) -> Result<Arc<Dataset>, String> {
    if BUILTIN_NAMES.contains(&name) {
        let name = name.to_string();
        return tokio::task::spawn_blocking(move || load_builtin(&name))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string());
    }
    let row: DatasetRow = state
        .store
        .get_dataset(project, name)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("dataset '{name}' was deleted"))?;
    // Everything that shapes the parse: the stored file (unique per upload, so per name,
    // target and task) and its content.
    let cache_key = upload_cache_key(&row);
    if let Some(ds) = state.uploaded.get(&cache_key) {
        return Ok(ds);
    }
    if row.extraction.is_some() {
        let set = crate::extraction::load_set(state, &row).await?;
        let info: DatasetInfo =
            serde_json::from_value(row.info.clone()).map_err(|e| e.to_string())?;
        let bytes = set.bytes();
        let dataset = Arc::new(Dataset {
            info,
            table: trainyard_data::Table::default(),
            test: None,
            text: None,
            texts: None,
            activations: Some(Arc::new(set)),
        });
        state.uploaded.insert(cache_key, dataset.clone(), bytes);
        return Ok(dataset);
    }
    let info: DatasetInfo = serde_json::from_value(row.info.clone()).map_err(|e| e.to_string())?;
    let artifacts = state.artifacts.clone();
    let path = row.path.clone();
    let target =
        (info.task != trainyard_core::Task::Unlabeled).then_some(info.target_name.as_str());
    let options = csv_options(&row.name, target, Some(info.task));
    let dataset = tokio::task::spawn_blocking(move || {
        let bytes = artifacts
            .get(&path)
            .map_err(|e| format!("dataset file {path}: {e}"))?;
        let parsed = match (options.task, &options.target) {
            (Some(trainyard_core::Task::Text), Some(label)) if !label.is_empty() => {
                trainyard_data::labeled_text::parse_labeled_texts(&options.name, &bytes, label)
            }
            (Some(trainyard_core::Task::Text), _) => {
                trainyard_data::text::parse_corpus(&options.name, &bytes)
            }
            _ => parse_table(&bytes, &options),
        };
        parsed.map_err(|e| format!("dataset '{}': {e}", options.name))
    })
    .await
    .map_err(|e| e.to_string())??;
    let bytes = dataset_bytes(&dataset);
    let dataset = Arc::new(dataset);
    state.uploaded.insert(cache_key, dataset.clone(), bytes);
    Ok(dataset)
}

pub fn upload_cache_key(row: &DatasetRow) -> String {
    format!("{}#{}", row.path, row.sha256)
}

fn dataset_bytes(ds: &Dataset) -> usize {
    let table = |t: &trainyard_data::Table| (t.x.len() + t.y.len()) * 4;
    let texts = ds
        .texts
        .as_ref()
        .map_or(0, |t| t.iter().map(String::len).sum());
    table(&ds.table)
        + ds.test.as_ref().map_or(0, table)
        + ds.text.as_ref().map_or(0, |t| t.len())
        + texts
}
