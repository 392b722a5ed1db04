-- PostgreSQL twin of ../sqlite/0001_init.sql: the same schema, PostgreSQL's types.
-- Every resource belongs to a project; access control comes later.
CREATE TABLE projects (
    id TEXT PRIMARY KEY,
    created_at BIGINT NOT NULL
);
INSERT INTO projects (id, created_at) VALUES ('default', 0);

CREATE TABLE models (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL REFERENCES projects(id),
    name TEXT NOT NULL,
    dataset TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    hyperparameters TEXT NOT NULL,
    latest_run_id TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX models_project_created ON models (project_id, created_at DESC, id DESC);

CREATE TABLE runs (
    id TEXT PRIMARY KEY,
    model_id TEXT NOT NULL REFERENCES models(id) ON DELETE CASCADE,
    project_id TEXT NOT NULL,
    status TEXT NOT NULL,
    stage TEXT NOT NULL,
    hyperparameters TEXT NOT NULL,
    epoch BIGINT NOT NULL DEFAULT 0,
    total_epochs BIGINT NOT NULL,
    progress DOUBLE PRECISION NOT NULL DEFAULT 0,
    metrics TEXT,
    error TEXT,
    attempt BIGINT NOT NULL DEFAULT 0,
    artifact TEXT,
    created_at BIGINT NOT NULL,
    started_at BIGINT,
    finished_at BIGINT,
    updated_at BIGINT NOT NULL
);
CREATE INDEX runs_model ON runs (model_id, created_at DESC);

-- One job per run; its lease, attempt and flags coordinate workers.
CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    run_id TEXT NOT NULL UNIQUE REFERENCES runs(id) ON DELETE CASCADE,
    state TEXT NOT NULL,            -- queued | leased | done
    attempt BIGINT NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_expires_at BIGINT,
    cancel_requested BIGINT NOT NULL DEFAULT 0,
    pause_requested BIGINT NOT NULL DEFAULT 0,
    available_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX jobs_claim ON jobs (state, available_at, created_at);

CREATE TABLE run_attempts (
    run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    attempt BIGINT NOT NULL,
    worker TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    ended_at BIGINT,
    outcome TEXT,
    reason TEXT,
    PRIMARY KEY (run_id, attempt)
);

CREATE TABLE epoch_metrics (
    run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    epoch BIGINT NOT NULL,
    metrics TEXT NOT NULL,
    PRIMARY KEY (run_id, epoch)
);

CREATE TABLE checkpoints (
    id TEXT PRIMARY KEY,
    run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    attempt BIGINT NOT NULL,
    epoch BIGINT NOT NULL,
    step BIGINT NOT NULL,
    path TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    bytes BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX checkpoints_run ON checkpoints (run_id, step DESC);

CREATE TABLE idempotency_keys (
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    status BIGINT NOT NULL,
    body TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (scope, key)
);
