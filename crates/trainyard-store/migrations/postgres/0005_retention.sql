-- PostgreSQL twin of ../sqlite/0005_retention.sql: the same schema, PostgreSQL's types.
-- Compaction deletes a finished run's progress events; expiry deletes old idempotency keys.
CREATE INDEX IF NOT EXISTS events_by_run ON events (run_id, kind);
CREATE INDEX IF NOT EXISTS idempotency_keys_by_age ON idempotency_keys (created_at);
