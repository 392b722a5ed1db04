//! Text classifiers over HTTP: labeled texts uploaded as CSV or JSON Lines, a classifier
//! trained on them (from scratch, or from a trained language model with parts frozen), and
//! texts labeled by `predict`.

use std::time::Duration;

use serde_json::json;

use crate::support::Server;

/// Short reviews whose label their words decide.
fn reviews_csv() -> String {
    let good = [
        "a fine and lovely play",
        "great acting, lovely",
        "fine work, great cast",
    ];
    let bad = [
        "a dull and awful play",
        "poor acting, dull",
        "awful work, poor cast",
    ];
    let mut csv = String::from("text,sentiment\n");
    for i in 0..40 {
        csv.push_str(&format!("\"{} {i}\",good\n", good[i % 3]));
        csv.push_str(&format!("\"{} {i}\",bad\n", bad[i % 3]));
    }
    csv
}

fn tiny() -> serde_json::Value {
    json!({"n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 32, "batch_size": 16,
           "max_steps": 80, "eval_interval": 40, "eval_batches": 2, "warmup_steps": 5,
           "learning_rate": 0.005})
}

#[tokio::test]
async fn labeled_texts_train_a_classifier_that_labels_new_texts() {
    let server = Server::start().await;
    let (code, dataset) = server
        .post_bytes(
            "/api/datasets?name=reviews&task=text&target=sentiment",
            "text/csv",
            reviews_csv().into_bytes(),
        )
        .await;
    assert_eq!(code, 201, "{dataset}");
    assert_eq!(dataset["n_rows"], 80);
    assert_eq!(dataset["classes"], json!(["bad", "good"]));
    let (code, err) = server
        .post_bytes(
            "/api/datasets?name=broken&task=text&target=stars",
            "text/csv",
            reviews_csv().into_bytes(),
        )
        .await;
    assert_eq!(code, 400, "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no 'stars' column"),
        "{err}"
    );

    for (dataset, algorithm, field) in [
        ("reviews", "transformer_lm", "dataset"),
        ("shakespeare", "transformer_classifier", "dataset"),
    ] {
        let (code, err) = server
            .post("/api/models", json!({"name": "x", "dataset": dataset, "algorithm": algorithm, "hyperparameters": {}}))
            .await;
        assert_eq!(code, 400, "{dataset}/{algorithm}: {err}");
        assert_eq!(err["error"]["field"], field);
    }
    let mut bad = tiny();
    bad["freeze"] = json!(["blocks.7"]);
    let (code, err) = server
        .post("/api/models", json!({"name": "x", "dataset": "reviews", "algorithm": "transformer_classifier", "hyperparameters": bad}))
        .await;
    assert_eq!(code, 400, "{err}");
    assert_eq!(err["error"]["field"], "hyperparameters.freeze");

    let mut hp = tiny();
    hp["class_weights"] = json!("balanced");
    let id = server
        .create_model("reviews", "transformer_classifier", hp)
        .await;
    server.train(&id).await;
    let status = server
        .wait_for(&id, &["completed", "failed"], Duration::from_secs(180))
        .await;
    assert_eq!(status["status"], "completed", "{status}");
    let metrics = &status["metrics"];
    assert!(metrics["accuracy"].as_f64().unwrap() >= 0.75, "{metrics}");
    assert!(metrics["macro_f1"].as_f64().is_some(), "{metrics}");
    assert_eq!(metrics["truncated_rows"], 0.0);

    let (code, answer) = server
        .post(
            &format!("/api/models/{id}/predict"),
            json!({"inputs": ["a lovely and great play", "an awful, dull and poor play"]}),
        )
        .await;
    assert_eq!(code, 200, "{answer}");
    let predictions = answer["predictions"].as_array().unwrap();
    assert_eq!(predictions[0]["label"], "good", "{answer}");
    assert_eq!(predictions[1]["label"], "bad", "{answer}");
    let p = &predictions[0]["probabilities"];
    let total = p["good"].as_f64().unwrap() + p["bad"].as_f64().unwrap();
    assert!((total - 1.0).abs() < 1e-4, "{p}");
    let (code, err) = server
        .post(
            &format!("/api/models/{id}/predict"),
            json!({"inputs": [[1.0, 2.0]]}),
        )
        .await;
    assert_eq!(code, 400, "rows of numbers are not texts: {err}");

    let response = server.raw_get(&format!("/api/models/{id}/export")).await;
    assert_eq!(response.status(), 200);
    let bytes = response.bytes().await.unwrap();
    let mut archive = tar::Archive::new(&bytes[..]);
    let config = archive
        .entries()
        .unwrap()
        .map(Result::unwrap)
        .find(|e| e.path().unwrap().ends_with("config.json"))
        .map(|mut e| {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut e, &mut text).unwrap();
            serde_json::from_str::<serde_json::Value>(&text).unwrap()
        })
        .expect("the bundle has a config.json");
    assert_eq!(config["architecture"], "gpt-classifier");
    assert_eq!(config["classes"], json!(["bad", "good"]));
}

#[tokio::test]
async fn a_classifier_starts_from_a_trained_language_model() {
    let server = Server::start().await;
    let jsonl: String = (0..30)
        .flat_map(|i| {
            [
                format!(
                    "{{\"text\": \"O Romeo, wherefore art thou {i}?\", \"kind\": \"question\"}}\n"
                ),
                format!("{{\"text\": \"Thou art a villain {i}.\", \"kind\": \"statement\"}}\n"),
            ]
        })
        .collect();
    let (code, dataset) = server
        .post_bytes(
            "/api/datasets?name=lines&task=text&target=kind",
            "application/octet-stream",
            jsonl.into_bytes(),
        )
        .await;
    assert_eq!(code, 201, "{dataset}");
    let lm = server
        .create_model(
            "shakespeare",
            "transformer_lm",
            json!({"n_layer": 2, "n_head": 2, "n_embd": 128, "block_size": 64,
            "batch_size": 8, "max_steps": 30, "eval_interval": 30, "eval_batches": 1}),
        )
        .await;
    let mut hp = tiny();
    hp["init_from"] = json!(lm);
    hp["freeze"] = json!(["embeddings"]);
    let body = json!({"name": "c", "dataset": "lines", "algorithm": "transformer_classifier", "hyperparameters": hp});
    let (code, err) = server.post("/api/models", body.clone()).await;
    assert_eq!(code, 409, "the language model must be trained first: {err}");
    server.train(&lm).await;
    server
        .wait_for(&lm, &["completed"], Duration::from_secs(120))
        .await;
    // The parts to freeze are the language model's (two blocks), whatever n_layer says.
    let mut deeper = body.clone();
    deeper["hyperparameters"]["n_layer"] = json!(3);
    deeper["hyperparameters"]["freeze"] = json!(["blocks.2"]);
    let (code, err) = server.post("/api/models", deeper).await;
    assert_eq!(code, 400, "{err}");
    assert_eq!(err["error"]["field"], "hyperparameters.freeze", "{err}");
    let (code, created) = server.post("/api/models", body).await;
    assert_eq!(code, 201, "{created}");
    let id = created["id"].as_str().unwrap();
    server.train(id).await;
    let status = server
        .wait_for(id, &["completed", "failed"], Duration::from_secs(180))
        .await;
    assert_eq!(status["status"], "completed", "{status}");
    // The memory estimate is of the body it really trained: the language model's, larger
    // than the one its own hyperparameters describe; and not a fifth under what it held.
    let metrics = &status["metrics"];
    let estimate = metrics["memory_estimate_mb"].as_f64().expect("an estimate");
    if let Some(peak) = metrics["memory_peak_mb"].as_f64() {
        assert!(estimate >= 0.8 * peak, "{metrics}");
    }
    let plain = server
        .create_model("lines", "transformer_classifier", tiny())
        .await;
    server.train(&plain).await;
    let plain = server
        .wait_for(&plain, &["completed"], Duration::from_secs(180))
        .await;
    let plain_estimate = plain["metrics"]["memory_estimate_mb"].as_f64().unwrap();
    assert!(estimate > plain_estimate, "{estimate} vs {plain_estimate}");
    let (_, answer) = server
        .post(
            &format!("/api/models/{id}/predict"),
            json!({"inputs": ["Art thou mad?"]}),
        )
        .await;
    assert!(answer["predictions"][0]["label"].is_string(), "{answer}");
}
