//! Who may do what. API keys are random 256-bit tokens (`ty_<id>_<secret>`) stored only as a
//! SHA-256 hash; each key holds a role in one or more projects; every request acts in one
//! project (the `X-Trainyard-Project` header, else the key's only project, else `default`).
//! The policy (which role a route needs) is plain code here; the middleware that applies it
//! and records the audit trail is in `middleware`.

pub mod limits;
pub mod middleware;
pub mod streams;
pub mod tokens;

use axum::extract::FromRequestParts;
use axum::http::Method;
use axum::http::request::Parts;
use serde::Serialize;

use crate::error::ApiError;

/// Roles in a project, each allowing what the one before allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read, watch and predict.
    Viewer,
    /// Create, train, control, upload and delete.
    Editor,
    /// Keys, projects and the audit log.
    Admin,
}

impl Role {
    pub const NAMES: [&str; 3] = ["viewer", "editor", "admin"];

    pub fn parse(name: &str) -> Option<Role> {
        match name {
            "viewer" => Some(Role::Viewer),
            "editor" => Some(Role::Editor),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        Self::NAMES[self as usize]
    }
}

/// What a route requires of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Probes and documents anyone may read: health, readiness, metrics, the OpenAPI document.
    Public,
    Requires(Role),
}

/// The role a request needs, from its method and its route template (`/api/models/{id}`).
pub fn required_access(method: &Method, route: &str) -> Access {
    if matches!(route, "/health" | "/ready" | "/metrics" | "/openapi.json") {
        return Access::Public;
    }
    if route.starts_with("/api/keys") || route == "/api/audit" {
        return Access::Requires(Role::Admin);
    }
    if route == "/api/projects" && method == Method::POST {
        return Access::Requires(Role::Admin);
    }
    // Predictions and scoring read a model; a stream session learns, so it edits.
    let reads = matches!(
        route,
        "/api/models/{id}/predict" | "/api/models/{id}/score" | "/api/models/{id}/generate"
    );
    if route == "/api/models/{id}/stream" {
        return Access::Requires(Role::Editor);
    }
    if method == Method::GET || method == Method::HEAD || reads {
        Access::Requires(Role::Viewer)
    } else {
        Access::Requires(Role::Editor)
    }
}

/// Who is asking, in which project, with which role: set by the access middleware on every
/// non-public route, read by handlers to scope every query.
#[derive(Debug, Clone)]
pub struct Caller {
    pub project: String,
    pub role: Role,
    /// None when the server runs without keys (loopback, zero setup).
    pub key_id: Option<String>,
}

impl Caller {
    /// The caller of a server without keys: the local user, admin of the project it names.
    pub fn local(project: String) -> Caller {
        Caller {
            project,
            role: Role::Admin,
            key_id: None,
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| ApiError::internal("route has no caller: access middleware missing"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_need_the_least_role_that_can_use_them() {
        let needs = |m: Method, r: &str| required_access(&m, r);
        assert_eq!(needs(Method::GET, "/health"), Access::Public);
        assert_eq!(
            needs(Method::GET, "/api/models"),
            Access::Requires(Role::Viewer)
        );
        assert_eq!(
            needs(Method::POST, "/api/models/{id}/predict"),
            Access::Requires(Role::Viewer)
        );
        assert_eq!(
            needs(Method::POST, "/api/models"),
            Access::Requires(Role::Editor)
        );
        assert_eq!(
            needs(Method::DELETE, "/api/datasets/{name}"),
            Access::Requires(Role::Editor)
        );
        assert_eq!(
            needs(Method::GET, "/api/models/{id}/stream"),
            Access::Requires(Role::Editor)
        );
        assert_eq!(
            needs(Method::GET, "/api/keys"),
            Access::Requires(Role::Admin)
        );
        assert_eq!(
            needs(Method::GET, "/api/audit"),
            Access::Requires(Role::Admin)
        );
        assert!(Role::Admin > Role::Editor && Role::Editor > Role::Viewer);
    }
}
