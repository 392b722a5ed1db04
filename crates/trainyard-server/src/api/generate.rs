//! `POST /api/models/{id}/generate`: a language model continues a prompt.

use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use trainyard_engine::family::GenerateRequest;

use crate::access::Caller;
use crate::api::ApiJson;
use crate::api::models::find_model;
use crate::api::serving::{answer_error, load_served, serving_run};
use crate::error::{ApiError, ApiResult};
use crate::state::SharedState;

const MAX_NEW_TOKENS: usize = 2_000;
const MAX_PROMPT_BYTES: usize = 100_000;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GenerateBody {
    /// The text to continue (its last `block_size` tokens are used when it is longer).
    pub prompt: String,
    /// 1 to 2000 (default 100).
    pub max_new_tokens: Option<usize>,
    /// 0 always picks the most likely token; default 0.8.
    pub temperature: Option<f64>,
    /// Sample only among the k most likely tokens.
    pub top_k: Option<usize>,
    /// The same seed and request give the same text (default 0).
    pub seed: Option<u64>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct GeneratedView {
    pub model_id: String,
    pub run_id: String,
    pub text: String,
    /// Tokens generated.
    pub tokens: usize,
    /// The prompt was longer than the model's context; only its end was used.
    pub prompt_truncated: bool,
    pub tokens_per_second: f64,
}

fn request(body: GenerateBody) -> ApiResult<GenerateRequest> {
    if body.prompt.is_empty() || body.prompt.len() > MAX_PROMPT_BYTES {
        return Err(ApiError::bad_request(
            "prompt",
            format!("must be 1 to {MAX_PROMPT_BYTES} bytes of text"),
        ));
    }
    let max_new_tokens = body.max_new_tokens.unwrap_or(100);
    if !(1..=MAX_NEW_TOKENS).contains(&max_new_tokens) {
        return Err(ApiError::bad_request(
            "max_new_tokens",
            format!("must be in [1, {MAX_NEW_TOKENS}], got {max_new_tokens}"),
        ));
    }
    let temperature = body.temperature.unwrap_or(0.8);
    if !(0.0..=10.0).contains(&temperature) {
        return Err(ApiError::bad_request(
            "temperature",
            format!("must be in [0, 10], got {temperature}"),
        ));
    }
    if body.top_k == Some(0) {
        return Err(ApiError::bad_request("top_k", "must be at least 1"));
    }
    Ok(GenerateRequest {
        prompt: body.prompt,
        max_new_tokens,
        temperature,
        top_k: body.top_k,
        seed: body.seed.unwrap_or(0),
    })
}

#[utoipa::path(post, path = "/api/models/{id}/generate", params(("id" = String, Path, description = "the model's id")), request_body = GenerateBody, tag = "models",
    responses((status = 200, description = "the generated text", body = GeneratedView), (status = 400, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
pub async fn generate(
    caller: Caller,
    State(state): State<SharedState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<GenerateBody>,
) -> ApiResult<Json<GeneratedView>> {
    let request = request(body)?;
    let model = find_model(&state, &caller, &id).await?;
    let run = serving_run(&state, &model.id).await?;
    let served = load_served(&state, &model.algorithm, &run).await?;
    let generated = tokio::task::spawn_blocking(move || served.generate(&request))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| answer_error(e, "model"))?;
    Ok(Json(GeneratedView {
        model_id: model.id,
        run_id: run.id,
        text: generated.text,
        tokens: generated.tokens,
        prompt_truncated: generated.prompt_truncated,
        tokens_per_second: generated.tokens_per_second,
    }))
}
