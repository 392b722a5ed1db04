//! The request side of access control, in the order a request meets it:
//! `guard` refuses what a browser could be tricked into sending (a foreign `Host`: DNS
//! rebinding; a cross-site form POST); `authorize` finds the caller (a key, or the local user
//! of a keyless loopback server), its project and role, applies the rate limits, checks the
//! route's required role, and appends the audit record of every state-changing request.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use trainyard_store::{KeyRow, NewAudit};

use super::{Access, Caller, Role, required_access, tokens};
use crate::error::ApiError;
use crate::state::SharedState;

/// The header naming the project a request acts in.
pub const PROJECT_HEADER: &str = "x-trainyard-project";
/// A header no cross-site form can send; clients that POST without a JSON body send it.
pub const CLIENT_HEADER: &str = "x-trainyard-client";
/// How long a verified key is trusted before the database is asked again (a revocation
/// through the API takes effect at once; one made directly in the database, within this).
const KEY_CACHE_TTL: Duration = Duration::from_secs(5);

/// Host check and CSRF check; runs before routing.
pub async fn guard(State(state): State<SharedState>, req: Request, next: Next) -> Response {
    if let Err(e) = check_host(&state, req.headers()) {
        return e.into_response();
    }
    if req.method() == Method::POST && cross_site_capable(req.headers()) {
        return ApiError::forbidden(
            "a POST must carry a JSON or data body (Content-Type application/json, text/csv, ...), \
             an Authorization header or the X-Trainyard-Client header; plain form posts are refused \
             so that web pages cannot drive this server",
        )
        .into_response();
    }
    next.run(req).await
}

/// Whether a browser on another site could have sent this POST without a CORS preflight:
/// no custom or credential header, and a body type an HTML form can produce.
fn cross_site_capable(headers: &HeaderMap) -> bool {
    if headers.contains_key(header::AUTHORIZATION) || headers.contains_key(CLIENT_HEADER) {
        return false;
    }
    let Some(content_type) = headers.get(header::CONTENT_TYPE) else {
        return true;
    };
    let essence = content_type
        .to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    matches!(
        essence.as_str(),
        "application/x-www-form-urlencoded" | "multipart/form-data" | "text/plain" | ""
    )
}

/// The `Host` must be one this server answers to: a configured name, or on a loopback
/// address any loopback name. A page on evil.example that rebinds its name to 127.0.0.1
/// still sends `Host: evil.example`.
fn check_host(state: &SharedState, headers: &HeaderMap) -> Result<(), ApiError> {
    let config = &state.config;
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return Ok(()); // HTTP/1.0 without Host: no browser sends that.
    };
    let name = host_name(host);
    let allowed = config
        .allowed_hosts
        .iter()
        .any(|h| h.eq_ignore_ascii_case(name))
        || (config.allowed_hosts.is_empty() && !config.addr.ip().is_loopback())
        || (config.addr.ip().is_loopback() && is_loopback_name(name));
    if allowed {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "Host",
            format!(
                "this server does not answer to '{name}'; start it with --allowed-host {name} if that name is yours"
            ),
        ))
    }
}

fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    host.rsplit_once(':').map_or(host, |(name, _)| name)
}

fn is_loopback_name(name: &str) -> bool {
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Authentication, project, rate limits, role, audit; runs after routing.
pub async fn authorize(State(state): State<SharedState>, mut req: Request, next: Next) -> Response {
    let Some(route) = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
    else {
        return next.run(req).await;
    };
    let Access::Requires(needed) = required_access(req.method(), &route) else {
        return next.run(req).await;
    };
    let source = client_address(&req);
    let caller = match identify(&state, req.headers(), &source).await {
        Ok(caller) => caller,
        Err(e) => return e.into_response(),
    };
    if let Some(key) = &caller.key_id
        && let Err(wait) = state.access.requests.check(key, Instant::now())
    {
        return rate_limited(wait, "this key's request rate limit");
    }
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let response = if caller.role < needed {
        ApiError::forbidden(format!(
            "role '{}' in project '{}' cannot {method} {route}; it needs '{}'",
            caller.role.as_str(),
            caller.project,
            needed.as_str()
        ))
        .into_response()
    } else {
        req.extensions_mut().insert(caller.clone());
        next.run(req).await
    };
    if method != Method::GET && method != Method::HEAD {
        let record = NewAudit {
            project_id: Some(&caller.project),
            key_id: caller.key_id.as_deref(),
            action: &format!("{method} {route}"),
            resource: &path,
            source: &source,
            outcome: response.status().as_u16(),
        };
        if let Err(e) = state.store.append_audit(record).await {
            tracing::error!(error = %e, "could not append to the audit log");
        }
    }
    response
}

fn client_address(req: &Request) -> String {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "unknown".to_string(), |c| c.0.ip().to_string())
}

fn rate_limited(wait: Duration, what: &str) -> Response {
    let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
    let mut response =
        ApiError::too_many_requests(format!("{what} is exhausted; retry in {seconds} s"))
            .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}

/// Who is calling and in which project, or the 401/404/429 that ends the request.
async fn identify(
    state: &SharedState,
    headers: &HeaderMap,
    source: &str,
) -> Result<Caller, Response> {
    let named = match headers.get(PROJECT_HEADER).map(|v| v.to_str()) {
        None => None,
        Some(Ok(p)) if !p.is_empty() => Some(p.to_string()),
        Some(_) => {
            return Err(
                ApiError::bad_request("X-Trainyard-Project", "must be a project name")
                    .into_response(),
            );
        }
    };
    let Some(token) = bearer(headers) else {
        if auth_required(state).await {
            let mut response = ApiError::unauthorized(
                "this server requires an API key: send Authorization: Bearer ty_... (create one with `trainyard keys create`)",
            )
            .into_response();
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return Err(response);
        }
        let project = named.unwrap_or_else(|| state.config.project.clone());
        // Projects are never deleted: one seen to exist is not looked up again.
        if state.access.projects.lock().unwrap().contains(&project) {
            return Ok(Caller::local(project));
        }
        return match state.store.project_exists(&project).await {
            Ok(true) => {
                state
                    .access
                    .projects
                    .lock()
                    .unwrap()
                    .insert(project.clone());
                Ok(Caller::local(project))
            }
            Ok(false) => Err(ApiError::not_found("project", &project).into_response()),
            Err(e) => Err(ApiError::from(e).into_response()),
        };
    };
    if let Some(wait) = state.access.auth_failures.exhausted(source, Instant::now()) {
        return Err(rate_limited(
            wait,
            "failed authentication attempts from this address",
        ));
    }
    let key = match verify(state, &token).await {
        Ok(Some(key)) => key,
        Ok(None) => {
            let _ = state.access.auth_failures.check(source, Instant::now());
            audit_failure(state, source).await;
            let mut response = ApiError::unauthorized("the API key is invalid, expired or revoked")
                .into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer error=\"invalid_token\""),
            );
            return Err(response);
        }
        Err(e) => return Err(e.into_response()),
    };
    choose_project(state, &key, named).map_err(IntoResponse::into_response)
}

/// The project a key acts in: the one named, the key's only one, or the default.
fn choose_project(
    state: &SharedState,
    key: &KeyRow,
    named: Option<String>,
) -> Result<Caller, ApiError> {
    let role_in = |project: &str| {
        key.roles
            .iter()
            .find(|(p, _)| p == project)
            .and_then(|(_, r)| Role::parse(r))
    };
    let project = match named {
        Some(p) => p,
        None if key.roles.len() == 1 => key.roles[0].0.clone(),
        None if role_in(&state.config.project).is_some() => state.config.project.clone(),
        None => {
            return Err(ApiError::bad_request(
                "X-Trainyard-Project",
                "this key holds roles in several projects; name one with X-Trainyard-Project",
            ));
        }
    };
    // A project the key has no role in looks like one that does not exist.
    let role = role_in(&project).ok_or_else(|| ApiError::not_found("project", &project))?;
    Ok(Caller {
        project,
        role,
        key_id: Some(key.id.clone()),
    })
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
}

/// Keys are required once any exists, or when the server listens beyond loopback.
async fn auth_required(state: &SharedState) -> bool {
    if state.config.require_auth || state.access.keys_exist.load(Ordering::Relaxed) {
        return true;
    }
    // Keys can be created from the command line while the server runs: look again, at most
    // once a second.
    let now = Instant::now();
    {
        let mut checked = state.access.keys_checked.lock().unwrap();
        if checked.is_some_and(|at| now.duration_since(at) < Duration::from_secs(1)) {
            return false;
        }
        *checked = Some(now);
    }
    // If the database cannot say, fail closed.
    let exists = state.store.any_key_exists().await.unwrap_or(true);
    state.access.keys_exist.store(exists, Ordering::Relaxed);
    exists
}

/// The live key a token belongs to, or None (unknown, wrong secret, expired, revoked).
async fn verify(state: &SharedState, token: &str) -> Result<Option<KeyRow>, ApiError> {
    let Some(id) = tokens::key_id(token) else {
        return Ok(None);
    };
    let hash = tokens::hash(token);
    let now = Instant::now();
    let cached = state.access.keys.lock().unwrap().get(&hash).cloned();
    let key = match cached {
        Some((at, key)) if now.duration_since(at) < KEY_CACHE_TTL => key,
        _ => {
            let Some(key) = state.store.get_key(id).await? else {
                return Ok(None);
            };
            if !tokens::same_hash(&key.hash, &hash) {
                return Ok(None);
            }
            if let Err(e) = state.store.touch_key(&key.id).await {
                tracing::warn!(error = %e, "could not record a key's last use");
            }
            state
                .access
                .keys
                .lock()
                .unwrap()
                .insert(hash, (now, key.clone()));
            key
        }
    };
    let now_ms = trainyard_store::now_ms();
    let live = key.revoked_at.is_none() && key.expires_at.is_none_or(|at| at > now_ms);
    Ok(live.then_some(key))
}

async fn audit_failure(state: &SharedState, source: &str) {
    let record = NewAudit {
        project_id: None,
        key_id: None,
        action: "authenticate",
        resource: "api key",
        source,
        outcome: 401,
    };
    if let Err(e) = state.store.append_audit(record).await {
        tracing::error!(error = %e, "could not append to the audit log");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_requests_a_cross_site_form_could_send_are_refused() {
        let with = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, HeaderValue::from_static(v));
            }
            cross_site_capable(&h)
        };
        assert!(with(&[]));
        assert!(with(&[(
            "content-type",
            "application/x-www-form-urlencoded"
        )]));
        assert!(with(&[("content-type", "multipart/form-data; boundary=x")]));
        assert!(with(&[("content-type", "Text/Plain; charset=utf-8")]));
        assert!(!with(&[("content-type", "application/json")]));
        assert!(!with(&[("content-type", "text/csv")]));
        assert!(!with(&[
            ("content-type", "text/plain"),
            ("x-trainyard-client", "cli")
        ]));
        assert!(!with(&[("authorization", "Bearer x")]));
    }

    #[test]
    fn host_names_lose_their_port() {
        assert_eq!(host_name("localhost:8080"), "localhost");
        assert_eq!(host_name("[::1]:8080"), "::1");
        assert_eq!(host_name("example.com"), "example.com");
        assert!(is_loopback_name("127.0.0.1") && is_loopback_name("::1"));
        assert!(!is_loopback_name("evil.example"));
    }
}
