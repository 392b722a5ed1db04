-- Activation datasets are extracted by a job: a dataset has a status (ready, initializing,
-- failed, cancelled), the extraction's state as JSON (what to read, shards done, the error),
-- and the lease of the node extracting it, so another node resumes it when that one dies.
ALTER TABLE datasets ADD COLUMN status TEXT NOT NULL DEFAULT 'ready';
ALTER TABLE datasets ADD COLUMN extraction TEXT;
ALTER TABLE datasets ADD COLUMN lease_expires_at INTEGER;
