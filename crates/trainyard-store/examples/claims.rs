//! Queue throughput: claims per second with 1, 4 and 16 concurrent claimers on one database,
//! checking that each job is claimed exactly once. Each claim is the real `claim_job` (lease,
//! attempt row, run transition) followed by `finish_run`.
//!
//!   cargo run --release -p trainyard-store --example claims -- postgres://postgres@127.0.0.1:5432/claims
//!   cargo run --release -p trainyard-store --example claims -- sqlite:///tmp/claims.db
//!
//! The database must be empty (a fresh one): the example creates its own models and runs.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use trainyard_store::{NewModel, RunStart, Store};

const JOBS: usize = 2_000;

async fn queue_jobs(store: &Store, n: usize) {
    for i in 0..n {
        let model = store
            .insert_model(NewModel {
                project_id: "default".into(),
                name: format!("m{i}"),
                dataset: "iris".into(),
                algorithm: "mlp".into(),
                hyperparameters: json!({}),
            })
            .await
            .expect("inserting a model");
        let started = store
            .create_run(&model.id, "default", &json!({}), 1, false)
            .await
            .expect("queueing a run");
        assert!(matches!(started, RunStart::Created(_)));
    }
}

#[tokio::main]
async fn main() {
    let url = std::env::args()
        .nth(1)
        .expect("usage: claims DATABASE_URL (an empty database)");
    let store = Store::open(&url).await.expect("opening the database");
    println!("{:?}, {JOBS} jobs per round", store.backend());
    for claimers in [1usize, 4, 16] {
        queue_jobs(&store, JOBS).await;
        let seen = Arc::new(Mutex::new(HashSet::new()));
        let started = Instant::now();
        let tasks: Vec<_> = (0..claimers)
            .map(|c| {
                let (store, seen) = (store.clone(), seen.clone());
                tokio::spawn(async move {
                    let worker = format!("bench-{c}");
                    while let Some(job) = store
                        .claim_job(&worker, Duration::from_secs(60))
                        .await
                        .expect("claiming")
                    {
                        assert!(
                            seen.lock().unwrap().insert(job.run_id.clone()),
                            "claimed twice"
                        );
                        store
                            .finish_run(&job.run_id, job.attempt, "completed", None, None, None)
                            .await
                            .expect("finishing");
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("a claimer panicked");
        }
        let seconds = started.elapsed().as_secs_f64();
        let claimed = seen.lock().unwrap().len();
        assert_eq!(claimed, JOBS, "every job claimed exactly once");
        println!(
            "{claimers:>2} claimers: {claimed} jobs claimed and finished once each in {seconds:.2} s = {:.0} claims/s",
            claimed as f64 / seconds
        );
    }
}
