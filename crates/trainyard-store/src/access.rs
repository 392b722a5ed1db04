//! Rows for who may do what: API keys (only their SHA-256 hashes), the roles each key holds in
//! projects, projects themselves, and the append-only audit log.

use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};

use crate::{Result, Store, now_ms};

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct KeyRow {
    pub id: String,
    pub name: String,
    /// Hex SHA-256 of the whole token; never serialised.
    #[serde(skip)]
    pub hash: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    /// (project, role) pairs.
    pub roles: Vec<(String, String)>,
}

impl KeyRow {
    fn from_row(row: &AnyRow) -> Result<Self> {
        Ok(KeyRow {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            hash: row.try_get("hash")?,
            created_at: row.try_get("created_at")?,
            last_used_at: row.try_get("last_used_at")?,
            expires_at: row.try_get("expires_at")?,
            revoked_at: row.try_get("revoked_at")?,
            roles: Vec::new(),
        })
    }
}

pub struct NewKey<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub hash: &'a str,
    pub expires_at: Option<i64>,
    pub roles: &'a [(String, String)],
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AuditRow {
    pub id: i64,
    pub at: i64,
    pub project_id: Option<String>,
    pub key_id: Option<String>,
    pub action: String,
    pub resource: String,
    pub source: String,
    pub outcome: i64,
}

pub struct NewAudit<'a> {
    pub project_id: Option<&'a str>,
    pub key_id: Option<&'a str>,
    pub action: &'a str,
    pub resource: &'a str,
    pub source: &'a str,
    pub outcome: u16,
}

#[derive(Debug, Default, Clone)]
pub struct AuditFilter {
    pub project_id: String,
    pub key_id: Option<String>,
    pub action: Option<String>,
    /// Only records with an id below this (paging backwards from the newest).
    pub before: Option<i64>,
    pub limit: i64,
}

const KEY_COLUMNS: &str = "id, name, hash, created_at, last_used_at, expires_at, revoked_at";

impl Store {
    pub async fn project_exists(&self, id: &str) -> Result<bool> {
        let found = sqlx::query("SELECT 1 FROM projects WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(found.is_some())
    }

    /// Creates a project; false when it already exists.
    pub async fn create_project(&self, id: &str) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO projects (id, created_at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(id)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn list_projects(&self) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT id FROM projects ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok(r.try_get::<String, _>("id")?))
            .collect()
    }

    /// Stores a key and its roles in one transaction (their projects must exist).
    pub async fn insert_key(&self, key: NewKey<'_>) -> Result<()> {
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "INSERT INTO api_keys (id, name, hash, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(key.id)
        .bind(key.name)
        .bind(key.hash)
        .bind(now_ms())
        .bind(key.expires_at)
        .execute(&mut *tx)
        .await?;
        for (project, role) in key.roles {
            sqlx::query("INSERT INTO key_roles (key_id, project_id, role) VALUES ($1, $2, $3)")
                .bind(key.id)
                .bind(project)
                .bind(role)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn any_key_exists(&self) -> Result<bool> {
        let found = sqlx::query("SELECT 1 FROM api_keys LIMIT 1")
            .fetch_optional(&self.pool)
            .await?;
        Ok(found.is_some())
    }

    pub async fn get_key(&self, id: &str) -> Result<Option<KeyRow>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let mut key = KeyRow::from_row(&row)?;
        key.roles = self.key_roles(&key.id).await?;
        Ok(Some(key))
    }

    async fn key_roles(&self, key_id: &str) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query(
            "SELECT project_id, role FROM key_roles WHERE key_id = $1 ORDER BY project_id",
        )
        .bind(key_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("project_id")?, r.try_get("role")?)))
            .collect()
    }

    /// Keys holding a role in `project` (all keys when None), newest first.
    pub async fn list_keys(&self, project: Option<&str>) -> Result<Vec<KeyRow>> {
        let rows = match project {
            Some(project) => {
                sqlx::query(AssertSqlSafe(format!(
                    "SELECT {KEY_COLUMNS} FROM api_keys WHERE id IN \
                     (SELECT key_id FROM key_roles WHERE project_id = $1) ORDER BY created_at DESC, id"
                )))
                .bind(project)
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(AssertSqlSafe(format!(
                    "SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created_at DESC, id"
                )))
                .fetch_all(&self.pool)
                .await?
            }
        };
        let mut keys = Vec::with_capacity(rows.len());
        for row in &rows {
            let mut key = KeyRow::from_row(row)?;
            key.roles = self.key_roles(&key.id).await?;
            keys.push(key);
        }
        Ok(keys)
    }

    /// Revokes a key; false when it does not exist or was already revoked.
    pub async fn revoke_key(&self, id: &str) -> Result<bool> {
        let done =
            sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(now_ms())
                .bind(id)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Records a key's use, at most once a minute per key (a write per request would make
    /// every read a write).
    pub async fn touch_key(&self, id: &str) -> Result<()> {
        let now = now_ms();
        sqlx::query(
            "UPDATE api_keys SET last_used_at = $1 WHERE id = $2 \
             AND (last_used_at IS NULL OR last_used_at < $3)",
        )
        .bind(now)
        .bind(id)
        .bind(now - 60_000)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn append_audit(&self, record: NewAudit<'_>) -> Result<()> {
        sqlx::query(
            "INSERT INTO audit_log (at, project_id, key_id, action, resource, source, outcome) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(now_ms())
        .bind(record.project_id)
        .bind(record.key_id)
        .bind(record.action)
        .bind(record.resource)
        .bind(record.source)
        .bind(record.outcome as i64)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A project's audit records, newest first.
    pub async fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRow>> {
        let rows = sqlx::query(
            "SELECT id, at, project_id, key_id, action, resource, source, outcome FROM audit_log \
             WHERE project_id = $1 AND ($2 IS NULL OR key_id = $2) AND ($3 IS NULL OR action = $3) \
             AND ($4 IS NULL OR id < $4) ORDER BY id DESC LIMIT $5",
        )
        .bind(&filter.project_id)
        .bind(filter.key_id.as_deref())
        .bind(filter.action.as_deref())
        .bind(filter.before)
        .bind(filter.limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditRow {
                    id: r.try_get("id")?,
                    at: r.try_get("at")?,
                    project_id: r.try_get("project_id")?,
                    key_id: r.try_get("key_id")?,
                    action: r.try_get("action")?,
                    resource: r.try_get("resource")?,
                    source: r.try_get("source")?,
                    outcome: r.try_get("outcome")?,
                })
            })
            .collect()
    }
}
