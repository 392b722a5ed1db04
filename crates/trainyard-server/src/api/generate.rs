//! `POST /api/models/{id}/generate`: a language model continues a prompt, answering with the
//! whole text, or with `Accept: text/event-stream` as Server-Sent Events while it is produced.

use std::convert::Infallible;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use trainyard_engine::family::{GenerateRequest, Generated, Served};

use crate::access::Caller;
use crate::access::streams::{StreamPermit, open_stream};
use crate::api::ApiJson;
use crate::api::serving::{answer_error, served_model};
use crate::error::{ApiError, ApiResult};
use crate::state::SharedState;

const MAX_NEW_TOKENS: usize = 2_000;
const MAX_PROMPT_BYTES: usize = 100_000;
const MAX_STOP_STRINGS: usize = 8;
const MAX_STOP_BYTES: usize = 100;

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
    /// Sample only among the likeliest tokens whose probabilities add up to this, in (0, 1].
    pub top_p: Option<f64>,
    /// Up to 8 strings (1 to 100 bytes each): generation ends before the first to appear, and
    /// the text does not include it.
    pub stop: Option<Vec<String>>,
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
    /// `length` (max_new_tokens reached) or `stop` (a stop string appeared).
    pub finish_reason: String,
    pub tokens_per_second: f64,
}

impl GeneratedView {
    fn new(model_id: String, run_id: String, generated: Generated) -> Self {
        GeneratedView {
            model_id,
            run_id,
            text: generated.text,
            tokens: generated.tokens,
            prompt_truncated: generated.prompt_truncated,
            finish_reason: generated.finish_reason.as_str().into(),
            tokens_per_second: generated.tokens_per_second,
        }
    }
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
    if let Some(top_p) = body.top_p
        && !(top_p > 0.0 && top_p <= 1.0)
    {
        return Err(ApiError::bad_request(
            "top_p",
            format!("must be in (0, 1], got {top_p}"),
        ));
    }
    let stop = body.stop.unwrap_or_default();
    if stop.len() > MAX_STOP_STRINGS
        || stop
            .iter()
            .any(|s| s.is_empty() || s.len() > MAX_STOP_BYTES)
    {
        return Err(ApiError::bad_request(
            "stop",
            format!("at most {MAX_STOP_STRINGS} strings of 1 to {MAX_STOP_BYTES} bytes each"),
        ));
    }
    Ok(GenerateRequest {
        prompt: body.prompt,
        max_new_tokens,
        temperature,
        top_k: body.top_k,
        top_p: body.top_p,
        stop,
        seed: body.seed.unwrap_or(0),
    })
}

fn wants_events(headers: &HeaderMap) -> bool {
    headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/event-stream"))
}

#[utoipa::path(post, path = "/api/models/{id}/generate", params(("id" = String, Path, description = "the model's id")), request_body = GenerateBody, tag = "models",
    responses((status = 200, description = "the generated text; with `Accept: text/event-stream`, `token` events (`{\"text\"}`) as it is produced, then one `done` event with the whole answer, or `error`",
                content((GeneratedView = "application/json"), (String = "text/event-stream"))),
              (status = 400, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody), (status = 429, body = crate::error::ErrorBody)))]
pub async fn generate(
    caller: Caller,
    State(state): State<SharedState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<GenerateBody>,
) -> ApiResult<Response> {
    let request = request(body)?;
    let (model, run, served) = served_model(&state, &caller, &id).await?;
    if wants_events(&headers) {
        let permit = open_stream(&state, &caller)?;
        return Ok(stream(served, request, model.id, run.id, permit).into_response());
    }
    let generated = tokio::task::spawn_blocking(move || served.generate(&request, &mut |_| true))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| answer_error(e, "model"))?;
    Ok(Json(GeneratedView::new(model.id, run.id, generated)).into_response())
}

/// Generates on a blocking thread, sending each piece of text as an event; a client that
/// disconnects closes the channel, which stops generation at the next token.
fn stream(
    served: Arc<dyn Served>,
    request: GenerateRequest,
    model_id: String,
    run_id: String,
    permit: StreamPermit,
) -> Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>> {
    let (tx, rx) = mpsc::channel::<Event>(64);
    tokio::task::spawn_blocking(move || {
        let mut sent = 0u64;
        let mut sink = |text: &str| {
            sent += 1;
            let event = Event::default()
                .id(sent.to_string())
                .event("token")
                .data(serde_json::json!({ "text": text }).to_string());
            tx.blocking_send(event).is_ok()
        };
        let outcome = served.generate(&request, &mut sink);
        let last = match outcome {
            Ok(generated) => {
                let view = GeneratedView::new(model_id, run_id, generated);
                Event::default()
                    .event("done")
                    .data(serde_json::to_string(&view).expect("the view serialises"))
            }
            Err(e) => Event::default()
                .event("error")
                .data(serde_json::json!({"error": {"message": e.to_string()}}).to_string()),
        };
        let _ = tx.blocking_send(last.id((sent + 1).to_string()));
    });
    Sse::new(futures_util::stream::unfold(
        (rx, permit),
        |(mut rx, permit)| async move {
            let event = rx.recv().await?;
            Some((Ok(event), (rx, permit)))
        },
    ))
}
