//! Asking a trained model for answers: `predict` on rows, settings changed after training
//! (`PATCH /api/models/{id}`), and batch scoring of a whole dataset into a CSV. What an answer
//! means is the model family's business; this module only finds the model and moves bytes.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use trainyard_engine::PredictError;
use trainyard_engine::family::{AdjustError, Served};
use trainyard_store::{RunRow, ScoreJobRow};

use crate::access::Caller;
use crate::api::ApiJson;
use crate::api::models::find_model;
use crate::error::{ApiError, ApiResult};
use crate::state::SharedState;
use crate::views::{Predictions, ScoreJobView};

const MAX_PREDICT_ROWS: usize = 10_000;
/// Rows scored between progress updates of a score job.
const SCORE_CHUNK: usize = 2_000;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PredictBody {
    /// Rows of raw feature values in the dataset's feature order, or texts for a text
    /// classifier.
    pub inputs: PredictInputs,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum PredictInputs {
    Rows(Vec<Vec<f64>>),
    Texts(Vec<String>),
}

impl PredictInputs {
    fn len(&self) -> usize {
        match self {
            PredictInputs::Rows(rows) => rows.len(),
            PredictInputs::Texts(texts) => texts.len(),
        }
    }
}

/// The longest text a prediction takes, in bytes.
const MAX_TEXT_BYTES: usize = 100_000;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScoreBody {
    /// The dataset to score: its features must be the model's, in order.
    pub dataset: String,
}

/// The newest completed run of a model: the one that answers.
pub(crate) async fn serving_run(state: &SharedState, model_id: &str) -> ApiResult<RunRow> {
    let runs = state.store.list_runs(model_id).await?;
    runs.into_iter()
        .find(|r| r.status == "completed")
        .ok_or_else(|| {
            ApiError::conflict(
                "model has no completed run yet; train it and wait for status 'completed'",
            )
        })
}

/// A served model's refusal: an unusable file is a 422, anything else a 400 naming `field`.
pub(crate) fn answer_error(e: PredictError, field: &str) -> ApiError {
    match e {
        PredictError::Artifact(_) => {
            ApiError::unprocessable("model_unavailable", format!("{e}; retrain the model"))
        }
        PredictError::Invalid { field, message } => ApiError::bad_request(field, message),
        PredictError::NotFound(what) => ApiError::not_found("feature", &what),
        _ => ApiError::bad_request(field, e.to_string()),
    }
}

fn predict_error(e: PredictError) -> ApiError {
    answer_error(e, "inputs")
}

#[utoipa::path(post, path = "/api/models/{id}/predict", params(("id" = String, Path, description = "the model's id")), request_body = PredictBody, tag = "models",
    responses((status = 200, description = "predictions, one per input row", body = Predictions), (status = 400, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
pub async fn predict(
    caller: Caller,
    State(state): State<SharedState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<PredictBody>,
) -> ApiResult<Json<Predictions>> {
    let model = find_model(&state, &caller, &id).await?;
    if body.inputs.len() > MAX_PREDICT_ROWS {
        return Err(ApiError::bad_request(
            "inputs",
            format!(
                "at most {MAX_PREDICT_ROWS} rows per request, got {}",
                body.inputs.len()
            ),
        ));
    }
    if let PredictInputs::Texts(texts) = &body.inputs
        && let Some(i) = texts.iter().position(|t| t.len() > MAX_TEXT_BYTES)
    {
        return Err(ApiError::bad_request(
            format!("inputs[{i}]"),
            format!("a text may have at most {MAX_TEXT_BYTES} bytes"),
        ));
    }
    let run = serving_run(&state, &model.id).await?;
    let served = load_served(&state, &model.algorithm, &run).await?;
    let inputs = body.inputs;
    let predictions = tokio::task::spawn_blocking(move || match &inputs {
        PredictInputs::Rows(rows) => served.predict(rows),
        PredictInputs::Texts(texts) => served.predict_texts(texts),
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(predict_error)?;
    Ok(Json(Predictions {
        model_id: model.id,
        run_id: run.id,
        predictions,
    }))
}

/// A model of the caller's project, the run that answers for it and that run's decoded model.
pub(crate) async fn served_model(
    state: &SharedState,
    caller: &Caller,
    id: &str,
) -> ApiResult<(trainyard_store::ModelRow, RunRow, Arc<dyn Served>)> {
    let model = find_model(state, caller, id).await?;
    let run = serving_run(state, &model.id).await?;
    let served = load_served(state, &model.algorithm, &run).await?;
    Ok((model, run, served))
}

/// The run's decoded model, from the cache or its file.
pub(crate) async fn load_served(
    state: &SharedState,
    algorithm: &str,
    run: &RunRow,
) -> ApiResult<Arc<dyn Served>> {
    if let Some(p) = state.predictors.get(&run.id) {
        return Ok(p);
    }
    let family = state.config.families.for_algorithm(algorithm)?.clone();
    let key = run.artifact.clone().ok_or_else(|| {
        ApiError::unprocessable(
            "model_unavailable",
            "the completed run recorded no model file",
        )
    })?;
    let artifacts = state.artifacts.clone();
    let (served, bytes) = tokio::task::spawn_blocking(move || {
        let bytes = artifacts
            .get(&key)
            .map_err(|e| format!("model file {key} cannot be read ({e}); retrain the model"))?;
        let served = family
            .load(&bytes)
            .map_err(|e| format!("model file {key}: {e}; retrain the model"))?;
        // The decoded model holds about as much as its file.
        Ok::<_, String>((served, bytes.len()))
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(|e| ApiError::unprocessable("model_unavailable", e))?;
    state
        .predictors
        .insert(run.id.clone(), served.clone(), bytes);
    Ok(served)
}

#[utoipa::path(patch, path = "/api/models/{id}", params(("id" = String, Path, description = "the model's id")), tag = "models",
    request_body(content = Object, description = "settings that change without refitting: {\"contamination\": \"auto\" | fraction} or {\"threshold\": score} for anomaly detectors"),
    responses((status = 200, description = "what changed, e.g. the new threshold and the fraction of training rows it flags", body = Object),
              (status = 400, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody),
              (status = 422, description = "the model file is unusable", body = crate::error::ErrorBody), (status = 503, body = crate::error::ErrorBody)))]
pub async fn adjust_model(
    caller: Caller,
    State(state): State<SharedState>,
    Path(id): Path<String>,
    ApiJson(changes): ApiJson<Map<String, Value>>,
) -> ApiResult<Json<Value>> {
    let model = find_model(&state, &caller, &id).await?;
    let run = serving_run(&state, &model.id).await?;
    let served = load_served(&state, &model.algorithm, &run).await?;
    let adjusted = tokio::task::spawn_blocking(move || served.adjust(&changes))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| match e {
            AdjustError::Invalid(v) => ApiError::from(v),
            AdjustError::Unsupported(m) => ApiError::bad_request("body", m),
        })?;
    let key = format!(
        "runs/{}/model-adjusted-{}.tym",
        run.id,
        uuid::Uuid::now_v7().simple()
    );
    let artifacts = state.artifacts.clone();
    let (put_key, bytes) = (key.clone(), adjusted.artifact.bytes);
    tokio::task::spawn_blocking(move || artifacts.put(&put_key, &bytes))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| ApiError::unavailable(format!("saving the adjusted model failed: {e}")))?;
    let metrics = serde_json::to_value(&adjusted.artifact.metrics).map_err(ApiError::internal)?;
    let Some(old) = state
        .store
        .replace_run_artifact(&run.id, &key, &metrics)
        .await?
    else {
        let _ = state.artifacts.delete(&key);
        return Err(ApiError::conflict(
            "the run changed while adjusting; try again",
        ));
    };
    state.predictors.remove(&run.id);
    if old.contains("/model-adjusted-") {
        let _ = state.artifacts.delete(&old);
    }
    let mut body = adjusted.summary;
    body["model_id"] = json!(model.id);
    body["run_id"] = json!(run.id);
    body["metrics"] = metrics;
    Ok(Json(body))
}

#[utoipa::path(post, path = "/api/models/{id}/score", params(("id" = String, Path, description = "the model's id")), request_body = ScoreBody, tag = "models",
    responses((status = 202, description = "scoring started", body = ScoreJobView), (status = 400, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody),
              (status = 422, description = "the model file is unusable", body = crate::error::ErrorBody)))]
pub async fn start_score(
    caller: Caller,
    State(state): State<SharedState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ScoreBody>,
) -> ApiResult<(StatusCode, Json<ScoreJobView>)> {
    let model = find_model(&state, &caller, &id).await?;
    let run = serving_run(&state, &model.id).await?;
    let served = load_served(&state, &model.algorithm, &run).await?;
    let info = crate::datasets::info(&state, &caller.project, &body.dataset, "dataset").await?;
    if info.feature_names != served.feature_names() {
        return Err(ApiError::bad_request(
            "dataset",
            format!(
                "'{}' has features {}, but the model takes {}",
                body.dataset,
                info.feature_names.join(", "),
                served.feature_names().join(", ")
            ),
        ));
    }
    let job = state
        .store
        .create_score_job(&model.id, &run.id, &body.dataset, info.n_rows as i64)
        .await?;
    tokio::spawn(run_score_job(
        state.clone(),
        caller.project,
        job.clone(),
        served,
    ));
    Ok((StatusCode::ACCEPTED, Json(ScoreJobView::new(job))))
}

async fn run_score_job(
    state: SharedState,
    project: String,
    job: ScoreJobRow,
    served: Arc<dyn Served>,
) {
    let result = score_dataset(&state, &project, &job, served).await;
    let (artifact, error) = match &result {
        Ok(key) => (Some(key.as_str()), None),
        Err(e) => (None, Some(e.as_str())),
    };
    if let Err(e) = state.store.finish_score_job(&job.id, artifact, error).await {
        tracing::warn!(job = %job.id, error = %e, "could not record the end of a score job");
    }
}

async fn score_dataset(
    state: &SharedState,
    project: &str,
    job: &ScoreJobRow,
    served: Arc<dyn Served>,
) -> Result<String, String> {
    let dataset = crate::datasets::load(state, project, &job.dataset).await?;
    let columns = served.output_columns();
    let mut csv = format!("row,{}\n", columns.join(","));
    let d = dataset.info.n_features;
    let mut done = 0usize;
    for chunk in dataset.table.x.chunks(SCORE_CHUNK * d) {
        let rows: Vec<Vec<f64>> = chunk
            .chunks_exact(d)
            .map(|r| r.iter().map(|v| *v as f64).collect())
            .collect();
        let model = served.clone();
        let answers = tokio::task::spawn_blocking(move || model.predict(&rows))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("scoring rows from {done}: {e}"))?;
        for answer in answers {
            csv.push_str(&done.to_string());
            for column in &columns {
                csv.push(',');
                csv.push_str(&csv_cell(&answer[column.as_str()]));
            }
            csv.push('\n');
            done += 1;
        }
        let _ = state.store.score_job_progress(&job.id, done as i64).await;
    }
    let key = format!("runs/{}/scores/{}.csv", job.run_id, job.id);
    let artifacts = state.artifacts.clone();
    let put_key = key.clone();
    tokio::task::spawn_blocking(move || artifacts.put(&put_key, csv.as_bytes()))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| {
            format!("saving the scores failed: {e}; check free space in the data directory")
        })?;
    Ok(key)
}

/// A JSON answer field as one CSV cell: lists joined by `;`, strings quoted when needed.
fn csv_cell(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) if s.contains([',', '"', '\n']) => {
            format!("\"{}\"", s.replace('"', "\"\""))
        }
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(csv_cell).collect::<Vec<_>>().join(";"),
        other => other.to_string(),
    }
}

async fn find_score_job(
    state: &SharedState,
    model_id: &str,
    job_id: &str,
) -> ApiResult<ScoreJobRow> {
    state
        .store
        .score_job(model_id, job_id)
        .await?
        .ok_or_else(|| ApiError::not_found("score job", job_id))
}

#[utoipa::path(get, path = "/api/models/{id}/score/{job_id}", params(("id" = String, Path, description = "the model's id"), ("job_id" = String, Path, description = "the score job's id")), tag = "models",
    responses((status = 200, body = ScoreJobView), (status = 404, body = crate::error::ErrorBody)))]
pub async fn get_score(
    caller: Caller,
    State(state): State<SharedState>,
    Path((id, job_id)): Path<(String, String)>,
) -> ApiResult<Json<ScoreJobView>> {
    let model = find_model(&state, &caller, &id).await?;
    Ok(Json(ScoreJobView::new(
        find_score_job(&state, &model.id, &job_id).await?,
    )))
}

#[utoipa::path(get, path = "/api/models/{id}/score/{job_id}/csv", params(("id" = String, Path, description = "the model's id"), ("job_id" = String, Path, description = "the score job's id")), tag = "models",
    responses((status = 200, description = "one row per dataset row: its index and the model's answer", content_type = "text/csv", body = String),
              (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody), (status = 503, body = crate::error::ErrorBody)))]
pub async fn download_scores(
    caller: Caller,
    State(state): State<SharedState>,
    Path((id, job_id)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    let model = find_model(&state, &caller, &id).await?;
    let job = find_score_job(&state, &model.id, &job_id).await?;
    let Some(key) = job.artifact else {
        return Err(ApiError::conflict(format!(
            "score job {} is {}{}; the CSV exists once it is completed",
            job.id,
            job.status,
            job.error.map(|e| format!(" ({e})")).unwrap_or_default()
        )));
    };
    let artifacts = state.artifacts.clone();
    let bytes = tokio::task::spawn_blocking(move || artifacts.get(&key))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| ApiError::unavailable(format!("the scores file cannot be read: {e}")))?;
    Ok(([(header::CONTENT_TYPE, "text/csv")], bytes))
}
