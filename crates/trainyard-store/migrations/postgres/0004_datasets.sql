-- PostgreSQL twin of ../sqlite/0004_datasets.sql: the same schema, PostgreSQL's types.
-- Datasets uploaded by users; the CSV itself is an artifact at `path`.
CREATE TABLE datasets (
    name TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    info TEXT NOT NULL,
    path TEXT NOT NULL,
    bytes BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
