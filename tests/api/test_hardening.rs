//! What a hostile web page or a hostile input can do to a server on localhost: nothing. A
//! cross-site form POST is refused, a rebound DNS name is refused, and injection payloads in
//! every string field and path segment are stored and returned inert.

use reqwest::Method;
use serde_json::json;

use crate::support::Server;

async fn models_total(server: &Server) -> u64 {
    let (_, body) = server.get("/api/models").await;
    body["total"].as_u64().unwrap()
}

#[tokio::test]
async fn a_cross_site_form_post_is_refused_and_changes_nothing() {
    let server = Server::start().await;
    let id = server
        .create_model("iris", "mlp", json!({"epochs": 1}))
        .await;
    let client = reqwest::Client::new();
    let form = "name=evil&dataset=iris&algorithm=mlp";
    for (content_type, body, path) in [
        (
            Some("application/x-www-form-urlencoded"),
            form,
            "/api/models".to_string(),
        ),
        (
            Some("multipart/form-data; boundary=x"),
            "--x--",
            "/api/datasets".to_string(),
        ),
        (
            Some("text/plain"),
            "{\"name\": \"evil\"}",
            "/api/models".to_string(),
        ),
        (None, "", format!("/api/models/{id}/train")),
    ] {
        let mut req = client
            .post(server.url(&path))
            .header("origin", "https://evil.example")
            .body(body);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 403, "{content_type:?} to {path}");
        let answer: serde_json::Value = r.json().await.unwrap();
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .contains("X-Trainyard-Client"),
            "the refusal says how a real client gets through: {answer}"
        );
    }
    assert_eq!(models_total(&server).await, 1, "nothing was created");
    let (_, status) = server.get(&format!("/api/models/{id}/status")).await;
    assert_eq!(status["status"], "pending", "nothing was trained");
    // A non-browser client says so and gets through.
    let r = client
        .post(server.url(&format!("/api/models/{id}/train")))
        .header("x-trainyard-client", "script")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
}

#[tokio::test]
async fn a_foreign_host_name_is_refused() {
    let server = Server::start().await;
    let client = reqwest::Client::new();
    let port = server.base.rsplit(':').next().unwrap().to_string();
    for host in ["evil.example", "attacker.test:8080", "127.0.0.1.nip.io"] {
        let r = client
            .get(server.url("/api/models"))
            .header("host", host)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "Host: {host}");
        let answer: serde_json::Value = r.json().await.unwrap();
        assert_eq!(answer["error"]["field"], "Host");
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .contains("--allowed-host"),
            "{answer}"
        );
    }
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
    ] {
        let r = client
            .get(server.url("/api/models"))
            .header("host", &host)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "Host: {host}");
    }
}

#[tokio::test]
async fn injection_payloads_are_stored_and_returned_inert() {
    let server = Server::start().await;
    let payloads = [
        "'; DROP TABLE models; --",
        "\" OR 1=1 --",
        "<script>alert(1)</script>",
        "$(rm -rf /) `reboot` ; cat /etc/passwd",
        "../../../../etc/passwd",
        "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "right-to-left \u{202e}override",
    ];
    for payload in payloads {
        let (code, body) = server
            .post(
                "/api/models",
                json!({"name": payload, "dataset": "iris", "algorithm": "mlp"}),
            )
            .await;
        assert_eq!(code, 201, "{payload:?}: {body}");
        let id = body["id"].as_str().unwrap();
        let (code, got) = server.get(&format!("/api/models/{id}")).await;
        assert_eq!(code, 200);
        assert_eq!(
            got["name"],
            payload.trim(),
            "returned verbatim as JSON data"
        );
        // In a dataset or algorithm field it is refused, naming the field.
        let (code, err) = server
            .post(
                "/api/models",
                json!({"name": "m", "dataset": payload, "algorithm": "mlp"}),
            )
            .await;
        assert_eq!(code, 400, "{payload:?}");
        assert_eq!(err["error"]["field"], "dataset");
    }
    // Control characters (a NUL that PostgreSQL cannot store, terminal escapes) are refused.
    for name in ["nul\u{0000}byte", "bell\u{0007}", "escape\u{001b}[31m"] {
        let (code, err) = server
            .post(
                "/api/models",
                json!({"name": name, "dataset": "iris", "algorithm": "mlp"}),
            )
            .await;
        assert_eq!(code, 400, "{name:?}: {err}");
        assert_eq!(err["error"]["field"], "name");
    }
    assert_eq!(
        models_total(&server).await,
        payloads.len() as u64,
        "the table survived"
    );
    for segment in [
        "..%2f..%2fetc%2fpasswd",
        "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "'%20OR%201=1",
        "%3Cscript%3E",
    ] {
        for path in [
            format!("/api/models/{segment}"),
            format!("/api/datasets/{segment}"),
            format!("/api/models/{segment}/checkpoints/{segment}"),
        ] {
            let (code, _, body) = server.send(Method::GET, &path, None, None, None).await;
            assert!(code == 404 || code == 400, "{path}: {code} {body}");
            assert!(!body.to_string().contains("root:"), "{path} leaked a file");
        }
    }
    let r = reqwest::get(server.url("/api/models?status=%27%20OR%201=1"))
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "a filter is validated, not interpolated");
}
