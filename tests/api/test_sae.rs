//! Sparse autoencoders over HTTP: a language model trained on Shakespeare, an autoencoder on
//! its activations, then its features, their contexts, text encoded through both models, the
//! SAELens export, and bad requests refused with the field named.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::Server;

pub(crate) async fn trained_language_model(server: &Server) -> String {
    let (code, created) = server
        .post(
            "/api/models",
            json!({"name": "source", "dataset": "shakespeare", "algorithm": "transformer_lm",
                   "hyperparameters": {"n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 32,
                   "batch_size": 8, "max_steps": 40, "eval_interval": 40, "eval_batches": 2,
                   "warmup_steps": 5, "learning_rate": 0.003}}),
        )
        .await;
    assert_eq!(code, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    server.train(&id).await;
    let status = server
        .wait_for(&id, &["completed", "failed"], Duration::from_secs(180))
        .await;
    assert_eq!(status["status"], "completed", "{status}");
    id
}

pub(crate) fn sae(source: &str, extra: Value) -> Value {
    let mut hp = json!({"source_model": source, "layers": [1], "n_tokens": 4096,
        "expansion_factor": 4, "k": 8, "batch_size": 256, "max_steps": 60, "log_interval": 30,
        "learning_rate": 0.003, "warmup_steps": 5, "lr_decay_steps": 10});
    for (key, value) in extra.as_object().unwrap() {
        hp[key] = value.clone();
    }
    json!({"name": "features", "dataset": "shakespeare", "algorithm": "sparse_autoencoder",
           "hyperparameters": hp})
}

#[tokio::test]
async fn an_autoencoder_learns_a_language_models_activations_and_shows_its_features() {
    let server = Server::start().await;
    let source = trained_language_model(&server).await;

    for (body, field, code) in [
        (
            sae(&source, json!({"layers": [2]})),
            "hyperparameters.layers",
            400,
        ),
        (
            sae(&source, json!({"expansion_factor": 1, "k": 64})),
            "hyperparameters.k",
            400,
        ),
        (
            sae(&source, json!({"architecture": "gated"})),
            "hyperparameters.architecture",
            400,
        ),
        (
            sae(&source, json!({"source_model": null})),
            "hyperparameters.source_model",
            400,
        ),
        (sae("nope", json!({})), "hyperparameters.source_model", 400),
        (
            sae(&source, json!({"target_l0": 10})),
            "hyperparameters.target_l0",
            400,
        ),
    ] {
        let (got, err) = server.post("/api/models", body.clone()).await;
        assert_eq!(got, code, "{body}: {err}");
        assert_eq!(err["error"]["field"], field, "{body}: {err}");
    }
    let mut on_a_table = sae(&source, json!({}));
    on_a_table["dataset"] = json!("iris");
    let (got, err) = server.post("/api/models", on_a_table).await;
    assert_eq!(
        (got.as_u16(), &err["error"]["field"]),
        (400, &json!("dataset")),
        "{err}"
    );

    let (code, created) = server.post("/api/models", sae(&source, json!({}))).await;
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["hyperparameters"]["architecture"], "topk");
    assert_eq!(created["hyperparameters"]["decoder_norm"], "unit");
    let id = created["id"].as_str().unwrap();
    listing_filters_by_source_model_and_architecture(&server, &source, id).await;
    server.train(id).await;
    let status = server
        .wait_for(id, &["completed", "failed"], Duration::from_secs(300))
        .await;
    assert_eq!(status["status"], "completed", "{status}");
    let metrics = &status["metrics"];
    let l0 = metrics["layer1.l0"].as_f64().unwrap();
    assert!(
        l0 > 0.0 && l0 <= 8.0,
        "topk fires at most k latents: {metrics}"
    );
    let explained = metrics["layer1.val_explained_variance"].as_f64().unwrap();
    assert!(explained > 0.3, "{metrics}");
    let recovered = metrics["layer1.loss_recovered"].as_f64().unwrap();
    assert!(recovered > 0.0 && recovered <= 1.05, "{metrics}");
    for name in [
        "dead_latents",
        "dense_latents",
        "mse",
        "aux_loss",
        "grad_norm",
        "norm_ratio",
    ] {
        assert!(
            metrics[format!("layer1.{name}")].is_number(),
            "{name}: {metrics}"
        );
    }
    let events = crate::support::read_sse(
        server.url(&format!("/api/models/{id}/events")),
        None,
        Duration::from_secs(30),
    )
    .await;
    let preparing: Vec<_> = events.iter().filter(|e| e.kind == "preparing").collect();
    let last = &preparing.last().expect("extraction reports progress").data["data"];
    assert_eq!(last["stage"], "extracting_activations", "{last}");
    assert_eq!(last["done"], last["total"], "extraction finished: {last}");
    let (_, history) = server.get(&format!("/api/models/{id}/metrics")).await;
    assert_eq!(
        history["epochs"].as_array().map(Vec::len),
        Some(2),
        "{history}"
    );

    let (code, page) = server
        .get(&format!("/api/models/{id}/features?sort=frequency&limit=5"))
        .await;
    assert_eq!(code, 200, "{page}");
    assert_eq!(page["total"], 128);
    assert_eq!(page["layer"], 1);
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 5);
    let frequencies: Vec<f64> = items
        .iter()
        .map(|i| i["frequency"].as_f64().unwrap())
        .collect();
    assert!(
        frequencies.windows(2).all(|w| w[0] >= w[1]),
        "{frequencies:?}"
    );
    let (_, second) = server
        .get(&format!(
            "/api/models/{id}/features?sort=frequency&limit=5&offset=5"
        ))
        .await;
    assert_ne!(
        second["items"][0]["index"], items[0]["index"],
        "pages differ"
    );

    let top = items[0]["index"].as_u64().unwrap();
    let (code, feature) = server
        .get(&format!("/api/models/{id}/features/{top}"))
        .await;
    assert_eq!(code, 200, "{feature}");
    let contexts = feature["top_contexts"].as_array().unwrap();
    assert!(!contexts.is_empty(), "{feature}");
    let activations: Vec<f64> = contexts
        .iter()
        .map(|c| c["activation"].as_f64().unwrap())
        .collect();
    assert!(
        activations.windows(2).all(|w| w[0] >= w[1]),
        "strongest first: {activations:?}"
    );
    assert_eq!(activations[0], feature["max_activation"].as_f64().unwrap());
    assert!(
        contexts
            .iter()
            .all(|c| c["token"].as_str().is_some_and(|t| t.chars().count() == 1))
    );
    assert_eq!(
        feature["promoted_tokens"].as_array().map(Vec::len),
        Some(10)
    );

    let (code, encoded) = server
        .post(
            &format!("/api/models/{id}/encode"),
            json!({"text": "ROMEO:", "top": 3}),
        )
        .await;
    assert_eq!(code, 200, "{encoded}");
    let tokens = encoded["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 6);
    assert_eq!(tokens[0]["token"], "R");
    assert!(tokens.iter().all(
        |t| t["active"].as_u64().unwrap() <= 8 && t["features"].as_array().unwrap().len() <= 3
    ));

    let response = server.raw_get(&format!("/api/models/{id}/export")).await;
    assert_eq!(response.status(), 200);
    let files = crate::test_language::untar(&response.bytes().await.unwrap());
    let cfg: Value = serde_json::from_slice(&files[&format!("{id}/layer_1/cfg.json")]).unwrap();
    assert_eq!(
        (cfg["d_in"].as_u64(), cfg["d_sae"].as_u64()),
        (Some(32), Some(128))
    );
    assert_eq!(cfg["hook_name"], "blocks.1.hook_resid_post");
    let weights = &files[&format!("{id}/layer_1/sae_weights.safetensors")];
    let header_len = u64::from_le_bytes(weights[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&weights[8..8 + header_len]).unwrap();
    assert_eq!(header["W_enc"]["shape"], json!([32, 128]));
    assert_eq!(header["W_dec"]["shape"], json!([128, 32]));

    for (path, field, code) in [
        (
            format!("/api/models/{id}/features?layer=0"),
            Some("layer"),
            400,
        ),
        (
            format!("/api/models/{id}/features?sort=loud"),
            Some("sort"),
            400,
        ),
        (
            format!("/api/models/{id}/features?limit=0"),
            Some("limit"),
            400,
        ),
        (format!("/api/models/{id}/features/128"), None, 404),
        (format!("/api/models/{source}/features"), None, 400),
    ] {
        let (got, err) = server.get(&path).await;
        assert_eq!(got, code, "{path}: {err}");
        if let Some(field) = field {
            assert_eq!(err["error"]["field"], field, "{path}: {err}");
        }
    }
    let (code, err) = server
        .post(&format!("/api/models/{id}/encode"), json!({"text": ""}))
        .await;
    assert_eq!(
        (code.as_u16(), &err["error"]["field"]),
        (400, &json!("text")),
        "{err}"
    );
}

pub(crate) async fn trained_autoencoder(server: &Server, body: Value) -> (Value, String) {
    let (code, created) = server.post("/api/models", body).await;
    assert_eq!(code, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let run = server.train(&id).await;
    let status = server
        .wait_for(&id, &["completed", "failed"], Duration::from_secs(300))
        .await;
    assert_eq!(status["status"], "completed", "{status}");
    let run = server.run(&run["id"]).await;
    let note = run["attempts"][0]["note"].as_str().unwrap_or_default();
    (status["metrics"].clone(), note.to_string())
}

/// What an autoencoder learned, without what the machine measured.
pub(crate) fn learned(metrics: &Value) -> Value {
    let mut metrics = metrics.clone();
    metrics
        .as_object_mut()
        .unwrap()
        .retain(|k, _| !k.contains("second") && k != "memory_peak_mb");
    metrics
}

#[tokio::test]
async fn a_second_autoencoder_on_the_same_activations_reads_them_from_the_cache() {
    let server = Server::start().await;
    let source = trained_language_model(&server).await;
    let (first, first_note) = trained_autoencoder(&server, sae(&source, json!({}))).await;
    assert!(!first_note.contains("cache"), "{first_note}");

    // The same source, corpus, layers, site and token count: extraction is skipped, and the
    // activations read back are the very ones extracted, so the same settings learn the same.
    let mut again = sae(&source, json!({}));
    again["name"] = json!("features again");
    let (second, second_note) = trained_autoencoder(&server, again).await;
    assert!(
        second_note.contains("read from the cache"),
        "the second job says where its activations came from: {second_note}"
    );
    assert_eq!(learned(&first), learned(&second));

    // Another layer is other activations: extracted afresh.
    let (_, other_note) = trained_autoencoder(&server, sae(&source, json!({"layers": [0]}))).await;
    assert!(!other_note.contains("cache"), "{other_note}");
}

/// The seed's lifecycle: pending, then initializing while the worker extracts activations,
/// then training. A pause while it initializes stops the extraction (there is nothing to
/// checkpoint yet); resumed, the run prepares again and completes.
#[tokio::test]
async fn a_run_initializes_before_it_trains_and_pauses_while_it_initializes() {
    let server = Server::start().await;
    let source = trained_language_model(&server).await;
    let body = sae(
        &source,
        json!({"n_tokens": 131072, "max_steps": 10, "log_interval": 10}),
    );
    let (code, created) = server.post("/api/models", body).await;
    assert_eq!(code, 201, "{created}");
    let id = created["id"].as_str().unwrap();
    server.train(id).await;
    let status = server
        .wait_for(id, &["initializing"], Duration::from_secs(60))
        .await;
    assert_eq!(status["progress"]["epoch"], 0, "{status}");
    let (code, paused) = server
        .post(&format!("/api/models/{id}/pause"), json!({}))
        .await;
    assert_eq!(code, 202, "{paused}");
    assert_eq!(paused["status"], "initializing", "{paused}");
    server
        .wait_for(id, &["paused"], Duration::from_secs(120))
        .await;
    let (_, checkpoints) = server.get(&format!("/api/models/{id}/checkpoints")).await;
    assert_eq!(checkpoints["checkpoints"], json!([]), "{checkpoints}");

    let (code, resumed) = server
        .post(&format!("/api/models/{id}/resume"), json!({}))
        .await;
    assert_eq!(code, 202, "{resumed}");
    let done = server
        .wait_for(id, &["completed", "failed"], Duration::from_secs(300))
        .await;
    assert_eq!(done["status"], "completed", "{done}");

    let events = crate::support::read_sse(
        server.url(&format!("/api/models/{id}/events")),
        None,
        Duration::from_secs(30),
    )
    .await;
    let mut statuses: Vec<&str> = Vec::new();
    for event in events.iter().filter(|e| e.kind == "status") {
        let status = event.data["data"]["status"].as_str().unwrap();
        if statuses.last() != Some(&status) {
            statuses.push(status);
        }
    }
    assert_eq!(
        statuses,
        [
            "pending",
            "initializing",
            "paused",
            "pending",
            "initializing",
            "training",
            "completed"
        ]
    );
}

/// The seed's listing filters: by source model and architecture, beside status and dataset.
async fn listing_filters_by_source_model_and_architecture(
    server: &Server,
    source: &str,
    topk: &str,
) {
    let mut body = sae(source, json!({"architecture": "relu"}));
    body["name"] = json!("relu features");
    body["hyperparameters"].as_object_mut().unwrap().remove("k");
    let (code, created) = server.post("/api/models", body).await;
    assert_eq!(code, 201, "{created}");
    let relu = created["id"].as_str().unwrap();
    let ids = |list: &Value| -> Vec<String> {
        list["models"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_string())
            .collect()
    };
    for (query, expected) in [
        (format!("source_model={source}"), vec![relu, topk]),
        ("architecture=topk".to_string(), vec![topk]),
        (
            format!("architecture=relu&source_model={source}"),
            vec![relu],
        ),
        ("architecture=relu&status=pending".to_string(), vec![relu]),
        (format!("source_model={topk}"), vec![]),
        ("architecture=topk&dataset=iris".to_string(), vec![]),
    ] {
        let (code, list) = server.get(&format!("/api/models?{query}")).await;
        assert_eq!(code, 200, "{query}: {list}");
        assert_eq!(ids(&list), expected, "{query}: {list}");
        assert_eq!(list["total"], expected.len(), "{query}: {list}");
    }
    assert_eq!(server.delete(&format!("/api/models/{relu}")).await, 204);
}

/// A `.npy` file of float32 rows: sparse sums of 12 fixed directions in 16 dimensions.
fn npy(rows: usize, shape: &str) -> Vec<u8> {
    let d = 16;
    let direction = |a: usize, j: usize| ((a * 7 + j * 3) as f32 * 0.61).sin();
    let values: Vec<f32> = (0..rows)
        .flat_map(|i| {
            (0..d).map(move |j| {
                let (a, b) = (i % 12, (i * 5 + 3) % 12);
                direction(a, j) + 0.5 * direction(b, j)
            })
        })
        .collect();
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((header.len() as u16).to_le_bytes());
    out.extend(header.as_bytes());
    out.extend(values.iter().flat_map(|v| v.to_le_bytes()));
    out
}

#[tokio::test]
async fn an_autoencoder_learns_an_uploaded_activation_matrix() {
    let server = Server::start().await;
    let upload = "/api/datasets?name=acts&task=activations";
    let (code, err) = server
        .post_bytes(upload, "application/octet-stream", npy(64, "(1024,)"))
        .await;
    assert_eq!(
        (code.as_u16(), &err["error"]["field"]),
        (400, &json!("file")),
        "{err}"
    );
    assert!(
        err["error"]["message"].as_str().unwrap().contains("2-D"),
        "{err}"
    );
    let (code, dataset) = server
        .post_bytes(upload, "application/octet-stream", npy(2048, "(2048, 16)"))
        .await;
    assert_eq!(code, 201, "{dataset}");
    assert_eq!(
        (dataset["n_rows"].as_u64(), dataset["n_features"].as_u64()),
        (Some(2048), Some(16)),
        "{dataset}"
    );

    let model = |hp: Value| {
        json!({"name": "matrix", "dataset": "acts", "algorithm": "sparse_autoencoder",
               "hyperparameters": hp})
    };
    for (hp, field) in [
        (json!({"source_model": "x"}), "hyperparameters.source_model"),
        (json!({"layers": [2]}), "hyperparameters.layers"),
        (json!({"expansion_factor": 1, "k": 17}), "hyperparameters.k"),
    ] {
        let (code, err) = server.post("/api/models", model(hp.clone())).await;
        assert_eq!(
            (code.as_u16(), &err["error"]["field"]),
            (400, &json!(field)),
            "{hp}: {err}"
        );
    }
    let (code, created) = server
        .post(
            "/api/models",
            model(
                json!({"architecture": "relu", "target_l0": 3, "expansion_factor": 2,
                         "batch_size": 128, "max_steps": 300, "log_interval": 100,
                         "learning_rate": 0.003, "warmup_steps": 5, "l1_warmup_steps": 20}),
            ),
        )
        .await;
    assert_eq!(code, 201, "{created}");
    let id = created["id"].as_str().unwrap();
    server.train(id).await;
    let status = server
        .wait_for(id, &["completed", "failed"], Duration::from_secs(120))
        .await;
    assert_eq!(status["status"], "completed", "{status}");
    let metrics = &status["metrics"];
    assert!(
        metrics["layer0.val_explained_variance"].as_f64().unwrap() > 0.5,
        "{metrics}"
    );
    assert!(
        metrics.get("loss_recovered").is_none(),
        "no language model to splice into"
    );

    let (code, answer) = server
        .post(
            &format!("/api/models/{id}/predict"),
            json!({"inputs": [vec![0.5; 16]]}),
        )
        .await;
    assert_eq!(code, 200, "{answer}");
    let first = &answer["predictions"][0];
    assert_eq!(
        first["active"].as_u64().unwrap() as usize,
        first["features"].as_array().unwrap().len()
    );
    let (code, err) = server
        .post(
            &format!("/api/models/{id}/predict"),
            json!({"inputs": [vec![0.5; 15]]}),
        )
        .await;
    assert_eq!(
        (code.as_u16(), &err["error"]["field"]),
        (400, &json!("inputs")),
        "{err}"
    );

    let (_, page) = server
        .get(&format!(
            "/api/models/{id}/features?sort=max_activation&limit=1"
        ))
        .await;
    let top = page["items"][0]["index"].as_u64().unwrap();
    let (code, feature) = server
        .get(&format!("/api/models/{id}/features/{top}"))
        .await;
    assert_eq!(code, 200, "{feature}");
    let rows = feature["top_rows"].as_array().unwrap();
    assert!(
        !rows.is_empty() && rows.iter().all(|r| r["row"].as_u64().unwrap() < 2048),
        "{feature}"
    );
    let (code, err) = server
        .post(&format!("/api/models/{id}/encode"), json!({"text": "hi"}))
        .await;
    assert_eq!(code, 400, "no language model to read text with: {err}");
}
