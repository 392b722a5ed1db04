//! Trainyard's server: the HTTP API (axum) over the store, and the worker pool that trains
//! queued runs with the engine. The server knows nothing of tensors; the engine nothing of HTTP.

pub mod access;
pub mod api;
pub mod artifacts;
pub mod cache;
pub mod datasets;
pub mod error;
pub mod events;
pub mod extraction;
pub mod gc;
pub mod state;
pub mod supervisor;
pub mod views;
pub mod worker;

use std::future::Future;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::sync::{Notify, watch};
use trainyard_store::Store;

use crate::artifacts::ArtifactStore;
pub use crate::artifacts::install_crypto_provider as install_tls_provider;
pub use crate::state::ServerConfig;
use crate::state::{AppState, SharedState};

/// The process-wide metrics recorder, installed once even when states are built concurrently.
fn prometheus() -> anyhow::Result<PrometheusHandle> {
    static HANDLE: Mutex<Option<PrometheusHandle>> = Mutex::new(None);
    let mut handle = HANDLE.lock().unwrap();
    if let Some(h) = handle.as_ref() {
        return Ok(h.clone());
    }
    let installed = PrometheusBuilder::new()
        .install_recorder()
        .context("installing the metrics recorder")?;
    *handle = Some(installed.clone());
    Ok(installed)
}

/// The shared state of one server process.
pub(crate) fn app_state(
    config: ServerConfig,
    store: Store,
    artifacts: Arc<dyn ArtifactStore>,
    tails_events: bool,
) -> anyhow::Result<SharedState> {
    let cache_bytes = config.cache_mb << 20;
    let access = state::AccessState::new(&config);
    Ok(Arc::new(AppState {
        access,
        config,
        store,
        artifacts,
        controls: Default::default(),
        job_queued: Notify::new(),
        predictors: cache::ByteLru::new(cache_bytes),
        prometheus: prometheus()?,
        shutdown: watch::channel(false).0,
        idempotency_locks: Default::default(),
        events: events::bus(),
        open_streams: Default::default(),
        published_here: tails_events.then(Default::default),
        uploaded: cache::ByteLru::new(cache_bytes),
    }))
}

/// Opens the data directory, the database and the artifact store a process works on.
async fn open_state(config: &ServerConfig, tails_events: bool) -> anyhow::Result<SharedState> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating the data directory {}", config.data_dir.display()))?;
    let store = Store::open(&config.database_url).await.with_context(|| {
        format!(
            "opening the database {}; check --database-url and the directory's permissions",
            config.database_url
        )
    })?;
    let artifacts = config
        .artifacts
        .open()
        .with_context(|| format!("opening the artifact store {}", config.artifacts))?;
    app_state(config.clone(), store, artifacts, tails_events)
}

/// A name unique to this process for its workers' leases.
fn process_name(label: &str) -> String {
    format!(
        "{label}-{}-{}",
        std::process::id(),
        &uuid::Uuid::now_v7().simple().to_string()[24..]
    )
}

/// Starts `config.workers` worker loops, leasing jobs as `{prefix}-w{i}`.
/// A process with workers also runs activation extractions, one at a time.
fn spawn_workers(state: &SharedState, prefix: &str) -> Vec<tokio::task::JoinHandle<()>> {
    let stop_rx = state.shutdown.subscribe();
    let mut tasks: Vec<_> = (0..state.config.workers)
        .map(|i| {
            tokio::spawn(worker::worker_loop(
                state.clone(),
                format!("{prefix}-w{i}"),
                stop_rx.clone(),
            ))
        })
        .collect();
    if state.config.workers > 0 {
        tasks.push(tokio::spawn(extraction::run_extractions(
            state.clone(),
            stop_rx,
        )));
    }
    tasks
}

/// Waits for the workers until `deadline`: training reaches a checkpoint and its jobs go back
/// to the queue; a worker still busy then leaves its lease to expire.
async fn stop_workers(
    state: &SharedState,
    workers: Vec<tokio::task::JoinHandle<()>>,
    deadline: tokio::time::Instant,
) {
    if tokio::time::timeout_at(deadline, futures_join(workers))
        .await
        .is_err()
    {
        tracing::warn!(grace = ?state.config.shutdown_grace, "training did not stop in time; its leases will expire and it will run again");
    }
}

/// `trainyard worker`: runs jobs from the shared queue and nothing else, until `shutdown`
/// resolves; then it pauses running training at a batch boundary (checkpointing it) and puts
/// those jobs back in the queue, as `serve` does. Its jobs are leased as `{name}-w{i}`.
pub async fn work(
    config: ServerConfig,
    name: Option<String>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let state = open_state(&config, false).await?;
    let name = name.unwrap_or_else(|| process_name("worker"));
    let workers = spawn_workers(&state, &name);
    tracing::info!(slots = config.workers, database = %config.database_url, "trainyard worker ready");
    println!("trainyard worker ready with {} slots", config.workers);
    shutdown.await;
    tracing::info!("shutting down: no new jobs; pausing running training");
    state.begin_shutdown();
    let deadline = tokio::time::Instant::now() + config.shutdown_grace;
    stop_workers(&state, workers, deadline).await;
    state.store.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// Opens the database, starts the workers and serves HTTP until `shutdown` resolves. Then it
/// stops taking jobs, lets in-flight requests finish, pauses running training at a batch
/// boundary (checkpointing it) and puts those jobs back in the queue.
pub async fn serve(
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .with_context(|| {
            format!(
                "binding {}; is another server using that port? pass --addr",
                config.addr
            )
        })?;
    let addr = listener.local_addr()?;
    let state = open_state(&config, true).await?;
    match state.store.fail_interrupted_score_jobs().await {
        Ok(0) => {}
        Ok(n) => tracing::warn!(
            jobs = n,
            "score jobs interrupted by the last stop were marked failed"
        ),
        Err(e) => tracing::warn!(error = %e, "could not check for interrupted score jobs"),
    }
    let stop_rx = state.shutdown.subscribe();
    let workers = spawn_workers(&state, &process_name("serve"));
    let children = match (&config.worker_program, config.worker_processes) {
        (Some(program), n) if n > 0 => Some(tokio::spawn(supervisor::supervise(
            state.clone(),
            program.clone(),
            n,
            stop_rx.clone(),
        ))),
        _ => None,
    };
    let janitor = tokio::spawn(maintenance_loop(state.clone(), stop_rx.clone()));
    let tailer = tokio::spawn(events::tail_other_processes(state.clone(), stop_rx.clone()));

    tracing::info!(%addr, workers = config.workers, data_dir = %config.data_dir.display(), "trainyard ready");
    println!("trainyard listening on http://{addr}");
    let app = api::router(state.clone());
    let stopping = state.clone();
    let mut serving = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down: no new jobs; pausing running training; closing streams");
            stopping.begin_shutdown();
        })
        .await
    });
    let mut stop = state.shutdown.subscribe();
    let served = tokio::select! {
        served = &mut serving => Some(served),
        _ = stop.wait_for(|stopping| *stopping) => None,
    };
    state.begin_shutdown();
    // Everything after the signal (open requests and streams, training reaching a checkpoint)
    // shares one grace period.
    let deadline = tokio::time::Instant::now() + config.shutdown_grace;
    let served = match served {
        Some(served) => Some(served),
        None => match tokio::time::timeout_at(deadline, &mut serving).await {
            Ok(served) => Some(served),
            Err(_) => {
                tracing::warn!(
                    "open requests did not finish within the grace period; closing them"
                );
                serving.abort();
                None
            }
        },
    };
    let _ = janitor.await;
    let _ = tailer.await;
    stop_workers(&state, workers, deadline).await;
    if let Some(children) = children {
        let _ = children.await;
    }
    state.store.close().await;
    tracing::info!("stopped");
    if let Some(served) = served {
        served
            .context("the HTTP server task")?
            .context("serving HTTP")?;
    }
    Ok(())
}

async fn futures_join(handles: Vec<tokio::task::JoinHandle<()>>) {
    for h in handles {
        let _ = h.await;
    }
}

/// Periodic housekeeping: expired idempotency keys go, finished runs' progress events are
/// compacted, and artifacts no row references are collected.
async fn maintenance_loop(state: SharedState, mut stop: watch::Receiver<bool>) {
    let config = &state.config;
    let every = (config.idempotency_ttl / 4)
        .min(config.compact_events_after / 2)
        .clamp(
            std::time::Duration::from_millis(250),
            std::time::Duration::from_secs(600),
        );
    loop {
        if let Err(e) = state
            .store
            .expire_idempotency_keys(config.idempotency_ttl)
            .await
        {
            tracing::warn!(error = %e, "expiring idempotency keys failed");
        }
        match state
            .store
            .compact_finished_runs(config.compact_events_after)
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::debug!(events = n, "compacted finished runs' progress events"),
            Err(e) => tracing::warn!(error = %e, "compacting events failed"),
        }
        match gc::collect(&state, config.gc_grace).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(files = n, "removed artifacts no row references"),
            Err(e) => {
                tracing::warn!(error = %e, "artifact garbage collection failed; it runs again")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
    }
}
