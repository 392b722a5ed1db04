//! The model-family seam: a family defined here, in the test suite, registered with a server
//! started in this process, trains, pauses, resumes and predicts through the real HTTP API
//! without a line of server code knowing it.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use trainyard_core::{TrainingEvent, ValidationError};
use trainyard_data::DatasetInfo;
use trainyard_engine::family::{
    Artifact, Families, Family, Finished, Job, Limits, Plan, Reporter, SavedCheckpoint, Served,
    check_rows,
};
use trainyard_engine::{Control, PredictError, Stop, TrainError};

use crate::support::Server;

/// Learns each feature's mean, one row per step; answers each row's distance to the means.
struct ColumnMeans;

#[derive(Serialize, Deserialize)]
struct Progress {
    step: usize,
    sums: Vec<f64>,
}

struct Spec {
    steps: usize,
    /// Wait at this step until asked to stop (so the test can pause a run mid-way).
    hold_at: Option<usize>,
}

fn spec(user: &Map<String, Value>) -> Result<Spec, ValidationError> {
    let mut spec = Spec {
        steps: 20,
        hold_at: None,
    };
    for (key, value) in user {
        let n = value
            .as_u64()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| {
                ValidationError::new(
                    format!("hyperparameters.{key}"),
                    "expected an integer in [1, 1000]",
                )
            })? as usize;
        match key.as_str() {
            "steps" => spec.steps = n,
            "hold_at" => spec.hold_at = Some(n),
            _ => {
                return Err(ValidationError::new(
                    format!("hyperparameters.{key}"),
                    "not a hyperparameter of column_means; allowed: steps, hold_at",
                ));
            }
        }
    }
    Ok(spec)
}

impl Family for ColumnMeans {
    fn name(&self) -> &'static str {
        "test-means"
    }

    fn algorithms(&self) -> Vec<&'static str> {
        vec!["column_means"]
    }

    fn plan(
        &self,
        _: &str,
        _: &DatasetInfo,
        hp: &Map<String, Value>,
        _: &Limits,
    ) -> Result<Plan, ValidationError> {
        let spec = spec(hp)?;
        let mut complete = json!({"steps": spec.steps});
        if let Some(hold_at) = spec.hold_at {
            complete["hold_at"] = json!(hold_at);
        }
        Ok(Plan {
            hyperparameters: complete,
            epochs: 1,
        })
    }

    fn train(
        &self,
        job: Job,
        control: &Control,
        reporter: &mut dyn Reporter,
    ) -> Result<Finished, TrainError> {
        let spec = spec(&job.hyperparameters).map_err(|e| TrainError::Fit(e.to_string()))?;
        let table = &job.dataset.table;
        let d = table.n_features;
        let resumed = job.resume.is_some();
        let mut progress = match job.resume {
            Some(bytes) => {
                serde_json::from_slice(&bytes).map_err(|e| TrainError::Resume(e.to_string()))?
            }
            None => Progress {
                step: 0,
                sums: vec![0.0; d],
            },
        };
        while progress.step < spec.steps {
            if spec.hold_at == Some(progress.step) && !resumed {
                while control.requested().is_none() {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            match control.requested() {
                Some(Stop::Cancel) => return Ok(Finished::Cancelled),
                Some(Stop::Pause) => {
                    let bytes = serde_json::to_vec(&progress).unwrap();
                    let saved = SavedCheckpoint {
                        epoch: 0,
                        step: progress.step as u64,
                        bytes,
                    };
                    reporter
                        .checkpoint(&saved)
                        .map_err(TrainError::Checkpoint)?;
                    return Ok(Finished::Paused);
                }
                None => {}
            }
            let row = table.row(progress.step % table.len());
            for (sum, v) in progress.sums.iter_mut().zip(row) {
                *sum += *v as f64;
            }
            progress.step += 1;
            reporter.event(TrainingEvent::Progress {
                epoch: 1,
                batch: progress.step as u32,
                batches: spec.steps as u32,
                fraction: progress.step as f64 / spec.steps as f64,
            });
        }
        let means: Vec<f64> = progress
            .sums
            .iter()
            .map(|s| s / spec.steps as f64)
            .collect();
        let model = json!({"means": means, "names": job.dataset.info.feature_names});
        Ok(Finished::Completed(Artifact {
            bytes: serde_json::to_vec(&model).unwrap(),
            metrics: [("steps".to_string(), spec.steps as f64)].into(),
        }))
    }

    fn checkpoint_position(&self, bytes: &[u8]) -> Result<(u32, u64), String> {
        let p: Progress = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        Ok((0, p.step as u64))
    }

    fn load(&self, bytes: &[u8]) -> Result<Arc<dyn Served>, PredictError> {
        let model: MeansModel =
            serde_json::from_slice(bytes).map_err(|e| PredictError::Artifact(e.to_string()))?;
        Ok(Arc::new(model))
    }
}

#[derive(Deserialize)]
struct MeansModel {
    means: Vec<f64>,
    names: Vec<String>,
}

impl Served for MeansModel {
    fn predict(&self, rows: &[Vec<f64>]) -> Result<Vec<Value>, PredictError> {
        check_rows(rows, &self.names)?;
        Ok(rows
            .iter()
            .map(|r| {
                let d: f64 = r
                    .iter()
                    .zip(&self.means)
                    .map(|(x, m)| (x - m).powi(2))
                    .sum();
                json!({"distance": d.sqrt()})
            })
            .collect())
    }

    fn output_columns(&self) -> Vec<String> {
        vec!["distance".into()]
    }

    fn feature_names(&self) -> Vec<String> {
        self.names.clone()
    }
}

/// Serves the built-in families plus `ColumnMeans` in this process, on a free port.
async fn start_with_test_family() -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut config = trainyard_server::ServerConfig::new(addr, dir.path().to_path_buf());
    config.families = Families::builtin().with(Arc::new(ColumnMeans));
    if let [_, url] = crate::support::database_args(dir.path()).as_slice() {
        config.database_url = url.clone();
    }
    tokio::spawn(trainyard_server::serve(config, std::future::pending()));
    let server = Server::at(format!("http://{addr}"), dir.path().to_path_buf());
    for _ in 0..500 {
        if let Ok(r) = reqwest::get(server.url("/health")).await
            && r.status().is_success()
        {
            return (server, dir);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the in-process server did not come up on {addr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_family_from_outside_the_server_trains_pauses_resumes_and_predicts() {
    let (server, _dir) = start_with_test_family().await;
    let (_, doc) = server.get("/openapi.json").await;
    let algorithms =
        &doc["components"]["schemas"]["CreateModel"]["properties"]["algorithm"]["enum"];
    assert!(
        algorithms
            .as_array()
            .unwrap()
            .contains(&json!("column_means")),
        "{algorithms}"
    );
    let (status, err) = server
        .post("/api/models", json!({"name": "m", "dataset": "iris", "algorithm": "column_means", "hyperparameters": {"bogus": 1}}))
        .await;
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["error"]["field"], "hyperparameters.bogus");

    let straight = server
        .create_model("iris", "column_means", json!({"steps": 30}))
        .await;
    server.train(&straight).await;
    server
        .wait_for(&straight, &["completed"], Duration::from_secs(30))
        .await;

    let held = server
        .create_model("iris", "column_means", json!({"steps": 30, "hold_at": 12}))
        .await;
    server.train(&held).await;
    // The run holds at step 12 of 30 (40%) until it is paused.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, status) = server.get(&format!("/api/models/{held}/status")).await;
        if status["progress"]["percent"].as_f64().unwrap_or(0.0) >= 40.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never reached step 12: {status}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (status, body) = server
        .post(&format!("/api/models/{held}/pause"), json!({}))
        .await;
    assert!(status.is_success(), "{body}");
    server
        .wait_for(&held, &["paused"], Duration::from_secs(30))
        .await;
    let (_, checkpoints) = server.get(&format!("/api/models/{held}/checkpoints")).await;
    assert_eq!(checkpoints["checkpoints"][0]["step"], 12, "{checkpoints}");
    let (status, body) = server
        .post(&format!("/api/models/{held}/resume"), json!({}))
        .await;
    assert!(status.is_success(), "{body}");
    server
        .wait_for(&held, &["completed"], Duration::from_secs(30))
        .await;
    let (_, model) = server.get(&format!("/api/models/{held}/status")).await;
    assert_eq!(model["metrics"]["steps"], 30.0);

    let inputs = json!({"inputs": [[5.0, 3.0, 1.5, 0.2], [7.0, 3.2, 6.0, 2.0]]});
    let (_, a) = server
        .post(&format!("/api/models/{straight}/predict"), inputs.clone())
        .await;
    let (status, b) = server
        .post(&format!("/api/models/{held}/predict"), inputs)
        .await;
    assert_eq!(status, 200, "{b}");
    assert!(b["predictions"][0]["distance"].as_f64().unwrap() > 0.0);
    assert_eq!(
        a["predictions"], b["predictions"],
        "paused and resumed, the model is the same"
    );
    let (status, err) = server
        .post(
            &format!("/api/models/{held}/predict"),
            json!({"inputs": [[1.0]]}),
        )
        .await;
    assert_eq!(
        (status.as_u16(), err["error"]["field"].as_str()),
        (400, Some("inputs"))
    );
}
