//! Queued jobs survive a restart; a job whose server died mid-run runs again as a new attempt.

use std::time::Duration;

use serde_json::json;

use crate::support::{Options, Server};

#[tokio::test]
async fn queued_jobs_run_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = Server::start_in(
        dir.path(),
        Options {
            workers: 0,
            ..Default::default()
        },
    )
    .await;
    let id = first
        .create_model("iris", "mlp", json!({"epochs": 5}))
        .await;
    first.train(&id).await;
    assert_eq!(first.stop().await, Some(0), "a graceful stop exits 0");

    let second = Server::start_in(dir.path(), Options::default()).await;
    let status = second
        .wait_for(&id, &["completed"], Duration::from_secs(60))
        .await;
    assert_eq!(status["attempt"], 1);
}

#[tokio::test]
async fn a_graceful_stop_puts_running_training_back_in_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = Server::start_in(dir.path(), Options::default()).await;
    let id = first
        .create_model("mnist", "mlp", json!({"epochs": 3}))
        .await;
    first.train(&id).await;
    first
        .wait_for(&id, &["training"], Duration::from_secs(30))
        .await;
    assert_eq!(first.stop().await, Some(0));

    let second = Server::start_in(dir.path(), Options::default()).await;
    let (_, status) = second.get(&format!("/api/models/{id}/status")).await;
    assert!(
        ["pending", "initializing", "training"].contains(&status["status"].as_str().unwrap_or("")),
        "{status}"
    );
    let status = second
        .wait_for(&id, &["completed"], Duration::from_secs(120))
        .await;
    let run_id = status["run_id"].as_str().unwrap();
    let (_, run) = second.get(&format!("/api/runs/{run_id}")).await;
    let attempts = run["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{run}");
    assert_eq!(attempts[0]["outcome"], "interrupted");
    assert_eq!(attempts[1]["outcome"], "completed");
}

#[tokio::test]
async fn a_killed_server_s_job_is_reclaimed_after_its_lease_expires() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = Server::start_in(
        dir.path(),
        Options {
            workers: 1,
            lease_seconds: 2,
            ..Default::default()
        },
    )
    .await;
    let id = first
        .create_model("mnist", "mlp", json!({"epochs": 2}))
        .await;
    first.train(&id).await;
    first
        .wait_for(&id, &["training"], Duration::from_secs(30))
        .await;
    first.kill().await;

    let second = Server::start_in(
        dir.path(),
        Options {
            workers: 1,
            lease_seconds: 2,
            ..Default::default()
        },
    )
    .await;
    let status = second
        .wait_for(&id, &["completed"], Duration::from_secs(120))
        .await;
    assert_eq!(status["attempt"], 2);
    let run_id = status["run_id"].as_str().unwrap();
    let (_, run) = second.get(&format!("/api/runs/{run_id}")).await;
    assert_eq!(run["attempts"][0]["outcome"], "lost", "{run}");
    let (_, history) = second.get(&format!("/api/models/{id}/metrics")).await;
    let epochs: Vec<u64> = history["epochs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["epoch"].as_u64().unwrap())
        .collect();
    assert_eq!(epochs, vec![1, 2], "no gaps, no duplicates");
}
