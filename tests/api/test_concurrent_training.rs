//! TestConcurrentTraining: parallel creates and trains stay isolated and all complete.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::support::Server;

#[tokio::test]
async fn twenty_parallel_creates_and_trains_stay_isolated() {
    let server = Arc::new(Server::start().await);
    let mut tasks = Vec::new();
    for i in 0..20 {
        let server = server.clone();
        tasks.push(tokio::spawn(async move {
            let (dataset, epochs) = if i % 2 == 0 {
                ("iris", 5 + i)
            } else {
                ("synthetic", 2 + i / 4)
            };
            let id = server
                .create_model(dataset, "mlp", json!({"epochs": epochs, "seed": i}))
                .await;
            let run = server.train(&id).await;
            assert_eq!(run["model_id"], id.as_str());
            (id, run["id"].as_str().unwrap().to_string(), dataset, epochs)
        }));
    }
    let mut created = Vec::new();
    for t in tasks {
        created.push(t.await.unwrap());
    }
    let model_ids: HashSet<_> = created.iter().map(|c| c.0.clone()).collect();
    let run_ids: HashSet<_> = created.iter().map(|c| c.1.clone()).collect();
    assert_eq!(model_ids.len(), 20, "model ids are unique");
    assert_eq!(run_ids.len(), 20, "run ids are unique");

    for (id, run_id, dataset, epochs) in &created {
        let status = server
            .wait_for(id, &["completed", "failed"], Duration::from_secs(240))
            .await;
        assert_eq!(status["status"], "completed", "{status}");
        assert_eq!(
            status["run_id"],
            run_id.as_str(),
            "each model reports its own run"
        );
        let (_, model) = server.get(&format!("/api/models/{id}")).await;
        assert_eq!(model["dataset"], *dataset);
        let (_, history) = server.get(&format!("/api/models/{id}/metrics")).await;
        assert_eq!(
            history["epochs"].as_array().unwrap().len(),
            *epochs as usize,
            "{id}: its own epoch count"
        );
    }
    let (_, list) = server.get("/api/models?limit=200").await;
    assert_eq!(list["total"], 20);
}
