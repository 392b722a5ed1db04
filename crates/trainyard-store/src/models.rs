use serde_json::Value;
use sqlx::any::AnyArguments;
use sqlx::{AssertSqlSafe, Row};

use crate::{ModelRow, Result, Store, new_id, now_ms};

pub struct NewModel {
    pub project_id: String,
    pub name: String,
    pub dataset: String,
    pub algorithm: String,
    pub hyperparameters: Value,
}

/// Filters for listing models; `status` is the latest run's status (`pending` without runs).
#[derive(Debug, Default, Clone)]
pub struct ModelFilter {
    pub project_id: String,
    pub status: Option<String>,
    pub dataset: Option<String>,
    pub algorithm: Option<String>,
    /// Hyperparameters the model must hold, by name and value (`architecture: "topk"`).
    pub hyperparameters: Vec<(String, Value)>,
    pub limit: i64,
    pub offset: i64,
}

const MODEL_COLUMNS: &str = "m.id, m.project_id, m.name, m.dataset, m.algorithm, m.hyperparameters, m.latest_run_id, m.created_at, m.updated_at";

impl Store {
    pub async fn insert_model(&self, new: NewModel) -> Result<ModelRow> {
        let now = now_ms();
        let row = ModelRow {
            id: new_id(),
            project_id: new.project_id,
            name: new.name,
            dataset: new.dataset,
            algorithm: new.algorithm,
            hyperparameters: new.hyperparameters,
            latest_run_id: None,
            created_at: now,
            updated_at: now,
        };
        sqlx::query(
            "INSERT INTO models (id, project_id, name, dataset, algorithm, hyperparameters, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&row.id)
        .bind(&row.project_id)
        .bind(&row.name)
        .bind(&row.dataset)
        .bind(&row.algorithm)
        .bind(row.hyperparameters.to_string())
        .bind(now)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(row)
    }

    /// A model in whichever project it belongs to: for workers, which serve every project.
    pub async fn model_by_id(&self, id: &str) -> Result<Option<ModelRow>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {MODEL_COLUMNS} FROM models m WHERE m.id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(ModelRow::from_row).transpose()
    }

    pub async fn get_model(&self, project_id: &str, id: &str) -> Result<Option<ModelRow>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {MODEL_COLUMNS} FROM models m WHERE m.id = $1 AND m.project_id = $2"
        )))
        .bind(id)
        .bind(project_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(ModelRow::from_row).transpose()
    }

    /// Models matching `filter`, newest first, with the total count before pagination.
    pub async fn list_models(&self, filter: &ModelFilter) -> Result<(Vec<ModelRow>, i64)> {
        let mut clause = "FROM models m LEFT JOIN runs r ON r.id = m.latest_run_id \
             WHERE m.project_id = $1 \
             AND ($2 IS NULL OR COALESCE(r.status, 'pending') = $2) \
             AND ($3 IS NULL OR m.dataset = $3) \
             AND ($4 IS NULL OR m.algorithm = $4)"
            .to_string();
        let patterns: Vec<String> = filter
            .hyperparameters
            .iter()
            .map(|(key, value)| hyperparameter_pattern(key, value))
            .collect();
        for i in 0..patterns.len() {
            clause.push_str(&format!(
                " AND m.hyperparameters LIKE ${} ESCAPE '\\'",
                5 + i
            ));
        }
        let bind_filters = |query: sqlx::query::Query<'static, sqlx::Any, AnyArguments>| {
            let query = query
                .bind(filter.project_id.clone())
                .bind(filter.status.clone())
                .bind(filter.dataset.clone())
                .bind(filter.algorithm.clone());
            patterns.iter().fold(query, |q, p| q.bind(p.clone()))
        };
        let total: i64 = bind_filters(sqlx::query(AssertSqlSafe(format!(
            "SELECT COUNT(*) AS n {clause}"
        ))))
        .fetch_one(&self.pool)
        .await?
        .try_get("n")?;
        let page = 5 + patterns.len();
        let rows = bind_filters(sqlx::query(AssertSqlSafe(format!(
            "SELECT {MODEL_COLUMNS} {clause} ORDER BY m.created_at DESC, m.id DESC LIMIT ${page} OFFSET ${}",
            page + 1
        ))))
        .bind(filter.limit)
        .bind(filter.offset)
        .fetch_all(&self.pool)
        .await?;
        let models = rows.iter().map(ModelRow::from_row).collect::<Result<_>>()?;
        Ok((models, total))
    }

    /// Deletes a model with its runs, jobs, metrics and checkpoint rows (by cascade). Returns
    /// whether it existed.
    pub async fn delete_model(&self, project_id: &str, id: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM models WHERE id = $1 AND project_id = $2")
            .bind(id)
            .bind(project_id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// How many models use a dataset (a dataset in use cannot be deleted).
    pub async fn models_using_dataset(&self, dataset: &str) -> Result<i64> {
        Ok(
            sqlx::query("SELECT COUNT(*) AS n FROM models WHERE dataset = $1")
                .bind(dataset)
                .fetch_one(&self.pool)
                .await?
                .try_get("n")?,
        )
    }
}

/// A LIKE pattern for `"key":value` in the stored hyperparameters, which are compact JSON: a
/// quote inside a string value is escaped there, so the pattern cannot match inside one.
fn hyperparameter_pattern(key: &str, value: &Value) -> String {
    let needle = format!("{}:{}", Value::from(key), value);
    let escaped = needle
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
}
