use std::time::Duration;

use serde_json::json;

use crate::support::Server;

#[tokio::test]
async fn a_trained_classifier_predicts_labels_with_probabilities() {
    let server = Server::start().await;
    let id = server.create_model("iris", "mlp", json!({})).await;
    server.train(&id).await;
    server
        .wait_for(&id, &["completed"], Duration::from_secs(60))
        .await;
    let (status, body) = server
        .post(
            &format!("/api/models/{id}/predict"),
            json!({"inputs": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let predictions = body["predictions"].as_array().unwrap();
    assert_eq!(predictions.len(), 2);
    assert_eq!(predictions[0]["label"], "0");
    assert_eq!(predictions[1]["label"], "2");
    let p: f64 = predictions[0]["probabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .sum();
    assert!((p - 1.0).abs() < 1e-4);

    let (status, err) = server
        .post(
            &format!("/api/models/{id}/predict"),
            json!({"inputs": [[1.0, 2.0]]}),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(err["error"]["field"], "inputs");
    let message = err["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("4 features") && message.contains("has 2"),
        "{message}"
    );

    let (status, _) = server
        .post(&format!("/api/models/{id}/predict"), json!({"inputs": []}))
        .await;
    assert_eq!(status, 400);
    let (status, _) = server
        .post(&format!("/api/models/{id}/predict"), json!({"rows": [[1]]}))
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn a_regressor_predicts_values_and_a_missing_artifact_is_a_clear_error() {
    let server = Server::start().await;
    let id = server
        .create_model(
            "california_housing",
            "linear_regression",
            json!({"epochs": 3}),
        )
        .await;
    server.train(&id).await;
    let status = server
        .wait_for(&id, &["completed"], Duration::from_secs(60))
        .await;
    let row = json!([8.3252, 41.0, 6.98, 1.02, 322.0, 2.56, 37.88, -122.23]);
    let (code, body) = server
        .post(
            &format!("/api/models/{id}/predict"),
            json!({"inputs": [row]}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert!(body["predictions"][0]["value"].as_f64().unwrap() > 0.5);

    // Lose the model file behind the server's back: a 422 that says what to do, not a 500.
    let run_id = status["run_id"].as_str().unwrap();
    let other = server
        .create_model("iris", "logistic_regression", json!({"epochs": 2}))
        .await;
    server.train(&other).await;
    let other_status = server
        .wait_for(&other, &["completed"], Duration::from_secs(60))
        .await;
    let other_run = other_status["run_id"].as_str().unwrap();
    std::fs::remove_file(crate::support::model_file(&server.data_dir, other_run)).unwrap();
    let (code, err) = server
        .post(
            &format!("/api/models/{other}/predict"),
            json!({"inputs": [[1, 2, 3, 4]]}),
        )
        .await;
    assert_eq!(code, 422, "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("retrain"),
        "{err}"
    );
    assert_ne!(run_id, other_run);
}

/// Issue 8, defect 9: a forest answers any input with predictions or a 4xx, never a 500.
#[tokio::test]
async fn a_forest_never_answers_a_server_error() {
    let server = Server::start().await;
    let id = server
        .create_model("iris", "random_forest", json!({"n_estimators": 7}))
        .await;
    server.train(&id).await;
    server
        .wait_for(&id, &["completed"], Duration::from_secs(60))
        .await;
    let path = format!("/api/models/{id}/predict");
    let (status, body) = server
        .post(
            &path,
            json!({"inputs": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    for p in body["predictions"].as_array().unwrap() {
        let votes: Vec<f64> = p["probabilities"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(votes.len(), 3, "{p}");
        assert!((votes.iter().sum::<f64>() - 1.0).abs() < 1e-6, "{p}");
    }
    for inputs in [
        json!([[1e300, 0.0, 0.0, 0.0]]),
        json!([[-1e39, 1.0, 1.0, 1.0]]),
        json!([]),
        json!([[1.0, 2.0, 3.0]]),
        json!([[1.0, 2.0, 3.0, 4.0, 5.0]]),
    ] {
        let (status, err) = server.post(&path, json!({ "inputs": inputs })).await;
        assert_eq!(status, 400, "{inputs}: {err}");
        assert_eq!(err["error"]["field"], "inputs", "{err}");
    }
    let (status, body) = server
        .post(&path, json!({"inputs": [[3.0e38, -3.0e38, 0.0, 1e-45]]}))
        .await;
    assert_eq!(
        status, 200,
        "extreme but representable values predict: {body}"
    );
}
