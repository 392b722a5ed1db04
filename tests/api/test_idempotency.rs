//! TestIdempotency: repeating a request is safe.

use std::time::Duration;

use serde_json::json;

use crate::support::Server;

#[tokio::test]
async fn training_twice_returns_the_active_run_and_starts_nothing() {
    let server = Server::start().await;
    let id = server
        .create_model("iris", "mlp", json!({"epochs": 30}))
        .await;
    let first = server.train(&id).await;
    let (status, second) = server
        .post(&format!("/api/models/{id}/train"), json!({}))
        .await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(first["id"], second["id"]);
    server
        .wait_for(&id, &["completed"], Duration::from_secs(60))
        .await;
    let (_, runs) = server.get(&format!("/api/models/{id}/runs")).await;
    assert_eq!(runs["runs"].as_array().unwrap().len(), 1);

    // Once it finished, training again is a new run.
    let third = server.train(&id).await;
    assert_ne!(third["id"], first["id"]);
}

#[tokio::test]
async fn idempotency_key_replays_the_original_response() {
    let server = Server::start().await;
    let body = r#"{"name": "k", "dataset": "iris", "algorithm": "mlp"}"#;
    let (s1, a) = server.post_raw("/api/models", body, Some("key-1")).await;
    let (s2, b) = server.post_raw("/api/models", body, Some("key-1")).await;
    assert_eq!((s1.as_u16(), s2.as_u16()), (201, 201));
    assert_eq!(a, b, "same key, same body: same response");
    let (_, list) = server.get("/api/models").await;
    assert_eq!(list["total"], 1, "the replay created nothing");

    let (s3, err) = server
        .post_raw(
            "/api/models",
            r#"{"name": "other", "dataset": "iris", "algorithm": "mlp"}"#,
            Some("key-1"),
        )
        .await;
    assert_eq!(s3, 422, "{err}");
    assert_eq!(err["error"]["code"], "idempotency_key_reused");

    let id = a["id"].as_str().unwrap();
    let (t1, r1) = server
        .post_raw(&format!("/api/models/{id}/train"), "{}", Some("train-1"))
        .await;
    let (t2, r2) = server
        .post_raw(&format!("/api/models/{id}/train"), "{}", Some("train-1"))
        .await;
    assert_eq!(
        (t1.as_u16(), t2.as_u16()),
        (202, 202),
        "the replay returns the original 202"
    );
    assert_eq!(r1["id"], r2["id"]);
}
