use std::time::Duration;

use serde_json::json;

use crate::support::{Server, artifact_files};

#[tokio::test]
async fn deleting_a_model_removes_runs_metrics_checkpoints_and_files() {
    let server = Server::start().await;
    let id = server
        .create_model("iris", "mlp", json!({"epochs": 5}))
        .await;
    let run = server.train(&id).await;
    server
        .wait_for(&id, &["completed"], Duration::from_secs(60))
        .await;
    let run_id = run["id"].as_str().unwrap();
    let files = artifact_files(&server.data_dir);
    assert!(
        files
            .iter()
            .any(|f| f.extension().is_some_and(|x| x == "tym")),
        "{files:?}"
    );
    assert!(
        files
            .iter()
            .any(|f| f.extension().is_some_and(|e| e == "tyck")),
        "checkpoints were written: {files:?}"
    );

    assert_eq!(server.delete(&format!("/api/models/{id}")).await, 204);
    assert_eq!(server.get(&format!("/api/models/{id}")).await.0, 404);
    assert_eq!(server.get(&format!("/api/runs/{run_id}")).await.0, 404);
    assert_eq!(
        server.get(&format!("/api/models/{id}/metrics")).await.0,
        404
    );
    assert!(
        artifact_files(&server.data_dir).is_empty(),
        "no files left: {:?}",
        artifact_files(&server.data_dir)
    );
    assert_eq!(
        server.delete(&format!("/api/models/{id}")).await,
        404,
        "deleting twice is a 404"
    );
}

#[tokio::test]
async fn deleting_a_training_model_cancels_it_first() {
    let server = Server::start().await;
    let id = server
        .create_model("mnist", "mlp", json!({"epochs": 50}))
        .await;
    server.train(&id).await;
    server
        .wait_for(&id, &["training"], Duration::from_secs(30))
        .await;
    assert_eq!(server.delete(&format!("/api/models/{id}")).await, 204);
    // The worker notices within a batch; afterwards nothing of the run remains on disk.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !artifact_files(&server.data_dir).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "files left: {:?}",
            artifact_files(&server.data_dir)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, list) = server.get("/api/models").await;
    assert_eq!(list["total"], 0);
}
