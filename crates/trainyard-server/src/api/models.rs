//! The model lifecycle: create, list, show, delete, train, status, metrics, runs, predict.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Map, Value};
use trainyard_engine::family::{Dependency, Plan};
use trainyard_store::{ModelFilter, ModelRow, NewModel, RunRow, RunStart};

use crate::access::Caller;
use crate::api::ApiJson;
use crate::error::{ApiError, ApiResult};
use crate::state::SharedState;
use crate::views::{MetricsHistory, ModelList, ModelView, RunList, RunView, StatusView};
use crate::worker::remove_run_artifacts;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateModel {
    /// 1 to 200 characters, not only spaces.
    #[schema(min_length = 1, max_length = 200, pattern = "\\S")]
    pub name: String,
    /// A built-in dataset: iris, wine_quality, california_housing, mnist, synthetic, shuttle.
    pub dataset: String,
    /// linear_regression, logistic_regression, mlp, cnn, random_forest (tabular);
    /// isolation_forest, ecod, hbos, half_space_trees (anomaly detection).
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
    #[param(pattern = "^(pending|initializing|training|paused|completed|failed|cancelled)$")]
    pub status: Option<String>,
    pub dataset: Option<String>,
    pub algorithm: Option<String>,
    /// Models that read this model (a sparse autoencoder's `source_model`).
    pub source_model: Option<String>,
    /// Models with this `architecture` hyperparameter (a sparse autoencoder's `relu`, `topk`
    /// or `batch_topk`).
    pub architecture: Option<String>,
    /// 1 to 200, default 50.
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    #[param(minimum = 0, maximum = 1_000_000_000)]
    pub offset: Option<i64>,
}

const MAX_NAME: usize = 200;
const MAX_OFFSET: i64 = 1_000_000_000;

/// Checks a model spec against its family: the algorithm, the dataset's fit and every
/// hyperparameter; returns the complete spec to store.
async fn validate_spec(
    state: &SharedState,
    project: &str,
    dataset: &str,
    algorithm: &str,
    hp: &Map<String, Value>,
) -> ApiResult<Plan> {
    let family = state.config.families.for_algorithm(algorithm)?.clone();
    let info = crate::datasets::info(state, project, dataset, "dataset").await?;
    if info.extracted_from.is_some() && !family.learns_extracted_activations() {
        return Err(ApiError::bad_request(
            "dataset",
            format!(
                "'{dataset}' holds activations extracted from a language model; only \
                 sparse_autoencoder learns them"
            ),
        ));
    }
    let plan = family.plan(algorithm, &info, hp, &state.config.limits())?;
    let resolved = plan
        .hyperparameters
        .as_object()
        .cloned()
        .unwrap_or_default();
    for dependency in family.dependencies(&resolved) {
        check_dependency(state, project, &dependency).await?;
        if dependency.inspect {
            let file = crate::worker::dependency_file(state, project, &dependency.model_id)
                .await
                .map_err(|e| ApiError::bad_request(&dependency.field, e))?;
            family.check_dependency(&resolved, &dependency.field, &file, &state.config.limits())?;
        }
    }
    Ok(plan)
}

/// A model a job reads must be in the caller's project, of an allowed algorithm, and trained.
pub(crate) async fn check_dependency(
    state: &SharedState,
    project: &str,
    dependency: &Dependency,
) -> ApiResult<()> {
    let Dependency {
        field,
        model_id,
        algorithms,
        ..
    } = dependency;
    let model = state
        .store
        .get_model(project, model_id)
        .await?
        .ok_or_else(|| {
            ApiError::bad_request(field, format!("no model '{model_id}' in this project"))
        })?;
    if !algorithms.contains(&model.algorithm.as_str()) {
        return Err(ApiError::bad_request(
            field,
            format!(
                "model '{model_id}' is a {} model; expected {}",
                model.algorithm,
                algorithms.join(" or ")
            ),
        ));
    }
    let runs = state.store.list_runs(&model.id).await?;
    if !runs.iter().any(|r| r.status == "completed") {
        return Err(ApiError::conflict(format!(
            "{field}: model '{model_id}' has no completed run yet; train it first"
        )));
    }
    Ok(())
}

/// A model of the caller's project; another project's is as absent as a missing one.
pub(crate) async fn find_model(
    state: &SharedState,
    caller: &Caller,
    id: &str,
) -> ApiResult<ModelRow> {
    state
        .store
        .get_model(&caller.project, id)
        .await?
        .ok_or_else(|| ApiError::not_found("model", id))
}

pub(crate) async fn latest_run(state: &SharedState, model: &ModelRow) -> ApiResult<Option<RunRow>> {
    match &model.latest_run_id {
        Some(id) => Ok(state.store.get_run(&model.project_id, id).await?),
        None => Ok(None),
    }
}

#[utoipa::path(post, path = "/api/models", request_body = CreateModel, tag = "models",
    responses((status = 201, body = ModelView), (status = 400, body = crate::error::ErrorBody)))]
pub async fn create_model(
    caller: Caller,
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
    if name.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "name",
            "must not contain control characters",
        ));
    }
    let plan = validate_spec(
        &state,
        &caller.project,
        &body.dataset,
        &body.algorithm,
        &body.hyperparameters,
    )
    .await?;
    let row = state
        .store
        .insert_model(NewModel {
            project_id: caller.project.clone(),
            name: name.to_string(),
            dataset: body.dataset,
            algorithm: body.algorithm,
            hyperparameters: plan.hyperparameters,
        })
        .await?;
    Ok((StatusCode::CREATED, Json(ModelView::new(row, None))))
}

#[utoipa::path(get, path = "/api/models", params(ListQuery), tag = "models",
    responses((status = 200, body = ModelList), (status = 400, body = crate::error::ErrorBody)))]
pub async fn list_models(
    caller: Caller,
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
        project_id: caller.project.clone(),
        status: q.status,
        dataset: q.dataset,
        algorithm: q.algorithm,
        hyperparameters: [
            ("source_model", q.source_model),
            ("architecture", q.architecture),
        ]
        .into_iter()
        .filter_map(|(key, value)| Some((key.to_string(), Value::from(value?))))
        .collect(),
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
    caller: Caller,
    State(state): State<SharedState>,
    Path(id): Path<String>,
) -> ApiResult<Json<ModelView>> {
    let model = find_model(&state, &caller, &id).await?;
    let run = latest_run(&state, &model).await?;
    Ok(Json(ModelView::new(model, run.as_ref())))
}

#[utoipa::path(delete, path = "/api/models/{id}", params(("id" = String, Path, description = "the model's id")), tag = "models",
    responses((status = 204), (status = 404, body = crate::error::ErrorBody)))]
pub async fn delete_model(
    caller: Caller,
    State(state): State<SharedState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let model = find_model(&state, &caller, &id).await?;
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
    state.store.delete_model(&caller.project, &model.id).await?;
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
    caller: Caller,
    State(state): State<SharedState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, Json<RunView>)> {
    let model = find_model(&state, &caller, &id).await?;
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
    let plan = validate_spec(
        &state,
        &model.project_id,
        &model.dataset,
        &model.algorithm,
        &merged,
    )
    .await?;
    let started = state
        .store
        .create_run(
            &model.id,
            &model.project_id,
            &plan.hyperparameters,
            plan.epochs as i64,
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
    caller: Caller,
    State(state): State<SharedState>,
    Path(id): Path<String>,
) -> ApiResult<Json<StatusView>> {
    let model = find_model(&state, &caller, &id).await?;
    let run = latest_run(&state, &model).await?;
    Ok(Json(StatusView::new(&model, run)))
}

#[utoipa::path(get, path = "/api/models/{id}/metrics", params(("id" = String, Path, description = "the model's id")), tag = "models",
    responses((status = 200, body = MetricsHistory), (status = 404, body = crate::error::ErrorBody)))]
pub async fn model_metrics(
    caller: Caller,
    State(state): State<SharedState>,
    Path(id): Path<String>,
) -> ApiResult<Json<MetricsHistory>> {
    let model = find_model(&state, &caller, &id).await?;
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
    caller: Caller,
    State(state): State<SharedState>,
    Path(id): Path<String>,
) -> ApiResult<Json<RunList>> {
    let model = find_model(&state, &caller, &id).await?;
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
    caller: Caller,
    State(state): State<SharedState>,
    Path(id): Path<String>,
) -> ApiResult<Json<RunView>> {
    let run = state
        .store
        .get_run(&caller.project, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("run", &id))?;
    let attempts = state.store.attempts(&run.id).await?;
    Ok(Json(RunView::new(run, Some(attempts))))
}
