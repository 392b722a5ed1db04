//! Trainyard's persistence: models, runs, per-epoch metrics, checkpoints, idempotency keys and
//! the durable job queue, on SQLite (WAL; the embedded default) or PostgreSQL (shared by many
//! API nodes and workers). Every query is written once, with `$N` parameters both understand;
//! migrations have a folder per backend. Every write a worker makes is fenced by the job's
//! attempt number, so a worker that lost its lease cannot overwrite its successor's work.

mod access;
mod datasets;
mod events;
mod idempotency;
mod models;
mod queue;
mod rows;
mod runs;
mod serving;

use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;
use sqlx::{Any, Executor, Transaction};

pub use access::{AuditFilter, AuditRow, KeyRow, NewAudit, NewKey};
pub use datasets::{DATASET_INITIALIZING, DATASET_READY, DatasetRow};
pub use events::EventRow;
pub use idempotency::StoredResponse;
pub use models::{ModelFilter, NewModel};
pub use queue::{ClaimedJob, JobFlags};
pub use rows::{AttemptRow, CheckpointRow, ModelRow, RunRow};
pub use runs::{RunProgress, RunStart, StatusCounts};
pub use serving::{ScoreJobRow, StreamSessionRow};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("attempt {attempt} of run {run_id} no longer holds the job; write refused")]
    Fenced { run_id: String, attempt: i64 },
    #[error("corrupt row: {0}")]
    Corrupt(String),
    #[error("{0}")]
    Config(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

const SQLITE_MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/sqlite/0001_init.sql")),
    (
        2,
        include_str!("../migrations/sqlite/0002_pause_and_notes.sql"),
    ),
    (3, include_str!("../migrations/sqlite/0003_events.sql")),
    (4, include_str!("../migrations/sqlite/0004_datasets.sql")),
    (5, include_str!("../migrations/sqlite/0005_retention.sql")),
    (6, include_str!("../migrations/sqlite/0006_serving.sql")),
    (
        7,
        include_str!("../migrations/sqlite/0007_fenced_attempts.sql"),
    ),
    (8, include_str!("../migrations/sqlite/0008_access.sql")),
    (9, include_str!("../migrations/sqlite/0009_extraction.sql")),
];

const POSTGRES_MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/postgres/0001_init.sql")),
    (
        2,
        include_str!("../migrations/postgres/0002_pause_and_notes.sql"),
    ),
    (3, include_str!("../migrations/postgres/0003_events.sql")),
    (4, include_str!("../migrations/postgres/0004_datasets.sql")),
    (5, include_str!("../migrations/postgres/0005_retention.sql")),
    (6, include_str!("../migrations/postgres/0006_serving.sql")),
    (
        7,
        include_str!("../migrations/postgres/0007_fenced_attempts.sql"),
    ),
    (8, include_str!("../migrations/postgres/0008_access.sql")),
    (
        9,
        include_str!("../migrations/postgres/0009_extraction.sql"),
    ),
];

/// Which database a store talks to, from its URL's scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn of(url: &str) -> Result<Self> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else {
            Err(StoreError::Config(format!(
                "unsupported database URL '{}'; use sqlite://PATH or postgres://USER@HOST/DB",
                url.split('@').next_back().unwrap_or(url)
            )))
        }
    }

    fn migrations(self) -> &'static [(i64, &'static str)] {
        match self {
            Backend::Sqlite => SQLITE_MIGRATIONS,
            Backend::Postgres => POSTGRES_MIGRATIONS,
        }
    }
}

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub(crate) fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

impl Store {
    /// Opens (creating if needed) the database at `url`, e.g. `sqlite://./trainyard-data/trainyard.db`,
    /// and applies pending migrations.
    pub async fn open(url: &str) -> Result<Self> {
        let store = Self::connect(url, true).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Opens an existing database as it is: nothing is created or migrated (for `doctor`).
    pub async fn open_existing(url: &str) -> Result<Self> {
        Self::connect(url, false).await
    }

    async fn connect(url: &str, create: bool) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = Backend::of(url)?;
        let url = match backend {
            Backend::Sqlite => {
                let mode = if create { "rwc" } else { "rw" };
                let joiner = if url.contains('?') { '&' } else { '?' };
                format!("{url}{joiner}mode={mode}")
            }
            Backend::Postgres => url.to_string(),
        };
        let pool = AnyPoolOptions::new()
            .max_connections(8)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        for pragma in [
                            "PRAGMA journal_mode = WAL",
                            "PRAGMA synchronous = NORMAL",
                            "PRAGMA foreign_keys = ON",
                            "PRAGMA busy_timeout = 10000",
                        ] {
                            conn.execute(pragma).await?;
                        }
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await?;
        Ok(Store { pool, backend })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// A transaction that writers take one at a time, as SQLite's `BEGIN IMMEDIATE` makes them:
    /// the queue's claim, run transitions and per-model event numbers rely on it. PostgreSQL
    /// takes a transaction-scoped advisory lock for the same effect.
    pub(crate) async fn write_tx(&self) -> Result<Transaction<'static, Any>> {
        match self.backend {
            Backend::Sqlite => Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?),
            Backend::Postgres => {
                let mut tx = self.pool.begin().await?;
                sqlx::query("SELECT 1 FROM (SELECT pg_advisory_xact_lock(7301)) AS writer")
                    .execute(&mut *tx)
                    .await?;
                Ok(tx)
            }
        }
    }

    /// The newest migration applied to this database, and the newest this build knows.
    pub async fn schema_versions(&self) -> Result<(i64, i64)> {
        let applied: (Option<i64>,) = sqlx::query_as("SELECT MAX(version) FROM schema_migrations")
            .fetch_one(&self.pool)
            .await?;
        let latest = self.backend.migrations().last().map_or(0, |(v, _)| *v);
        Ok((applied.0.unwrap_or(0), latest))
    }

    async fn migrate(&self) -> Result<()> {
        sqlx::query("CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)")
            .execute(&self.pool)
            .await?;
        for (version, sql) in self.backend.migrations() {
            // One migrator at a time when several processes start against one database.
            let mut tx = self.write_tx().await?;
            let applied: Option<(i64,)> =
                sqlx::query_as("SELECT version FROM schema_migrations WHERE version = $1")
                    .bind(version)
                    .fetch_optional(&mut *tx)
                    .await?;
            if applied.is_none() {
                sqlx::raw_sql(*sql).execute(&mut *tx).await?;
                sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)")
                    .bind(version)
                    .bind(now_ms())
                    .execute(&mut *tx)
                    .await?;
                tracing::info!(version, "applied migration");
            }
            tx.commit().await?;
        }
        Ok(())
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}
