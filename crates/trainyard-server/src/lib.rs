//! Trainyard's server: the HTTP API (axum) over the store, and the worker pool that trains
//! queued runs with the engine. The server knows nothing of tensors; the engine nothing of HTTP.

pub mod api;
pub mod artifacts;
pub mod datasets;
pub mod error;
pub mod events;
pub mod state;
pub mod views;
pub mod worker;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use anyhow::Context;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::sync::{Notify, watch};
use trainyard_store::Store;

use crate::artifacts::LocalArtifacts;
pub use crate::state::ServerConfig;
use crate::state::{AppState, SharedState};

fn prometheus() -> anyhow::Result<PrometheusHandle> {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    let handle = PrometheusBuilder::new()
        .install_recorder()
        .context("installing the metrics recorder")?;
    Ok(HANDLE.get_or_init(|| handle).clone())
}

/// The shared state of one server process.
pub(crate) fn app_state(
    config: ServerConfig,
    store: Store,
    artifacts: LocalArtifacts,
) -> anyhow::Result<SharedState> {
    Ok(Arc::new(AppState {
        config,
        store,
        artifacts: Arc::new(artifacts),
        controls: Default::default(),
        job_queued: Notify::new(),
        predictors: Default::default(),
        prometheus: prometheus()?,
        shutting_down: AtomicBool::new(false),
        idempotency_locks: Default::default(),
        events: events::bus(),
        uploaded: Default::default(),
    }))
}

/// Opens the database, starts the workers and serves HTTP until `shutdown` resolves. Then it
/// stops taking jobs, lets in-flight requests finish, pauses running training at a batch
/// boundary (checkpointing it) and puts those jobs back in the queue.
pub async fn serve(
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating the data directory {}", config.data_dir.display()))?;
    let store = Store::open(&config.database_url).await.with_context(|| {
        format!(
            "opening the database {}; check --database-url and the directory's permissions",
            config.database_url
        )
    })?;
    let artifacts = LocalArtifacts::new(config.data_dir.join("artifacts"))
        .context("creating the artifact directory")?;
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .with_context(|| {
            format!(
                "binding {}; is another server using that port? pass --addr",
                config.addr
            )
        })?;
    let addr = listener.local_addr()?;
    let state = app_state(config.clone(), store, artifacts)?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let worker_prefix = format!(
        "{}-{}",
        std::process::id(),
        &uuid::Uuid::now_v7().simple().to_string()[24..]
    );
    let workers: Vec<_> = (0..config.workers)
        .map(|i| {
            tokio::spawn(worker::worker_loop(
                state.clone(),
                format!("{worker_prefix}-w{i}"),
                stop_rx.clone(),
            ))
        })
        .collect();

    tracing::info!(%addr, workers = config.workers, data_dir = %config.data_dir.display(), "trainyard ready");
    println!("trainyard listening on http://{addr}");
    let app = api::router(state.clone());
    let stopping = state.clone();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down: no new jobs; pausing running training");
            stopping.shutting_down.store(true, Ordering::SeqCst);
            let _ = stop_tx.send(true);
        })
        .await
        .context("serving HTTP")?;

    let drain = futures_join(workers);
    if tokio::time::timeout(config.shutdown_grace, drain)
        .await
        .is_err()
    {
        tracing::warn!(grace = ?config.shutdown_grace, "training did not stop in time; its leases will expire and it will run again");
    }
    state.store.close().await;
    tracing::info!("stopped");
    Ok(())
}

async fn futures_join(handles: Vec<tokio::task::JoinHandle<()>>) {
    for h in handles {
        let _ = h.await;
    }
}
