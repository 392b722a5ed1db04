//! Artifact garbage collection: files no database row references (a checkpoint or model written
//! by a worker killed before it recorded it, a temporary file of an interrupted write, what a
//! crash left between a row's delete and its files') are removed once older than a grace
//! period. The grace period covers the moment between writing a file and recording its row.
//! Each pass is independent, so an interrupted one is simply done again by the next.

use std::time::{Duration, SystemTime};

use crate::artifacts::{CACHE_PREFIX, CACHE_RETENTION};
use crate::state::SharedState;

/// The prefixes the server writes under.
const PREFIXES: [&str; 2] = ["runs", "datasets"];

/// Removes unreferenced artifacts older than `grace`; returns how many it removed.
pub async fn collect(state: &SharedState, grace: Duration) -> anyhow::Result<usize> {
    // Listed before the rows are read: a file written after the listing is not considered, and
    // one listed but recorded meanwhile is found in the rows.
    let artifacts = state.artifacts.clone();
    let listed = tokio::task::spawn_blocking(move || {
        let mut all = Vec::new();
        for prefix in PREFIXES {
            all.extend(artifacts.list(prefix)?);
        }
        Ok::<_, std::io::Error>(all)
    })
    .await??;
    let referenced = state.store.referenced_artifacts().await?;
    let now = SystemTime::now();
    let age = |modified: &SystemTime| now.duration_since(*modified).unwrap_or_default();
    // A row may reference a folder (an activation dataset's shards): everything under it.
    let folders: Vec<&String> = referenced.iter().filter(|k| k.ends_with('/')).collect();
    let in_folder = |key: &str| folders.iter().any(|f| key.starts_with(f.as_str()));
    let mut doomed: Vec<String> = listed
        .into_iter()
        .filter(|(key, modified)| {
            !referenced.contains(key) && !in_folder(key) && age(modified) >= grace
        })
        .map(|(key, _)| key)
        .collect();
    // Cached work is referenced by no row: it goes once it is old.
    let artifacts = state.artifacts.clone();
    let cached = tokio::task::spawn_blocking(move || artifacts.list(CACHE_PREFIX)).await??;
    doomed.extend(
        cached
            .into_iter()
            .filter(|(_, modified)| age(modified) >= CACHE_RETENTION.max(grace))
            .map(|(key, _)| key),
    );
    let artifacts = state.artifacts.clone();
    let removed = tokio::task::spawn_blocking(move || {
        let mut removed = 0;
        for key in doomed {
            match artifacts.delete(&key) {
                Ok(()) => removed += 1,
                Err(e) => tracing::warn!(%key, error = %e, "could not remove an orphaned artifact"),
            }
        }
        removed
    })
    .await?;
    Ok(removed)
}
