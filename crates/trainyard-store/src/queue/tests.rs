use std::collections::HashSet;
use std::time::Duration;

use serde_json::json;

use crate::{NewModel, RunStart, Store, StoreError};

/// A fresh store: SQLite in a temporary directory, or a new PostgreSQL database when
/// `TRAINYARD_TEST_DATABASE_URL` names a server.
async fn store() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = match std::env::var("TRAINYARD_TEST_DATABASE_URL") {
        Ok(base) => {
            use sqlx::Connection;
            sqlx::any::install_default_drivers();
            let name = format!("ty_unit_{}", uuid::Uuid::now_v7().simple());
            let mut admin = sqlx::AnyConnection::connect(&base).await.unwrap();
            let create = format!("CREATE DATABASE {name}");
            sqlx::raw_sql(sqlx::AssertSqlSafe(create))
                .execute(&mut admin)
                .await
                .unwrap();
            format!("{}/{name}", base.trim_end_matches('/'))
        }
        Err(_) => format!("sqlite://{}", dir.path().join("t.db").display()),
    };
    (Store::open(&url).await.unwrap(), dir)
}

async fn queued_run(store: &Store) -> String {
    let model = store
        .insert_model(NewModel {
            project_id: "default".into(),
            name: "m".into(),
            dataset: "iris".into(),
            algorithm: "mlp".into(),
            hyperparameters: json!({}),
        })
        .await
        .unwrap();
    let started = store
        .create_run(&model.id, "default", &json!({}), 3, false)
        .await
        .unwrap();
    let RunStart::Created(run) = started else {
        panic!("expected a new run, got {started:?}")
    };
    run.id
}

#[tokio::test]
async fn a_second_train_request_returns_the_active_run() {
    let (store, _dir) = store().await;
    let run_id = queued_run(&store).await;
    let run = store.get_run("default", &run_id).await.unwrap().unwrap();
    let again = store
        .create_run(&run.model_id, "default", &json!({}), 3, false)
        .await
        .unwrap();
    let RunStart::Active(again) = again else {
        panic!("expected the active run, got {again:?}")
    };
    assert_eq!(again.id, run_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_job_is_claimed_exactly_once() {
    let (store, _dir) = store().await;
    let mut runs = HashSet::new();
    for _ in 0..20 {
        runs.insert(queued_run(&store).await);
    }
    let mut tasks = Vec::new();
    for w in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            while let Some(job) = store
                .claim_job(&format!("w{w}"), Duration::from_secs(60))
                .await
                .unwrap()
            {
                mine.push(job.run_id);
            }
            mine
        }));
    }
    let mut claimed = Vec::new();
    for t in tasks {
        claimed.extend(t.await.unwrap());
    }
    assert_eq!(claimed.len(), 20, "no job claimed twice");
    assert_eq!(claimed.into_iter().collect::<HashSet<_>>(), runs);
}

#[tokio::test]
async fn an_expired_lease_is_reclaimed_as_a_new_attempt_and_the_old_one_is_fenced() {
    let (store, _dir) = store().await;
    let run_id = queued_run(&store).await;
    let first = store
        .claim_job("dead", Duration::from_millis(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.attempt, 1);
    tokio::time::sleep(Duration::from_millis(5)).await;
    let second = store
        .claim_job("alive", Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.run_id, run_id);
    assert_eq!(second.attempt, 2);

    // The first worker wakes up: every write it tries is refused.
    assert!(matches!(
        store.heartbeat(&first, Duration::from_secs(60)).await,
        Err(StoreError::Fenced { .. })
    ));
    let late = store
        .finish_run(&run_id, first.attempt, "completed", None, None, None)
        .await;
    assert!(matches!(late, Err(StoreError::Fenced { .. })));
    store
        .finish_run(
            &run_id,
            second.attempt,
            "completed",
            Some(&json!({"accuracy": 1.0})),
            None,
            None,
        )
        .await
        .unwrap();

    let attempts = store.attempts(&run_id).await.unwrap();
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0].outcome.as_deref(), Some("lost"));
    assert_eq!(attempts[1].outcome.as_deref(), Some("completed"));
}

#[tokio::test]
async fn released_jobs_go_back_to_the_queue() {
    let (store, _dir) = store().await;
    let run_id = queued_run(&store).await;
    let job = store
        .claim_job("w", Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    store
        .release_job(&job, "server shutting down")
        .await
        .unwrap();
    assert_eq!(
        store
            .get_run("default", &run_id)
            .await
            .unwrap()
            .unwrap()
            .status,
        "pending"
    );
    let again = store
        .claim_job("w2", Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.attempt, 2);
}

#[tokio::test]
async fn cancelling_a_queued_run_is_immediate_and_a_running_one_is_flagged() {
    let (store, _dir) = store().await;
    let queued = queued_run(&store).await;
    assert!(store.request_cancel(&queued).await.unwrap());
    assert_eq!(
        store
            .get_run("default", &queued)
            .await
            .unwrap()
            .unwrap()
            .status,
        "cancelled"
    );
    assert!(
        store
            .claim_job("w", Duration::from_secs(60))
            .await
            .unwrap()
            .is_none()
    );

    let running = queued_run(&store).await;
    let job = store
        .claim_job("w", Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    assert!(!store.request_cancel(&running).await.unwrap());
    assert!(
        store
            .heartbeat(&job, Duration::from_secs(60))
            .await
            .unwrap()
            .cancel_requested
    );
}

#[tokio::test]
async fn a_paused_run_blocks_a_new_run_until_restart_cancels_it() {
    let (store, _dir) = store().await;
    let run_id = queued_run(&store).await;
    let job = store
        .claim_job("w", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    store.pause_run(&job).await.unwrap();
    let model_id = store
        .get_run("default", &run_id)
        .await
        .unwrap()
        .unwrap()
        .model_id;

    let blocked = store
        .create_run(&model_id, "default", &json!({}), 3, false)
        .await
        .unwrap();
    assert!(
        matches!(&blocked, RunStart::Paused(r) if r.id == run_id),
        "{blocked:?}"
    );
    let still = store.get_run("default", &run_id).await.unwrap().unwrap();
    assert_eq!(still.status, "paused");

    let restarted = store
        .create_run(&model_id, "default", &json!({}), 3, true)
        .await
        .unwrap();
    let RunStart::Restarted {
        run: new_run,
        cancelled_run_id,
    } = restarted
    else {
        panic!("expected a restart, got {restarted:?}")
    };
    assert_eq!(cancelled_run_id, run_id);
    assert_ne!(new_run.id, run_id);
    let old = store.get_run("default", &run_id).await.unwrap().unwrap();
    assert_eq!(old.status, "cancelled");
    let attempts = store.attempts(&run_id).await.unwrap();
    assert_eq!(attempts.last().unwrap().outcome.as_deref(), Some("paused"));
}

fn extraction_row(name: &str) -> crate::DatasetRow {
    crate::DatasetRow {
        name: name.into(),
        project_id: "default".into(),
        info: json!({}),
        path: format!("datasets/{name}/"),
        bytes: 0,
        sha256: String::new(),
        created_at: 0,
        status: crate::DATASET_INITIALIZING.into(),
        extraction: Some(json!({"shards_done": 0})),
    }
}

#[tokio::test]
async fn an_extraction_is_leased_to_one_node_until_its_lease_runs_out_or_it_is_given_back() {
    let (store, _dir) = store().await;
    assert!(store.insert_dataset(&extraction_row("acts")).await.unwrap());
    let claimed = store.claim_extraction(60_000).await.unwrap().unwrap();
    assert_eq!(claimed.name, "acts");
    assert!(
        store.claim_extraction(60_000).await.unwrap().is_none(),
        "held"
    );
    let progress = json!({"shards_done": 3});
    assert!(
        store
            .extraction_progress("default", "acts", &progress, 60_000)
            .await
            .unwrap()
    );
    store.release_extraction("default", "acts").await.unwrap();
    let again = store.claim_extraction(-1).await.unwrap().unwrap();
    assert_eq!(
        again.extraction,
        Some(progress),
        "the next node continues from the progress"
    );
    // A lease that ran out (here at once) makes it claimable by another node.
    assert!(store.claim_extraction(60_000).await.unwrap().is_some());
    assert!(store.cancel_extraction("default", "acts").await.unwrap());
    assert!(!store.cancel_extraction("default", "acts").await.unwrap());
    assert!(
        !store
            .extraction_progress("default", "acts", &json!({}), 60_000)
            .await
            .unwrap()
    );
    assert!(
        store.claim_extraction(60_000).await.unwrap().is_none(),
        "cancelled"
    );
    let cancelled = store.get_dataset("default", "acts").await.unwrap().unwrap();
    assert_eq!(cancelled.status, "cancelled");

    assert!(store.insert_dataset(&extraction_row("done")).await.unwrap());
    let row = store.claim_extraction(60_000).await.unwrap().unwrap();
    assert!(
        store
            .finish_extraction(&row, crate::DATASET_READY, &json!({}))
            .await
            .unwrap()
    );
    assert!(
        !store
            .finish_extraction(&row, "failed", &json!({}))
            .await
            .unwrap(),
        "once"
    );
    assert!(store.claim_extraction(-1).await.unwrap().is_none());
}
