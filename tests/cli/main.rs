//! The `trainyard` command end to end, in real processes: local training, and the client
//! commands against a real server.

#[path = "../api/support.rs"]
#[allow(dead_code)] // shared with the API suite, which uses all of it
mod support;

mod client;
mod doctor;
mod hardening;

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn trainyard(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_trainyard"))
        .args(args)
        .output()
        .expect("running trainyard")
}

fn json_run(args: &[&str]) -> Value {
    let out = trainyard(args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// Final metrics without the measured memory peak, which differs from process to process.
fn learned_final(metrics: &Value) -> Value {
    let mut metrics = metrics.clone();
    metrics.as_object_mut().unwrap().remove("memory_peak_mb");
    metrics
}

/// Epoch metrics without wall-clock fields.
fn learned(report: &Value) -> Vec<Value> {
    report["epochs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let mut e = e.clone();
            let obj = e.as_object_mut().unwrap();
            obj.remove("samples_per_second");
            obj.remove("epoch_seconds");
            obj.remove("memory_peak_mb");
            e
        })
        .collect()
}

#[test]
fn trains_and_reports_json() {
    let report = json_run(&[
        "train",
        "--dataset",
        "iris",
        "--algorithm",
        "mlp",
        "--set",
        "epochs=5",
        "--set",
        "hidden_layers=[16]",
        "--output",
        "json",
    ]);
    assert_eq!(report["epochs"].as_array().unwrap().len(), 5);
    assert_eq!(
        report["hyperparameters"]["hidden_layers"],
        serde_json::json!([16])
    );
    assert!(report["metrics"]["accuracy"].as_f64().unwrap() > 0.5);
}

#[test]
fn every_family_trains_locally() {
    let report = json_run(&[
        "train",
        "--dataset",
        "shuttle",
        "--algorithm",
        "ecod",
        "--set",
        "seed=7",
        "--output",
        "json",
    ]);
    assert_eq!(report["algorithm"], "ecod");
    assert_eq!(report["hyperparameters"]["holdout"], 0.4);
    assert!(
        report["metrics"]["roc_auc"].as_f64().unwrap() >= 0.99,
        "{report}"
    );
    let out = trainyard(&[
        "train",
        "--dataset",
        "shuttle",
        "--algorithm",
        "hbos",
        "--set",
        "n_bins=1",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--set n_bins: must be in [2, 1000]"),
        "{stderr}"
    );
}

#[test]
fn table_output_shows_a_row_per_epoch_and_the_final_metrics() {
    let out = trainyard(&[
        "train",
        "--dataset",
        "synthetic",
        "--algorithm",
        "mlp",
        "--set",
        "epochs=3",
    ]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("train_loss") && text.contains("accuracy"),
        "{text}"
    );
    assert!(
        text.lines()
            .filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
            .count()
            >= 3,
        "{text}"
    );
    assert!(text.contains("finished in"), "{text}");
}

#[test]
fn bad_hyperparameters_fail_with_the_field_named() {
    let out = trainyard(&[
        "train",
        "--dataset",
        "iris",
        "--algorithm",
        "mlp",
        "--set",
        "epochs=0",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("epochs") && err.contains("[1, 100000]"),
        "{err}"
    );
    let out = trainyard(&[
        "train",
        "--dataset",
        "california_housing",
        "--algorithm",
        "logistic_regression",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("classification"));
}

fn remove_checkpoints_after(dir: &Path, epoch: u32) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let e: u32 = name.trim_start_matches("checkpoint-e")[..5]
            .parse()
            .unwrap();
        if e > epoch {
            std::fs::remove_file(entry.path()).unwrap();
        }
    }
}

#[test]
fn resuming_in_a_fresh_process_matches_an_uninterrupted_run() {
    let args = [
        "train",
        "--dataset",
        "wine_quality",
        "--algorithm",
        "mlp",
        "--set",
        "epochs=6",
        "--set",
        "dropout=0.2",
        "--output",
        "json",
    ];
    let straight = json_run(&args);

    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().to_str().unwrap();
    let mut with_ckpt = args.to_vec();
    with_ckpt.extend(["--checkpoint-dir", ckpt]);
    json_run(&with_ckpt);
    // As if the first process had died after epoch 3.
    remove_checkpoints_after(dir.path(), 3);

    let mut resume = args.to_vec();
    resume.extend(["--resume", ckpt]);
    let resumed = json_run(&resume);
    assert_eq!(
        resumed["epochs"].as_array().unwrap().len(),
        3,
        "only epochs 4-6 ran"
    );
    assert_eq!(learned(&resumed)[..], learned(&straight)[3..]);
    assert_eq!(
        learned_final(&resumed["metrics"]),
        learned_final(&straight["metrics"])
    );

    // A damaged newest checkpoint is skipped in favour of the one before it.
    let mut newest: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    newest.sort();
    let last = newest.last().unwrap().clone();
    let mut bytes = std::fs::read(&last).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&last, bytes).unwrap();
    let out = trainyard(&resume);
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("skipping"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fallback: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        learned_final(&fallback["metrics"]),
        learned_final(&straight["metrics"])
    );
}
