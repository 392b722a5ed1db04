//! Seed 000's coverage matrix over real HTTP against the real server and its SQLite database,
//! one module per row, plus restart survival, cancel, delete cascade and predict.

mod support;

mod test_access;
mod test_activation_datasets;
mod test_anomaly;
mod test_anomaly_stream;
mod test_auth;
mod test_cancel;
mod test_chaos;
mod test_concurrent_training;
mod test_datasets;
mod test_delete_cascade;
mod test_error_recovery;
mod test_error_scenarios;
mod test_family_seam;
mod test_fencing;
mod test_hardening;
mod test_idempotency;
mod test_job_memory;
mod test_language;
mod test_paused_train;
mod test_precision;
mod test_predict;
mod test_restart_survival;
mod test_retention;
mod test_s3;
mod test_sae;
mod test_shutdown;
mod test_streams;
mod test_system;
mod test_text_classifier;
mod test_training_happy_path;
mod test_training_metrics;
mod test_upload_races;
mod test_worker_process;
