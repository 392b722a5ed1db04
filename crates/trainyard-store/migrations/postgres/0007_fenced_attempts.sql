-- PostgreSQL twin of ../sqlite/0007_fenced_attempts.sql: the same schema, PostgreSQL's types.
-- Attempts whose late writes were refused because a successor owned the run (issue 8's
-- fencing), recorded by whichever process saw it so /metrics can count them across processes.
CREATE TABLE fenced_attempts (
    run_id TEXT NOT NULL,
    attempt BIGINT NOT NULL,
    worker TEXT NOT NULL,
    at BIGINT NOT NULL
);
