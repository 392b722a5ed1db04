-- PostgreSQL twin of ../sqlite/0003_events.sql: the same schema, PostgreSQL's types.
-- Every model's event log: status and stage changes, progress, epochs, checkpoints, attempts.
-- `seq` increases per model without gaps; `id` orders events across all models.
CREATE TABLE events (
    id BIGSERIAL PRIMARY KEY,
    model_id TEXT NOT NULL REFERENCES models(id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    run_id TEXT,
    kind TEXT NOT NULL,
    data TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (model_id, seq)
);
