//! Datasets from users: upload (raw or multipart), validation, use in models, limits, delete.

use std::time::Duration;

use serde_json::json;

use crate::support::{Options, Server};

/// Two well-separated classes, with a header and the label in the middle column.
fn blobs_csv(rows: usize) -> String {
    let mut csv = String::from("x1,label,x2\n");
    for i in 0..rows {
        let class = i % 2;
        let jitter = (i as f64 * 0.37).sin();
        csv.push_str(&format!(
            "{:.3},{},{:.3}\n",
            class as f64 * 4.0 + jitter,
            if class == 0 { "cat" } else { "dog" },
            jitter - class as f64 * 3.0
        ));
    }
    csv
}

#[tokio::test]
async fn an_uploaded_csv_trains_and_predicts_like_a_built_in() {
    let server = Server::start().await;
    let (code, body) = server
        .post_bytes(
            "/api/datasets?name=blobs&target=label",
            "text/csv",
            blobs_csv(300).into_bytes(),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["task"], "classification");
    assert_eq!(body["n_rows"], 300);
    assert_eq!(body["feature_names"], json!(["x1", "x2"]));
    assert_eq!(body["classes"], json!(["cat", "dog"]));

    let (_, list) = server.get("/api/datasets").await;
    assert!(
        list["datasets"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["name"] == "blobs" && d["builtin"] == false)
    );
    let (code, one) = server.get("/api/datasets/blobs").await;
    assert_eq!(
        (code.as_u16(), one["target_name"].as_str()),
        (200, Some("label"))
    );

    let id = server
        .create_model("blobs", "mlp", json!({"epochs": 20}))
        .await;
    server.train(&id).await;
    let done = server
        .wait_for(&id, &["completed", "failed"], Duration::from_secs(60))
        .await;
    assert_eq!(done["status"], "completed", "{done}");
    assert!(
        done["metrics"]["accuracy"].as_f64().unwrap() > 0.9,
        "{done}"
    );
    let (code, out) = server
        .post(
            &format!("/api/models/{id}/predict"),
            json!({"inputs": [[4.2, -3.1], [0.1, 0.2]]}),
        )
        .await;
    assert_eq!(code, 200, "{out}");
    assert_eq!(out["predictions"][0]["label"], "dog");
    assert_eq!(out["predictions"][1]["label"], "cat");

    // In use: it cannot be deleted; once its model is gone, it can.
    assert_eq!(server.delete("/api/datasets/blobs").await, 409);
    assert_eq!(server.delete(&format!("/api/models/{id}")).await, 204);
    assert_eq!(server.delete("/api/datasets/blobs").await, 204);
    assert_eq!(server.get("/api/datasets/blobs").await.0, 404);
    assert!(
        !server
            .data_dir
            .join("artifacts/datasets/blobs.csv")
            .exists()
    );
    assert_eq!(server.delete("/api/datasets/blobs").await, 404);
}

#[tokio::test]
async fn multipart_uploads_work_too() {
    let server = Server::start().await;
    let boundary = "XtrainyardX";
    let mut body = String::new();
    for (name, value) in [
        ("name", "blobs-mp"),
        ("target", "label"),
        ("task", "classification"),
    ] {
        body.push_str(&format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
        ));
    }
    body.push_str(&format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"b.csv\"\r\nContent-Type: text/csv\r\n\r\n{}\r\n--{boundary}--\r\n",
        blobs_csv(50)
    ));
    let (code, out) = server
        .post_bytes(
            "/api/datasets",
            &format!("multipart/form-data; boundary={boundary}"),
            body.into_bytes(),
        )
        .await;
    assert_eq!(code, 201, "{out}");
    assert_eq!(out["name"], "blobs-mp");
}

#[tokio::test]
async fn bad_uploads_are_refused_with_the_reason() {
    let server = Server::start().await;
    let cases = [
        (
            "name=ok&target=label",
            "x1,label\n1,a\n2,b\nzz,a\n",
            "file",
            "line 4, column 'x1'",
        ),
        (
            "name=ok&target=nope",
            "x1,label\n1,a\n2,b\n",
            "file",
            "target column not found",
        ),
        ("name=ok&target=label", "", "file", "empty"),
        (
            "name=ok&target=label",
            "x1,label\n1,a\n2,a\n",
            "file",
            "at least 2 classes",
        ),
        (
            "name=ok&target=label",
            "x1,label\n1,a\n2\n",
            "file",
            "line 3",
        ),
        (
            "name=..%2Fevil&target=label",
            "x1,label\n1,a\n2,b\n",
            "name",
            "a-z",
        ),
        (
            "name=UPPER&target=label",
            "x1,label\n1,a\n2,b\n",
            "name",
            "a-z",
        ),
        ("target=label", "x1,label\n1,a\n2,b\n", "name", "required"),
        ("name=ok", "x1,label\n1,a\n2,b\n", "target", "required"),
        (
            "name=ok&target=label&task=clustering",
            "x1,label\n1,a\n2,b\n",
            "task",
            "classification or regression",
        ),
    ];
    for (query, csv, field, message) in cases {
        let (code, err) = server
            .post_bytes(
                &format!("/api/datasets?{query}"),
                "text/csv",
                csv.as_bytes().to_vec(),
            )
            .await;
        assert_eq!(code, 400, "{query}: {err}");
        assert_eq!(err["error"]["field"], field, "{query}: {err}");
        assert!(
            err["error"]["message"].as_str().unwrap().contains(message),
            "{query}: {err}"
        );
    }
    let (code, err) = server
        .post_bytes(
            "/api/datasets?name=iris&target=label",
            "text/csv",
            b"x,label\n1,a\n2,b\n".to_vec(),
        )
        .await;
    assert_eq!(code, 409, "a built-in name: {err}");
    assert_eq!(server.delete("/api/datasets/iris").await, 409);
    let (_, list) = server.get("/api/datasets").await;
    assert!(
        list["datasets"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["builtin"] == true),
        "nothing was stored"
    );
}

#[tokio::test]
async fn uploads_over_the_limit_are_413() {
    let server = Server::start_with(Options {
        max_upload_mb: 1,
        ..Default::default()
    })
    .await;
    let big = blobs_csv(80_000); // about 1.5 MB
    assert!(big.len() > 1024 * 1024);
    let (code, err) = server
        .post_bytes(
            "/api/datasets?name=big&target=label",
            "text/csv",
            big.into_bytes(),
        )
        .await;
    assert_eq!(code, 413, "{err}");
    assert_eq!(err["error"]["code"], "payload_too_large");
    let (code, _) = server
        .post_bytes(
            "/api/datasets?name=small&target=label",
            "text/csv",
            blobs_csv(100).into_bytes(),
        )
        .await;
    assert_eq!(code, 201);
}
