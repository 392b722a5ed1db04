-- PostgreSQL twin of ../sqlite/0002_pause_and_notes.sql: the same schema, PostgreSQL's types.
-- What an attempt started from (a checkpoint, or over after a corrupt one), shown on the run.
ALTER TABLE run_attempts ADD COLUMN note TEXT;
