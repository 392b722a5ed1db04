//! `trainyard worker`: a process that runs training jobs from the shared queue and nothing else.
//! Point it at the same database and data directory as `serve` (or `serve --workers 0`).

use std::path::PathBuf;
use std::time::Duration;

use trainyard_server::ServerConfig;

#[derive(clap::Args)]
pub struct WorkerArgs {
    /// The data directory shared with the API (artifacts live in its `artifacts` folder).
    #[arg(long, env = "TRAINYARD_DATA_DIR", default_value = "./trainyard-data")]
    data_dir: PathBuf,
    /// Where artifacts (models, checkpoints, uploads) live: a local path, or
    /// `s3://bucket/prefix` with credentials and endpoint from the AWS_* environment variables
    /// (default: the data directory's `artifacts` folder).
    #[arg(long, env = "TRAINYARD_ARTIFACTS", value_parser = trainyard_server::artifacts::ArtifactLocation::parse)]
    artifacts: Option<trainyard_server::artifacts::ArtifactLocation>,
    /// Database URL; defaults to the SQLite database in the data directory.
    #[arg(long, env = "TRAINYARD_DATABASE_URL")]
    database_url: Option<String>,
    /// This worker's name in job leases and run attempts (default: worker-PID-RANDOM).
    #[arg(long, env = "TRAINYARD_WORKER_NAME")]
    name: Option<String>,
    /// Jobs this process trains at once.
    #[arg(long, env = "TRAINYARD_SLOTS", default_value_t = 1)]
    slots: usize,
    /// Memory one job may use, in MB (default: half of this machine's memory).
    #[arg(long, env = "TRAINYARD_JOB_MEMORY_MB")]
    job_memory_mb: Option<u64>,
    /// Seconds a job's lease lasts without a heartbeat (use the API's value).
    #[arg(long, env = "TRAINYARD_LEASE_SECONDS", default_value_t = 30)]
    lease_seconds: u64,
    /// Seconds shutdown waits for running training to checkpoint and stop.
    #[arg(long, env = "TRAINYARD_SHUTDOWN_GRACE_SECONDS", default_value_t = 30)]
    shutdown_grace_seconds: u64,
    /// Retryable failures (storage errors, lost workers) a run survives before it fails.
    #[arg(long, env = "TRAINYARD_MAX_RESTARTS", default_value_t = 3)]
    max_restarts: u32,
    /// Checkpoints kept per run, newest first.
    #[arg(long, env = "TRAINYARD_KEEP_CHECKPOINTS", default_value_t = 3)]
    keep_checkpoints: usize,
}

pub fn run(args: WorkerArgs) -> anyhow::Result<()> {
    crate::serve::init_logging(false);
    // The address is unused: a worker serves no HTTP.
    let mut config = ServerConfig::new(([127, 0, 0, 1], 0).into(), args.data_dir);
    config.workers = args.slots.max(1);
    if let Some(url) = args.database_url {
        config.database_url = url;
    }
    if let Some(location) = args.artifacts {
        config.artifacts = location;
    }
    if let Some(mb) = args.job_memory_mb {
        config.job_memory_mb = mb.max(1);
    }
    config.lease = Duration::from_secs(args.lease_seconds.max(1));
    config.shutdown_grace = Duration::from_secs(args.shutdown_grace_seconds);
    config.max_restarts = args.max_restarts;
    config.keep_checkpoints = args.keep_checkpoints.max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(trainyard_server::work(
        config,
        args.name,
        crate::serve::shutdown_signal(),
    ))
}
