//! `trainyard keys`: API keys managed directly in the database, for the operator on the
//! machine (the first admin key has to come from somewhere); admins elsewhere use /api/keys.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use trainyard_server::api::access::{CreateKey, KeyView, issue_key};
use trainyard_store::Store;

#[derive(clap::Args)]
pub struct KeysArgs {
    /// The data directory `serve` uses.
    #[arg(
        long,
        env = "TRAINYARD_DATA_DIR",
        default_value = "./trainyard-data",
        global = true
    )]
    data_dir: PathBuf,
    /// Database URL; defaults to SQLite in the data directory.
    #[arg(long, env = "TRAINYARD_DATABASE_URL", global = true)]
    database_url: Option<String>,
    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a key and print its token (shown once; only its hash is stored).
    Create {
        /// The project the key acts in (created when it does not exist).
        #[arg(long, default_value = "default")]
        project: String,
        /// viewer, editor or admin.
        #[arg(long, value_parser = ["viewer", "editor", "admin"])]
        role: String,
        /// What the key is for.
        #[arg(long, default_value = "cli")]
        name: String,
        /// Days until the key stops working (default: never).
        #[arg(long)]
        expires_in_days: Option<u64>,
    },
    /// List keys (never their tokens).
    List,
    /// Revoke a key by id; it stops working within seconds on every server.
    Revoke { id: String },
}

pub fn run(args: KeysArgs) -> anyhow::Result<ExitCode> {
    let url = args
        .database_url
        .unwrap_or_else(|| format!("sqlite://{}", args.data_dir.join("trainyard.db").display()));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        if let Some(dir) = url
            .strip_prefix("sqlite://")
            .and_then(|path| std::path::Path::new(path).parent())
        {
            std::fs::create_dir_all(dir)?;
        }
        let store = Store::open(&url)
            .await
            .map_err(|e| anyhow::anyhow!("opening the database {url}: {e}"))?;
        match args.command {
            KeysCommand::Create {
                project,
                role,
                name,
                expires_in_days,
            } => {
                store.create_project(&project).await?;
                let body = CreateKey {
                    name,
                    role,
                    expires_in_days,
                };
                let created = issue_key(&store, &project, &body)
                    .await
                    .map_err(|e| anyhow::anyhow!("{}", e.message))?;
                eprintln!(
                    "created key {} ({} in project '{project}'); the token is shown only now:",
                    created.key.id, body.role
                );
                println!("{}", created.token);
            }
            KeysCommand::List => {
                let keys = store.list_keys(None).await?;
                let views: Vec<KeyView> = keys.into_iter().map(KeyView::from).collect();
                println!("{}", serde_json::to_string_pretty(&views)?);
            }
            KeysCommand::Revoke { id } => {
                if !store.revoke_key(&id).await? {
                    eprintln!("no live key '{id}' (unknown or already revoked)");
                    return Ok(ExitCode::FAILURE);
                }
                eprintln!("revoked key {id}");
            }
        }
        store.close().await;
        Ok(ExitCode::SUCCESS)
    })
}
