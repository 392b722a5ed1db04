//! Activation datasets extracted from a trained language model: `POST /api/datasets` with a
//! JSON body of `kind: activations` queues the extraction (`server::extraction` runs it),
//! `POST /api/datasets/{name}/cancel` stops it.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use trainyard_engine::family::Dependency;
use trainyard_engine::sae::shards::source_shape;
use trainyard_store::{DATASET_INITIALIZING, DatasetRow};

use crate::access::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extraction::{Extraction, ExtractionRequest, dataset_info, provisional_from};
use crate::state::SharedState;

const SITES: [&str; 3] = ["resid_post", "mlp_out", "attn_out"];
const DEFAULT_TOKENS: usize = 262_144;
const MAX_TOKENS: usize = 100_000_000;

/// `POST /api/datasets` with `content-type: application/json`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateActivationDataset {
    /// 1-64 characters: lowercase letters, digits, `_`, `-`, `.`.
    pub name: String,
    /// `activations`: read from a trained language model.
    pub kind: String,
    /// A completed `transformer_lm` of this project.
    pub source_model: String,
    /// The text corpus whose windows go through it (`shakespeare` or an upload with task=text).
    pub text_dataset: String,
    /// Blocks (0-based), all read in one forward pass; default the middle one.
    pub layers: Option<Vec<usize>>,
    /// `resid_post` (default), `mlp_out` or `attn_out`.
    pub site: Option<String>,
    /// Training tokens to read (default 262144); a tenth as many more are held out.
    pub n_tokens: Option<usize>,
}

/// Checks the request and queues the extraction: 202 with the dataset, `initializing`.
pub async fn create(
    caller: &Caller,
    state: &SharedState,
    body: Value,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let body: CreateActivationDataset =
        serde_json::from_value(body).map_err(|e| ApiError::bad_request("body", e.to_string()))?;
    if body.kind != "activations" {
        return Err(ApiError::bad_request(
            "kind",
            format!(
                "must be 'activations' (a JSON body extracts a language model's activations; \
                 upload files as the raw body or multipart), got '{}'",
                body.kind
            ),
        ));
    }
    super::datasets::validate_name(&body.name)?;
    let project = &caller.project;
    if state
        .store
        .get_dataset(project, &body.name)
        .await?
        .is_some()
    {
        return Err(ApiError::conflict(format!(
            "a dataset named '{}' exists; delete it first or choose another name",
            body.name
        )));
    }
    let (request, d_model, block) = validate(state, project, &body).await?;
    let from = provisional_from(&request, d_model, block);
    check_memory(state, &from)?;
    let description = format!(
        "activations of model {} being extracted",
        request.source_model
    );
    let info = dataset_info(&body.name, description, from);
    let row = DatasetRow {
        name: body.name.clone(),
        project_id: project.clone(),
        info: serde_json::to_value(&info).map_err(ApiError::internal)?,
        path: format!("datasets/{}-{}/", body.name, uuid::Uuid::now_v7().simple()),
        bytes: 0,
        sha256: String::new(),
        created_at: 0,
        status: DATASET_INITIALIZING.into(),
        extraction: Some(
            serde_json::to_value(Extraction::new(request)).map_err(ApiError::internal)?,
        ),
    };
    if !state.store.insert_dataset(&row).await? {
        return Err(ApiError::conflict(format!(
            "a dataset named '{}' was created concurrently",
            body.name
        )));
    }
    let row = state
        .store
        .get_dataset(project, &body.name)
        .await?
        .ok_or_else(|| ApiError::not_found("dataset", &body.name))?;
    Ok((StatusCode::ACCEPTED, Json(super::datasets::row_view(&row)?)))
}

/// The request with its defaults, and the source model's width and context.
async fn validate(
    state: &SharedState,
    project: &str,
    body: &CreateActivationDataset,
) -> ApiResult<(ExtractionRequest, usize, usize)> {
    let dependency = Dependency {
        field: "source_model".into(),
        model_id: body.source_model.clone(),
        algorithms: vec!["transformer_lm"],
        inspect: true,
    };
    super::models::check_dependency(state, project, &dependency).await?;
    let file = crate::worker::dependency_file(state, project, &body.source_model)
        .await
        .map_err(|e| ApiError::bad_request("source_model", e))?;
    let (n_layer, d_model, block) =
        source_shape(&file).map_err(|e| ApiError::bad_request("source_model", e.to_string()))?;
    let corpus = crate::datasets::info(state, project, &body.text_dataset, "text_dataset").await?;
    if corpus.task != trainyard_core::Task::Text || corpus.classes.is_some() {
        return Err(ApiError::bad_request(
            "text_dataset",
            format!(
                "'{}' is not a text corpus (shakespeare, or an upload with task=text and no \
                 target)",
                body.text_dataset
            ),
        ));
    }
    let layers = body.layers.clone().unwrap_or_else(|| vec![n_layer / 2]);
    if layers.is_empty() {
        return Err(ApiError::bad_request("layers", "name at least one layer"));
    }
    if let Some(layer) = layers.iter().find(|&&l| l >= n_layer) {
        return Err(ApiError::bad_request(
            "layers",
            format!(
                "layer {layer} is out of range: the source model has {n_layer} layers (0 to {})",
                n_layer - 1
            ),
        ));
    }
    if (1..layers.len()).any(|i| layers[..i].contains(&layers[i])) {
        return Err(ApiError::bad_request("layers", "a layer is named twice"));
    }
    let site = body.site.clone().unwrap_or_else(|| SITES[0].into());
    if !SITES.contains(&site.as_str()) {
        return Err(ApiError::bad_request(
            "site",
            format!("must be one of {}, got '{site}'", SITES.join(", ")),
        ));
    }
    let n_tokens = body.n_tokens.unwrap_or(DEFAULT_TOKENS);
    if !(block..=MAX_TOKENS).contains(&n_tokens) {
        return Err(ApiError::bad_request(
            "n_tokens",
            format!(
                "must be from {block} (the source model's context) to {MAX_TOKENS}, got {n_tokens}"
            ),
        ));
    }
    let request = ExtractionRequest {
        source_model: body.source_model.clone(),
        text_dataset: body.text_dataset.clone(),
        layers,
        site,
        n_tokens,
    };
    Ok((request, d_model, block))
}

/// An autoencoder on the dataset holds all of it: refuse what no job could load.
fn check_memory(
    state: &SharedState,
    from: &trainyard_data::extracted::ExtractedFrom,
) -> ApiResult<()> {
    let rows = from.n_tokens + from.validation_tokens;
    let mb = (rows * from.d_model * from.layers.len() * 4) as f64 / (1 << 20) as f64;
    let budget = state.config.limits().job_memory_mb as f64;
    if mb > budget {
        return Err(ApiError::bad_request(
            "n_tokens",
            format!(
                "{} tokens of {} layer(s) at width {} take {mb:.0} MB, more than a job's {budget:.0} MB \
                 (--job-memory-mb); ask for fewer tokens or layers",
                from.n_tokens,
                from.layers.len(),
                from.d_model
            ),
        ));
    }
    Ok(())
}

#[utoipa::path(post, path = "/api/datasets/{name}/cancel", params(("name" = String, Path, description = "the dataset's name")), tag = "datasets",
    responses((status = 200, description = "the dataset, cancelled", body = crate::views::DatasetView), (status = 404, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody)))]
pub async fn cancel_dataset(
    caller: Caller,
    State(state): State<SharedState>,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    let row = state
        .store
        .get_dataset(&caller.project, &name)
        .await?
        .ok_or_else(|| ApiError::not_found("dataset", &name))?;
    if !state
        .store
        .cancel_extraction(&caller.project, &name)
        .await?
    {
        return Err(ApiError::conflict(format!(
            "dataset '{name}' is {}; only an extraction still initializing can be cancelled",
            row.status
        )));
    }
    let row = state
        .store
        .get_dataset(&caller.project, &name)
        .await?
        .ok_or_else(|| ApiError::not_found("dataset", &name))?;
    let mut view = super::datasets::row_view(&row)?;
    view["status"] = json!(row.status);
    Ok(Json(view))
}
