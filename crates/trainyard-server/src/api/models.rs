//! The model lifecycle: create, list, show, delete, train, status, metrics, runs, predict.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Map, Value};
use trainyard_core::{Algorithm, Hyperparameters};
use trainyard_engine::{PredictError, Prediction, Predictor, TrainedModel};
use trainyard_store::{ModelFilter, ModelRow, NewModel, RunRow, RunStart};

use crate::api::ApiJson;
use crate::error::{ApiError, ApiResult};
use crate::state::SharedState;
use crate::views::{
    MetricsHistory, ModelList, ModelView, Predictions, RunList, RunView, StatusView,
};
use crate::worker::remove_run_artifacts;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateModel {
    /// 1 to 200 characters, not only spaces.
    #[schema(min_length = 1, max_length = 200, pattern = "\\S")]
    pub name: String,
    /// A built-in dataset: iris, wine_quality, california_housing, mnist, synthetic, shuttle.
    pub dataset: String,
    /// linear_regression, logistic_regression, mlp, cnn or random_forest.
    #[schema(pattern = "^(linear_regression|logistic_regression|mlp|cnn|random_forest)$")]
    pub algorithm: String,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub hyperparameters: Map<String, Value>,
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TrainBody {
    /// Overrides the model's hyperparameters for this run only.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub hyperparameters: Map<String, Value>,
    /// When the latest run is paused: cancel it and start a new run (otherwise 409).
    #[serde(default)]
    pub restart: bool,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    #[param(pattern = "^(pending|training|paused|completed|failed|cancelled)$")]
    pub status: Option<String>,
    pub dataset: Option<String>,
    pub algorithm: Option<String>,
    /// 1 to 200, default 50.
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    #[param(minimum = 0, maximum = 1_000_000_000)]
    pub offset: Option<i64>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PredictBody {
    /// Rows of raw feature values, in the dataset's feature order.
    pub inputs: Vec<Vec<f64>>,
}

const MAX_NAME: usize = 200;
const MAX_PREDICT_ROWS: usize = 10_000;
const MAX_OFFSET: i64 = 1_000_000_000;

async fn validate_spec(
    state: &SharedState,
    dataset: &str,
    algorithm: &str,
    hp: &Map<String, Value>,
) -> ApiResult<(Algorithm, Hyperparameters)> {
    let info = crate::datasets::info(state, dataset, "dataset").await?;
    let algorithm: Algorithm = algorithm.parse()?;
    let shape = info.shape();
    algorithm.check_fits(dataset, &shape)?;
    let hp = Hyperparameters::resolve(algorithm, &shape, hp)
        .map_err(|e| ApiError::from(e.within("hyperparameters")))?;
    check_memory(state, algorithm, &hp, &info)?;
    Ok((algorithm, hp))
}

/// The memory a job may use: the server's budget, or the model's own when that is smaller.
pub(crate) fn job_budget_mb(state: &SharedState, hp: &Hyperparameters) -> u64 {
    let server = state.config.job_memory_mb;
    match hp.memory_budget_mb as u64 {
        0 => server,
        own => own.min(server),
    }
}

/// Refuses a job that cannot fit its memory budget even at batch size 1, before it is queued.
fn check_memory(
    state: &SharedState,
    algorithm: Algorithm,
    hp: &Hyperparameters,
    info: &trainyard_data::DatasetInfo,
) -> ApiResult<()> {
    let budget = job_budget_mb(state, hp);
    let estimate = trainyard_engine::estimate_memory(algorithm, hp, info);
    if estimate
        .fitting_batch(hp.batch_size as usize, budget)
        .is_none()
    {
        let smallest = if algorithm.is_gradient_based() {
            " even at batch size 1"
        } else {
            ""
        };
        return Err(ApiError::bad_request(
            "hyperparameters",
            format!(
                "the job needs about {:.0} MB{smallest}, over the job memory budget of {budget} MB; \
                 use a smaller model (fewer or narrower layers, fewer or shallower trees) or raise the \
                 server's --job-memory-mb",
                estimate.mb_at(1)
            ),
        ));
    }
    Ok(())
}

pub(crate) async fn find_model(state: &SharedState, id: &str) -> ApiResult<ModelRow> {
    state
        .store
        .get_model(&state.config.project, id)
        .await?
        .ok_or_else(|| ApiError::not_found("model", id))
}

pub(crate) async fn latest_run(state: &SharedState, model: &ModelRow) -> ApiResult<Option<RunRow>> {
    match &model.latest_run_id {
        Some(id) => Ok(state.store.get_run(&state.config.project, id).await?),
        None => Ok(None),
    }
}

#[utoipa::path(post, path = "/api/models", request_body = CreateModel, tag = "models",
    responses((status = 201, body = ModelView), (status = 400, body = crate::error::ErrorBody)))]
pub async fn create_model(
    State(state): State<SharedState>,
    ApiJson(body): ApiJson<CreateModel>,
) -> ApiResult<(StatusCode, Json<ModelView>)> {
    let name = body.name.trim();
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(ApiError::bad_request(
            "name",
            format!("must be 1 to {MAX_NAME} characters"),
        ));
    }
    let (algorithm, hp) = validate_spec(
        &state,
        &body.dataset,
        &body.algorithm,
        &body.hyperparameters,
    )
    .await?;
    let row = state
        .store
        .insert_model(NewModel {
            project_id: state.config.project.clone(),
            name: name.to_string(),
            dataset: body.dataset,
            algorithm: algorithm.name().to_string(),
            hyperparameters: hp.to_json(algorithm),
        })
        .await?;
    Ok((StatusCode::CREATED, Json(ModelView::new(row, None))))
}

#[utoipa::path(get, path = "/api/models", params(ListQuery), tag = "models",
    responses((status = 200, body = ModelList), (status = 400, body = crate::error::ErrorBody)))]
pub async fn list_models(
    State(state): State<SharedState>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<ModelList>> {
    let Query(q) = query?;
    if let Some(status) = &q.status {
        status
            .parse::<trainyard_core::RunStatus>()
            .map_err(|e| ApiError::bad_request("status", e))?;
    }
    let limit = q.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::bad_request(
            "limit",
            format!("must be in [1, 200], got {limit}"),
        ));
    }
    let offset = q.offset.unwrap_or(0);
    if !(0..=MAX_OFFSET).contains(&offset) {
        return Err(ApiError::bad_request(
            "offset",
            format!("must be in [0, {MAX_OFFSET}], got {offset}"),
        ));
    }
    let filter = ModelFilter {
        project_id: state.config.project.clone(),
        status: q.status,
        dataset: q.dataset,
        algorithm: q.algorithm,
        limit,
        offset,
    };
    let (rows, total) = state.store.list_models(&filter).await?;
    let mut models = Vec::with_capacity(rows.len());
    for row in rows {
        let run = latest_run(&state, &row).await?;
        models.push(ModelView::new(row, run.as_ref()));
    }
    Ok(Json(ModelList {
        models,
        total,
        limit,
        offset,
    }))
}

#[utoipa::path(get, path = "/api/models/{id}", params(("id" = String, Path, description = "the model's id")), tag = "models",
    responses((status = 200, body = ModelView), (status = 404, body = crate::error::ErrorBody)))]
pub async fn get_model(
    State(state): State<SharedState>,
    Path(id): Path<String>,
) -> ApiResult<Json<ModelView>> {
    let model = find_model(&state, &id).await?;
    let run = latest_run(&state, &model).await?;
    Ok(Json(ModelView::new(model, run.as_ref())))
}

#[utoipa::path(delete, path = "/api/models/{id}", params(("id" = String, Path, description = "the model's id")), tag = "models",
    responses((status = 204), (status = 404, body = crate::error::ErrorBody)))]
pub async fn delete_model(
    State(state): State<SharedState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let model = find_model(&state, &id).await?;
    let runs = state.store.list_runs(&model.id).await?;
    for run in runs
        .iter()
        .filter(|r| !parse_status(&r.status).is_terminal())
    {
        state.store.request_cancel(&run.id).await?;
        if let Some(control) = state.control(&run.id) {
            control.cancel();
        }
    }
    state
        .store
        .delete_model(&state.config.project, &model.id)
        .await?;
    for run in &runs {
        remove_run_artifacts(&state, &run.id);
    }
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) fn parse_status(s: &str) -> trainyard_core::RunStatus {
    s.parse().unwrap_or(trainyard_core::RunStatus::Failed)
}

#[utoipa::path(post, path = "/api/models/{id}/train", params(("id" = String, Path, description = "the model's id")), request_body(content = Option<TrainBody>), tag = "models",
    responses((status = 202, description = "run queued", body = RunView), (status = 200, description = "a run is already active", body = RunView),
              (status = 400, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)))]
pub async fn train_model(
    State(state): State<SharedState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, Json<RunView>)> {
    let model = find_model(&state, &id).await?;
    let body = if body.iter().all(u8::is_ascii_whitespace) || body.trim_ascii() == b"null" {
        TrainBody::default()
    } else {
        serde_json::from_slice::<TrainBody>(&body)
            .map_err(|e| ApiError::bad_request("body", e.to_string()))?
    };
    let overrides = body.hyperparameters;
    let mut merged = model
        .hyperparameters
        .as_object()
        .cloned()
        .unwrap_or_default();
    merged.extend(overrides);
    let (algorithm, hp) = validate_spec(&state, &model.dataset, &model.algorithm, &merged).await?;
    let epochs = if algorithm.is_gradient_based() {
        hp.epochs as i64
    } else {
        1
    };
    let started = state
        .store
        .create_run(
            &model.id,
            &model.project_id,
            &hp.to_json(algorithm),
            epochs,
            body.restart,
        )
        .await?;
    if let RunStart::Restarted {
        cancelled_run_id, ..
    } = &started
    {
        crate::events::publish_run_status(&state, cancelled_run_id).await;
    }
    let (status, run) = match started {
        RunStart::Created(run) | RunStart::Restarted { run, .. } => {
            crate::events::publish_status(&state, &run).await;
            state.job_queued.notify_one();
            (StatusCode::ACCEPTED, run)
        }
        RunStart::Active(run) => (StatusCode::OK, run),
        RunStart::Paused(run) => {
            return Err(ApiError::conflict(format!(
                "run {} of this model is paused; resume it with POST /api/models/{}/resume, \
                 or start over with POST /api/models/{}/train and body {{\"restart\": true}} (which cancels the paused run)",
                run.id, model.id, model.id
            )));
        }
    };
    Ok((status, Json(RunView::new(run, None))))
}

#[utoipa::path(get, path = "/api/models/{id}/status", params(("id" = String, Path, description = "the model's id")), tag = "models",
    responses((status = 200, body = StatusView), (status = 404, body = crate::error::ErrorBody)))]
pub async fn model_status(
    State(state): State<SharedState>,
    Path(id): Path<String>,
) -> ApiResult<Json<StatusView>> {
    let model = find_model(&state, &id).await?;
    let run = latest_run(&state, &model).await?;
    Ok(Json(StatusView::new(&model, run)))
}

#[utoipa::path(get, path = "/api/models/{id}/metrics", params(("id" = String, Path, description = "the model's id")), tag = "models",
    responses((status = 200, body = MetricsHistory), (status = 404, body = crate::error::ErrorBody)))]
pub async fn model_metrics(
    State(state): State<SharedState>,
    Path(id): Path<String>,
) -> ApiResult<Json<MetricsHistory>> {
    let model = find_model(&state, &id).await?;
    let epochs = match &model.latest_run_id {
        Some(run) => state.store.epoch_metrics(run).await?,
        None => vec![],
    };
    Ok(Json(MetricsHistory {
        model_id: model.id,
        run_id: model.latest_run_id,
        epochs,
    }))
}

#[utoipa::path(get, path = "/api/models/{id}/runs", params(("id" = String, Path, description = "the model's id")), tag = "models",
    responses((status = 200, body = RunList), (status = 404, body = crate::error::ErrorBody)))]
pub async fn model_runs(
    State(state): State<SharedState>,
    Path(id): Path<String>,
) -> ApiResult<Json<RunList>> {
    let model = find_model(&state, &id).await?;
    let runs: Vec<RunView> = state
        .store
        .list_runs(&model.id)
        .await?
        .into_iter()
        .map(|r| RunView::new(r, None))
        .collect();
    Ok(Json(RunList {
        model_id: model.id,
        runs,
    }))
}

#[utoipa::path(get, path = "/api/runs/{id}", params(("id" = String, Path, description = "the run's id")), tag = "runs",
    responses((status = 200, body = RunView), (status = 404, body = crate::error::ErrorBody)))]
pub async fn get_run(
    State(state): State<SharedState>,
    Path(id): Path<String>,
) -> ApiResult<Json<RunView>> {
    let run = state
        .store
        .get_run(&state.config.project, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("run", &id))?;
    let attempts = state.store.attempts(&run.id).await?;
    Ok(Json(RunView::new(run, Some(attempts))))
}

#[utoipa::path(post, path = "/api/models/{id}/predict", params(("id" = String, Path, description = "the model's id")), request_body = PredictBody, tag = "models",
    responses((status = 200, description = "predictions, one per input row", body = Predictions), (status = 400, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
pub async fn predict(
    State(state): State<SharedState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<PredictBody>,
) -> ApiResult<Json<Predictions>> {
    let model = find_model(&state, &id).await?;
    if body.inputs.len() > MAX_PREDICT_ROWS {
        return Err(ApiError::bad_request(
            "inputs",
            format!(
                "at most {MAX_PREDICT_ROWS} rows per request, got {}",
                body.inputs.len()
            ),
        ));
    }
    let runs = state.store.list_runs(&model.id).await?;
    let Some(run) = runs.into_iter().find(|r| r.status == "completed") else {
        return Err(ApiError::conflict(
            "model has no completed run yet; train it and wait for status 'completed'",
        ));
    };
    let predictor = load_predictor(&state, &run).await?;
    let inputs = body.inputs;
    let predictions: Vec<Prediction> =
        tokio::task::spawn_blocking(move || predictor.predict(&inputs))
            .await
            .map_err(ApiError::internal)?
            .map_err(|e| match e {
                PredictError::Artifact(_) => {
                    ApiError::unprocessable("model_unavailable", format!("{e}; retrain the model"))
                }
                _ => ApiError::bad_request("inputs", e.to_string()),
            })?;
    Ok(Json(Predictions {
        model_id: model.id,
        run_id: run.id,
        predictions: predictions.into_iter().map(Into::into).collect(),
    }))
}

async fn load_predictor(state: &SharedState, run: &RunRow) -> ApiResult<Arc<Predictor>> {
    if let Some(p) = state.predictors.get(&run.id) {
        return Ok(p);
    }
    let key = run.artifact.clone().ok_or_else(|| {
        ApiError::unprocessable(
            "model_unavailable",
            "the completed run recorded no model file",
        )
    })?;
    let artifacts = state.artifacts.clone();
    let predictor = tokio::task::spawn_blocking(move || {
        let bytes = artifacts
            .get(&key)
            .map_err(|e| format!("model file {key} cannot be read ({e}); retrain the model"))?;
        let model = TrainedModel::from_bytes(&bytes)
            .map_err(|e| format!("model file {key}: {e}; retrain the model"))?;
        let predictor = model
            .predictor()
            .map_err(|e| format!("{e}; retrain the model"))?;
        // The decoded model holds about as much as its file.
        Ok::<_, String>((predictor, bytes.len()))
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(|e| ApiError::unprocessable("model_unavailable", e))?;
    let (predictor, bytes) = predictor;
    let predictor = Arc::new(predictor);
    state
        .predictors
        .insert(run.id.clone(), predictor.clone(), bytes);
    Ok(predictor)
}
