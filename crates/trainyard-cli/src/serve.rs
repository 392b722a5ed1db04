//! `trainyard serve`: the API and the training workers on embedded defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use trainyard_server::ServerConfig;

#[derive(clap::Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "TRAINYARD_ADDR", default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// Holds the SQLite database, artifacts and logs.
    #[arg(long, env = "TRAINYARD_DATA_DIR", default_value = "./trainyard-data")]
    data_dir: PathBuf,
    /// Where artifacts (models, checkpoints, uploads) live: a local path, or
    /// `s3://bucket/prefix` with credentials and endpoint from the AWS_* environment variables
    /// (default: the data directory's `artifacts` folder).
    #[arg(long, env = "TRAINYARD_ARTIFACTS", value_parser = trainyard_server::artifacts::ArtifactLocation::parse)]
    artifacts: Option<trainyard_server::artifacts::ArtifactLocation>,
    /// Training jobs run at once, each in a worker process this server supervises (a job that
    /// crashes its process takes down only its worker, which is restarted); 0 runs the API
    /// alone, with `trainyard worker` processes on the same database doing the training.
    #[arg(long, env = "TRAINYARD_WORKERS", default_value_t = 2)]
    workers: usize,
    /// Train inside the API process instead of in worker processes (no crash isolation).
    #[arg(long, env = "TRAINYARD_IN_PROCESS")]
    in_process: bool,
    /// Database URL; defaults to SQLite in the data directory.
    #[arg(long, env = "TRAINYARD_DATABASE_URL")]
    database_url: Option<String>,
    /// Seconds a job's lease lasts without a heartbeat before another worker may take it over.
    #[arg(long, env = "TRAINYARD_LEASE_SECONDS", default_value_t = 30)]
    lease_seconds: u64,
    /// Seconds shutdown waits for running training to checkpoint and stop.
    #[arg(long, env = "TRAINYARD_SHUTDOWN_GRACE_SECONDS", default_value_t = 30)]
    shutdown_grace_seconds: u64,
    /// Retryable failures (storage errors, lost workers) a run survives before it fails.
    #[arg(long, env = "TRAINYARD_MAX_RESTARTS", default_value_t = 3)]
    max_restarts: u32,
    /// First retry delay in milliseconds; doubles with each failure.
    #[arg(long, env = "TRAINYARD_RETRY_BACKOFF_MS", default_value_t = 1000)]
    retry_backoff_ms: u64,
    /// Checkpoints kept per run, newest first.
    #[arg(long, env = "TRAINYARD_KEEP_CHECKPOINTS", default_value_t = 3)]
    keep_checkpoints: usize,
    /// Largest dataset upload in MB; larger uploads answer 413.
    #[arg(long, env = "TRAINYARD_MAX_UPLOAD_MB", default_value_t = 100)]
    max_upload_mb: usize,
    /// Memory one training job may use, in MB (default: half of this machine's memory). A job
    /// that cannot fit even at batch size 1 is refused when it is created or trained; one that
    /// fits at a smaller batch trains at that batch and says so.
    #[arg(long, env = "TRAINYARD_JOB_MEMORY_MB")]
    job_memory_mb: Option<u64>,
    /// Memory for decoded models and for parsed uploads, in MB each (least recently used out).
    #[arg(long, env = "TRAINYARD_CACHE_MB", default_value_t = 256)]
    cache_mb: usize,
    /// Seconds an `Idempotency-Key` response is kept and replayed (default 24 hours).
    #[arg(
        long,
        env = "TRAINYARD_IDEMPOTENCY_TTL_SECONDS",
        default_value_t = 86_400
    )]
    idempotency_ttl_seconds: u64,
    /// Seconds after a run ends that its progress events are compacted away (its statuses,
    /// epochs, checkpoints and notes stay).
    #[arg(
        long,
        env = "TRAINYARD_COMPACT_EVENTS_AFTER_SECONDS",
        default_value_t = 60
    )]
    compact_events_after_seconds: u64,
    /// Seconds an artifact no database row references must age before it is removed (files a
    /// killed worker wrote but never recorded, interrupted writes).
    #[arg(long, env = "TRAINYARD_GC_GRACE_SECONDS", default_value_t = 3600)]
    gc_grace_seconds: u64,
    /// Require an API key on every request even before any key exists (always on when
    /// listening beyond loopback; create the first key with `trainyard keys create`).
    #[arg(long, env = "TRAINYARD_REQUIRE_AUTH")]
    require_auth: bool,
    /// A host name this server answers to (repeatable); requests naming another `Host` are
    /// refused (DNS rebinding). Loopback names are always allowed on a loopback address.
    #[arg(
        long = "allowed-host",
        env = "TRAINYARD_ALLOWED_HOSTS",
        value_delimiter = ','
    )]
    allowed_hosts: Vec<String>,
    /// Requests per minute one API key may make (0: unlimited); more answer 429.
    #[arg(long, env = "TRAINYARD_RATE_LIMIT_PER_MINUTE", default_value_t = 6000)]
    rate_limit_per_minute: u32,
    /// Failed authentications per minute one address may make before it gets 429.
    #[arg(long, env = "TRAINYARD_AUTH_FAILURES_PER_MINUTE", default_value_t = 30)]
    auth_failures_per_minute: u32,
    /// Event streams and WebSocket sessions one key (or the keyless local user) may hold open.
    #[arg(long, env = "TRAINYARD_MAX_STREAMS_PER_KEY", default_value_t = 64)]
    max_streams_per_key: usize,
    /// Seconds any request but an event stream or WebSocket may take before it is stopped
    /// with a 503.
    #[arg(long, env = "TRAINYARD_REQUEST_TIMEOUT_SECONDS", default_value_t = 120)]
    request_timeout_seconds: u64,
    /// Log as JSON lines instead of text.
    #[arg(long, env = "TRAINYARD_LOG_JSON")]
    log_json: bool,
}

pub fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TRAINYARD_LOG")
        .unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    init_logging(args.log_json);
    let mut config = ServerConfig::new(args.addr, args.data_dir);
    if args.in_process {
        config.workers = args.workers;
    } else {
        config.workers = 0;
        config.worker_processes = args.workers;
        if args.workers > 0 {
            config.worker_program = Some(
                std::env::current_exe()
                    .map_err(|e| anyhow::anyhow!("locating this program: {e}"))?,
            );
        }
    }
    if let Some(url) = args.database_url {
        config.database_url = url;
    }
    if let Some(location) = args.artifacts {
        config.artifacts = location;
    }
    config.lease = Duration::from_secs(args.lease_seconds.max(1));
    config.shutdown_grace = Duration::from_secs(args.shutdown_grace_seconds);
    config.max_restarts = args.max_restarts;
    config.retry_backoff = Duration::from_millis(args.retry_backoff_ms);
    config.keep_checkpoints = args.keep_checkpoints.max(1);
    config.max_upload_mb = args.max_upload_mb;
    if let Some(mb) = args.job_memory_mb {
        config.job_memory_mb = mb.max(1);
    }
    config.cache_mb = args.cache_mb;
    config.idempotency_ttl = Duration::from_secs(args.idempotency_ttl_seconds.max(1));
    config.compact_events_after = Duration::from_secs(args.compact_events_after_seconds);
    config.gc_grace = Duration::from_secs(args.gc_grace_seconds);
    config.require_auth = config.require_auth || args.require_auth;
    config.allowed_hosts = args.allowed_hosts;
    config.rate_limit_per_minute = args.rate_limit_per_minute;
    config.auth_failures_per_minute = args.auth_failures_per_minute;
    config.max_streams_per_key = args.max_streams_per_key.max(1);
    config.request_timeout = Duration::from_secs(args.request_timeout_seconds.max(1));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(trainyard_server::serve(config, shutdown_signal()))
}
