//! Activation datasets over HTTP: extracted from a trained language model by a job (queued,
//! progress, cancel, continued after a stop), listed and deleted like other datasets, and
//! learned by autoencoders exactly as if they had extracted the activations themselves.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{Options, Server};
use crate::test_sae::{learned, sae, trained_autoencoder, trained_language_model};

fn extraction(name: &str, source: &str, extra: Value) -> Value {
    let mut body = json!({"name": name, "kind": "activations", "source_model": source,
        "text_dataset": "shakespeare", "layers": [0, 1], "n_tokens": 4096});
    for (key, value) in extra.as_object().unwrap() {
        body[key] = value.clone();
    }
    body
}

/// Polls the dataset until `wanted(dataset)` holds.
async fn wait_for_dataset(server: &Server, name: &str, wanted: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let (code, dataset) = server.get(&format!("/api/datasets/{name}")).await;
        assert_eq!(code, 200, "{dataset}");
        if wanted(&dataset) {
            return dataset;
        }
        assert!(
            Instant::now() < deadline,
            "dataset never got there: {dataset}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The autoencoder `sae` describes, on an activation dataset instead of a corpus.
fn on_dataset(dataset: &str, extra: Value) -> Value {
    let mut body = sae("unused", json!({}));
    body["dataset"] = json!(dataset);
    let hp = body["hyperparameters"].as_object_mut().unwrap();
    hp.remove("source_model");
    hp.remove("n_tokens");
    hp.remove("layers");
    for (key, value) in extra.as_object().unwrap() {
        hp.insert(key.clone(), value.clone());
    }
    body
}

#[tokio::test]
async fn an_extracted_dataset_is_learned_as_if_the_autoencoder_had_extracted_it() {
    let server = Server::start().await;
    let source = trained_language_model(&server).await;

    for (body, field) in [
        (extraction("a", &source, json!({"kind": "table"})), "kind"),
        (extraction("a", &source, json!({"layers": [2]})), "layers"),
        (extraction("a", &source, json!({"layers": []})), "layers"),
        (
            extraction("a", &source, json!({"layers": [1, 1]})),
            "layers",
        ),
        (extraction("a", &source, json!({"site": "nope"})), "site"),
        (extraction("a", &source, json!({"n_tokens": 3})), "n_tokens"),
        (extraction("a", "nope", json!({})), "source_model"),
        (
            extraction("a", &source, json!({"text_dataset": "iris"})),
            "text_dataset",
        ),
        (
            extraction("a", &source, json!({"text_dataset": "nope"})),
            "text_dataset",
        ),
        (extraction("A b", &source, json!({})), "name"),
        (extraction("a", &source, json!({"colour": "red"})), "body"),
    ] {
        let (code, err) = server.post("/api/datasets", body.clone()).await;
        assert_eq!(code, 400, "{body}: {err}");
        assert_eq!(err["error"]["field"], field, "{body}: {err}");
    }
    let (code, err) = server.get("/api/datasets/a").await;
    assert_eq!(code, 404, "a refused request creates nothing: {err}");

    let (code, created) = server
        .post("/api/datasets", extraction("acts", &source, json!({})))
        .await;
    assert_eq!(code, 202, "{created}");
    assert_eq!(created["status"], "initializing");
    assert_eq!(created["extracted_from"]["layers"], json!([0, 1]));
    assert_eq!(created["extracted_from"]["site"], "resid_post");
    assert_eq!(created["n_rows"], 4096);
    let (code, err) = server
        .post("/api/datasets", extraction("acts", &source, json!({})))
        .await;
    assert_eq!(code, 409, "{err}");

    let ready = wait_for_dataset(&server, "acts", |d| d["status"] != "initializing").await;
    assert_eq!(ready["status"], "ready", "{ready}");
    let progress = &ready["extraction"];
    assert_eq!(progress["progress"], 1.0, "{ready}");
    assert_eq!(progress["shards_done"], progress["shards_total"], "{ready}");
    assert_eq!(ready["n_features"], 32, "the source model's width: {ready}");
    assert!(
        ready["bytes"].as_i64().unwrap() > 4096 * 32 * 4 * 2,
        "{ready}"
    );
    let statistics = ready["extracted_from"]["statistics"].as_array().unwrap();
    assert_eq!(statistics.len(), 2, "{ready}");
    for layer in statistics {
        assert!(layer["mean_norm"].as_f64().unwrap() > 0.0, "{layer}");
        assert_eq!(layer["mean"].as_array().unwrap().len(), 32, "{layer}");
    }
    let (_, list) = server.get("/api/datasets").await;
    let listed = list["datasets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "acts")
        .cloned()
        .unwrap();
    assert_eq!(listed["status"], "ready", "{listed}");

    // Contradicting the dataset, or a family that does not learn activations: 400s.
    for (body, field) in [
        (
            on_dataset("acts", json!({"layers": [3]})),
            "hyperparameters.layers",
        ),
        (
            on_dataset("acts", json!({"site": "mlp_out"})),
            "hyperparameters.site",
        ),
        (
            on_dataset("acts", json!({"source_model": "other"})),
            "hyperparameters.source_model",
        ),
    ] {
        let (code, err) = server.post("/api/models", body.clone()).await;
        assert_eq!(code, 400, "{body}: {err}");
        assert_eq!(err["error"]["field"], field, "{body}: {err}");
    }
    let forest = json!({"name": "f", "dataset": "acts", "algorithm": "isolation_forest"});
    let (code, err) = server.post("/api/models", forest).await;
    assert_eq!(
        (code.as_u16(), &err["error"]["field"]),
        (400, &json!("dataset")),
        "{err}"
    );

    // Layer 1 of the dataset is what an autoencoder extracting layer 1 itself reads: the
    // same settings learn the same numbers.
    let (from_dataset, note) =
        trained_autoencoder(&server, on_dataset("acts", json!({"layers": [1]}))).await;
    assert!(note.contains("read from dataset 'acts'"), "{note}");
    let (extracting, _) = trained_autoencoder(&server, sae(&source, json!({}))).await;
    let without_estimate = |metrics: &Value| {
        let mut metrics = learned(metrics);
        metrics
            .as_object_mut()
            .unwrap()
            .remove("memory_estimate_mb");
        metrics
    };
    assert_eq!(
        without_estimate(&from_dataset),
        without_estimate(&extracting)
    );

    // Both layers by default, one autoencoder each.
    let (both, _) = trained_autoencoder(&server, on_dataset("acts", json!({}))).await;
    assert!(
        both["layer0.l0"].is_number() && both["layer1.l0"].is_number(),
        "{both}"
    );

    let code = server.delete("/api/datasets/acts").await;
    assert_eq!(code, 409, "models learn from it");
}

#[tokio::test]
async fn an_extraction_is_cancelled_or_continued_after_a_stop() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(dir.path(), Options::default()).await;
    let source = trained_language_model(&server).await;
    let big = json!({"n_tokens": 2_000_000, "layers": [1]});

    // Cancelled: nothing learns from it, and deleting it removes it.
    let (code, created) = server
        .post(
            "/api/datasets",
            extraction("cancelled", &source, big.clone()),
        )
        .await;
    assert_eq!(code, 202, "{created}");
    let (code, err) = server
        .post("/api/models", on_dataset("cancelled", json!({})))
        .await;
    assert_eq!(code, 409, "still initializing: {err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("initializing"),
        "{err}"
    );
    let (code, cancelled) = server
        .post("/api/datasets/cancelled/cancel", json!({}))
        .await;
    assert_eq!(code, 200, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled");
    let (code, err) = server
        .post("/api/datasets/cancelled/cancel", json!({}))
        .await;
    assert_eq!(code, 409, "{err}");
    let (code, err) = server
        .post("/api/models", on_dataset("cancelled", json!({})))
        .await;
    assert_eq!(code, 409, "{err}");
    assert_eq!(server.delete("/api/datasets/cancelled").await, 204);
    let (code, _) = server.get("/api/datasets/cancelled").await;
    assert_eq!(code, 404);
    let (code, _) = server.post("/api/datasets/nope/cancel", json!({})).await;
    assert_eq!(code, 404);

    // Stopped mid-way: the next server continues at the first shard not stored.
    let long = json!({"n_tokens": 1_000_000, "layers": [1]});
    let (code, created) = server
        .post("/api/datasets", extraction("continued", &source, long))
        .await;
    assert_eq!(code, 202, "{created}");
    let partial = wait_for_dataset(&server, "continued", |d| {
        d["extraction"]["shards_done"].as_u64().unwrap_or(0) >= 3
    })
    .await;
    assert_eq!(server.stop().await, Some(0));
    let done_before = partial["extraction"]["shards_done"].as_u64().unwrap();
    let server = Server::start_in(dir.path(), Options::default()).await;
    let ready = wait_for_dataset(&server, "continued", |d| d["status"] != "initializing").await;
    assert_eq!(ready["status"], "ready", "{ready}");
    let resumed_at = ready["extraction"]["resumed_at"].as_array().unwrap();
    assert_eq!(resumed_at.len(), 1, "{ready}");
    assert!(resumed_at[0].as_u64().unwrap() >= done_before, "{ready}");
    assert_eq!(
        ready["extraction"]["tokens_done"], ready["extraction"]["tokens_total"],
        "{ready}"
    );
    // The continued dataset is whole: it trains.
    let (metrics, _) = trained_autoencoder(&server, on_dataset("continued", json!({}))).await;
    assert!(metrics["layer1.l0"].is_number(), "{metrics}");
}
