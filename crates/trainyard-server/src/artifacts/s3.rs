//! Artifacts in an S3-compatible bucket, through `object_store`. A PUT is atomic for readers
//! (an object appears whole or not at all), which is what the fenced publish in the database
//! relies on; coordination never depends on S3 conditional writes.
//!
//! The trait is blocking, so the store runs its requests on a small runtime of its own and
//! waits on a channel: that works from blocking tasks, plain threads and async tasks alike,
//! without nesting runtimes.

use std::io::{Error, ErrorKind};
use std::sync::Arc;
use std::time::SystemTime;

use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use super::ArtifactStore;

pub struct S3Artifacts {
    bucket: String,
    prefix: String,
    store: Arc<AmazonS3>,
    // An Option only so that Drop can shut it down without blocking an async caller.
    runtime: Option<tokio::runtime::Runtime>,
}

impl S3Artifacts {
    /// Credentials, region and endpoint come from `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_SESSION_TOKEN`, `AWS_REGION` and `AWS_ENDPOINT_URL` (for MinIO, s3s and the like;
    /// an `http://` endpoint is allowed without TLS).
    pub fn from_env(bucket: &str, prefix: &str) -> std::io::Result<Self> {
        install_crypto_provider();
        // A few quick retries ride out a blip; a store that stays down fails the write within
        // seconds (the run's restart policy retries it) instead of stalling training.
        let retry = object_store::RetryConfig {
            max_retries: 3,
            retry_timeout: std::time::Duration::from_secs(10),
            ..Default::default()
        };
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_retry(retry);
        let endpoint = std::env::var("AWS_ENDPOINT_URL")
            .or_else(|_| std::env::var("AWS_ENDPOINT"))
            .ok();
        if let Some(endpoint) = endpoint {
            builder = builder
                .with_allow_http(endpoint.starts_with("http://"))
                .with_endpoint(endpoint);
        }
        if std::env::var("AWS_REGION").is_err() && std::env::var("AWS_DEFAULT_REGION").is_err() {
            builder = builder.with_region("us-east-1");
        }
        let store = builder.build().map_err(|e| {
            Error::new(
                ErrorKind::InvalidInput,
                format!("configuring the S3 bucket '{bucket}': {e}; set AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and, for a non-AWS store, AWS_ENDPOINT_URL"),
            )
        })?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("trainyard-s3")
            .enable_all()
            .build()?;
        Ok(Self {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            store: Arc::new(store),
            runtime: Some(runtime),
        })
    }

    fn location(&self, key: &str) -> std::io::Result<Path> {
        let full = if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        };
        Path::parse(&full).map_err(|e| {
            Error::new(
                ErrorKind::InvalidInput,
                format!("invalid artifact key '{key}': {e}"),
            )
        })
    }

    /// The artifact key of an object in the bucket (the object's path less our prefix).
    fn key_of(&self, location: &Path) -> String {
        let path = location.as_ref();
        match self.prefix.is_empty() {
            true => path.to_string(),
            false => path
                .strip_prefix(&self.prefix)
                .map(|rest| rest.trim_start_matches('/').to_string())
                .unwrap_or_else(|| path.to_string()),
        }
    }

    /// Runs one request on the store's runtime and waits for its answer.
    fn block<T: Send + 'static>(
        &self,
        request: impl Future<Output = object_store::Result<T>> + Send + 'static,
    ) -> std::io::Result<T> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let runtime = self.runtime.as_ref().expect("runtime lives until drop");
        runtime.spawn(async move {
            let _ = tx.send(request.await);
        });
        let answer = rx
            .recv()
            .map_err(|_| Error::other("the S3 request was dropped"))?;
        answer.map_err(|e| self.io_error(e))
    }

    fn io_error(&self, error: object_store::Error) -> Error {
        let kind = match &error {
            object_store::Error::NotFound { .. } => ErrorKind::NotFound,
            object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. } => ErrorKind::PermissionDenied,
            _ => ErrorKind::Other,
        };
        Error::new(kind, format!("S3 bucket '{}': {error}", self.bucket))
    }
}

impl Drop for S3Artifacts {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl ArtifactStore for S3Artifacts {
    fn put(&self, key: &str, bytes: &[u8]) -> std::io::Result<()> {
        let (store, location) = (self.store.clone(), self.location(key)?);
        let payload = PutPayload::from(bytes.to_vec());
        self.block(async move { store.put(&location, payload).await.map(|_| ()) })
    }

    fn get(&self, key: &str) -> std::io::Result<Vec<u8>> {
        let (store, location) = (self.store.clone(), self.location(key)?);
        self.block(async move {
            let body = store.get(&location).await?.bytes().await?;
            Ok(body.to_vec())
        })
    }

    fn delete(&self, key: &str) -> std::io::Result<()> {
        let (store, location) = (self.store.clone(), self.location(key)?);
        self.block(async move {
            match store.delete(&location).await {
                Err(object_store::Error::NotFound { .. }) => Ok(()),
                other => other,
            }
        })
    }

    fn delete_prefix(&self, prefix: &str) -> std::io::Result<()> {
        let (store, location) = (self.store.clone(), self.location(prefix)?);
        self.block(async move {
            let listed = store
                .list(Some(&location))
                .map_ok(|meta| meta.location)
                .boxed();
            store
                .delete_stream(listed)
                .try_for_each(|_| async { Ok(()) })
                .await
        })
    }

    fn list(&self, prefix: &str) -> std::io::Result<Vec<(String, SystemTime)>> {
        let (store, location) = (self.store.clone(), self.location(prefix)?);
        let objects = self.block(async move {
            store
                .list(Some(&location))
                .map_ok(|meta| (meta.location, SystemTime::from(meta.last_modified)))
                .try_collect::<Vec<_>>()
                .await
        })?;
        Ok(objects
            .into_iter()
            .map(|(location, modified)| (self.key_of(&location), modified))
            .collect())
    }
}

/// rustls needs one process-wide crypto provider; ring is already in the build (aws-lc would
/// add a C library build to every cold build). Every process that makes HTTPS requests (the
/// CLI, S3 artifact stores) installs it first; a second call does nothing.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
