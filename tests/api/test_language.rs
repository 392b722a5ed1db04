//! Language models over HTTP: a transformer trained on the built-in Shakespeare corpus, its
//! metrics, seeded generation, and bad requests refused with the field named.

use std::time::Duration;

use serde_json::json;

use crate::support::Server;

fn tiny() -> serde_json::Value {
    json!({"n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 32, "batch_size": 8,
           "max_steps": 60, "eval_interval": 30, "eval_batches": 2, "warmup_steps": 5,
           "learning_rate": 0.003})
}

#[tokio::test]
async fn a_transformer_trains_on_shakespeare_and_generates_seeded_text() {
    let server = Server::start().await;
    let (code, created) = server
        .post(
            "/api/models",
            json!({"name": "bard", "dataset": "shakespeare", "algorithm": "transformer_lm", "hyperparameters": tiny()}),
        )
        .await;
    assert_eq!(code, 201, "{created}");
    let hp = &created["hyperparameters"];
    assert_eq!(hp["n_embd"], 32);
    assert_eq!(hp["weight_decay"], 0.1, "defaults are filled in: {hp}");
    let id = created["id"].as_str().unwrap();
    server.train(id).await;
    let status = server
        .wait_for(id, &["completed", "failed"], Duration::from_secs(180))
        .await;
    assert_eq!(status["status"], "completed", "{status}");
    let metrics = &status["metrics"];
    let val_loss = metrics["val_loss"].as_f64().unwrap();
    assert!(val_loss < (85f64).ln(), "it learned something: {metrics}");
    assert!((metrics["perplexity"].as_f64().unwrap() - val_loss.exp()).abs() < 1e-6);
    assert_eq!(metrics["steps"], 60.0);
    let (_, history) = server.get(&format!("/api/models/{id}/metrics")).await;
    assert_eq!(
        history["epochs"].as_array().map(Vec::len),
        Some(2),
        "an entry per evaluation: {history}"
    );

    let ask = json!({"prompt": "ROMEO:\n", "max_new_tokens": 40, "temperature": 0.8, "top_k": 10, "seed": 3});
    let generate = format!("/api/models/{id}/generate");
    let (code, first) = server.post(&generate, ask.clone()).await;
    assert_eq!(code, 200, "{first}");
    assert_eq!(first["tokens"], 40);
    assert_eq!(first["text"].as_str().unwrap().chars().count(), 40);
    assert_eq!(first["prompt_truncated"], false);
    let (_, again) = server.post(&generate, ask).await;
    assert_eq!(
        again["text"], first["text"],
        "a seeded request repeats exactly"
    );
    let long_prompt = "To be, or not to be. ".repeat(10);
    let (code, truncated) = server
        .post(
            &generate,
            json!({"prompt": long_prompt, "max_new_tokens": 5}),
        )
        .await;
    assert_eq!(code, 200);
    assert_eq!(
        truncated["prompt_truncated"], true,
        "the response says the prompt was cut"
    );

    for (body, field) in [
        (json!({"prompt": ""}), "prompt"),
        (
            json!({"prompt": "a", "max_new_tokens": 0}),
            "max_new_tokens",
        ),
        (json!({"prompt": "a", "temperature": -1}), "temperature"),
        (json!({"prompt": "a", "top_k": 0}), "top_k"),
    ] {
        let (code, err) = server.post(&generate, body.clone()).await;
        assert_eq!(code, 400, "{body}: {err}");
        assert_eq!(err["error"]["field"], field, "{body}: {err}");
    }
    let (code, err) = server
        .post(
            &format!("/api/models/{id}/predict"),
            json!({"inputs": [[1.0]]}),
        )
        .await;
    assert_eq!(code, 400, "a language model does not predict rows: {err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("generate")
    );
}

#[tokio::test]
async fn language_models_and_text_refuse_what_does_not_fit() {
    let server = Server::start().await;
    for (dataset, algorithm, hp, field) in [
        ("iris", "transformer_lm", json!({}), "dataset"),
        ("shakespeare", "mlp", json!({}), "algorithm"),
        ("shakespeare", "isolation_forest", json!({}), "dataset"),
        (
            "shakespeare",
            "transformer_lm",
            json!({"n_embd": 30, "n_head": 4}),
            "hyperparameters.n_embd",
        ),
        (
            "shakespeare",
            "transformer_lm",
            json!({"block_size": 5000, "n_layer": 1}),
            "hyperparameters.block_size",
        ),
        ("shakespeare", "transformer_lm", json!({"lr": 0.1}), "lr"),
    ] {
        let (code, err) = server
            .post(
                "/api/models",
                json!({"name": "x", "dataset": dataset, "algorithm": algorithm, "hyperparameters": hp}),
            )
            .await;
        assert_eq!(code, 400, "{dataset}/{algorithm} {hp}: {err}");
        assert_eq!(
            err["error"]["field"], field,
            "{dataset}/{algorithm} {hp}: {err}"
        );
    }
    let tabular = server
        .create_model("iris", "mlp", json!({"epochs": 2}))
        .await;
    server.train(&tabular).await;
    server
        .wait_for(&tabular, &["completed"], Duration::from_secs(60))
        .await;
    let (code, err) = server
        .post(
            &format!("/api/models/{tabular}/generate"),
            json!({"prompt": "hello"}),
        )
        .await;
    assert_eq!(code, 400, "{err}");
    assert_eq!(err["error"]["field"], "model");
}
