//! Inspecting a sparse autoencoder: `GET /api/models/{id}/features` (paginated, sortable),
//! `GET /api/models/{id}/features/{index}` (top contexts, promoted tokens) and
//! `POST /api/models/{id}/encode` (text to per-token features). What a feature is stays the
//! family's business (`Served::features`, `feature`, `encode_text`).

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use trainyard_engine::family::{FeatureQuery, FeatureSort};

use crate::access::Caller;
use crate::api::ApiJson;
use crate::api::serving::{answer_error, served_model};
use crate::error::{ApiError, ApiResult};
use crate::state::SharedState;

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FeaturesQuery {
    /// The layer whose autoencoder to list (default: the first trained).
    #[param(minimum = 0, maximum = 4096)]
    pub layer: Option<usize>,
    /// `index` (default), `frequency` or `max_activation` (both descending).
    #[param(pattern = "^(index|frequency|max_activation)$")]
    pub sort: Option<String>,
    /// 1 to 500, default 50.
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<usize>,
    #[param(minimum = 0, maximum = 1_000_000_000)]
    pub offset: Option<usize>,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FeatureQueryParams {
    #[param(minimum = 0, maximum = 4096)]
    pub layer: Option<usize>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EncodeBody {
    /// The text to run through the source model (its last `block_size` tokens when longer).
    pub text: String,
    pub layer: Option<usize>,
    /// Features listed per token, strongest first: 1 to 64, default 5.
    pub top: Option<usize>,
}

const MAX_ENCODE_BYTES: usize = 100_000;

// The answers' shapes. The family answers JSON; reading it into these types keeps the
// documented schema and the answer the same thing.

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct FeaturePage {
    pub layer: usize,
    /// Latents of this layer's autoencoder.
    pub total: usize,
    /// Latents that never fired on the training tokens.
    pub dead: usize,
    pub limit: usize,
    pub offset: usize,
    pub items: Vec<FeatureSummary>,
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct FeatureSummary {
    pub index: usize,
    /// Fraction of training tokens on which it fires.
    pub frequency: f64,
    pub max_activation: f64,
    pub decoder_norm: f64,
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct FeatureDetail {
    pub index: usize,
    pub layer: usize,
    pub frequency: f64,
    pub max_activation: f64,
    pub decoder_norm: f64,
    /// Strongest first (activations from a language model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_contexts: Option<Vec<FeatureContext>>,
    /// Tokens the decoder direction raises most through the source model's unembedding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promoted_tokens: Option<Vec<PromotedToken>>,
    /// Strongest first (an uploaded activation matrix): row numbers of the upload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_rows: Option<Vec<FeatureRow>>,
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct FeatureContext {
    pub before: String,
    pub token: String,
    pub after: String,
    pub activation: f64,
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct PromotedToken {
    pub token: String,
    pub id: usize,
    pub score: f64,
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct FeatureRow {
    pub row: usize,
    pub activation: f64,
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct EncodedText {
    pub layer: usize,
    /// The text was longer than the context: its last `block_size` tokens were read.
    pub truncated: bool,
    pub tokens: Vec<EncodedToken>,
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct EncodedToken {
    pub token: String,
    /// Features active on this token.
    pub active: usize,
    /// The strongest `top`, strongest first.
    pub features: Vec<ActiveFeature>,
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct ActiveFeature {
    pub index: usize,
    pub activation: f64,
}

type QueryResult<T> = Result<Query<T>, axum::extract::rejection::QueryRejection>;

#[utoipa::path(get, path = "/api/models/{id}/features", params(("id" = String, Path, description = "the model's id"), FeaturesQuery), tag = "models",
    responses((status = 200, description = "a page of the autoencoder's features: frequency, max activation, decoder norm", body = FeaturePage),
              (status = 400, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
pub async fn list_features(
    caller: Caller,
    State(state): State<SharedState>,
    Path(id): Path<String>,
    query: QueryResult<FeaturesQuery>,
) -> ApiResult<Json<FeaturePage>> {
    let Query(q) = query?;
    let sort = match q.sort.as_deref() {
        None | Some("index") => FeatureSort::Index,
        Some("frequency") => FeatureSort::Frequency,
        Some("max_activation") => FeatureSort::MaxActivation,
        Some(other) => {
            return Err(ApiError::bad_request(
                "sort",
                format!("must be one of index, frequency, max_activation; got '{other}'"),
            ));
        }
    };
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_request(
            "limit",
            format!("must be in [1, 500], got {limit}"),
        ));
    }
    let query = FeatureQuery {
        layer: q.layer,
        sort,
        limit,
        offset: q.offset.unwrap_or(0),
    };
    answer(&state, &caller, &id, "layer", move |served| {
        served.features(&query)
    })
    .await
}

#[utoipa::path(get, path = "/api/models/{id}/features/{index}", params(("id" = String, Path, description = "the model's id"), ("index" = usize, Path, description = "the feature (latent) index"), FeatureQueryParams), tag = "models",
    responses((status = 200, description = "one feature: statistics, top activating contexts, promoted tokens", body = FeatureDetail),
              (status = 400, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
pub async fn get_feature(
    caller: Caller,
    State(state): State<SharedState>,
    Path((id, index)): Path<(String, String)>,
    query: QueryResult<FeatureQueryParams>,
) -> ApiResult<Json<FeatureDetail>> {
    let Query(q) = query?;
    let index: usize = index
        .parse()
        .map_err(|_| ApiError::not_found("feature", &index))?;
    answer(&state, &caller, &id, "layer", move |served| {
        served.feature(q.layer, index)
    })
    .await
}

#[utoipa::path(post, path = "/api/models/{id}/encode", params(("id" = String, Path, description = "the model's id")), request_body = EncodeBody, tag = "models",
    responses((status = 200, description = "per token: how many features fire and the strongest ones", body = EncodedText),
              (status = 400, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
pub async fn encode(
    caller: Caller,
    State(state): State<SharedState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<EncodeBody>,
) -> ApiResult<Json<EncodedText>> {
    if body.text.len() > MAX_ENCODE_BYTES {
        return Err(ApiError::bad_request(
            "text",
            format!("at most {MAX_ENCODE_BYTES} bytes"),
        ));
    }
    let top = body.top.unwrap_or(5);
    if !(1..=64).contains(&top) {
        return Err(ApiError::bad_request(
            "top",
            format!("must be in [1, 64], got {top}"),
        ));
    }
    answer(&state, &caller, &id, "text", move |served| {
        served.encode_text(&body.text, body.layer, top)
    })
    .await
}

/// Finds the model's served form, asks it on a blocking thread, and reads the answer as `T`.
async fn answer<T: DeserializeOwned>(
    state: &SharedState,
    caller: &Caller,
    id: &str,
    field: &'static str,
    ask: impl FnOnce(
        &dyn trainyard_engine::family::Served,
    ) -> Result<Value, trainyard_engine::PredictError>
    + Send
    + 'static,
) -> ApiResult<Json<T>> {
    let (_, _, served) = served_model(state, caller, id).await?;
    let value = tokio::task::spawn_blocking(move || ask(served.as_ref()))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| answer_error(e, field))?;
    serde_json::from_value(value)
        .map(Json)
        .map_err(|e| ApiError::internal(format!("the model answered an unexpected shape: {e}")))
}
