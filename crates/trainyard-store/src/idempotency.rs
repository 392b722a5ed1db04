//! Stored responses for `Idempotency-Key` replays.

use std::time::Duration;

use sqlx::Row;

use crate::{Result, Store, now_ms};

#[derive(Debug, Clone, PartialEq)]
pub struct StoredResponse {
    pub request_hash: String,
    pub status: u16,
    pub body: String,
}

impl Store {
    /// The response stored for a key within the last `ttl` (an older one has expired).
    pub async fn idempotent_response(
        &self,
        scope: &str,
        key: &str,
        ttl: Duration,
    ) -> Result<Option<StoredResponse>> {
        let row = sqlx::query(
            "SELECT request_hash, status, body FROM idempotency_keys WHERE scope = $1 AND key = $2 AND created_at >= $3",
        )
        .bind(scope)
        .bind(key)
        .bind(now_ms() - ttl.as_millis() as i64)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(StoredResponse {
                request_hash: r.try_get("request_hash")?,
                status: r.try_get::<i64, _>("status")? as u16,
                body: r.try_get("body")?,
            })
        })
        .transpose()
    }

    /// Records the first response for a key; a concurrent duplicate keeps the first one.
    pub async fn save_idempotent_response(
        &self,
        scope: &str,
        key: &str,
        response: &StoredResponse,
        ttl: Duration,
    ) -> Result<()> {
        // An expired key is replaced; a live one keeps its first response.
        sqlx::query(
            "INSERT INTO idempotency_keys (scope, key, request_hash, status, body, created_at) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (scope, key) DO UPDATE SET request_hash = excluded.request_hash, status = excluded.status, \
             body = excluded.body, created_at = excluded.created_at WHERE idempotency_keys.created_at < $7",
        )
        .bind(scope)
        .bind(key)
        .bind(&response.request_hash)
        .bind(response.status as i64)
        .bind(&response.body)
        .bind(now_ms())
        .bind(now_ms() - ttl.as_millis() as i64)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Forgets keys older than `ttl`; returns how many.
    pub async fn expire_idempotency_keys(&self, ttl: Duration) -> Result<u64> {
        let done = sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1")
            .bind(now_ms() - ttl.as_millis() as i64)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
