//! Issue 8, defect 2: every job is held to the server's memory budget, and the other sizes a
//! user controls have limits that errors name.

use std::time::Duration;

use serde_json::json;

use crate::support::{Options, Server};

fn with_budget(mb: u64) -> Options {
    Options {
        extra_args: vec!["--job-memory-mb".into(), mb.to_string()],
        ..Default::default()
    }
}

#[tokio::test]
async fn test_a_job_that_cannot_fit_is_refused_before_it_is_queued() {
    let server = Server::start_with(with_budget(1000)).await;
    let huge = json!({"hidden_layers": [4096, 4096, 4096, 4096, 4096, 4096, 4096, 4096], "batch_size": 65536});
    let (code, err) = server
        .post(
            "/api/models",
            json!({"name": "huge", "dataset": "mnist", "algorithm": "mlp", "hyperparameters": huge}),
        )
        .await;
    assert_eq!(code, 400, "{err}");
    assert_eq!(err["error"]["field"], "hyperparameters");
    let message = err["error"]["message"].as_str().unwrap();
    assert!(message.contains("MB even at batch size 1"), "{message}");
    assert!(message.contains("budget of 1000 MB"), "{message}");
    let (_, list) = server.get("/api/models").await;
    assert_eq!(list["total"], 0, "nothing was created: {list}");

    // A model that fits may not be trained with overrides that do not.
    let id = server
        .create_model("mnist", "mlp", json!({"hidden_layers": [64]}))
        .await;
    let (code, err) = server
        .post(
            &format!("/api/models/{id}/train"),
            json!({"hyperparameters": {"hidden_layers": [4096, 4096, 4096, 4096, 4096, 4096, 4096, 4096]}}),
        )
        .await;
    assert_eq!(code, 400, "{err}");
    let (_, runs) = server.get(&format!("/api/models/{id}/runs")).await;
    assert_eq!(runs["runs"], json!([]), "no run was queued");
}

#[tokio::test]
async fn test_a_language_model_that_cannot_fit_is_refused_with_its_estimate() {
    let server = Server::start_with(with_budget(1000)).await;
    let big =
        json!({"n_layer": 24, "n_head": 16, "n_embd": 1024, "block_size": 1024, "batch_size": 64});
    let (code, err) = server
        .post(
            "/api/models",
            json!({"name": "big", "dataset": "shakespeare", "algorithm": "transformer_lm", "hyperparameters": big}),
        )
        .await;
    assert_eq!(code, 400, "{err}");
    assert_eq!(err["error"]["field"], "hyperparameters");
    let message = err["error"]["message"].as_str().unwrap();
    assert!(message.contains("budget of 1000 MB"), "{message}");
    let (_, list) = server.get("/api/models").await;
    assert_eq!(list["total"], 0, "nothing was created: {list}");
    // The defaults (nanoGPT's recipe) fit easily.
    let (code, created) = server
        .post(
            "/api/models",
            json!({"name": "ok", "dataset": "shakespeare", "algorithm": "transformer_lm"}),
        )
        .await;
    assert_eq!(code, 201, "{created}");
}

#[tokio::test]
async fn test_a_job_that_fits_at_a_smaller_batch_trains_at_it_and_says_so() {
    // mnist and a 1,024-wide layer take about 200 MB before the batch; at 34 KB a sample,
    // 300 MB fits a few thousand samples, not the 65,536 asked for.
    let server = Server::start_with(with_budget(300)).await;
    let id = server
        .create_model(
            "mnist",
            "mlp",
            json!({"hidden_layers": [1024], "batch_size": 65536, "epochs": 1}),
        )
        .await;
    let run = server.train(&id).await;
    let run_id = run["id"].as_str().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let note = loop {
        let (_, run) = server.get(&format!("/api/runs/{run_id}")).await;
        if let Some(note) = run["attempts"][0]["note"].as_str() {
            break note.to_string();
        }
        assert!(std::time::Instant::now() < deadline, "no note: {run}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        note.contains("batch size reduced from 65536 to") && note.contains("budget 300 MB"),
        "{note}"
    );
    let (code, body) = server
        .post(&format!("/api/models/{id}/cancel"), json!({}))
        .await;
    assert_eq!(code, 202, "{body}");
}

#[tokio::test]
async fn test_predict_rows_have_a_named_limit() {
    let server = Server::start().await;
    let id = server
        .create_model("iris", "random_forest", json!({"n_estimators": 3}))
        .await;
    server.train(&id).await;
    server
        .wait_for(&id, &["completed"], Duration::from_secs(60))
        .await;
    let rows = vec![json!([5.1, 3.5, 1.4, 0.2]); 10_001];
    let (code, err) = server
        .post(
            &format!("/api/models/{id}/predict"),
            json!({"inputs": rows}),
        )
        .await;
    assert_eq!(code, 400, "{err}");
    assert_eq!(err["error"]["field"], "inputs");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at most 10000 rows")
    );
}

#[tokio::test]
async fn test_a_run_records_its_peak_memory_beside_its_estimate() {
    let server = Server::start().await;
    let id = server
        .create_model(
            "mnist",
            "mlp",
            json!({"hidden_layers": [256], "epochs": 2, "batch_size": 128}),
        )
        .await;
    server.train(&id).await;
    let status = server
        .wait_for(&id, &["completed"], Duration::from_secs(180))
        .await;
    let metrics = &status["metrics"];
    let estimate = metrics["memory_estimate_mb"].as_f64().expect("an estimate");
    // A worker process runs one job at a time, so its peak resident set is the job's.
    let peak = metrics["memory_peak_mb"].as_f64().expect("a measured peak");
    assert!(peak > 1.0, "the job held memory: {metrics}");
    assert!(
        estimate >= 0.8 * peak,
        "the admission estimate is at most 20% under the measured peak: {metrics}"
    );

    // Every epoch row shows the peak so far, so memory can be watched while a run trains.
    let (_, history) = server.get(&format!("/api/models/{id}/metrics")).await;
    let peaks: Vec<f64> = history["epochs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["memory_peak_mb"].as_f64().expect("a peak per epoch"))
        .collect();
    assert_eq!(peaks.len(), 2, "{history}");
    assert!(
        peaks[0] <= peaks[1] && peaks[1] <= peak,
        "{peaks:?} then {peak}"
    );
}

/// Trains a language model on shakespeare with `hp` and returns its admission estimate and
/// measured peak, after checking the estimate is at most 20% under the peak.
async fn language_model_memory(server: &Server, hp: serde_json::Value) -> (f64, f64) {
    let id = server
        .create_model("shakespeare", "transformer_lm", hp)
        .await;
    server.train(&id).await;
    let status = server
        .wait_for(&id, &["completed", "failed"], Duration::from_secs(240))
        .await;
    assert_eq!(status["status"], "completed", "{status}");
    let metrics = &status["metrics"];
    let estimate = metrics["memory_estimate_mb"].as_f64().expect("an estimate");
    let peak = metrics["memory_peak_mb"].as_f64().expect("a measured peak");
    assert!(
        estimate >= 0.8 * peak,
        "the admission estimate is at most 20% under the measured peak: {metrics}"
    );
    (estimate, peak)
}

/// A wide language model at batch 1: its memory is its parameters (and their copies in a
/// checkpoint), not activations, which an estimate counting only training's four copies
/// (weights, gradients, two moments) put at half the measured peak.
#[tokio::test]
async fn test_a_language_model_estimate_counts_its_checkpoints() {
    let server = Server::start().await;
    let hp = json!({"n_layer": 2, "n_embd": 256, "batch_size": 1, "max_steps": 20,
                    "eval_interval": 10, "eval_batches": 2});
    language_model_memory(&server, hp).await;
}

/// Gradient checkpointing keeps each block's input and one block's activations at a time:
/// the run's measured peak and its admission estimate both fall, and the estimate still
/// covers the peak.
#[tokio::test]
async fn test_gradient_checkpointing_lowers_the_peak_and_the_estimate() {
    let server = Server::start().await;
    let hp = |checkpointing: bool| {
        json!({"n_layer": 6, "n_embd": 64, "block_size": 128, "batch_size": 16,
               "max_steps": 4, "eval_interval": 4, "eval_batches": 1,
               "gradient_checkpointing": checkpointing})
    };
    let (plain_estimate, plain_peak) = language_model_memory(&server, hp(false)).await;
    let (estimate, peak) = language_model_memory(&server, hp(true)).await;
    assert!(
        peak < 0.8 * plain_peak,
        "checkpointing peaked at {peak} MB against {plain_peak} without"
    );
    assert!(
        estimate < plain_estimate,
        "{estimate} against {plain_estimate}"
    );
}

#[tokio::test]
async fn test_batch_size_auto_trains_with_the_fastest_size_that_fits_and_says_so() {
    let server = Server::start_with(with_budget(1000)).await;
    let (code, err) = server
        .post(
            "/api/models",
            json!({"name": "bad", "dataset": "iris", "algorithm": "mlp",
                   "hyperparameters": {"batch_size": "large"}}),
        )
        .await;
    assert_eq!(code, 400, "{err}");
    assert_eq!(err["error"]["field"], "hyperparameters.batch_size");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("\"auto\""),
        "{err}"
    );

    let (code, created) = server
        .post(
            "/api/models",
            json!({"name": "auto", "dataset": "wine_quality", "algorithm": "mlp",
                   "hyperparameters": {"batch_size": "auto", "epochs": 2, "hidden_layers": [16]}}),
        )
        .await;
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["hyperparameters"]["batch_size"], "auto");
    let id = created["id"].as_str().unwrap();
    let run = server.train(id).await;
    let status = server
        .wait_for(id, &["completed"], Duration::from_secs(120))
        .await;
    let chosen = status["metrics"]["batch_size"]
        .as_f64()
        .expect("the chosen size");
    let run = server.run(&run["id"]).await;
    let note = run["attempts"][0]["note"].as_str().unwrap_or_default();
    assert!(
        note.contains(&format!("batch size auto: chose {chosen}"))
            && note.contains("samples/s")
            && note.contains("1000 MB budget"),
        "the probe is recorded on the run: {run}"
    );
}
