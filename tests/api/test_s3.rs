//! Artifacts in a real S3-compatible bucket (s3s-fs): uploads, models and checkpoints land in the
//! bucket under the configured prefix and nowhere on the server's disk, serving reads them back,
//! deleting a model deletes its objects, and objects no row references are collected.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{Options, S3Fs, Server, artifact_files, s3fs_binary};

/// The s3s-fs binary, or a loud skip (a failure in CI, which installs it).
fn s3fs_or_skip(test: &str) -> Option<PathBuf> {
    let found = s3fs_binary();
    if found.is_none() {
        assert!(
            std::env::var("TRAINYARD_STRICT_SKIPS").is_err(),
            "{test}: no s3s-fs binary; install it with `cargo install s3s-fs@0.14.1 --features binary`"
        );
        eprintln!(
            "SKIPPED {test}: no s3s-fs binary (cargo install s3s-fs@0.14.1 --features binary, or set TRAINYARD_TEST_S3FS)"
        );
    }
    found
}

/// Every object under `dir` (a folder s3s-fs serves), as keys relative to it.
fn objects(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, p: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(p).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                out.push(path.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

async fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn artifacts_live_in_the_bucket_and_leave_with_their_model() {
    let Some(binary) = s3fs_or_skip("artifacts_live_in_the_bucket_and_leave_with_their_model")
    else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("models")).unwrap();
    let s3 = S3Fs::start(&binary, root.path());
    let prefix = root.path().join("models/team-a");
    let server = Server::start_with(Options {
        extra_args: [
            "--artifacts",
            "s3://models/team-a",
            "--compact-events-after-seconds",
            "1",
            "--gc-grace-seconds",
            "1",
        ]
        .map(String::from)
        .to_vec(),
        env: s3.env(),
        ..Options::default()
    })
    .await;

    let (code, body) = server
        .upload_csv(
            "pairs",
            "&target=y",
            "x,y\n1,2\n2,4\n3,6\n4,8\n5,10\n6,12\n",
        )
        .await;
    assert_eq!(code, 201, "{body}");
    let uploaded = objects(&prefix);
    assert!(
        uploaded.iter().any(|k| k.starts_with("datasets/")),
        "the upload is an object in the bucket: {uploaded:?}"
    );

    let id = server
        .create_model("iris", "mlp", json!({"epochs": 3}))
        .await;
    server.train(&id).await;
    let status = server
        .wait_for(&id, &["completed"], Duration::from_secs(120))
        .await;
    let run = status["run_id"].as_str().unwrap().to_string();
    let stored = objects(&prefix);
    assert!(
        stored
            .iter()
            .any(|k| k.starts_with(&format!("runs/{run}/model-a")) && k.ends_with(".tym")),
        "the model is an object under the prefix: {stored:?}"
    );
    assert!(
        stored
            .iter()
            .any(|k| k.starts_with(&format!("runs/{run}/checkpoints/"))),
        "checkpoints are objects under the prefix: {stored:?}"
    );
    assert_eq!(
        artifact_files(&server.data_dir),
        Vec::<PathBuf>::new(),
        "nothing is written to the server's disk"
    );

    let (code, body) = server
        .post(
            &format!("/api/models/{id}/predict"),
            json!({"inputs": [[5.1, 3.5, 1.4, 0.2]]}),
        )
        .await;
    assert_eq!(code, 200, "serving reads the model from the bucket: {body}");
    let (_, listed) = server.get(&format!("/api/models/{id}/checkpoints")).await;
    let checkpoint = listed["checkpoints"][0]["id"].as_str().unwrap();
    let download = server
        .raw_get(&format!("/api/models/{id}/checkpoints/{checkpoint}"))
        .await;
    assert_eq!(download.status(), 200);
    assert!(!download.bytes().await.unwrap().is_empty());

    // What a worker killed between its upload and its fenced publish leaves behind.
    let orphan = prefix.join(format!(
        "runs/{run}/checkpoints/a009-s0000000099-deadbeef.tyck"
    ));
    std::fs::write(&orphan, b"left behind").unwrap();
    wait_until(
        "the orphaned object is collected",
        Duration::from_secs(30),
        || !orphan.exists(),
    )
    .await;
    let (code, _) = server
        .post(
            &format!("/api/models/{id}/predict"),
            json!({"inputs": [[5.1, 3.5, 1.4, 0.2]]}),
        )
        .await;
    assert_eq!(code, 200, "collection keeps the objects rows reference");

    assert_eq!(server.delete(&format!("/api/models/{id}")).await, 204);
    let left: Vec<String> = objects(&prefix)
        .into_iter()
        .filter(|k| k.starts_with(&format!("runs/{run}/")))
        .collect();
    assert_eq!(
        left,
        Vec::<String>::new(),
        "deleting the model deletes its objects"
    );
}

#[tokio::test]
async fn an_unreachable_store_fails_the_run_with_what_to_do() {
    let Some(binary) = s3fs_or_skip("an_unreachable_store_fails_the_run_with_what_to_do") else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("models")).unwrap();
    let s3 = S3Fs::start(&binary, root.path());
    let server = Server::start_with(Options {
        extra_args: ["--artifacts", "s3://models", "--max-restarts", "0"]
            .map(String::from)
            .to_vec(),
        env: s3.env(),
        ..Options::default()
    })
    .await;
    let id = server
        .create_model("iris", "mlp", json!({"epochs": 2}))
        .await;
    // The store goes away before training writes anything.
    drop(s3);
    server.train(&id).await;
    let status = server
        .wait_for(&id, &["failed"], Duration::from_secs(120))
        .await;
    let error = status["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("S3 bucket 'models'"),
        "the failure names the store: {status}"
    );
    let (code, body) = server.get("/health").await;
    assert_eq!(code, 200, "the API stays up without its store: {body}");
}
