//! Keys, projects and the audit log over HTTP (admins only; see `crate::access` for the policy).

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use trainyard_store::{AuditFilter, AuditRow, KeyRow};

use super::ApiJson;
use crate::access::{Caller, Role, tokens};
use crate::error::{ApiError, ApiResult};
use crate::state::SharedState;

const MAX_NAME: usize = 100;
const MAX_EXPIRY_DAYS: u64 = 3650;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// What the key is for (shown in listings and the audit log).
    pub name: String,
    /// viewer, editor or admin, in the caller's project.
    pub role: String,
    /// Days until the key stops working; never when absent.
    pub expires_in_days: Option<u64>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct KeyView {
    pub id: String,
    pub name: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    /// Project and role pairs.
    #[schema(value_type = Vec<Vec<String>>)]
    pub roles: Vec<(String, String)>,
}

impl From<KeyRow> for KeyView {
    fn from(k: KeyRow) -> Self {
        KeyView {
            id: k.id,
            name: k.name,
            created_at: k.created_at,
            last_used_at: k.last_used_at,
            expires_at: k.expires_at,
            revoked_at: k.revoked_at,
            roles: k.roles,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct CreatedKey {
    #[serde(flatten)]
    pub key: KeyView,
    /// The secret token: shown once, stored only as a hash.
    pub token: String,
}

/// Validates a key request and stores the key; the token is returned once.
pub async fn issue_key(
    store: &trainyard_store::Store,
    project: &str,
    body: &CreateKey,
) -> ApiResult<CreatedKey> {
    let name = body.name.trim();
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(ApiError::bad_request(
            "name",
            format!("must be 1 to {MAX_NAME} characters"),
        ));
    }
    let role = Role::parse(&body.role).ok_or_else(|| {
        ApiError::bad_request("role", format!("must be one of {}", Role::NAMES.join(", ")))
    })?;
    let expires_at = match body.expires_in_days {
        Some(days) if (1..=MAX_EXPIRY_DAYS).contains(&days) => {
            Some(trainyard_store::now_ms() + (days * 86_400_000) as i64)
        }
        Some(_) => {
            return Err(ApiError::bad_request(
                "expires_in_days",
                format!("must be in [1, {MAX_EXPIRY_DAYS}]"),
            ));
        }
        None => None,
    };
    let (id, token) = tokens::generate().map_err(ApiError::internal)?;
    let roles = vec![(project.to_string(), role.as_str().to_string())];
    store
        .insert_key(trainyard_store::NewKey {
            id: &id,
            name,
            hash: &tokens::hash(&token),
            expires_at,
            roles: &roles,
        })
        .await?;
    let key = store
        .get_key(&id)
        .await?
        .ok_or_else(|| ApiError::internal("a key vanished after it was stored"))?;
    Ok(CreatedKey {
        key: key.into(),
        token,
    })
}

#[utoipa::path(post, path = "/api/keys", request_body = CreateKey, tag = "access",
    responses((status = 201, body = CreatedKey), (status = 400, body = crate::error::ErrorBody),
              (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody)))]
pub async fn create_key(
    caller: Caller,
    State(state): State<SharedState>,
    ApiJson(body): ApiJson<CreateKey>,
) -> ApiResult<(StatusCode, Json<CreatedKey>)> {
    let created = issue_key(&state.store, &caller.project, &body).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

#[utoipa::path(get, path = "/api/keys", tag = "access",
    responses((status = 200, body = Vec<KeyView>), (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody)))]
pub async fn list_keys(
    caller: Caller,
    State(state): State<SharedState>,
) -> ApiResult<Json<Vec<KeyView>>> {
    let keys = state.store.list_keys(Some(&caller.project)).await?;
    Ok(Json(keys.into_iter().map(KeyView::from).collect()))
}

#[utoipa::path(delete, path = "/api/keys/{id}", params(("id" = String, Path, description = "the key's id")), tag = "access",
    responses((status = 204), (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody)))]
pub async fn revoke_key(
    caller: Caller,
    State(state): State<SharedState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let key = state
        .store
        .get_key(&id)
        .await?
        .filter(|k| k.roles.iter().any(|(p, _)| *p == caller.project))
        .ok_or_else(|| ApiError::not_found("key", &id))?;
    if key.revoked_at.is_some() {
        return Err(ApiError::conflict(format!("key '{id}' is already revoked")));
    }
    // An admin cannot lock itself out by accident; another admin (or `trainyard keys revoke`
    // on the machine) can.
    if caller.key_id.as_deref() == Some(id.as_str()) {
        return Err(ApiError::conflict(
            "a key cannot revoke itself; revoke it with another admin key or `trainyard keys revoke`",
        ));
    }
    state.store.revoke_key(&id).await?;
    // Takes effect now on this node rather than when the cache would next ask.
    state
        .access
        .keys
        .lock()
        .unwrap()
        .retain(|_, (_, k)| k.id != id);
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only this key's records.
    pub key_id: Option<String>,
    /// Only this action, e.g. `POST /api/models/{id}/train`.
    pub action: Option<String>,
    /// Records older than this id (the last page's smallest).
    pub before: Option<i64>,
    /// 1 to 500 (default 100).
    pub limit: Option<i64>,
}

#[utoipa::path(get, path = "/api/audit", params(AuditQuery), tag = "access",
    responses((status = 200, body = Vec<AuditRecord>), (status = 400, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody)))]
pub async fn list_audit(
    caller: Caller,
    State(state): State<SharedState>,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Vec<AuditRecord>>> {
    let Query(q) = query?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_request("limit", "must be in [1, 500]"));
    }
    let filter = AuditFilter {
        project_id: caller.project,
        key_id: q.key_id,
        action: q.action,
        before: q.before,
        limit,
    };
    let rows = state.store.list_audit(&filter).await?;
    Ok(Json(rows.into_iter().map(AuditRecord::from).collect()))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct AuditRecord {
    pub id: i64,
    /// Milliseconds since the epoch.
    pub at: i64,
    pub project: Option<String>,
    /// None for a keyless local caller.
    pub key_id: Option<String>,
    pub action: String,
    pub resource: String,
    /// The client's address.
    pub source: String,
    /// The response's status code.
    pub outcome: i64,
}

impl From<AuditRow> for AuditRecord {
    fn from(r: AuditRow) -> Self {
        AuditRecord {
            id: r.id,
            at: r.at,
            project: r.project_id,
            key_id: r.key_id,
            action: r.action,
            resource: r.resource,
            source: r.source,
            outcome: r.outcome,
        }
    }
}

#[utoipa::path(get, path = "/api/projects", tag = "access",
    responses((status = 200, description = "the projects the caller may act in", body = Vec<String>)))]
pub async fn list_projects(
    caller: Caller,
    State(state): State<SharedState>,
) -> ApiResult<Json<Vec<String>>> {
    let projects = match &caller.key_id {
        Some(id) => state
            .store
            .get_key(id)
            .await?
            .map(|k| k.roles.into_iter().map(|(p, _)| p).collect())
            .unwrap_or_default(),
        None => state.store.list_projects().await?,
    };
    Ok(Json(projects))
}
