//! Issue 8, defect 8: an attempt that lost its lease cannot change the run's model, checkpoints,
//! metrics or events. A failpoint stalls the first attempt of the model `stale-writer` after
//! training, before it saves its model, until a second attempt has taken over and finished.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{Options, Server, artifact_files, read_sse};

async fn fenced_attempts(server: &Server) -> u64 {
    let text = server.raw_get("/metrics").await.text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("trainyard_fenced_attempts_total "))
        .map_or(0, |v| v.trim().parse::<f64>().unwrap() as u64)
}

#[tokio::test]
async fn test_a_stale_attempt_changes_nothing() {
    let server = Server::start_with(Options {
        workers: 2,
        lease_seconds: 2,
        ..Default::default()
    })
    .await;
    let (code, model) = server
        .post(
            "/api/models",
            json!({"name": "stale-writer", "dataset": "iris", "algorithm": "mlp", "hyperparameters": {"epochs": 20}}),
        )
        .await;
    assert_eq!(code, 201, "{model}");
    let id = model["id"].as_str().unwrap();
    let run = server.train(id).await;
    let run_id = run["id"].as_str().unwrap();
    let done = server
        .wait_for(id, &["completed", "failed"], Duration::from_secs(120))
        .await;
    assert_eq!(done["status"], "completed", "{done}");
    let (_, metrics_after_takeover) = server.get(&format!("/api/models/{id}/metrics")).await;

    // The stale attempt wakes up once the run is finished; wait until its writes were refused.
    let deadline = Instant::now() + Duration::from_secs(60);
    while fenced_attempts(&server).await == 0 {
        assert!(
            Instant::now() < deadline,
            "the stale attempt never finished"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let (_, run) = server.get(&format!("/api/runs/{run_id}")).await;
    assert_eq!(run["status"], "completed", "{run}");
    let attempts = run["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{run}");
    assert_eq!(attempts[1]["outcome"], "completed", "{run}");

    let models: Vec<String> = artifact_files(&server.data_dir)
        .iter()
        .filter(|p| p.extension().is_some_and(|x| x == "tym"))
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        models,
        vec!["model-a002.tym".to_string()],
        "only the successor's model"
    );

    let (_, metrics) = server.get(&format!("/api/models/{id}/metrics")).await;
    assert_eq!(metrics, metrics_after_takeover);
    let (code, predicted) = server
        .post(
            &format!("/api/models/{id}/predict"),
            json!({"inputs": [[5.1, 3.5, 1.4, 0.2]]}),
        )
        .await;
    assert_eq!(code, 200, "{predicted}");

    let events = read_sse(
        server.url(&format!("/api/models/{id}/events")),
        None,
        Duration::from_secs(10),
    )
    .await;
    let completed = events
        .iter()
        .filter(|e| e.kind == "status" && e.data["data"]["status"] == "completed")
        .count();
    assert_eq!(completed, 1, "one terminal status, from the owner");
    assert_eq!(events.last().unwrap().data["data"]["status"], "completed");
}
