use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::Notify;
use trainyard_engine::Control;
use trainyard_engine::family::{Families, Limits, Served};
use trainyard_store::Store;

use crate::access::limits::RateLimiter;
use crate::artifacts::{ArtifactLocation, ArtifactStore};
use crate::cache::ByteLru;

/// How the server runs; every field has a flag and an environment variable in the CLI.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    /// Where artifacts live: the data directory's `artifacts` folder unless told otherwise.
    pub artifacts: ArtifactLocation,
    pub workers: usize,
    pub database_url: String,
    /// A job whose worker stops heartbeating for this long is run again.
    pub lease: Duration,
    pub heartbeat: Duration,
    /// How long shutdown waits for running training to checkpoint and stop.
    pub shutdown_grace: Duration,
    pub project: String,
    /// Retryable failures (storage errors, lost workers) a run survives before failing.
    pub max_restarts: u32,
    /// First retry delay; doubles with each failure.
    pub retry_backoff: Duration,
    /// Checkpoints kept per run (newest first).
    pub keep_checkpoints: usize,
    /// Largest dataset upload, in MB (larger answers 413).
    pub max_upload_mb: usize,
    /// Memory one training job may use, in MB: larger jobs train at a smaller batch size or
    /// are refused at create/train time.
    pub job_memory_mb: u64,
    /// Memory for decoded models and for parsed uploads, in MB each.
    pub cache_mb: usize,
    /// How long a stored `Idempotency-Key` response is replayed.
    pub idempotency_ttl: Duration,
    /// How long after a run ends its progress events are compacted away.
    pub compact_events_after: Duration,
    /// How old an artifact no row references must be before garbage collection removes it.
    pub gc_grace: Duration,
    /// The model families this server trains and serves.
    pub families: Families,
    /// Child worker processes `serve` runs and supervises (0: none), and the program they run
    /// (`trainyard` itself, whose `worker` command they are).
    pub worker_processes: usize,
    pub worker_program: Option<PathBuf>,
    /// Require an API key on every request even while no key exists (always true when the
    /// server listens beyond loopback; once any key exists, keys are required anyway).
    pub require_auth: bool,
    /// Host names this server answers to beyond loopback names (DNS-rebinding defence).
    pub allowed_hosts: Vec<String>,
    /// Requests per minute one key may make (0: unlimited).
    pub rate_limit_per_minute: u32,
    /// Failed authentications per minute one address may make before it is refused.
    pub auth_failures_per_minute: u32,
    /// Event streams and WebSocket sessions one key may hold open at once.
    pub max_streams_per_key: usize,
    /// How long any request but a stream may take.
    pub request_timeout: Duration,
}

impl ServerConfig {
    pub fn new(addr: SocketAddr, data_dir: PathBuf) -> Self {
        let database_url = format!("sqlite://{}", data_dir.join("trainyard.db").display());
        ServerConfig {
            addr,
            artifacts: ArtifactLocation::Local(data_dir.join("artifacts")),
            data_dir,
            workers: 2,
            database_url,
            lease: Duration::from_secs(30),
            heartbeat: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(30),
            project: "default".into(),
            max_restarts: 3,
            retry_backoff: Duration::from_secs(1),
            keep_checkpoints: 3,
            max_upload_mb: 100,
            job_memory_mb: default_job_memory_mb(),
            cache_mb: 256,
            idempotency_ttl: Duration::from_secs(24 * 3600),
            compact_events_after: Duration::from_secs(60),
            gc_grace: Duration::from_secs(3600),
            families: Families::builtin(),
            worker_processes: 0,
            worker_program: None,
            require_auth: !addr.ip().is_loopback(),
            allowed_hosts: Vec::new(),
            rate_limit_per_minute: 6000,
            auth_failures_per_minute: 30,
            max_streams_per_key: 64,
            request_timeout: Duration::from_secs(120),
        }
    }

    /// What every job may use, whatever its family.
    pub fn limits(&self) -> Limits {
        Limits {
            job_memory_mb: self.job_memory_mb,
            batch_halvings: 0,
        }
    }
}

pub struct AppState {
    pub config: ServerConfig,
    pub store: Store,
    pub artifacts: Arc<dyn ArtifactStore>,
    /// Controls of the runs this process is training, so cancel takes effect within a batch
    /// instead of waiting for the next heartbeat.
    pub controls: Mutex<HashMap<String, Arc<Control>>>,
    /// Wakes an idle worker as soon as a job is queued.
    pub job_queued: Notify,
    /// Decoded models by run id, so predictions do not reload weights.
    pub predictors: ByteLru<Arc<dyn Served>>,
    pub prometheus: PrometheusHandle,
    /// Becomes true when shutdown begins: workers pause their runs, streams close.
    pub shutdown: tokio::sync::watch::Sender<bool>,
    pub idempotency_locks: crate::api::KeyLocks,
    /// Parsed uploaded datasets by stored file and content hash.
    pub uploaded: ByteLru<Arc<trainyard_data::Dataset>>,
    /// Stream sessions open on this process (a session serves one connection at a time).
    pub open_streams: Mutex<std::collections::HashSet<String>>,
    /// Ids of events this process wrote and broadcast, not yet passed by the tailer of
    /// events from other processes (None in a worker process, which tails nothing).
    pub published_here: Option<Mutex<std::collections::BTreeSet<i64>>>,
    /// In-process fan-out of newly recorded events.
    pub events: tokio::sync::broadcast::Sender<std::sync::Arc<trainyard_store::EventRow>>,
    pub access: AccessState,
}

/// What access control remembers between requests.
pub struct AccessState {
    /// Verified keys by token hash, with when they were read from the database.
    pub keys: Mutex<HashMap<String, (std::time::Instant, trainyard_store::KeyRow)>>,
    /// Once a key exists, every request needs one (keys are revoked, never deleted).
    pub keys_exist: std::sync::atomic::AtomicBool,
    pub keys_checked: Mutex<Option<std::time::Instant>>,
    /// Requests per key.
    pub requests: RateLimiter,
    /// Failed authentications per client address.
    pub auth_failures: RateLimiter,
    /// Open streams per key (`access::streams`).
    pub streams: Mutex<HashMap<String, usize>>,
    /// Projects known to exist (they are never deleted).
    pub projects: Mutex<std::collections::HashSet<String>>,
}

impl AccessState {
    pub fn new(config: &ServerConfig) -> Self {
        AccessState {
            keys: Mutex::default(),
            keys_exist: Default::default(),
            keys_checked: Mutex::default(),
            requests: RateLimiter::per_minute(config.rate_limit_per_minute),
            auth_failures: RateLimiter::per_minute(config.auth_failures_per_minute),
            streams: Mutex::default(),
            projects: Mutex::default(),
        }
    }
}

pub type SharedState = Arc<AppState>;

impl AppState {
    /// Starts a graceful shutdown (idempotent).
    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    pub fn control(&self, run_id: &str) -> Option<Arc<Control>> {
        self.controls.lock().unwrap().get(run_id).cloned()
    }
}

/// Half of the machine's memory (MemTotal in /proc/meminfo), or 4 GB where it cannot be read.
pub fn default_job_memory_mb() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(4096, |kb| kb / 1024 / 2)
}
