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
    let progress = &status["progress"];
    assert_eq!(
        (progress["step"].as_i64(), progress["total_steps"].as_i64()),
        (Some(60), Some(60)),
        "{progress}"
    );
    // Progress between evaluations: steps into the evaluation window under way.
    let events = crate::support::read_sse(
        server.url(&format!("/api/models/{id}/events")),
        None,
        Duration::from_secs(30),
    )
    .await;
    let progress: Vec<_> = events.iter().filter(|e| e.kind == "progress").collect();
    assert!(
        !progress.is_empty(),
        "training reports progress between evaluations"
    );
    assert!(
        progress.iter().all(|e| e.data["data"]["batches"] == 30),
        "{:?}",
        progress[0].data
    );
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

/// A trained tiny model, for the serving tests below.
async fn trained_bard(server: &Server) -> String {
    trained_on(server, "shakespeare", tiny()).await
}

/// A language model trained to completion on `dataset`.
async fn trained_on(server: &Server, dataset: &str, hp: serde_json::Value) -> String {
    let id = server.create_model(dataset, "transformer_lm", hp).await;
    server.train(&id).await;
    let status = server
        .wait_for(&id, &["completed", "failed"], Duration::from_secs(240))
        .await;
    assert_eq!(status["status"], "completed", "{status}");
    id
}

#[tokio::test]
async fn generation_streams_as_server_sent_events_and_ends_at_stop_strings() {
    let server = Server::start().await;
    let id = trained_bard(&server).await;
    let generate = format!("/api/models/{id}/generate");
    let ask = json!({"prompt": "KING:\n", "max_new_tokens": 60, "temperature": 0.9, "top_p": 0.95, "seed": 11});
    let (code, whole) = server.post(&generate, ask.clone()).await;
    assert_eq!(code, 200, "{whole}");
    assert_eq!(whole["finish_reason"], "length");

    let request = reqwest::Client::new()
        .post(server.url(&generate))
        .header("accept", "text/event-stream")
        .json(&ask);
    let events = crate::support::read_sse_from(request, Duration::from_secs(60)).await;
    let (done, tokens) = events.split_last().expect("events arrived");
    assert_eq!(done.kind, "done", "{:?}", done.data);
    assert!(
        tokens.len() > 1,
        "text arrives in pieces: {} events",
        tokens.len()
    );
    assert!(tokens.iter().all(|e| e.kind == "token"));
    let streamed: String = tokens
        .iter()
        .map(|e| e.data["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        streamed, whole["text"],
        "the stream spells the same seeded text"
    );
    assert_eq!(done.data["text"], whole["text"]);
    assert_eq!(done.data["tokens"], 60);

    // Ends before the first stop string, which is not part of the text, streamed or not.
    let text = whole["text"].as_str().unwrap();
    let stop: String = text.chars().skip(10).take(2).collect();
    let cut = text.find(&stop).unwrap();
    let mut with_stop = ask.clone();
    with_stop["stop"] = json!([stop]);
    let (_, stopped) = server.post(&generate, with_stop.clone()).await;
    assert_eq!(stopped["finish_reason"], "stop", "{stopped}");
    assert_eq!(stopped["text"], &text[..cut]);
    let request = reqwest::Client::new()
        .post(server.url(&generate))
        .header("accept", "text/event-stream")
        .json(&with_stop);
    let events = crate::support::read_sse_from(request, Duration::from_secs(60)).await;
    let streamed: String = events
        .iter()
        .filter(|e| e.kind == "token")
        .map(|e| e.data["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        streamed,
        &text[..cut],
        "no part of the stop string is streamed"
    );

    for (body, field) in [
        (json!({"prompt": "a", "top_p": 0}), "top_p"),
        (json!({"prompt": "a", "top_p": 1.5}), "top_p"),
        (json!({"prompt": "a", "stop": [""]}), "stop"),
        (json!({"prompt": "a", "stop": vec!["a"; 9]}), "stop"),
    ] {
        let (code, err) = server.post(&generate, body.clone()).await;
        assert_eq!(code, 400, "{body}: {err}");
        assert_eq!(err["error"]["field"], field, "{body}: {err}");
    }
}

/// The archive's files by name.
pub(crate) fn untar(bytes: &[u8]) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut archive = tar::Archive::new(bytes);
    archive
        .entries()
        .unwrap()
        .map(|entry| {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().to_string_lossy().into_owned();
            let mut content = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut content).unwrap();
            (name, content)
        })
        .collect()
}

#[tokio::test]
async fn a_trained_language_model_exports_a_self_describing_bundle() {
    let server = Server::start().await;
    let untrained = server
        .create_model("shakespeare", "transformer_lm", tiny())
        .await;
    let response = server
        .raw_get(&format!("/api/models/{untrained}/export"))
        .await;
    assert_eq!(response.status(), 409, "nothing to export before training");
    let response = server.raw_get("/api/models/nope/export").await;
    assert_eq!(response.status(), 404);

    let id = trained_bard(&server).await;
    let response = server.raw_get(&format!("/api/models/{id}/export")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/x-tar");
    let bytes = response.bytes().await.unwrap();
    let files = untar(&bytes);
    let names: Vec<&str> = files.keys().map(String::as_str).collect();
    let expected: Vec<String> = [
        "README.md",
        "config.json",
        "metrics.json",
        "model.safetensors",
        "tokenizer.json",
        "training_args.json",
    ]
    .iter()
    .map(|f| format!("{id}/{f}"))
    .collect();
    assert_eq!(names, expected);
    let json = |name: &str| -> serde_json::Value {
        serde_json::from_slice(&files[&format!("{id}/{name}")]).unwrap()
    };
    let config = json("config.json");
    assert_eq!(
        (config["n_embd"].as_u64(), config["block_size"].as_u64()),
        (Some(32), Some(32))
    );
    let (_, status) = server.get(&format!("/api/models/{id}/status")).await;
    assert_eq!(
        json("metrics.json")["val_loss"],
        status["metrics"]["val_loss"]
    );
    assert_eq!(
        json("training_args.json")["hyperparameters"]["max_steps"],
        60
    );
    let vocab = json("tokenizer.json")["model"]["vocab"]
        .as_object()
        .unwrap()
        .len();
    assert_eq!(Some(vocab as u64), config["vocab_size"].as_u64());
    // The weights file names its tensors in a JSON header after an 8-byte length.
    let weights = &files[&format!("{id}/model.safetensors")];
    let header_len = u64::from_le_bytes(weights[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&weights[8..8 + header_len]).unwrap();
    assert_eq!(header["wte.weight"]["shape"], json!([vocab, 32]));
    assert_eq!(header["h.0.attn.q.weight"]["dtype"], "F32");
    let card = String::from_utf8(files[&format!("{id}/README.md")].clone()).unwrap();
    assert!(
        card.contains("shakespeare") && card.contains("Intended use"),
        "{card}"
    );

    let again = server.raw_get(&format!("/api/models/{id}/export")).await;
    assert_eq!(
        again.bytes().await.unwrap(),
        bytes,
        "an export is reproducible"
    );
}

#[tokio::test]
async fn an_uploaded_text_corpus_trains_a_language_model() {
    let server = Server::start().await;
    let verse =
        "Shall I compare thee to a summer's day?\nThou art more lovely and more temperate.\n";
    let corpus = verse.repeat(40);
    let (code, dataset) = server
        .post_bytes(
            "/api/datasets?name=sonnets&task=text",
            "application/octet-stream",
            corpus.clone().into_bytes(),
        )
        .await;
    assert_eq!(code, 201, "{dataset}");
    assert_eq!(dataset["task"], "text");
    assert_eq!(
        dataset["n_rows"],
        corpus.chars().count(),
        "a corpus counts characters"
    );

    for (path, body, field) in [
        (
            "/api/datasets?name=short&task=text",
            b"too short".to_vec(),
            "file",
        ),
        (
            "/api/datasets?name=binary&task=text",
            vec![b'a', 0xff, 0xfe, b'b'],
            "file",
        ),
        (
            "/api/datasets?name=t&task=text&target=y",
            corpus.clone().into_bytes(),
            "file",
        ),
    ] {
        let (code, err) = server
            .post_bytes(path, "application/octet-stream", body)
            .await;
        assert_eq!(code, 400, "{path}: {err}");
        assert_eq!(err["error"]["field"], field, "{path}: {err}");
    }
    let (_, list) = server.get("/api/datasets").await;
    let names: Vec<&str> = list["datasets"]
        .as_array()
        .or(list.as_array())
        .unwrap()
        .iter()
        .filter_map(|d| d["name"].as_str())
        .collect();
    assert!(
        !names.contains(&"short") && !names.contains(&"binary"),
        "refusals store nothing: {names:?}"
    );

    let hp = json!({"n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 16, "batch_size": 8,
                    "max_steps": 40, "eval_interval": 20, "eval_batches": 2, "warmup_steps": 5,
                    "learning_rate": 0.01});
    let id = trained_on(&server, "sonnets", hp).await;
    let (code, generated) = server
        .post(
            &format!("/api/models/{id}/generate"),
            json!({"prompt": "Shall I", "max_new_tokens": 30, "temperature": 0}),
        )
        .await;
    assert_eq!(code, 200, "{generated}");
    let text = generated["text"].as_str().unwrap();
    assert!(
        text.chars().all(|c| verse.contains(c)),
        "only the corpus's characters come out: {text:?}"
    );
}

#[tokio::test]
async fn a_student_distils_from_a_trained_teacher_of_its_own_project() {
    let server = Server::start().await;
    let student = |teacher: &str| {
        let mut hp = tiny();
        hp["loss"] = json!("distillation");
        hp["teacher"] = json!(teacher);
        hp["distillation_temperature"] = json!(2.0);
        json!({"name": "student", "dataset": "shakespeare", "algorithm": "transformer_lm", "hyperparameters": hp})
    };
    let (code, err) = server.post("/api/models", student("nope")).await;
    assert_eq!(code, 400, "{err}");
    assert_eq!(err["error"]["field"], "hyperparameters.teacher");
    let untrained = server
        .create_model("shakespeare", "transformer_lm", tiny())
        .await;
    let (code, err) = server.post("/api/models", student(&untrained)).await;
    assert_eq!(code, 409, "a teacher must have finished training: {err}");
    let tabular = server
        .create_model("iris", "mlp", json!({"epochs": 1}))
        .await;
    let (code, err) = server.post("/api/models", student(&tabular)).await;
    assert_eq!(code, 400, "{err}");
    assert!(
        err["error"]["message"].as_str().unwrap().contains("mlp"),
        "{err}"
    );
    let mut unknown = tiny();
    unknown["loss"] = json!("focal");
    let (code, err) = server
        .post("/api/models", json!({"name": "x", "dataset": "shakespeare", "algorithm": "transformer_lm", "hyperparameters": unknown}))
        .await;
    assert_eq!(code, 400);
    let message = err["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("cross_entropy") && message.contains("distillation"),
        "lists the strategies: {err}"
    );

    let teacher = trained_bard(&server).await;
    let (code, created) = server.post("/api/models", student(&teacher)).await;
    assert_eq!(code, 201, "{created}");
    let id = created["id"].as_str().unwrap();
    let run = server.train(id).await;
    let status = server
        .wait_for(id, &["completed", "failed"], Duration::from_secs(180))
        .await;
    assert_eq!(status["status"], "completed", "{status}");
    assert!(
        status["metrics"]["val_loss"].as_f64().unwrap() < (85f64).ln(),
        "{status}"
    );
    // The teacher encoded this corpus with the same tokenizer: the student reuses its tokens.
    let run = server.run(&run["id"]).await;
    assert!(
        run["attempts"][0]["note"]
            .as_str()
            .is_some_and(|n| n.contains("corpus tokens read from the cache")),
        "{run}"
    );

    // Another project cannot name this project's model (last: a key turns on authentication).
    let key = server.create_key("elsewhere", "editor");
    let (code, _, err) = server
        .send(
            reqwest::Method::POST,
            "/api/models",
            Some(&key),
            Some("elsewhere"),
            Some(student(&teacher)),
        )
        .await;
    assert_eq!(code, 400, "another project's model is not there: {err}");
    assert_eq!(err["error"]["field"], "hyperparameters.teacher");
}

#[tokio::test]
async fn a_byte_level_bpe_model_trains_generates_and_exports_its_tokenizer() {
    let server = Server::start().await;
    let mut hp = tiny();
    hp["tokenizer"] = json!("bpe");
    hp["vocab_size"] = json!(400);
    let id = trained_on(&server, "shakespeare", hp).await;
    let (_, status) = server.get(&format!("/api/models/{id}/status")).await;
    assert!(
        status["metrics"]["val_loss"].as_f64().unwrap() < (400f64).ln(),
        "{status}"
    );
    let (code, generated) = server
        .post(
            &format!("/api/models/{id}/generate"),
            json!({"prompt": "ROMEO: ünïcode", "max_new_tokens": 20, "seed": 1}),
        )
        .await;
    assert_eq!(code, 200, "{generated}");
    assert_eq!(generated["tokens"], 20);
    assert!(!generated["text"].as_str().unwrap().is_empty());
    let bytes = server
        .raw_get(&format!("/api/models/{id}/export"))
        .await
        .bytes()
        .await
        .unwrap();
    let files = untar(&bytes);
    let tokenizer: serde_json::Value =
        serde_json::from_slice(&files[&format!("{id}/tokenizer.json")]).unwrap();
    assert_eq!(tokenizer["model"]["type"], "BPE");
    let config: serde_json::Value =
        serde_json::from_slice(&files[&format!("{id}/config.json")]).unwrap();
    assert_eq!(config["tokenizer"], "bpe");
    assert_eq!(config["vocab_size"], 400);
}
