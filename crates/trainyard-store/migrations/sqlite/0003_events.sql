-- Every model's event log: status and stage changes, progress, epochs, checkpoints, attempts.
-- `seq` increases per model without gaps; `id` orders events across all models.
CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    model_id TEXT NOT NULL REFERENCES models(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    run_id TEXT,
    kind TEXT NOT NULL,
    data TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    UNIQUE (model_id, seq)
);
