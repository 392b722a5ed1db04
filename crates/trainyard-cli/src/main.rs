//! `trainyard`: one binary that serves the API (`serve`), runs training jobs beside it
//! (`worker`), trains locally (`train`) and measures itself (`bench`).

mod bench;
mod bench_anomaly;
mod bench_bf16;
mod bench_sae;
mod bench_tabular;
mod bench_text;
mod doctor;
mod encoding;
mod extract;
mod features;
mod keys;
mod language;
mod local_train;
mod remote;
mod serve;
mod watch;
mod worker;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "trainyard",
    version,
    about = "Self-hosted machine-learning training service"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP API and the training workers.
    Serve(serve::ServeArgs),
    /// Run training jobs from the shared queue (no HTTP): scale out beside `serve`.
    Worker(worker::WorkerArgs),
    /// Train a model locally, without a server.
    Train(local_train::TrainArgs),
    /// Measure training speed on the built-in datasets against the documented targets.
    Bench(bench::BenchArgs),
    /// Check the environment (data dir, disk, database, artifacts, CPU, memory) and a server.
    Doctor(doctor::DoctorArgs),
    /// Create, list and revoke API keys directly in the database.
    Keys(keys::KeysArgs),
    /// Manage models on a running server.
    Models {
        #[command(flatten)]
        connection: remote::Connection,
        #[command(subcommand)]
        command: remote::ModelsCommand,
    },
    /// Manage datasets on a running server.
    Datasets {
        #[command(flatten)]
        connection: remote::Connection,
        #[command(subcommand)]
        command: remote::DatasetsCommand,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    trainyard_server::install_tls_provider();
    let result = match cli.command {
        Command::Serve(args) => serve::run(args).map(|_| ExitCode::SUCCESS),
        Command::Worker(args) => worker::run(args).map(|_| ExitCode::SUCCESS),
        Command::Train(args) => local_train::run(args),
        // On a worker of the pool, as the server's jobs run (`family::run`).
        Command::Bench(args) => {
            trainyard_engine::on_pool_worker(|| bench::run(args)).map(|_| ExitCode::SUCCESS)
        }
        Command::Doctor(args) => doctor::run(args),
        Command::Keys(args) => keys::run(args),
        Command::Models {
            connection,
            command,
        } => remote::run(remote::models(&connection, command)),
        Command::Datasets {
            connection,
            command,
        } => remote::run(remote::datasets(&connection, command)),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
