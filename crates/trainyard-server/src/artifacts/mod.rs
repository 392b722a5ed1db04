//! Where model files, checkpoints and uploaded datasets live: a local folder (the embedded
//! default) or an S3-compatible bucket (scale-out). Every writer publishes a key through a fenced
//! database write after the upload completes, so a reader never sees a half-written artifact;
//! what no row references is removed by the garbage collector (`crate::gc`).

mod cache;
mod local;
mod s3;

use std::path::PathBuf;

pub use cache::{ArtifactCache, CACHE_PREFIX, CACHE_RETENTION};
pub use local::LocalArtifacts;
pub use s3::{S3Artifacts, install_crypto_provider};

/// The seam between the server and where its artifacts live. Calls block; the server makes
/// them from blocking tasks.
pub trait ArtifactStore: Send + Sync {
    fn put(&self, key: &str, bytes: &[u8]) -> std::io::Result<()>;
    fn get(&self, key: &str) -> std::io::Result<Vec<u8>>;
    /// Removes one artifact; a missing one is not an error.
    fn delete(&self, key: &str) -> std::io::Result<()>;
    /// Removes every artifact under `prefix`; a missing prefix is not an error.
    fn delete_prefix(&self, prefix: &str) -> std::io::Result<()>;
    /// Every artifact under `prefix` with when it was last written (for garbage collection).
    fn list(&self, prefix: &str) -> std::io::Result<Vec<(String, std::time::SystemTime)>>;
    /// The artifact's file on this machine, where the store keeps artifacts on local disk and
    /// this one exists.
    fn local_path(&self, _key: &str) -> Option<std::path::PathBuf> {
        None
    }
}

/// Where a process keeps its artifacts: `--artifacts` takes a local path or
/// `s3://bucket/optional/prefix` (credentials, region and endpoint from the usual `AWS_*`
/// environment variables).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArtifactLocation {
    Local(PathBuf),
    S3 { bucket: String, prefix: String },
}

impl ArtifactLocation {
    pub fn parse(value: &str) -> Result<Self, String> {
        let Some(rest) = value.strip_prefix("s3://") else {
            if value.contains("://") {
                return Err(format!(
                    "artifact location '{value}' is neither a local path nor s3://bucket/prefix"
                ));
            }
            return Ok(Self::Local(PathBuf::from(value)));
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(format!("artifact location '{value}' names no bucket"));
        }
        Ok(Self::S3 {
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
        })
    }

    /// Opens the store; for S3 this checks nothing remote (the first request does).
    pub fn open(&self) -> std::io::Result<std::sync::Arc<dyn ArtifactStore>> {
        Ok(match self {
            Self::Local(path) => std::sync::Arc::new(LocalArtifacts::new(path)?),
            Self::S3 { bucket, prefix } => {
                std::sync::Arc::new(S3Artifacts::from_env(bucket, prefix)?)
            }
        })
    }
}

impl std::fmt::Display for ArtifactLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Local(path) => write!(f, "{}", path.display()),
            Self::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            Self::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

pub fn run_prefix(run_id: &str) -> String {
    format!("runs/{run_id}")
}

/// Per attempt: an attempt that lost its lease writes its own file, which the fenced finish
/// then refuses and removes, so it can never replace its successor's model.
pub fn model_key(run_id: &str, attempt: i64) -> String {
    format!("runs/{run_id}/model-a{attempt:03}.tym")
}

/// Unique per checkpoint: an epoch-end checkpoint and a pause at the same step are two files,
/// so pruning one never removes the other. Names sort by attempt, then step.
pub fn checkpoint_key(run_id: &str, attempt: i64, step: u64) -> String {
    let unique = &uuid::Uuid::now_v7().simple().to_string()[20..];
    format!("runs/{run_id}/checkpoints/a{attempt:03}-s{step:010}-{unique}.tyck")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse_paths_and_buckets() {
        assert_eq!(
            ArtifactLocation::parse("./data/artifacts").unwrap(),
            ArtifactLocation::Local("./data/artifacts".into())
        );
        let s3 = ArtifactLocation::parse("s3://models/team/a/").unwrap();
        assert_eq!(
            s3,
            ArtifactLocation::S3 {
                bucket: "models".into(),
                prefix: "team/a".into()
            }
        );
        assert_eq!(s3.to_string(), "s3://models/team/a");
        assert!(
            ArtifactLocation::parse("s3://")
                .unwrap_err()
                .contains("no bucket")
        );
        assert!(
            ArtifactLocation::parse("gs://x")
                .unwrap_err()
                .contains("s3://")
        );
    }
}
