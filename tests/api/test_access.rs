//! Authorisation over real HTTP: every route of the served OpenAPI document (so a new route
//! cannot escape the matrix) answered for each role as the policy says; another project's
//! resources are 404s that change nothing; keys made over the API and the audit trail.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{Server, read_sse_as};

const ROLES: [&str; 3] = ["viewer", "editor", "admin"];

/// The least role each route needs, as the README documents it.
fn least_role(method: &Method, path: &str) -> &'static str {
    if path.starts_with("/api/keys") || path == "/api/audit" {
        return "admin";
    }
    if path == "/api/models/{id}/stream" {
        return "editor"; // a stream session learns
    }
    let reads =
        path.ends_with("/predict") || path.ends_with("/score") || path.ends_with("/generate");
    if *method == Method::GET || reads {
        "viewer"
    } else {
        "editor"
    }
}

fn rank(role: &str) -> usize {
    ROLES.iter().position(|r| *r == role).unwrap()
}

#[tokio::test]
async fn every_route_answers_each_role_as_the_policy_says() {
    let server = Server::start().await;
    let keys: Vec<String> = ROLES
        .iter()
        .map(|role| server.create_key("default", role))
        .collect();
    let (code, _, doc) = server
        .send(Method::GET, "/openapi.json", None, None, None)
        .await;
    assert_eq!(code, 200);
    let public = ["/health", "/ready", "/metrics", "/openapi.json"];
    let mut cases = 0;
    for (path, operations) in doc["paths"].as_object().unwrap() {
        if public.contains(&path.as_str()) {
            continue;
        }
        // Ids that exist nowhere: an allowed role gets past access control to a 404 or 400,
        // a refused one is stopped before anything is looked up.
        let url = path
            .replace("{id}", "nonexistent")
            .replace("{checkpoint_id}", "nonexistent")
            .replace("{job_id}", "nonexistent")
            .replace("{name}", "nonexistent");
        for method in operations.as_object().unwrap().keys() {
            let method: Method = method.to_uppercase().parse().unwrap();
            let needed = least_role(&method, path);
            for (role, key) in ROLES.iter().zip(&keys) {
                let body = (method != Method::GET && method != Method::DELETE).then(|| json!({}));
                let request = server.send(method.clone(), &url, Some(key), None, body);
                let (code, _, answer) = tokio::time::timeout(Duration::from_secs(10), request)
                    .await
                    .unwrap_or_else(|_| panic!("{method} {url} as {role} hung"));
                if rank(role) < rank(needed) {
                    assert_eq!(code, 403, "{method} {path} as {role}: {answer}");
                    assert!(
                        answer["error"]["message"]
                            .as_str()
                            .unwrap()
                            .contains(needed),
                        "the refusal names the role needed: {answer}"
                    );
                } else {
                    assert!(
                        code != 401 && code != 403 && !code.is_server_error(),
                        "{method} {path} as {role}: {code} {answer}"
                    );
                }
                cases += 1;
            }
        }
    }
    eprintln!("authorisation matrix: {cases} route x role cases");
    assert!(
        cases >= 3 * 25,
        "the matrix covers every route: {cases} cases"
    );
}

async fn create_model(server: &Server, key: &str, project: &str) -> String {
    let (code, _, body) = server
        .send(
            Method::POST,
            "/api/models",
            Some(key),
            Some(project),
            Some(json!({"name": "secret-model", "dataset": "iris", "algorithm": "mlp", "hyperparameters": {"epochs": 1}})),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    body["id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn another_projects_resources_are_404_and_stay_untouched() {
    let server = Server::start().await;
    let alice = server.create_key("alpha", "admin");
    let bob = server.create_key("beta", "admin");
    let model = create_model(&server, &alice, "alpha").await;
    let (code, _, _) = server
        .send(
            Method::POST,
            &format!("/api/models/{model}/train"),
            Some(&alice),
            None,
            Some(json!({})),
        )
        .await;
    assert_eq!(code, 202);
    server
        .post_bytes_with_key(
            "/api/datasets?name=shared-name&target=y",
            "x,y\n1,2\n2,4\n3,6\n4,8\n",
            &alice,
        )
        .await;

    for (method, path) in [
        (Method::GET, format!("/api/models/{model}")),
        (Method::GET, format!("/api/models/{model}/status")),
        (Method::GET, format!("/api/models/{model}/metrics")),
        (Method::GET, format!("/api/models/{model}/runs")),
        (Method::GET, format!("/api/models/{model}/checkpoints")),
        (Method::GET, format!("/api/models/{model}/events")),
        (Method::POST, format!("/api/models/{model}/predict")),
        (Method::POST, format!("/api/models/{model}/cancel")),
        (Method::POST, format!("/api/models/{model}/train")),
        (Method::PATCH, format!("/api/models/{model}")),
        (Method::DELETE, format!("/api/models/{model}")),
        (Method::GET, "/api/datasets/shared-name".to_string()),
        (Method::DELETE, "/api/datasets/shared-name".to_string()),
    ] {
        // Well-formed bodies, so only the project can be why the answer is 404.
        let body = if path.ends_with("/predict") {
            Some(json!({"inputs": [[5.1, 3.5, 1.4, 0.2]]}))
        } else if method == Method::PATCH {
            Some(json!({"threshold": 0.5}))
        } else {
            (method == Method::POST).then(|| json!({}))
        };
        let (code, _, answer) = server
            .send(method.clone(), &path, Some(&bob), None, body)
            .await;
        assert_eq!(code, 404, "{method} {path} from another project: {answer}");
        let text = answer.to_string();
        assert!(!text.contains("secret-model"), "nothing leaks: {text}");
    }
    // A project a key has no role in looks like one that does not exist.
    let (code, _, _) = server
        .send(Method::GET, "/api/models", Some(&bob), Some("alpha"), None)
        .await;
    assert_eq!(code, 404);

    let (_, _, listed) = server
        .send(Method::GET, "/api/models", Some(&bob), None, None)
        .await;
    assert_eq!(listed["total"], 0, "beta sees none of alpha's models");
    let (_, _, datasets) = server
        .send(Method::GET, "/api/datasets", Some(&bob), None, None)
        .await;
    assert!(!datasets.to_string().contains("shared-name"));
    // Names are per project: beta may use alpha's dataset name.
    server
        .post_bytes_with_key(
            "/api/datasets?name=shared-name&target=y",
            "x,y\n1,3\n2,6\n3,9\n4,12\n",
            &bob,
        )
        .await;

    // The project-wide event stream replays beta's history only.
    let events = read_sse_as(
        server.url("/api/events?after=0"),
        &bob,
        Duration::from_secs(1),
    )
    .await;
    assert!(
        events.is_empty(),
        "beta has no models, so none of alpha's events reach it: {events:?}"
    );
    let events = read_sse_as(
        server.url("/api/events?after=0"),
        &alice,
        Duration::from_secs(1),
    )
    .await;
    assert!(!events.is_empty(), "alpha sees its own model's events");

    let (code, _, still) = server
        .send(
            Method::GET,
            &format!("/api/models/{model}"),
            Some(&alice),
            None,
            None,
        )
        .await;
    assert_eq!(code, 200, "alpha's model survived beta's delete: {still}");
    let (code, _, _) = server
        .send(
            Method::GET,
            "/api/datasets/shared-name",
            Some(&alice),
            None,
            None,
        )
        .await;
    assert_eq!(code, 200, "alpha's dataset survived beta's delete");
}

#[tokio::test]
async fn admins_issue_and_revoke_keys_and_read_an_audit_trail_without_secrets() {
    let server = Server::start().await;
    let admin = server.create_key("default", "admin");
    let (code, _, created) = server
        .send(
            Method::POST,
            "/api/keys",
            Some(&admin),
            None,
            Some(json!({"name": "dashboard", "role": "viewer", "expires_in_days": 30})),
        )
        .await;
    assert_eq!(code, 201, "{created}");
    let viewer = created["token"].as_str().unwrap().to_string();
    let viewer_id = created["id"].as_str().unwrap().to_string();
    assert!(viewer.starts_with("ty_") && created["expires_at"].is_i64());

    let (code, _, listed) = server
        .send(Method::GET, "/api/keys", Some(&admin), None, None)
        .await;
    assert_eq!(code, 200);
    let text = listed.to_string();
    assert!(
        text.contains(&viewer_id) && !text.contains(&viewer),
        "ids, never tokens"
    );
    assert!(!text.contains("hash"));

    let (code, _, _) = server
        .send(Method::GET, "/api/models", Some(&viewer), None, None)
        .await;
    assert_eq!(code, 200);
    let (code, _, refused) = server
        .send(
            Method::POST,
            "/api/models",
            Some(&viewer),
            None,
            Some(json!({"name": "m", "dataset": "iris", "algorithm": "mlp"})),
        )
        .await;
    assert_eq!(code, StatusCode::FORBIDDEN, "{refused}");
    let (code, _, _) = server
        .send(Method::GET, "/api/keys", Some(&viewer), None, None)
        .await;
    assert_eq!(code, 403, "viewers do not manage keys");
    let bad = json!({"name": "x", "role": "owner"});
    let (code, _, answer) = server
        .send(Method::POST, "/api/keys", Some(&admin), None, Some(bad))
        .await;
    assert_eq!(code, 400);
    assert_eq!(answer["error"]["field"], "role");

    let (code, _, _) = server
        .send(
            Method::DELETE,
            &format!("/api/keys/{viewer_id}"),
            Some(&admin),
            None,
            None,
        )
        .await;
    assert_eq!(code, 204);
    let admin_id = &admin[3..15];
    let (code, _, answer) = server
        .send(
            Method::DELETE,
            &format!("/api/keys/{admin_id}"),
            Some(&admin),
            None,
            None,
        )
        .await;
    assert_eq!(code, 409, "a key cannot lock itself out: {answer}");
    let (code, _, _) = server
        .send(Method::GET, "/api/models", Some(&viewer), None, None)
        .await;
    assert_eq!(code, 401, "a revoked key stops at once");

    let (code, _, audit) = server
        .send(Method::GET, "/api/audit", Some(&admin), None, None)
        .await;
    assert_eq!(code, 200);
    let records = audit.as_array().unwrap();
    let has = |action: &str, outcome: i64| {
        records
            .iter()
            .any(|r| r["action"] == action && r["outcome"] == outcome)
    };
    assert!(has("POST /api/keys", 201), "{audit}");
    assert!(
        has("POST /api/models", 403),
        "refusals are recorded: {audit}"
    );
    assert!(has("DELETE /api/keys/{id}", 204), "{audit}");
    assert!(
        records
            .iter()
            .any(|r| r["key_id"] == viewer_id && r["outcome"] == 403)
    );
    let text = audit.to_string();
    assert!(
        !text.contains(&viewer) && !text.contains(&admin),
        "no secrets in the audit log"
    );
    let (_, _, filtered) = server
        .send(
            Method::GET,
            &format!("/api/audit?key_id={viewer_id}"),
            Some(&admin),
            None,
            None,
        )
        .await;
    assert!(
        filtered
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["key_id"] == Value::String(viewer_id.clone()))
    );
}
