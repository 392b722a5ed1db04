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
    // A form is what a cross-site page could send, so a client says it is not one.
    let r = reqwest::Client::new()
        .post(server.url("/api/datasets"))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .header("x-trainyard-client", "test")
        .body(body.into_bytes())
        .send()
        .await
        .unwrap();
    let code = r.status();
    let out: serde_json::Value = r.json().await.unwrap();
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
        // Without a target every column is a feature (an unlabeled dataset); the error says so.
        (
            "name=ok",
            "x1,label\n1,a\n2,b\n",
            "file",
            "column 'label': 'a' is not a number; features must be numeric; no target",
        ),
        (
            "name=ok&label=x1&target=label",
            "x1,label\n1,a\n2,b\n",
            "label",
            "not both",
        ),
        (
            "name=ok&task=regression",
            "x1,x2\n1,2\n2,3\n",
            "task",
            "target=",
        ),
        (
            "name=ok&target=label&task=clustering",
            "x1,label\n1,a\n2,b\n",
            "task",
            "classification, regression, text or activations",
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

/// A Parquet file of two DOUBLE columns, snappy-compressed, in two row groups.
fn parquet_file(rows: &[(f64, f64)]) -> Vec<u8> {
    use parquet::data_type::DoubleType;
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    let schema = parquet::schema::parser::parse_message_type(
        "message m { REQUIRED DOUBLE temperature; REQUIRED DOUBLE pressure; }",
    )
    .unwrap();
    let props = WriterProperties::builder()
        .set_compression(parquet::basic::Compression::SNAPPY)
        .build();
    let mut bytes = Vec::new();
    let mut writer = SerializedFileWriter::new(&mut bytes, schema.into(), props.into()).unwrap();
    for half in rows.chunks(rows.len().div_ceil(2)) {
        let mut group = writer.next_row_group().unwrap();
        for column in 0..2 {
            let values: Vec<f64> = half
                .iter()
                .map(|r| if column == 0 { r.0 } else { r.1 })
                .collect();
            let mut writer = group.next_column().unwrap().unwrap();
            writer
                .typed::<DoubleType>()
                .write_batch(&values, None, None)
                .unwrap();
            writer.close().unwrap();
        }
        group.close().unwrap();
    }
    writer.close().unwrap();
    bytes
}

#[tokio::test]
async fn a_parquet_upload_trains_like_a_csv() {
    let server = Server::start().await;
    let rows: Vec<(f64, f64)> = (0..300)
        .map(|i| (20.0 + (i % 7) as f64, 1000.0 + (i % 5) as f64))
        .chain([(95.0, 400.0)])
        .collect();
    let (code, body) = server
        .post_bytes(
            "/api/datasets?name=plant",
            "application/vnd.apache.parquet",
            parquet_file(&rows),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(
        (body["n_rows"].as_u64(), body["task"].as_str()),
        (Some(301), Some("unlabeled"))
    );
    assert_eq!(body["feature_names"], json!(["temperature", "pressure"]));
    let id = server
        .create_model("plant", "isolation_forest", json!({}))
        .await;
    server.train(&id).await;
    server
        .wait_for(&id, &["completed"], Duration::from_secs(60))
        .await;
    let (_, answer) = server
        .post(
            &format!("/api/models/{id}/predict"),
            json!({"inputs": [[95.0, 400.0], [22.0, 1002.0]]}),
        )
        .await;
    assert_eq!(answer["predictions"][0]["is_anomaly"], true, "{answer}");
    assert_eq!(answer["predictions"][1]["is_anomaly"], false, "{answer}");

    let mut broken = parquet_file(&rows);
    broken.drain(10..200);
    let (code, err) = server
        .post_bytes(
            "/api/datasets?name=broken",
            "application/octet-stream",
            broken,
        )
        .await;
    assert_eq!(code, 400, "{err}");
    assert_eq!(err["error"]["field"], "file");
}
