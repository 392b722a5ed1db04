//! TestTrainingHappyPath: every dataset reaches `completed` with its metrics present.

use std::time::Duration;

use serde_json::json;

use crate::support::Server;

async fn completes(
    server: &Server,
    dataset: &str,
    algorithm: &str,
    hp: serde_json::Value,
    metric: &str,
) {
    let id = server.create_model(dataset, algorithm, hp).await;
    let run = server.train(&id).await;
    assert_eq!(run["status"], "pending");
    let status = server
        .wait_for(&id, &["completed", "failed"], Duration::from_secs(180))
        .await;
    assert_eq!(status["status"], "completed", "{dataset}: {status}");
    assert_eq!(status["stage"], "done");
    assert_eq!(status["progress"]["percent"], 100.0);
    let value = status["metrics"][metric]
        .as_f64()
        .unwrap_or_else(|| panic!("{dataset}: no {metric} in {status}"));
    assert!(value.is_finite(), "{dataset}: {metric} = {value}");
    if algorithm != "random_forest" {
        assert!(status["metrics"]["val_loss"].as_f64().is_some(), "{status}");
        let (_, history) = server.get(&format!("/api/models/{id}/metrics")).await;
        assert_eq!(
            history["epochs"].as_array().unwrap().len() as u64,
            status["progress"]["epoch"].as_u64().unwrap(),
            "{history}"
        );
    }
    assert!(
        status["progress"]["epoch"].as_u64().unwrap() >= 1,
        "{status}"
    );
}

#[tokio::test]
async fn all_five_datasets_complete_with_metrics() {
    let server = Server::start().await;
    completes(&server, "iris", "mlp", json!({}), "accuracy").await;
    completes(&server, "wine_quality", "mlp", json!({}), "accuracy").await;
    completes(
        &server,
        "california_housing",
        "mlp",
        json!({"epochs": 10}),
        "r2",
    )
    .await;
    completes(&server, "synthetic", "mlp", json!({}), "accuracy").await;
    completes(
        &server,
        "mnist",
        "mlp",
        json!({"epochs": 1}),
        "test_accuracy",
    )
    .await;
}

#[tokio::test]
async fn every_algorithm_trains() {
    let server = Server::start().await;
    completes(
        &server,
        "iris",
        "logistic_regression",
        json!({"epochs": 20}),
        "accuracy",
    )
    .await;
    completes(
        &server,
        "california_housing",
        "linear_regression",
        json!({"epochs": 2}),
        "r2",
    )
    .await;
    completes(
        &server,
        "iris",
        "random_forest",
        json!({"n_estimators": 10}),
        "accuracy",
    )
    .await;
}

#[tokio::test]
async fn a_created_model_shows_its_full_configuration() {
    let server = Server::start().await;
    let (status, body) = server
        .post("/api/models", json!({"name": "iris-mlp", "dataset": "iris", "algorithm": "mlp", "hyperparameters": {"epochs": 7}}))
        .await;
    assert_eq!(status, 201);
    insta::assert_json_snapshot!("create_model", body, {
        ".id" => "[id]",
        ".created_at" => "[timestamp]",
        ".updated_at" => "[timestamp]",
    });
}
