//! `precision: "bf16"`: a network's products in bfloat16 (AMX or AVX-512 BF16 where the CPU has
//! them) learn as well as in f32, the run says where they ran, and a precision the service does
//! not have is refused.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::Server;

/// The model as created, its test accuracy and its run's first attempt note.
async fn mnist_accuracy(server: &Server, precision: &str) -> (Value, f64, String) {
    let (status, model) = server
        .post(
            "/api/models",
            json!({"name": format!("mnist-{precision}"), "dataset": "mnist", "algorithm": "mlp",
                   "hyperparameters": {"epochs": 1, "hidden_layers": [128], "precision": precision}}),
        )
        .await;
    assert_eq!(status, 201, "{model}");
    let id = model["id"].as_str().unwrap();
    let run = server.train(id).await;
    let done = server
        .wait_for(id, &["completed", "failed"], Duration::from_secs(300))
        .await;
    assert_eq!(done["status"], "completed", "{done}");
    let accuracy = done["metrics"]["test_accuracy"]
        .as_f64()
        .expect("test_accuracy");
    let run = server.run(&run["id"]).await;
    let note = run["attempts"][0]["note"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    (model, accuracy, note)
}

#[tokio::test]
async fn an_mlp_with_bf16_products_learns_mnist_as_well_as_in_f32() {
    let server = Server::start().await;
    let (model, bf16, note) = mnist_accuracy(&server, "bf16").await;
    assert_eq!(model["hyperparameters"]["precision"], "bf16");
    assert!(
        note.contains("products") && note.contains("bf16"),
        "the run says which instructions ran its products: {note:?}"
    );
    let (model, f32, note) = mnist_accuracy(&server, "fp32").await;
    assert_eq!(model["hyperparameters"]["precision"], "fp32");
    assert!(!note.contains("bf16"), "{note:?}");
    assert!(bf16 > 0.9, "bf16 test accuracy {bf16} (f32 {f32})");
    assert!(
        (bf16 - f32).abs() < 0.01,
        "bf16 {bf16} against f32 {f32}: rounding the products should cost well under a point"
    );
}

#[tokio::test]
async fn an_unknown_precision_is_refused_and_creates_nothing() {
    let server = Server::start().await;
    let (status, body) = server
        .post(
            "/api/models",
            json!({"name": "half", "dataset": "mnist", "algorithm": "cnn",
                   "hyperparameters": {"precision": "fp16"}}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["error"]["field"], "hyperparameters.precision",
        "{body}"
    );
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("fp32, bf16"), "{body}");
    let (status, body) = server
        .post(
            "/api/models",
            json!({"name": "forest", "dataset": "iris", "algorithm": "random_forest",
                   "hyperparameters": {"precision": "bf16"}}),
        )
        .await;
    assert_eq!(status, 400, "a forest has no products to round: {body}");
    assert_eq!(
        body["error"]["field"], "hyperparameters.precision",
        "{body}"
    );
    let (_, models) = server.get("/api/models").await;
    assert_eq!(
        models["total"], 0,
        "no refused request created a model: {models}"
    );
}
