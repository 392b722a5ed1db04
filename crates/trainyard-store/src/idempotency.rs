//! Stored responses for `Idempotency-Key` replays.

use sqlx::Row;

use crate::{Result, Store, now_ms};

#[derive(Debug, Clone, PartialEq)]
pub struct StoredResponse {
    pub request_hash: String,
    pub status: u16,
    pub body: String,
}

impl Store {
    pub async fn idempotent_response(
        &self,
        scope: &str,
        key: &str,
    ) -> Result<Option<StoredResponse>> {
        let row = sqlx::query(
            "SELECT request_hash, status, body FROM idempotency_keys WHERE scope = ? AND key = ?",
        )
        .bind(scope)
        .bind(key)
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
    ) -> Result<()> {
        sqlx::query(
            "INSERT OR IGNORE INTO idempotency_keys (scope, key, request_hash, status, body, created_at) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(scope)
        .bind(key)
        .bind(&response.request_hash)
        .bind(response.status as i64)
        .bind(&response.body)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
