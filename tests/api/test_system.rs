use serde_json::json;

use crate::support::Server;

#[tokio::test]
async fn health_ready_metrics_openapi_and_datasets() {
    let server = Server::start().await;
    let (s, body) = server.get("/health").await;
    assert_eq!((s.as_u16(), body["status"].as_str()), (200, Some("ok")));
    let (s, body) = server.get("/ready").await;
    assert_eq!((s.as_u16(), body["database"].as_str()), (200, Some("ok")));

    let response = server.raw_get("/api/models").await;
    assert!(
        response.headers().get("x-request-id").is_some(),
        "every response carries a request id"
    );

    let (_, doc) = server.get("/openapi.json").await;
    let paths = doc["paths"].as_object().unwrap();
    for path in [
        "/api/models",
        "/api/models/{id}",
        "/api/models/{id}/train",
        "/api/models/{id}/status",
        "/api/models/{id}/metrics",
        "/api/models/{id}/runs",
        "/api/models/{id}/cancel",
        "/api/models/{id}/predict",
        "/api/runs/{id}",
        "/api/datasets",
        "/api/datasets/{name}",
        "/health",
        "/ready",
        "/metrics",
    ] {
        assert!(paths.contains_key(path), "openapi documents {path}");
    }
    assert!(doc["components"]["schemas"]["ModelView"].is_object());

    server.create_model("iris", "mlp", json!({})).await;
    let text = server.raw_get("/metrics").await.text().await.unwrap();
    assert!(text.contains("trainyard_jobs_queued"), "{text}");
    assert!(
        text.contains("trainyard_runs{status=\"completed\"}"),
        "{text}"
    );
    assert!(
        text.contains("trainyard_http_request_duration_seconds"),
        "{text}"
    );

    let (s, list) = server.get("/api/datasets").await;
    assert_eq!(s, 200);
    let names: Vec<&str> = list["datasets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    for name in [
        "iris",
        "wine_quality",
        "california_housing",
        "mnist",
        "synthetic",
    ] {
        assert!(names.contains(&name), "{names:?}");
    }
    let (_, iris) = server.get("/api/datasets/iris").await;
    assert_eq!(iris["task"], "classification");
    assert_eq!(iris["n_features"], 4);
    assert_eq!(iris["feature_names"][0], "sepal_length");
}

#[tokio::test]
async fn every_response_carries_the_security_headers_and_no_banner() {
    let server = Server::start().await;
    let client = reqwest::Client::new();
    let responses = [
        client.get(server.url("/health")).send().await.unwrap(),
        client.get(server.url("/api/models")).send().await.unwrap(),
        client
            .get(server.url("/api/models/nope"))
            .send()
            .await
            .unwrap(),
        client
            .post(server.url("/api/models"))
            .header("content-type", "application/json")
            .body("{not json")
            .send()
            .await
            .unwrap(),
        client
            .get(server.url("/no/such/route"))
            .send()
            .await
            .unwrap(),
    ];
    let statuses: Vec<u16> = responses.iter().map(|r| r.status().as_u16()).collect();
    assert_eq!(statuses, vec![200, 200, 404, 400, 404]);
    for response in &responses {
        let headers = response.headers();
        for (name, value) in [
            ("x-content-type-options", "nosniff"),
            ("x-frame-options", "DENY"),
            ("referrer-policy", "no-referrer"),
            ("cache-control", "no-store"),
            ("cross-origin-opener-policy", "same-origin"),
            ("cross-origin-resource-policy", "same-origin"),
        ] {
            assert_eq!(
                headers.get(name).and_then(|v| v.to_str().ok()),
                Some(value),
                "{name} on {}",
                response.url()
            );
        }
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"));
        assert!(headers.get("server").is_none(), "no server banner");
    }
}
