use std::time::Duration;

use serde_json::json;

use crate::support::Server;

#[tokio::test]
async fn cancelling_a_running_model_stops_it_within_a_batch() {
    let server = Server::start().await;
    let id = server
        .create_model("mnist", "mlp", json!({"epochs": 50}))
        .await;
    server.train(&id).await;
    server
        .wait_for(&id, &["training"], Duration::from_secs(30))
        .await;
    server.wait_for_epoch(&id, 1, Duration::from_secs(60)).await;
    let (status, body) = server
        .post(&format!("/api/models/{id}/cancel"), json!({}))
        .await;
    assert_eq!(status, 202, "{body}");
    let asked_at = body["progress"]["percent"].as_f64().unwrap();
    let done = server
        .wait_for(&id, &["cancelled"], Duration::from_secs(30))
        .await;
    // Within a batch: the run did not get through another epoch (2% of 50) after the request.
    let stopped_at = done["progress"]["percent"].as_f64().unwrap();
    assert!(
        stopped_at - asked_at < 2.0,
        "asked at {asked_at}%, stopped at {stopped_at}%"
    );
    assert!(done["finished_at"].is_string());
    let run_id = done["run_id"].as_str().unwrap();
    let (_, run) = server.get(&format!("/api/runs/{run_id}")).await;
    assert_eq!(run["attempts"][0]["outcome"], "cancelled");
}

#[tokio::test]
async fn cancelling_a_queued_model_is_immediate() {
    let server = Server::start_with(crate::support::Options {
        workers: 0,
        ..Default::default()
    })
    .await;
    let id = server.create_model("iris", "mlp", json!({})).await;
    server.train(&id).await;
    let (status, body) = server
        .post(&format!("/api/models/{id}/cancel"), json!({}))
        .await;
    assert_eq!(status, 202);
    assert_eq!(body["status"], "cancelled");
}
