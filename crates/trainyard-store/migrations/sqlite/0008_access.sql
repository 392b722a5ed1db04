-- Who may do what (issue 12): API keys stored only as SHA-256 hashes of the whole token, each
-- with roles in one or more projects; an append-only audit log; dataset names unique per
-- project instead of globally.
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    hash TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    last_used_at INTEGER,
    expires_at INTEGER,
    revoked_at INTEGER
);

CREATE TABLE key_roles (
    key_id TEXT NOT NULL REFERENCES api_keys(id) ON DELETE CASCADE,
    project_id TEXT NOT NULL REFERENCES projects(id),
    role TEXT NOT NULL,
    PRIMARY KEY (key_id, project_id)
);

CREATE TABLE audit_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    project_id TEXT,
    key_id TEXT,
    action TEXT NOT NULL,
    resource TEXT NOT NULL,
    source TEXT NOT NULL,
    outcome INTEGER NOT NULL
);
CREATE INDEX audit_log_project_at ON audit_log (project_id, id DESC);

CREATE TABLE datasets_scoped (
    name TEXT NOT NULL,
    project_id TEXT NOT NULL,
    info TEXT NOT NULL,
    path TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (project_id, name)
);
INSERT INTO datasets_scoped SELECT name, project_id, info, path, bytes, sha256, created_at FROM datasets;
DROP TABLE datasets;
ALTER TABLE datasets_scoped RENAME TO datasets;

-- Events carry their model's project, so a project's stream filters without a join.
ALTER TABLE events ADD COLUMN project_id TEXT NOT NULL DEFAULT 'default';
UPDATE events SET project_id = (SELECT project_id FROM models WHERE models.id = events.model_id);
