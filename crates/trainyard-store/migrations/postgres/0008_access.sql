-- PostgreSQL twin of ../sqlite/0008_access.sql: the same schema, PostgreSQL's types.
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    hash TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_used_at BIGINT,
    expires_at BIGINT,
    revoked_at BIGINT
);

CREATE TABLE key_roles (
    key_id TEXT NOT NULL REFERENCES api_keys(id) ON DELETE CASCADE,
    project_id TEXT NOT NULL REFERENCES projects(id),
    role TEXT NOT NULL,
    PRIMARY KEY (key_id, project_id)
);

CREATE TABLE audit_log (
    id BIGSERIAL PRIMARY KEY,
    at BIGINT NOT NULL,
    project_id TEXT,
    key_id TEXT,
    action TEXT NOT NULL,
    resource TEXT NOT NULL,
    source TEXT NOT NULL,
    outcome BIGINT NOT NULL
);
CREATE INDEX audit_log_project_at ON audit_log (project_id, id DESC);

ALTER TABLE datasets DROP CONSTRAINT datasets_pkey;
ALTER TABLE datasets ADD PRIMARY KEY (project_id, name);

-- Events carry their model's project, so a project's stream filters without a join.
ALTER TABLE events ADD COLUMN project_id TEXT NOT NULL DEFAULT 'default';
UPDATE events SET project_id = (SELECT project_id FROM models WHERE models.id = events.model_id);
