-- What an attempt started from (a checkpoint, or over after a corrupt one), shown on the run.
ALTER TABLE run_attempts ADD COLUMN note TEXT;
