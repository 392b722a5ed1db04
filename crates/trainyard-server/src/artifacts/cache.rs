//! The job cache (`engine::family::JobCache`) on the artifact store: entries live under `cache/`,
//! named by the family's content-derived key, so every worker of a deployment shares them. No
//! row references them; the garbage collector removes an entry once it is older than
//! [`CACHE_RETENTION`], and the work is simply done again after that.

use std::sync::Arc;
use std::time::Duration;

use trainyard_engine::family::JobCache;

use super::ArtifactStore;

pub const CACHE_PREFIX: &str = "cache";

/// How long an entry is kept after it was written.
pub const CACHE_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

pub struct ArtifactCache {
    artifacts: Arc<dyn ArtifactStore>,
}

impl ArtifactCache {
    pub fn new(artifacts: Arc<dyn ArtifactStore>) -> Self {
        Self { artifacts }
    }

    fn key(key: &str) -> String {
        format!("{CACHE_PREFIX}/{key}")
    }
}

impl JobCache for ArtifactCache {
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.artifacts.get(&Self::key(key)).ok()
    }

    fn path(&self, key: &str) -> Option<std::path::PathBuf> {
        self.artifacts.local_path(&Self::key(key))
    }

    fn put(&self, key: &str, bytes: &[u8]) {
        if let Err(e) = self.artifacts.put(&Self::key(key), bytes) {
            tracing::warn!(%key, error = %e, "could not cache a job's work; the next job redoes it");
        }
    }
}
