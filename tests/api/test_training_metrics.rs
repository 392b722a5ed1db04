//! TestTrainingMetrics: the status payload carries the recorded metrics, and the history has one
//! entry per epoch.

use std::time::Duration;

use serde_json::json;

use crate::support::Server;

#[tokio::test]
async fn metrics_are_recorded_per_epoch_and_final() {
    let server = Server::start().await;
    let id = server
        .create_model("wine_quality", "mlp", json!({"epochs": 6}))
        .await;
    server.train(&id).await;
    let status = server
        .wait_for(&id, &["completed"], Duration::from_secs(60))
        .await;
    let metrics = &status["metrics"];
    for key in ["accuracy", "val_loss", "train_loss", "epochs_trained"] {
        assert!(
            metrics[key].as_f64().is_some(),
            "final metrics have {key}: {metrics}"
        );
    }
    assert_eq!(status["progress"]["epoch"], 6);
    assert_eq!(status["progress"]["total_epochs"], 6);

    let (code, history) = server.get(&format!("/api/models/{id}/metrics")).await;
    assert_eq!(code, 200);
    let epochs = history["epochs"].as_array().unwrap();
    assert_eq!(epochs.len(), 6, "one entry per epoch");
    for (i, e) in epochs.iter().enumerate() {
        assert_eq!(e["epoch"], i + 1);
        for key in [
            "train_loss",
            "val_loss",
            "learning_rate",
            "samples_per_second",
            "epoch_seconds",
            "accuracy",
        ] {
            assert!(
                e[key].as_f64().is_some(),
                "epoch {} lacks {key}: {e}",
                i + 1
            );
        }
    }

    let run_id = status["run_id"].as_str().unwrap();
    let (_, run) = server.get(&format!("/api/runs/{run_id}")).await;
    assert_eq!(run["status"], "completed");
    assert_eq!(run["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(run["attempts"][0]["outcome"], "completed");
}

#[tokio::test]
async fn regression_metrics_and_live_progress() {
    let server = Server::start().await;
    let id = server
        .create_model("california_housing", "mlp", json!({"epochs": 40}))
        .await;
    server.train(&id).await;
    let live = server
        .wait_for(&id, &["training"], Duration::from_secs(30))
        .await;
    assert!(live["started_at"].is_string(), "{live}");
    // While training, the latest epoch's metrics appear.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (_, s) = server.get(&format!("/api/models/{id}/status")).await;
        if s["metrics"]["r2"].is_number() || s["status"] == "completed" {
            assert!(s["progress"]["percent"].as_f64().unwrap() > 0.0, "{s}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no live metrics: {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let done = server
        .wait_for(&id, &["completed"], Duration::from_secs(120))
        .await;
    for key in ["r2", "mae", "rmse"] {
        assert!(done["metrics"][key].as_f64().is_some(), "{done}");
    }
}
