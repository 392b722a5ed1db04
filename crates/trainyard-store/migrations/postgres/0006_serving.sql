-- PostgreSQL twin of ../sqlite/0006_serving.sql: the same schema, PostgreSQL's types.
-- Streaming sessions keep their learned state so a client can reconnect after a restart.
CREATE TABLE stream_sessions (
    id TEXT PRIMARY KEY,
    model_id TEXT NOT NULL REFERENCES models(id) ON DELETE CASCADE,
    run_id TEXT NOT NULL,
    rows BIGINT NOT NULL DEFAULT 0,
    state BYTEA,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- Batch scoring of a dataset with a trained model; the answers land in a CSV artifact.
CREATE TABLE score_jobs (
    id TEXT PRIMARY KEY,
    model_id TEXT NOT NULL REFERENCES models(id) ON DELETE CASCADE,
    run_id TEXT NOT NULL,
    dataset TEXT NOT NULL,
    status TEXT NOT NULL,
    rows BIGINT NOT NULL DEFAULT 0,
    rows_done BIGINT NOT NULL DEFAULT 0,
    artifact TEXT,
    error TEXT,
    created_at BIGINT NOT NULL,
    finished_at BIGINT
);
CREATE INDEX score_jobs_model ON score_jobs(model_id, created_at);
