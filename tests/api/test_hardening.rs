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

#[tokio::test]
async fn json_bombs_are_400s_that_change_nothing() {
    let server = Server::start().await;
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let nested_body = format!(
        r#"{{"name": "m", "dataset": "iris", "algorithm": "mlp", "hyperparameters": {{"epochs": {deep}}}}}"#
    );
    let cases = [
        ("deep nesting", nested_body),
        (
            "a number beyond f64",
            r#"{"name": "m", "dataset": "iris", "algorithm": "mlp", "hyperparameters": {"learning_rate": 1e999}}"#.to_string(),
        ),
        (
            "a huge integer",
            r#"{"name": "m", "dataset": "iris", "algorithm": "mlp", "hyperparameters": {"epochs": 123456789012345678901234567890}}"#.to_string(),
        ),
        (
            "duplicate keys",
            r#"{"name": "m", "name": "n", "dataset": "iris", "algorithm": "mlp"}"#.to_string(),
        ),
        ("not JSON at all", "\u{0}\u{1}\u{2}garbage".to_string()),
    ];
    for (what, body) in cases {
        let (code, answer) = server.post_raw("/api/models", &body, None).await;
        assert_eq!(code, 400, "{what}: {answer}");
        assert!(
            answer["error"]["field"].is_string(),
            "{what}: the field is named: {answer}"
        );
    }
    assert_eq!(models_total(&server).await, 0);
}

#[tokio::test]
async fn hostile_uploads_are_refused_and_store_nothing() {
    let server = Server::start_with(crate::support::Options {
        max_upload_mb: 1,
        ..Default::default()
    })
    .await;
    let gzip_bomb_header = [0x1f, 0x8b, 0x08, 0x00, 0, 0, 0, 0, 0, 0xff];
    let mut garbage = gzip_bomb_header.to_vec();
    garbage.extend((0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8));
    let long_row = format!("x,y\n{},1\n", "9".repeat(900_000));
    // (Over the upload limit is a 413: test_datasets::uploads_over_the_limit_are_413.)
    let cases: [(&str, &str, Vec<u8>, u16); 3] = [
        ("compressed or binary garbage", "text/csv", garbage, 400),
        (
            "an image",
            "image/png",
            b"\x89PNG\r\n\x1a\n....".to_vec(),
            400,
        ),
        ("one enormous cell", "text/csv", long_row.into_bytes(), 400),
    ];
    for (what, content_type, bytes, want) in cases {
        let (code, answer) = server
            .post_bytes("/api/datasets?name=hostile&target=y", content_type, bytes)
            .await;
        assert_eq!(code.as_u16(), want, "{what}: {answer}");
    }
    let (_, listed) = server.get("/api/datasets").await;
    assert!(
        !listed.to_string().contains("hostile"),
        "nothing was stored"
    );
    assert!(
        crate::support::artifact_files(&server.data_dir)
            .iter()
            .all(|f| !f.to_string_lossy().contains("hostile")),
        "no file was left behind"
    );
}
