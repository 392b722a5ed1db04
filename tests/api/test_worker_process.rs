//! Training in `trainyard worker` processes beside `serve --workers 0`: the API trains nothing
//! itself, a worker process on the same database and data directory picks the job up, the
//! API's streams show its events, and a worker killed with SIGKILL loses no work: another
//! worker takes the job over after the lease and finishes it from the checkpoint, every epoch
//! recorded exactly once.

use std::path::Path;
use std::process::Child;
use std::time::Duration;

use serde_json::json;

use crate::support::{Options, Server, read_sse, worker_process};

/// A worker process on `dir` with the given lease.
fn worker(dir: &Path, lease_seconds: u64) -> Child {
    worker_process(dir, &["--lease-seconds", &lease_seconds.to_string()])
}

#[tokio::test]
async fn a_worker_process_trains_what_the_api_queues() {
    let server = Server::start_with(Options {
        workers: 0,
        ..Options::default()
    })
    .await;
    let id = server
        .create_model("iris", "mlp", json!({"epochs": 20}))
        .await;
    server.train(&id).await;
    // No worker yet: the run waits in the queue.
    let (_, status) = server.get(&format!("/api/models/{id}/status")).await;
    assert_eq!(status["status"], "pending");

    let events = tokio::spawn(read_sse(
        server.url(&format!("/api/models/{id}/events")),
        None,
        Duration::from_secs(60),
    ));
    let mut process = worker(&server.data_dir, 30);
    server
        .wait_for(&id, &["completed"], Duration::from_secs(60))
        .await;
    let events = events.await.unwrap();
    let epochs: Vec<i64> = events
        .iter()
        .filter(|e| e.kind == "epoch")
        .map(|e| e.data["data"]["epoch"].as_i64().unwrap())
        .collect();
    assert_eq!(
        epochs,
        (1..=20).collect::<Vec<_>>(),
        "the API streamed the worker's epochs"
    );
    assert_eq!(events.last().unwrap().data["data"]["status"], "completed");
    let (status, body) = server
        .post(
            &format!("/api/models/{id}/predict"),
            json!({"inputs": [[5.1, 3.5, 1.4, 0.2]]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    process.kill().unwrap();
    process.wait().unwrap();
}

#[tokio::test]
async fn a_killed_worker_loses_no_work() {
    let lease = 2;
    let server = Server::start_with(Options {
        workers: 0,
        lease_seconds: lease,
        ..Options::default()
    })
    .await;
    let id = server
        .create_model("iris", "mlp", json!({"epochs": 400, "checkpoint_every": 1}))
        .await;
    server.train(&id).await;
    let mut first = worker(&server.data_dir, lease);
    server.wait_for_epoch(&id, 5, Duration::from_secs(60)).await;
    first.kill().unwrap(); // SIGKILL: no checkpoint on the way out, no release of the lease
    first.wait().unwrap();
    let mut second = worker(&server.data_dir, lease);
    let done = server
        .wait_for(&id, &["completed", "failed"], Duration::from_secs(120))
        .await;
    assert_eq!(done["status"], "completed", "{done}");
    let run = server.run(&done["run_id"]).await;
    let attempts = run["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{run}");
    let (_, metrics) = server.get(&format!("/api/models/{id}/metrics")).await;
    let epochs: Vec<i64> = metrics["epochs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["epoch"].as_i64().unwrap())
        .collect();
    assert_eq!(
        epochs,
        (1..=400).collect::<Vec<_>>(),
        "every epoch exactly once"
    );
    second.kill().unwrap();
    second.wait().unwrap();
}

#[tokio::test]
async fn a_job_that_kills_its_worker_process_takes_down_only_that_worker() {
    // The server's one worker runs in a process of its own (the default).
    let server = Server::start_with(Options {
        workers: 1,
        extra_args: vec!["--max-restarts".into(), "1".into()],
        ..Options::default()
    })
    .await;
    // This model's training aborts its process after the first epoch (a failpoint).
    let (status, body) = server
        .post("/api/models", json!({"name": "hard-crash", "dataset": "iris", "algorithm": "mlp", "hyperparameters": {"epochs": 30}}))
        .await;
    assert_eq!(status, 201, "{body}");
    let crashing = body["id"].as_str().unwrap().to_string();
    server.train(&crashing).await;
    let done = server
        .wait_for(&crashing, &["failed"], Duration::from_secs(60))
        .await;
    let run = server.run(&done["run_id"]).await;
    let attempts = run["attempts"].as_array().unwrap();
    assert!(attempts.len() >= 2, "{run}");
    for attempt in &attempts[..2] {
        assert_eq!(attempt["outcome"], "lost", "{run}");
        let reason = attempt["reason"].as_str().unwrap_or_default();
        assert!(
            reason.contains("SIGABRT"),
            "the attempt says why its worker died: {reason}"
        );
    }

    // The API never went down, and the restarted worker trains the next job.
    let id = server
        .create_model("iris", "mlp", json!({"epochs": 5}))
        .await;
    server.train(&id).await;
    server
        .wait_for(&id, &["completed"], Duration::from_secs(60))
        .await;
}

#[tokio::test]
async fn a_worker_killed_for_memory_is_retried_at_half_the_batch() {
    let server = Server::start_with(Options {
        workers: 1,
        ..Options::default()
    })
    .await;
    // The first attempt's worker is killed with SIGKILL after its first epoch, as the kernel
    // kills a process that runs out of memory (a failpoint).
    let (status, body) = server
        .post(
            "/api/models",
            json!({"name": "memory-hog", "dataset": "wine_quality", "algorithm": "mlp",
               "hyperparameters": {"epochs": 3, "batch_size": 64, "hidden_layers": [16]}}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    server.train(&id).await;
    let done = server
        .wait_for(&id, &["completed", "failed"], Duration::from_secs(120))
        .await;
    assert_eq!(done["status"], "completed", "{done}");
    let run = server.run(&done["run_id"]).await;
    let attempts = run["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{run}");
    assert_eq!(attempts[0]["outcome"], "lost", "{run}");
    assert!(
        attempts[0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("SIGKILL")),
        "{run}"
    );
    assert!(
        attempts[1]["note"]
            .as_str()
            .is_some_and(|n| n.contains("batch size 64 halved to 32")),
        "the retry says what it changed: {run}"
    );
}

#[tokio::test]
async fn cancel_and_pause_reach_a_worker_process() {
    let server = Server::start_with(Options {
        workers: 0,
        ..Options::default()
    })
    .await;
    let mut process = worker(&server.data_dir, 30);
    let id = server
        .create_model("iris", "mlp", json!({"epochs": 5000}))
        .await;
    server.train(&id).await;
    server.wait_for_epoch(&id, 2, Duration::from_secs(60)).await;
    let (status, body) = server
        .post(&format!("/api/models/{id}/pause"), json!({}))
        .await;
    assert!(status.is_success(), "{body}");
    server
        .wait_for(&id, &["paused"], Duration::from_secs(30))
        .await;
    let (status, body) = server
        .post(&format!("/api/models/{id}/resume"), json!({}))
        .await;
    assert!(status.is_success(), "{body}");
    server
        .wait_for(&id, &["training"], Duration::from_secs(30))
        .await;
    let asked = std::time::Instant::now();
    let (status, body) = server
        .post(&format!("/api/models/{id}/cancel"), json!({}))
        .await;
    assert!(status.is_success(), "{body}");
    server
        .wait_for(&id, &["cancelled"], Duration::from_secs(30))
        .await;
    eprintln!("cancel through a worker process took {:?}", asked.elapsed());
    process.kill().unwrap();
    process.wait().unwrap();
}
