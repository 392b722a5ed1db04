//! Issue 8, defect 4: a finished run's progress events are compacted, and idempotency keys
//! expire.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{Options, Server, read_sse};

fn options(extra: &[&str]) -> Options {
    Options {
        extra_args: extra.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

#[tokio::test]
async fn test_a_finished_runs_log_is_bounded_by_its_epochs() {
    let server = Server::start_with(options(&["--compact-events-after-seconds", "0"])).await;
    // Small batches make the two epochs last seconds: dozens of progress events.
    let id = server
        .create_model(
            "mnist",
            "mlp",
            json!({"epochs": 2, "batch_size": 16, "hidden_layers": [32]}),
        )
        .await;
    server.train(&id).await;
    let url = server.url(&format!("/api/models/{id}/events"));
    let live = read_sse(url.clone(), None, Duration::from_secs(240)).await;
    let progress_live = live.iter().filter(|e| e.kind == "progress").count();
    assert!(
        progress_live >= 10,
        "progress while training: {progress_live}"
    );
    assert_eq!(live.last().unwrap().data["data"]["status"], "completed");

    let deadline = Instant::now() + Duration::from_secs(20);
    let replay = loop {
        let replay = read_sse(url.clone(), None, Duration::from_secs(10)).await;
        if replay.iter().all(|e| e.kind != "progress") {
            break replay;
        }
        assert!(
            Instant::now() < deadline,
            "progress events were never compacted"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let kept: Vec<i64> = live
        .iter()
        .filter(|e| e.kind != "progress")
        .map(|e| e.id)
        .collect();
    assert_eq!(
        replay.iter().map(|e| e.id).collect::<Vec<_>>(),
        kept,
        "statuses, epochs, checkpoints and notes all stay, in order"
    );
    assert_eq!(replay.iter().filter(|e| e.kind == "epoch").count(), 2);
    assert!(replay.len() <= 20, "{} events for 2 epochs", replay.len());
}

#[tokio::test]
async fn test_idempotency_keys_expire() {
    let server = Server::start_with(options(&["--idempotency-ttl-seconds", "1"])).await;
    let body = r#"{"name": "m", "dataset": "iris", "algorithm": "mlp"}"#;
    let (code, first) = server.post_raw("/api/models", body, Some("key-1")).await;
    assert_eq!(code, 201, "{first}");
    let (code, replayed) = server.post_raw("/api/models", body, Some("key-1")).await;
    assert_eq!((code.as_u16(), &replayed["id"]), (201, &first["id"]));

    // Once the key has expired, the same request is a new request.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (code, again) = server.post_raw("/api/models", body, Some("key-1")).await;
        assert_eq!(code, 201, "{again}");
        if again["id"] != first["id"] {
            break;
        }
        assert!(Instant::now() < deadline, "the key never expired");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
