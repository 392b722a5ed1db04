//! The CLI as a client, end to end against a real server.

use std::process::{Command, Output};

use serde_json::Value;

use crate::support::Server;

/// Runs `trainyard` as a client of `server`.
pub(crate) fn cli(server: &Server, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_trainyard"))
        .args(args)
        .env("TRAINYARD_SERVER", &server.base)
        .output()
        .expect("running trainyard")
}

fn json_of(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[tokio::test]
async fn the_whole_lifecycle_from_the_cli() {
    let server = Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("blobs.csv");
    let mut text = String::from("a,b,y\n");
    for i in 0..200 {
        let c = i % 2;
        text.push_str(&format!(
            "{},{},{}\n",
            c as f64 * 3.0 + (i as f64).sin() * 0.5,
            (i as f64).cos() - c as f64 * 2.0,
            c
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
            "blobs",
            "--target",
            "y",
            "--output",
            "json",
        ],
    );
    assert_eq!(json_of(&up)["n_rows"], 200);
    let listed = cli(&server, &["datasets", "list"]);
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains("blobs"),
        "{listed:?}"
    );

    let created = json_of(&cli(
        &server,
        &[
            "models",
            "create",
            "--name",
            "cli",
            "--dataset",
            "blobs",
            "--algorithm",
            "mlp",
            "--set",
            "epochs=15",
            "--output",
            "json",
        ],
    ));
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(created["hyperparameters"]["epochs"], 15);

    let watched = cli(&server, &["models", "train", &id, "--watch"]);
    let text = String::from_utf8_lossy(&watched.stdout);
    assert!(
        watched.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&watched.stderr)
    );
    assert!(
        text.contains("epoch") && text.contains("final status: completed"),
        "{text}"
    );

    let status = json_of(&cli(
        &server,
        &["models", "status", &id, "--output", "json"],
    ));
    assert_eq!(status["status"], "completed");

    let rows = dir.path().join("rows.csv");
    std::fs::write(&rows, "a,b\n3.1,-2.0\n0.0,1.0\n").unwrap();
    let predicted = json_of(&cli(
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
    ));
    assert_eq!(predicted["predictions"][0]["label"], "1");
    assert_eq!(predicted["predictions"][1]["label"], "0");

    let list = json_of(&cli(&server, &["models", "list", "--output", "json"]));
    assert_eq!(list["total"], 1);
    assert!(cli(&server, &["models", "delete", &id]).status.success());
    assert!(
        cli(&server, &["datasets", "delete", "blobs"])
            .status
            .success()
    );
}

#[tokio::test]
async fn exit_codes_mean_something() {
    let server = Server::start().await;
    let missing = cli(&server, &["models", "show", "nope"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("404"),
        "{missing:?}"
    );
    let bad = cli(
        &server,
        &[
            "models",
            "create",
            "--name",
            "x",
            "--dataset",
            "iris",
            "--algorithm",
            "mlp",
            "--set",
            "epochs=0",
        ],
    );
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("hyperparameters.epochs"),
        "{bad:?}"
    );
    let unreachable = Command::new(env!("CARGO_BIN_EXE_trainyard"))
        .args(["models", "list", "--server", "http://127.0.0.1:9"])
        .output()
        .unwrap();
    assert_eq!(unreachable.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&unreachable.stderr).contains("trainyard serve"));
    let usage = cli(&server, &["models", "frobnicate"]);
    assert_eq!(usage.status.code(), Some(2));
}

#[tokio::test]
async fn pause_resume_and_cancel_from_the_cli() {
    let server = Server::start().await;
    let created = json_of(&cli(
        &server,
        &[
            "models",
            "create",
            "--name",
            "long",
            "--dataset",
            "mnist",
            "--algorithm",
            "mlp",
            "--set",
            "epochs=30",
            "--output",
            "json",
        ],
    ));
    let id = created["id"].as_str().unwrap().to_string();
    assert!(cli(&server, &["models", "train", &id]).status.success());
    server
        .wait_for(&id, &["training"], std::time::Duration::from_secs(30))
        .await;
    assert!(cli(&server, &["models", "pause", &id]).status.success());
    server
        .wait_for(&id, &["paused"], std::time::Duration::from_secs(30))
        .await;
    let again = cli(&server, &["models", "pause", &id]);
    assert_eq!(
        again.status.code(),
        Some(1),
        "pausing a paused run is refused"
    );
    assert!(String::from_utf8_lossy(&again.stderr).contains("paused"));
    assert!(cli(&server, &["models", "resume", &id]).status.success());
    server
        .wait_for(
            &id,
            &["training", "initializing", "pending"],
            std::time::Duration::from_secs(30),
        )
        .await;
    assert!(cli(&server, &["models", "cancel", &id]).status.success());
    let watched = cli(&server, &["models", "watch", &id]);
    assert_eq!(
        watched.status.code(),
        Some(1),
        "a cancelled run is not a success"
    );
    assert!(String::from_utf8_lossy(&watched.stdout).contains("cancelled"));
}

#[tokio::test]
async fn a_language_model_generates_from_the_cli_with_a_key() {
    let server = Server::start().await;
    let key = crate::support::create_key(&server.data_dir, "default", "editor");
    let with_key = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_trainyard"))
            .args(args)
            .env("TRAINYARD_SERVER", &server.base)
            .env("TRAINYARD_API_KEY", &key)
            .output()
            .expect("running trainyard")
    };
    let refused = cli(&server, &["models", "list"]);
    assert_eq!(refused.status.code(), Some(1), "without the key: refused");
    let created = json_of(&with_key(&[
        "models",
        "create",
        "--name",
        "bard",
        "--dataset",
        "shakespeare",
        "--algorithm",
        "transformer_lm",
        "--set",
        "n_layer=1",
        "--set",
        "n_head=2",
        "--set",
        "n_embd=16",
        "--set",
        "block_size=16",
        "--set",
        "max_steps=20",
        "--set",
        "eval_interval=10",
        "--set",
        "eval_batches=1",
        "--output",
        "json",
    ]));
    let id = created["id"].as_str().unwrap().to_string();
    let trained = with_key(&["models", "train", &id, "--watch"]);
    assert!(
        trained.status.success(),
        "{}",
        String::from_utf8_lossy(&trained.stderr)
    );
    let args = [
        "models",
        "generate",
        &id,
        "--prompt",
        "KING:",
        "--max-new-tokens",
        "12",
        "--seed",
        "5",
    ];
    let first = with_key(&args);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let text = String::from_utf8(first.stdout).unwrap();
    assert!(
        text.starts_with("KING:"),
        "the prompt, then its continuation: {text:?}"
    );
    assert_eq!(text.trim_end_matches('\n').chars().count(), 5 + 12);
    let second = with_key(&args);
    assert_eq!(String::from_utf8(second.stdout).unwrap(), text, "seeded");
}

#[tokio::test]
async fn a_sparse_autoencoders_features_show_from_the_cli() {
    let server = Server::start().await;
    let set = |pairs: &[&str]| -> Vec<String> {
        pairs
            .iter()
            .flat_map(|p| ["--set".to_string(), p.to_string()])
            .collect()
    };
    let create = |name: &str, algorithm: &str, settings: Vec<String>| {
        let mut args: Vec<String> = [
            "models",
            "create",
            "--name",
            name,
            "--dataset",
            "shakespeare",
            "--algorithm",
            algorithm,
            "--output",
            "json",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(settings);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        json_of(&cli(&server, &refs))["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let lm = create(
        "source",
        "transformer_lm",
        set(&[
            "n_layer=1",
            "n_head=2",
            "n_embd=16",
            "block_size=16",
            "max_steps=20",
            "eval_interval=20",
            "eval_batches=1",
        ]),
    );
    assert!(
        cli(&server, &["models", "train", &lm, "--watch"])
            .status
            .success()
    );
    let sae = create(
        "features",
        "sparse_autoencoder",
        set(&[
            &format!("source_model={lm}"),
            "n_tokens=2048",
            "batch_size=128",
            "max_steps=20",
            "log_interval=10",
            "k=4",
        ]),
    );
    let trained = cli(&server, &["models", "train", &sae, "--watch"]);
    assert!(
        trained.status.success(),
        "{}",
        String::from_utf8_lossy(&trained.stderr)
    );
    let page = cli(&server, &["models", "features", &sae, "--limit", "3"]);
    let text = String::from_utf8(page.stdout).unwrap();
    assert!(text.starts_with("layer 0: 128 features"), "{text}");
    assert_eq!(
        text.lines().count(),
        2 + 3,
        "a heading, a header and three rows: {text}"
    );
    let one = cli(&server, &["models", "features", &sae, "--index", "0"]);
    let text = String::from_utf8(one.stdout).unwrap();
    assert!(text.starts_with("feature 0 of layer 0"), "{text}");
    let encoded = cli(
        &server,
        &["models", "encode", &sae, "--text", "KING", "--top", "2"],
    );
    let text = String::from_utf8(encoded.stdout).unwrap();
    assert_eq!(text.lines().count(), 4, "one line per character: {text}");
    // The same activations as a dataset of their own, extracted by the server's workers.
    let extracted = cli(
        &server,
        &[
            "datasets",
            "extract",
            "--name",
            "acts",
            "--source-model",
            &lm,
            "--layers",
            "0",
            "--n-tokens",
            "2048",
            "--watch",
        ],
    );
    let text = String::from_utf8_lossy(&extracted.stdout);
    assert!(
        extracted.status.success() && text.contains("acts ready: 2048 tokens x 16"),
        "{text} {}",
        String::from_utf8_lossy(&extracted.stderr)
    );
    let listed = String::from_utf8(cli(&server, &["datasets", "list"]).stdout).unwrap();
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("acts ") && l.contains("2048 rows")),
        "{listed}"
    );
    let finished = cli(&server, &["datasets", "cancel", "acts"]);
    assert_eq!(
        finished.status.code(),
        Some(1),
        "only a running extraction cancels"
    );
}
