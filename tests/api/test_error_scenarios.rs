//! TestErrorScenarios: bad input gets a clear error naming the field, and changes nothing.

use serde_json::{Value, json};

use crate::support::Server;

async fn rejected(server: &Server, body: Value, field: &str) -> Value {
    let (status, err) = server.post("/api/models", body.clone()).await;
    assert_eq!(status, 400, "{body} -> {err}");
    assert_eq!(err["error"]["code"], "validation_error", "{err}");
    assert_eq!(err["error"]["field"], field, "{body} -> {err}");
    assert!(!err["error"]["message"].as_str().unwrap().is_empty());
    err
}

#[tokio::test]
async fn bad_configurations_are_400_and_create_nothing() {
    let server = Server::start().await;
    let base = |patch: Value| {
        let mut b = json!({"name": "m", "dataset": "iris", "algorithm": "mlp"});
        for (k, v) in patch.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    let err = rejected(&server, base(json!({"dataset": "imagenet"})), "dataset").await;
    assert!(
        err["error"]["message"].as_str().unwrap().contains("iris"),
        "lists the datasets: {err}"
    );
    rejected(&server, base(json!({"algorithm": "svm"})), "algorithm").await;
    rejected(&server, base(json!({"name": ""})), "name").await;
    rejected(
        &server,
        base(json!({"hyperparameters": {"epochs": 0}})),
        "hyperparameters.epochs",
    )
    .await;
    rejected(
        &server,
        base(json!({"hyperparameters": {"epochs": "many"}})),
        "hyperparameters.epochs",
    )
    .await;
    rejected(
        &server,
        base(json!({"hyperparameters": {"learning_rate": 50}})),
        "hyperparameters.learning_rate",
    )
    .await;
    rejected(
        &server,
        base(json!({"hyperparameters": {"optimizer": "rmsprop"}})),
        "hyperparameters.optimizer",
    )
    .await;
    rejected(
        &server,
        base(json!({"hyperparameters": {"learnin_rate": 0.1}})),
        "hyperparameters.learnin_rate",
    )
    .await;
    rejected(
        &server,
        base(json!({"dataset": "california_housing", "algorithm": "logistic_regression"})),
        "algorithm",
    )
    .await;
    rejected(&server, base(json!({"algorithm": "cnn"})), "algorithm").await;
    rejected(
        &server,
        json!({"dataset": "iris", "algorithm": "mlp"}),
        "body",
    )
    .await;
    rejected(&server, base(json!({"colour": "blue"})), "body").await;

    let (status, err) = server.post_raw("/api/models", "{not json", None).await;
    assert_eq!(status, 400);
    assert_eq!(err["error"]["field"], "body");

    let (_, list) = server.get("/api/models").await;
    assert_eq!(list["total"], 0, "no bad request created a model: {list}");
}

#[tokio::test]
async fn missing_resources_are_404_with_the_error_shape() {
    let server = Server::start().await;
    for path in [
        "/api/models/nope",
        "/api/models/nope/status",
        "/api/models/nope/metrics",
        "/api/models/nope/runs",
        "/api/runs/nope",
        "/api/datasets/nope",
    ] {
        let (status, body) = server.get(path).await;
        assert_eq!(status, 404, "{path}");
        assert_eq!(body["error"]["code"], "not_found", "{path}: {body}");
    }
    for path in [
        "/api/models/nope/train",
        "/api/models/nope/cancel",
        "/api/models/nope/predict",
    ] {
        let (status, _) = server.post(path, json!({"inputs": [[1.0]]})).await;
        assert_eq!(status, 404, "{path}");
    }
    assert_eq!(server.delete("/api/models/nope").await, 404);
    let (_, body) = server
        .get("/api/models/0194f3b2-0000-7000-8000-000000000000")
        .await;
    insta::assert_json_snapshot!("not_found", body);
}

#[tokio::test]
async fn conflicts_and_bad_queries() {
    let server = Server::start().await;
    let id = server
        .create_model("iris", "mlp", json!({"epochs": 2}))
        .await;
    let (status, body) = server
        .post(
            &format!("/api/models/{id}/predict"),
            json!({"inputs": [[1, 2, 3, 4]]}),
        )
        .await;
    assert_eq!(status, 409, "predict before training: {body}");
    let (status, body) = server
        .post(&format!("/api/models/{id}/cancel"), json!({}))
        .await;
    assert_eq!(status, 409, "nothing to cancel: {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("pending")
    );

    let (status, body) = server
        .post(
            &format!("/api/models/{id}/train"),
            json!({"hyperparameters": {"epochs": -3}}),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["field"], "hyperparameters.epochs");
    let (_, runs) = server.get(&format!("/api/models/{id}/runs")).await;
    assert_eq!(
        runs["runs"].as_array().unwrap().len(),
        0,
        "a rejected train starts nothing"
    );

    for (query, field) in [
        ("status=running", "status"),
        ("limit=0", "limit"),
        ("limit=500", "limit"),
        ("offset=-1", "offset"),
        ("limit=abc", "query"),
    ] {
        let (status, body) = server.get(&format!("/api/models?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error"]["field"], field, "{query}: {body}");
    }
}
