//! Issue 8, defect 3: training a model whose latest run is paused must not orphan that run.

use std::time::Duration;

use serde_json::json;

use crate::support::Server;

#[tokio::test]
async fn test_train_on_a_paused_model_is_a_conflict_until_restart() {
    let server = Server::start().await;
    let id = server
        .create_model("mnist", "mlp", json!({"epochs": 30, "hidden_layers": [64]}))
        .await;
    let first = server.train(&id).await;
    let paused_run = first["id"].as_str().unwrap().to_string();
    server.wait_for_epoch(&id, 1, Duration::from_secs(60)).await;
    let (code, body) = server
        .post(&format!("/api/models/{id}/pause"), json!({}))
        .await;
    assert_eq!(code, 202, "{body}");
    server
        .wait_for(&id, &["paused"], Duration::from_secs(20))
        .await;

    let (code, err) = server
        .post(&format!("/api/models/{id}/train"), json!({}))
        .await;
    assert_eq!(code, 409, "{err}");
    let message = err["error"]["message"].as_str().unwrap();
    assert!(message.contains(&paused_run), "{message}");
    assert!(
        message.contains("resume") && message.contains("restart"),
        "{message}"
    );
    let (_, runs) = server.get(&format!("/api/models/{id}/runs")).await;
    assert_eq!(runs["runs"].as_array().unwrap().len(), 1, "{runs}");
    assert_eq!(runs["runs"][0]["status"], "paused");

    let (code, new_run) = server
        .post(
            &format!("/api/models/{id}/train"),
            json!({"restart": true, "hyperparameters": {"epochs": 1}}),
        )
        .await;
    assert_eq!(code, 202, "{new_run}");
    assert_ne!(new_run["id"], paused_run);
    let (_, old) = server.get(&format!("/api/runs/{paused_run}")).await;
    assert_eq!(old["status"], "cancelled", "{old}");
    let done = server
        .wait_for(&id, &["completed", "failed"], Duration::from_secs(120))
        .await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["run_id"], new_run["id"], "{done}");
}
