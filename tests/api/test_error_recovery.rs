//! Seed 001's error-recovery table and seed 004's pause/resume, against the real server.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Options, Server};

/// The learned part of a metric history (no wall-clock fields).
fn learned(history: &Value) -> Vec<Value> {
    history["epochs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            json!([
                e["epoch"],
                e["train_loss"],
                e["val_loss"],
                e["accuracy"],
                e["learning_rate"]
            ])
        })
        .collect()
}

/// Final metrics without the measured memory peak, which differs from process to process.
fn learned_final(metrics: &Value) -> Value {
    let mut metrics = metrics.clone();
    metrics.as_object_mut().unwrap().remove("memory_peak_mb");
    metrics
}

async fn run_to_completion(server: &Server, hp: Value) -> (String, Value, Value) {
    let id = server.create_model("mnist", "mlp", hp).await;
    server.train(&id).await;
    let status = server
        .wait_for(&id, &["completed", "failed"], Duration::from_secs(180))
        .await;
    let (_, history) = server.get(&format!("/api/models/{id}/metrics")).await;
    (id, status, history)
}

const HP: &str = r#"{"epochs": 3, "hidden_layers": [64], "seed": 7}"#;

#[tokio::test]
async fn test_pause_and_resume_match_an_uninterrupted_run() {
    let server = Server::start().await;
    let hp: Value = serde_json::from_str(HP).unwrap();
    let (_, straight, straight_history) = run_to_completion(&server, hp.clone()).await;

    let id = server.create_model("mnist", "mlp", hp).await;
    server.train(&id).await;
    server
        .wait_for(&id, &["training"], Duration::from_secs(30))
        .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (code, body) = server
        .post(&format!("/api/models/{id}/pause"), json!({}))
        .await;
    assert_eq!(code, 202, "{body}");
    let paused = server
        .wait_for(&id, &["paused"], Duration::from_secs(10))
        .await;
    assert_eq!(paused["stage"], "paused");

    let (code, err) = server
        .post(&format!("/api/models/{id}/pause"), json!({}))
        .await;
    assert_eq!(code, 409);
    assert!(
        err["error"]["message"].as_str().unwrap().contains("paused"),
        "{err}"
    );
    let (_, checkpoints) = server.get(&format!("/api/models/{id}/checkpoints")).await;
    assert!(
        !checkpoints["checkpoints"].as_array().unwrap().is_empty(),
        "pausing wrote a checkpoint"
    );

    let (code, body) = server
        .post(&format!("/api/models/{id}/resume"), json!({}))
        .await;
    assert_eq!(code, 202, "{body}");
    let done = server
        .wait_for(&id, &["completed", "failed"], Duration::from_secs(120))
        .await;
    assert_eq!(done["status"], "completed", "{done}");
    let (code, err) = server
        .post(&format!("/api/models/{id}/resume"), json!({}))
        .await;
    assert_eq!(code, 409);
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("completed"),
        "{err}"
    );

    let (_, history) = server.get(&format!("/api/models/{id}/metrics")).await;
    assert_eq!(
        learned(&history),
        learned(&straight_history),
        "history continues without gaps or duplicates, identical"
    );
    assert_eq!(
        learned_final(&done["metrics"]),
        learned_final(&straight["metrics"]),
        "final metrics are bit-identical"
    );
    let run_id = done["run_id"].as_str().unwrap();
    let (_, run) = server.get(&format!("/api/runs/{run_id}")).await;
    assert_eq!(run["attempts"][0]["outcome"], "paused");
    assert!(
        run["attempts"][1]["note"]
            .as_str()
            .unwrap()
            .contains("resumed from the checkpoint"),
        "{run}"
    );
}

#[tokio::test]
async fn test_crash_mid_training_resumes_from_the_latest_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let options = || Options {
        workers: 1,
        lease_seconds: 2,
        ..Default::default()
    };
    let hp: Value = serde_json::from_str(HP).unwrap();
    let mut first = Server::start_in(dir.path(), options()).await;
    let id = first.create_model("mnist", "mlp", hp.clone()).await;
    first.train(&id).await;
    // Wait until a checkpoint is recorded, then SIGKILL.
    first.wait_for_epoch(&id, 1, Duration::from_secs(60)).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, listing) = first.get(&format!("/api/models/{id}/checkpoints")).await;
        if !listing["checkpoints"].as_array().unwrap().is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint: {listing}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.kill().await;

    let second = Server::start_in(dir.path(), options()).await;
    let done = second
        .wait_for(&id, &["completed", "failed"], Duration::from_secs(120))
        .await;
    assert_eq!(done["status"], "completed", "{done}");
    let run_id = done["run_id"].as_str().unwrap();
    let (_, run) = second.get(&format!("/api/runs/{run_id}")).await;
    assert_eq!(run["attempts"][0]["outcome"], "lost", "{run}");
    assert!(
        run["attempts"][1]["note"]
            .as_str()
            .unwrap()
            .contains("resumed from the checkpoint at epoch"),
        "{run}"
    );

    // The same run uninterrupted ends identically: the crash cost time, not correctness.
    let (_, straight, straight_history) = run_to_completion(&second, hp).await;
    let (_, history) = second.get(&format!("/api/models/{id}/metrics")).await;
    assert_eq!(learned(&history), learned(&straight_history));
    assert_eq!(
        learned_final(&done["metrics"]),
        learned_final(&straight["metrics"])
    );
}

#[tokio::test]
async fn test_checkpoint_corruption_falls_back_to_the_previous_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = Server::start_in(
        dir.path(),
        Options {
            workers: 1,
            ..Default::default()
        },
    )
    .await;
    let id = first
        .create_model("mnist", "mlp", json!({"epochs": 4, "hidden_layers": [32]}))
        .await;
    first.train(&id).await;
    first.wait_for_epoch(&id, 2, Duration::from_secs(60)).await;
    assert_eq!(first.stop().await, Some(0));

    // Flip a byte in the newest checkpoint.
    let (_, listing) = Server::start_in(
        dir.path(),
        Options {
            workers: 0,
            ..Default::default()
        },
    )
    .await
    .get(&format!("/api/models/{id}/checkpoints"))
    .await;
    let run_id = listing["run_id"].as_str().unwrap().to_string();
    let newest = &listing["checkpoints"][0];
    // Damage the newest checkpoint: every file holding it (a pause that lands right at an epoch
    // boundary writes the same checkpoint twice).
    let newest_hash = newest["sha256"].as_str().unwrap().to_string();
    let files: Vec<_> = std::fs::read_dir(
        dir.path()
            .join(format!("artifacts/runs/{run_id}/checkpoints")),
    )
    .unwrap()
    .flatten()
    .map(|e| e.path())
    .filter(|p| {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(std::fs::read(p).unwrap())) == newest_hash
    })
    .collect();
    assert!(!files.is_empty(), "the newest checkpoint's file");
    for path in files {
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x01;
        std::fs::write(&path, bytes).unwrap();
    }

    let second = Server::start_in(
        dir.path(),
        Options {
            workers: 1,
            ..Default::default()
        },
    )
    .await;
    let done = second
        .wait_for(&id, &["completed", "failed"], Duration::from_secs(120))
        .await;
    assert_eq!(done["status"], "completed", "{done}");
    let (_, run) = second.get(&format!("/api/runs/{run_id}")).await;
    let note = run["attempts"][1]["note"].as_str().unwrap_or_default();
    assert!(
        note.contains("damaged") && note.contains("corrupt"),
        "the fallback is recorded: {run}"
    );
    assert!(newest["sha256"].as_str().unwrap().len() == 64);
}

#[tokio::test]
async fn test_checkpoints_are_listed_with_hashes_and_download_intact() {
    let server = Server::start().await;
    let id = server
        .create_model("wine_quality", "mlp", json!({"epochs": 6}))
        .await;
    server.train(&id).await;
    server
        .wait_for(&id, &["completed"], Duration::from_secs(60))
        .await;
    let (_, listing) = server.get(&format!("/api/models/{id}/checkpoints")).await;
    let checkpoints = listing["checkpoints"].as_array().unwrap();
    let epochs: Vec<i64> = checkpoints
        .iter()
        .map(|c| c["epoch"].as_i64().unwrap())
        .collect();
    assert_eq!(
        epochs[..3],
        [5, 4, 3],
        "the newest three are kept: {listing}"
    );
    // Plus the best by val_loss among the epochs that were checkpointed (1 to 5).
    let (_, history) = server.get(&format!("/api/models/{id}/metrics")).await;
    let best = history["epochs"].as_array().unwrap()[..5]
        .iter()
        .min_by(|a, b| {
            a["val_loss"]
                .as_f64()
                .unwrap()
                .total_cmp(&b["val_loss"].as_f64().unwrap())
        })
        .map(|e| e["epoch"].as_i64().unwrap())
        .unwrap();
    let expected: Vec<i64> = if best >= 3 {
        vec![5, 4, 3]
    } else {
        vec![5, 4, 3, best]
    };
    assert_eq!(
        epochs, expected,
        "newest three and the best (epoch {best}): {listing}"
    );
    let first = &checkpoints[0];
    let response = server
        .raw_get(&format!(
            "/api/models/{id}/checkpoints/{}",
            first["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(response.status(), 200);
    let bytes = response.bytes().await.unwrap();
    assert_eq!(bytes.len() as i64, first["bytes"].as_i64().unwrap());
    use sha2::Digest;
    assert_eq!(
        hex::encode(sha2::Sha256::digest(&bytes)),
        first["sha256"].as_str().unwrap()
    );
    assert_eq!(
        server
            .raw_get(&format!("/api/models/{id}/checkpoints/nope"))
            .await
            .status(),
        404
    );
}

#[tokio::test]
async fn test_invalid_configuration_is_caught_before_anything_is_queued() {
    let server = Server::start().await;
    let id = server.create_model("iris", "mlp", json!({})).await;
    let (code, _) = server
        .post(
            &format!("/api/models/{id}/train"),
            json!({"hyperparameters": {"batch_size": 0}}),
        )
        .await;
    assert_eq!(code, 400);
    let (_, status) = server.get(&format!("/api/models/{id}/status")).await;
    assert!(status["run_id"].is_null(), "nothing was queued: {status}");
}

#[tokio::test]
async fn test_persistent_nan_fails_at_once_naming_epoch_and_batch() {
    let server = Server::start().await;
    let id = server
        .create_model(
            "california_housing",
            "mlp",
            json!({"learning_rate": 10.0, "optimizer": "sgd", "epochs": 20}),
        )
        .await;
    server.train(&id).await;
    let done = server
        .wait_for(&id, &["failed", "completed"], Duration::from_secs(60))
        .await;
    assert_eq!(done["status"], "failed", "{done}");
    let error = done["error"].as_str().unwrap();
    assert!(
        error.contains("epoch") && error.contains("batch"),
        "{error}"
    );
    let run_id = done["run_id"].as_str().unwrap();
    let (_, run) = server.get(&format!("/api/runs/{run_id}")).await;
    assert_eq!(
        run["attempts"].as_array().unwrap().len(),
        1,
        "not retried: {run}"
    );
}

#[tokio::test]
async fn test_oom_recovery_halves_the_batch_size_and_records_it() {
    let server = Server::start().await;
    let id = server
        .create_model(
            "mnist",
            "mlp",
            // About 243 MB before the batch (the job's copy of mnist and its test split, the model,
            // an evaluation batch, the backend), 16 MB per 1,024 samples: 255 MB fits a batch of 512.
            json!({"epochs": 1, "batch_size": 1024, "memory_budget_mb": 255}),
        )
        .await;
    server.train(&id).await;
    let done = server
        .wait_for(&id, &["completed", "failed"], Duration::from_secs(120))
        .await;
    assert_eq!(done["status"], "completed", "{done}");
    let run_id = done["run_id"].as_str().unwrap();
    let (_, run) = server.get(&format!("/api/runs/{run_id}")).await;
    let note = run["attempts"][0]["note"].as_str().unwrap_or_default();
    assert!(note.contains("batch size reduced from 1024 to"), "{run}");

    // A budget no batch size fits is refused before anything is queued.
    let (code, err) = server
        .post(
            "/api/models",
            json!({"name": "tiny-budget", "dataset": "mnist", "algorithm": "mlp", "hyperparameters": {"epochs": 1, "memory_budget_mb": 1}}),
        )
        .await;
    assert_eq!(code, 400, "{err}");
    let message = err["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("even at batch size 1") && message.contains("budget of 1 MB"),
        "{message}"
    );
}

#[tokio::test]
async fn test_interrupted_training_resume_after_sigint() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = Server::start_in(dir.path(), Options::default()).await;
    let id = first
        .create_model("mnist", "mlp", json!({"epochs": 3, "hidden_layers": [64]}))
        .await;
    first.train(&id).await;
    first
        .wait_for(&id, &["training"], Duration::from_secs(30))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let asked = std::time::Instant::now();
    assert_eq!(first.signal("-INT").await, Some(0), "SIGINT exits 0");
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "shut down in {:?}",
        asked.elapsed()
    );

    let second = Server::start_in(dir.path(), Options::default()).await;
    let done = second
        .wait_for(&id, &["completed", "failed"], Duration::from_secs(120))
        .await;
    assert_eq!(done["status"], "completed", "{done}");
    let run_id = done["run_id"].as_str().unwrap();
    let (_, run) = second.get(&format!("/api/runs/{run_id}")).await;
    assert_eq!(run["attempts"][0]["outcome"], "interrupted");
    assert!(
        run["attempts"][1]["note"]
            .as_str()
            .unwrap()
            .contains("resumed from the checkpoint"),
        "{run}"
    );
}

/// Unmounts the small filesystem even when the test fails.
struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[tokio::test]
async fn test_disk_space_exhaustion_fails_the_run_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let artifacts = dir.path().join("artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&artifacts)
        .output();
    if !mounted.as_ref().is_ok_and(|o| o.status.success()) {
        // CI sets TRAINYARD_STRICT_SKIPS=1: there, a skip is a failure.
        assert!(
            std::env::var("TRAINYARD_STRICT_SKIPS").is_err(),
            "cannot mount a 1 MB tmpfs (needs root): {mounted:?}"
        );
        eprintln!(
            "SKIPPED test_disk_space_exhaustion: cannot mount a 1 MB tmpfs here (needs root): {mounted:?}"
        );
        return;
    }
    let _mount = Mount(artifacts.clone());
    let mut server = Server::start_in(
        dir.path(),
        Options {
            retry_backoff_ms: 100,
            // A full disk is a local folder's failure: this test keeps the folder store even
            // when the suite runs on S3.
            extra_args: vec!["--artifacts".into(), artifacts.display().to_string()],
            ..Default::default()
        },
    )
    .await;
    // Its 2 MB checkpoints cannot fit; the small iris run beside it still can.
    let big = server
        .create_model("mnist", "mlp", json!({"epochs": 3}))
        .await;
    let small = server
        .create_model("iris", "mlp", json!({"epochs": 20}))
        .await;
    server.train(&big).await;
    server.train(&small).await;

    let failed = server
        .wait_for(&big, &["completed", "failed"], Duration::from_secs(120))
        .await;
    assert_eq!(failed["status"], "failed", "{failed}");
    let error = failed["error"].as_str().unwrap();
    assert!(
        error.contains("No space left") && error.contains("gave up after 4 attempts"),
        "{error}"
    );
    let run_id = failed["run_id"].as_str().unwrap();
    let (_, run) = server.get(&format!("/api/runs/{run_id}")).await;
    assert_eq!(
        run["attempts"].as_array().unwrap().len(),
        4,
        "retried max_restarts times: {run}"
    );

    let ok = server
        .wait_for(&small, &["completed", "failed"], Duration::from_secs(60))
        .await;
    assert_eq!(ok["status"], "completed", "other runs continue: {ok}");
    assert_eq!(server.get("/ready").await.0, 200, "the server stays up");
    assert_eq!(server.stop().await, Some(0));
}

#[tokio::test]
async fn test_training_loop_exception_fails_only_that_run() {
    let server = Server::start_with(Options {
        workers: 1,
        ..Default::default()
    })
    .await;
    // The server under test panics inside training for models with this name.
    let (code, body) = server
        .post("/api/models", json!({"name": "crash-test-dummy", "dataset": "iris", "algorithm": "mlp", "hyperparameters": {"epochs": 5}}))
        .await;
    assert_eq!(code, 201);
    let crashing = body["id"].as_str().unwrap().to_string();
    let healthy = server
        .create_model("iris", "mlp", json!({"epochs": 5}))
        .await;
    server.train(&crashing).await;
    server.train(&healthy).await;

    let failed = server
        .wait_for(&crashing, &["failed", "completed"], Duration::from_secs(60))
        .await;
    assert_eq!(failed["status"], "failed");
    let error = failed["error"].as_str().unwrap();
    assert!(
        error.contains("training crashed") && error.contains("injected failure"),
        "{error}"
    );
    // The single worker survived the panic and trained the next job.
    let ok = server
        .wait_for(&healthy, &["failed", "completed"], Duration::from_secs(60))
        .await;
    assert_eq!(ok["status"], "completed", "{ok}");
}

#[tokio::test]
async fn test_model_load_failure_recovery_for_a_corrupt_artifact() {
    let server = Server::start().await;
    let id = server
        .create_model("iris", "mlp", json!({"epochs": 3}))
        .await;
    server.train(&id).await;
    let done = server
        .wait_for(&id, &["completed"], Duration::from_secs(60))
        .await;
    let run_id = done["run_id"].as_str().unwrap();
    let path = crate::support::model_file(&server.data_dir, run_id);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    std::fs::write(&path, bytes).unwrap();
    let (code, err) = server
        .post(
            &format!("/api/models/{id}/predict"),
            json!({"inputs": [[5.1, 3.5, 1.4, 0.2]]}),
        )
        .await;
    assert_eq!(code, 422, "{err}");
    let message = err["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("corrupt") && message.contains("retrain"),
        "{message}"
    );
    assert_eq!(server.get("/ready").await.0, 200);
}
