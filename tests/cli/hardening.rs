//! Issue 8, defects 7 and 10 from the CLI: `models watch` outlives a server restart, and
//! ordinary names and files (spaces, `&`, quoted CSV cells) work.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::client::cli;
use crate::support::{Options, Server};

#[tokio::test]
async fn watch_keeps_following_across_a_server_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(dir.path(), Options::default()).await;
    let addr = server.base.trim_start_matches("http://").to_string();
    let id = server
        .create_model(
            "mnist",
            "mlp",
            serde_json::json!({"epochs": 4, "hidden_layers": [64]}),
        )
        .await;
    server.train(&id).await;
    let watch = Command::new(env!("CARGO_BIN_EXE_trainyard"))
        .args(["models", "watch", &id])
        .env("TRAINYARD_SERVER", &server.base)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    server
        .wait_for_epoch(&id, 1, Duration::from_secs(120))
        .await;
    assert_eq!(server.stop().await, Some(0), "graceful stop");

    let restarted = Server::start_in(
        dir.path(),
        Options {
            addr: Some(addr),
            ..Default::default()
        },
    )
    .await;
    let out = tokio::task::spawn_blocking(move || watch.wait_with_output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("final status: completed"), "{stdout}");
    assert!(
        stderr.contains("reconnecting"),
        "it noticed the server leave: {stderr}"
    );
    let status = restarted
        .wait_for(&id, &["completed"], Duration::from_secs(5))
        .await;
    assert_eq!(status["progress"]["epoch"], 4);
}

#[tokio::test]
async fn names_with_spaces_and_quoted_csv_cells_work() {
    let server = Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("churn.csv");
    let mut text = String::from("\"tenure, months\",spend,churn rate\n");
    for i in 0..120 {
        let c = i % 2;
        text.push_str(&format!(
            "{},\"{}\",{c}\n",
            i % 37,
            (c * 50 + i % 7) as f64 * 1.5
        ));
    }
    std::fs::write(&csv, text).unwrap();
    let up = cli(
        &server,
        &[
            "datasets",
            "upload",
            csv.to_str().unwrap(),
            "--name",
            "churn",
            "--target",
            "churn rate",
            "--output",
            "json",
        ],
    );
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let (_, dataset) = server.get("/api/datasets/churn").await;
    assert_eq!(dataset["target_name"], "churn rate", "{dataset}");

    let id = server
        .create_model(
            "churn",
            "random_forest",
            serde_json::json!({"n_estimators": 5}),
        )
        .await;
    server.train(&id).await;
    server
        .wait_for(&id, &["completed"], Duration::from_secs(60))
        .await;
    let rows = dir.path().join("rows.csv");
    std::fs::write(&rows, "\"tenure, months\",spend\n\"3\",\"6.0\"\n30, 81\n").unwrap();
    let out = cli(
        &server,
        &[
            "models",
            "predict",
            &id,
            "--input",
            rows.to_str().unwrap(),
            "--output",
            "json",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let predicted: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        predicted["predictions"].as_array().unwrap().len(),
        2,
        "{predicted}"
    );
}
