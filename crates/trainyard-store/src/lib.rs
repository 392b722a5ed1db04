//! Trainyard's persistence: models, runs, per-epoch metrics, checkpoints, idempotency keys and
//! the durable job queue, on SQLite (WAL). Every write a worker makes is fenced by the job's
//! attempt number, so a worker that lost its lease cannot overwrite its successor's work.

mod datasets;
mod events;
mod idempotency;
mod models;
mod queue;
mod rows;
mod runs;
mod serving;

use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

pub use datasets::DatasetRow;
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
}

pub type Result<T> = std::result::Result<T, StoreError>;

const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/sqlite/0001_init.sql")),
    (
        2,
        include_str!("../migrations/sqlite/0002_pause_and_notes.sql"),
    ),
    (3, include_str!("../migrations/sqlite/0003_events.sql")),
    (4, include_str!("../migrations/sqlite/0004_datasets.sql")),
    (5, include_str!("../migrations/sqlite/0005_retention.sql")),
    (6, include_str!("../migrations/sqlite/0006_serving.sql")),
];

#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
}

/// Milliseconds since the Unix epoch: the unit of every timestamp the store keeps.
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
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(create)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await?;
        Ok(Store { pool })
    }

    /// The newest migration applied to this database, and the newest this build knows.
    pub async fn schema_versions(&self) -> Result<(i64, i64)> {
        let applied: (Option<i64>,) = sqlx::query_as("SELECT MAX(version) FROM schema_migrations")
            .fetch_one(&self.pool)
            .await?;
        let latest = MIGRATIONS.last().map_or(0, |(v, _)| *v);
        Ok((applied.0.unwrap_or(0), latest))
    }

    async fn migrate(&self) -> Result<()> {
        sqlx::query("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)")
            .execute(&self.pool)
            .await?;
        for (version, sql) in MIGRATIONS {
            let mut tx = self.pool.begin().await?;
            let applied: Option<(i64,)> =
                sqlx::query_as("SELECT version FROM schema_migrations WHERE version = ?")
                    .bind(version)
                    .fetch_optional(&mut *tx)
                    .await?;
            if applied.is_none() {
                sqlx::raw_sql(*sql).execute(&mut *tx).await?;
                sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)")
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
