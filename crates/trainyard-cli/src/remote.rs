//! `trainyard models ...` and `trainyard datasets ...`: the CLI as a client of a running server.
//!
//! Exit codes: 0 success; 1 the server refused the request (4xx/5xx) or the watched run failed
//! or was cancelled; 2 usage errors (from clap); 3 the server could not be reached.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use reqwest::{Method, StatusCode};
use serde_json::{Map, Value, json};

use crate::encoding::{parse_csv_rows, query, segment};
use crate::local_train::parse_sets;
use crate::watch;

pub const EXIT_REFUSED: u8 = 1;
pub const EXIT_UNREACHABLE: u8 = 3;

#[derive(Args, Clone)]
pub struct Connection {
    /// The server to talk to.
    #[arg(
        long,
        global = true,
        env = "TRAINYARD_SERVER",
        default_value = "http://127.0.0.1:8080"
    )]
    pub server: String,
    /// `table` for people, `json` for scripts.
    #[arg(long, global = true, default_value = "table", value_parser = ["table", "json"])]
    pub output: String,
    /// The API key (`ty_...`) the server requires once keys exist or it listens beyond loopback.
    #[arg(long, global = true, env = "TRAINYARD_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// The project to act in (default: the key's only project, else `default`).
    #[arg(long, global = true, env = "TRAINYARD_PROJECT")]
    pub project: Option<String>,
}

#[derive(Subcommand)]
pub enum ModelsCommand {
    /// Create a model.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        dataset: String,
        #[arg(long)]
        algorithm: String,
        /// A hyperparameter, KEY=VALUE (VALUE read as JSON when it parses).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
    /// List models, newest first.
    List {
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        dataset: Option<String>,
        #[arg(long)]
        algorithm: Option<String>,
        /// Models that read this model (sparse autoencoders of a language model).
        #[arg(long)]
        source_model: Option<String>,
        /// Sparse autoencoders of this architecture (relu, topk, batch_topk).
        #[arg(long)]
        architecture: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Show one model.
    Show {
        model: String,
    },
    /// Delete a model with its runs, metrics and files.
    Delete {
        model: String,
    },
    /// Start training; with --watch, follow it to the end.
    Train {
        model: String,
        /// Override a hyperparameter for this run, KEY=VALUE.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        #[arg(long)]
        watch: bool,
    },
    /// Follow a model's training live until it ends.
    Watch {
        model: String,
    },
    /// The latest run's status, progress and metrics.
    Status {
        model: String,
    },
    Pause {
        model: String,
    },
    Resume {
        model: String,
    },
    Cancel {
        model: String,
    },
    /// Predict from rows in a CSV (numeric columns; a header line is skipped) or JSON file.
    Predict {
        model: String,
        #[arg(long)]
        input: PathBuf,
    },
    /// Continue a prompt with a language model (streamed as it is produced).
    Generate(crate::language::GenerateArgs),
    /// A sparse autoencoder's features (a page, or one with --index and its top contexts).
    Features(crate::features::FeaturesArgs),
    /// A text's tokens through a sparse autoencoder: each token's strongest features.
    Encode(crate::features::EncodeArgs),
    /// Download the export bundle (a tar archive of weights, config, tokenizer and model card).
    Export {
        model: String,
        /// Where to write the archive (default: MODEL.tar).
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
pub enum DatasetsCommand {
    List,
    Show {
        name: String,
    },
    /// Upload a CSV or Parquet file as a dataset, or with --task text a UTF-8 text corpus.
    Upload {
        file: PathBuf,
        #[arg(long)]
        name: String,
        /// The target column's header (none for a text corpus).
        #[arg(long, required_unless_present = "task")]
        target: Option<String>,
        /// classification or regression (inferred when absent), or text.
        #[arg(long)]
        task: Option<String>,
    },
    Delete {
        name: String,
    },
    /// Extract a trained language model's activations as a dataset (a job on the workers).
    Extract(crate::extract::ExtractArgs),
    /// Stop an activation dataset's extraction.
    Cancel {
        name: String,
    },
}

/// Why a command stopped: the server said no, or could not be reached.
#[derive(Debug)]
pub enum ClientError {
    Refused { status: StatusCode, message: String },
    Unreachable(String),
    Other(anyhow::Error),
}

impl From<anyhow::Error> for ClientError {
    fn from(e: anyhow::Error) -> Self {
        ClientError::Other(e)
    }
}

pub struct Client {
    pub base: String,
    http: reqwest::Client,
}

impl Client {
    pub fn new(conn: &Connection) -> Self {
        let mut headers = reqwest::header::HeaderMap::new();
        // Says "not a browser form", so POSTs without a JSON body pass the server's CSRF check.
        headers.insert(
            "x-trainyard-client",
            reqwest::header::HeaderValue::from_static("cli"),
        );
        if let Some(key) = &conn.api_key
            && let Ok(mut value) = reqwest::header::HeaderValue::from_str(&format!("Bearer {key}"))
        {
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        if let Some(project) = &conn.project
            && let Ok(value) = reqwest::header::HeaderValue::from_str(project)
        {
            headers.insert("x-trainyard-project", value);
        }
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .build()
            .unwrap_or_default();
        Client {
            base: conn.server.trim_end_matches('/').to_string(),
            http,
        }
    }

    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, ClientError> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            req = req.json(&body);
        }
        self.finish(req).await
    }

    pub async fn send_raw(
        &self,
        path: &str,
        content_type: &str,
        bytes: Vec<u8>,
    ) -> Result<Value, ClientError> {
        let req = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", content_type)
            .body(bytes);
        self.finish(req).await
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    async fn finish(&self, req: reqwest::RequestBuilder) -> Result<Value, ClientError> {
        let text = self.send(req).await?.text().await.unwrap_or_default();
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Sends a request; a refusal becomes [`ClientError::Refused`] with the server's message
    /// and field, and a success is returned unread (for files and event streams).
    pub async fn send(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ClientError> {
        let response = req.send().await.map_err(|e| {
            ClientError::Unreachable(format!(
                "cannot reach {}: {e}; is `trainyard serve` running? (--server URL)",
                self.base
            ))
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let text = response.text().await.unwrap_or_default();
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let message = value["error"]["message"]
            .as_str()
            .map_or(text.clone(), str::to_string);
        let field = value["error"]["field"]
            .as_str()
            .map(|f| format!(" ({f})"))
            .unwrap_or_default();
        Err(ClientError::Refused {
            status,
            message: format!("{message}{field}"),
        })
    }
}

pub(crate) fn print(output: &str, value: &Value, table: impl FnOnce(&Value)) {
    if output == "json" {
        println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        );
    } else {
        table(value);
    }
}

fn print_status(s: &Value) {
    println!(
        "{}  {} ({})  epoch {}/{}  {}%",
        s["model_id"].as_str().unwrap_or_default(),
        s["status"].as_str().unwrap_or_default(),
        s["stage"].as_str().unwrap_or_default(),
        s["progress"]["epoch"],
        s["progress"]["total_epochs"],
        s["progress"]["percent"]
    );
    if let Some(metrics) = s["metrics"].as_object() {
        for (k, v) in metrics {
            println!("  {k:<18} {v}");
        }
    }
    if let Some(error) = s["error"].as_str() {
        println!("  error: {error}");
    }
}

fn print_model(m: &Value) {
    println!(
        "{}  {:<24} {:<20} {:<20} {}",
        m["id"].as_str().unwrap_or_default(),
        m["name"].as_str().unwrap_or_default(),
        m["dataset"].as_str().unwrap_or_default(),
        m["algorithm"].as_str().unwrap_or_default(),
        m["status"].as_str().unwrap_or_default()
    );
}

/// Reads prediction rows from a `.json` file (`[[...]]` or `{"inputs": [[...]]}`) or a CSV.
pub fn read_rows(path: &Path) -> anyhow::Result<Vec<Vec<f64>>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    if path.extension().is_some_and(|e| e == "json") {
        let value: Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", path.display()))?;
        let rows = value.get("inputs").cloned().unwrap_or(value);
        return serde_json::from_value(rows)
            .with_context(|| format!("{}: expected [[numbers, ...], ...]", path.display()));
    }
    parse_csv_rows(&text).with_context(|| format!("reading {}", path.display()))
}

pub async fn models(conn: &Connection, command: ModelsCommand) -> Result<ExitCode, ClientError> {
    let client = Client::new(conn);
    let out = conn.output.as_str();
    match command {
        ModelsCommand::Create {
            name,
            dataset,
            algorithm,
            set,
        } => {
            let hp: Map<String, Value> = parse_sets(&set)?;
            let body = json!({"name": name, "dataset": dataset, "algorithm": algorithm, "hyperparameters": hp});
            let model = client
                .request(Method::POST, "/api/models", Some(body))
                .await?;
            print(out, &model, |m| {
                println!("created model {}", m["id"].as_str().unwrap_or_default());
                print_model(m);
            });
        }
        ModelsCommand::List {
            status,
            dataset,
            algorithm,
            source_model,
            architecture,
            limit,
        } => {
            let limit = limit.to_string();
            let mut pairs = vec![("limit", limit.as_str())];
            for (key, value) in [
                ("status", &status),
                ("dataset", &dataset),
                ("algorithm", &algorithm),
                ("source_model", &source_model),
                ("architecture", &architecture),
            ] {
                if let Some(v) = value {
                    pairs.push((key, v.as_str()));
                }
            }
            let list = client
                .request(Method::GET, &format!("/api/models?{}", query(&pairs)), None)
                .await?;
            print(out, &list, |l| {
                for m in l["models"].as_array().into_iter().flatten() {
                    print_model(m);
                }
                println!(
                    "{} of {} models",
                    l["models"].as_array().map_or(0, Vec::len),
                    l["total"]
                );
            });
        }
        ModelsCommand::Show { model } => {
            let m = client
                .request(
                    Method::GET,
                    &format!("/api/models/{}", segment(&model)),
                    None,
                )
                .await?;
            print(out, &m, |m| {
                println!("{}", serde_json::to_string_pretty(m).unwrap_or_default())
            });
        }
        ModelsCommand::Delete { model } => {
            client
                .request(
                    Method::DELETE,
                    &format!("/api/models/{}", segment(&model)),
                    None,
                )
                .await?;
            print(out, &json!({"deleted": model}), |_| {
                println!("deleted model {model}")
            });
        }
        ModelsCommand::Train {
            model,
            set,
            watch: follow,
        } => {
            let hp = parse_sets(&set)?;
            let run = client
                .request(
                    Method::POST,
                    &format!("/api/models/{}/train", segment(&model)),
                    Some(json!({"hyperparameters": hp})),
                )
                .await?;
            if follow {
                return watch::follow(&client, &model, out).await;
            }
            print(out, &run, |r| {
                println!(
                    "run {} is {}",
                    r["id"].as_str().unwrap_or_default(),
                    r["status"].as_str().unwrap_or_default()
                )
            });
        }
        ModelsCommand::Watch { model } => return watch::follow(&client, &model, out).await,
        ModelsCommand::Status { model } => {
            let s = client
                .request(
                    Method::GET,
                    &format!("/api/models/{}/status", segment(&model)),
                    None,
                )
                .await?;
            print(out, &s, print_status);
        }
        ModelsCommand::Pause { model } => steer(&client, out, &model, "pause").await?,
        ModelsCommand::Resume { model } => steer(&client, out, &model, "resume").await?,
        ModelsCommand::Cancel { model } => steer(&client, out, &model, "cancel").await?,
        ModelsCommand::Predict { model, input } => {
            let rows = read_rows(&input)?;
            let result = client
                .request(
                    Method::POST,
                    &format!("/api/models/{}/predict", segment(&model)),
                    Some(json!({"inputs": rows})),
                )
                .await?;
            print(out, &result, |r| {
                for p in r["predictions"].as_array().into_iter().flatten() {
                    println!("{}", prediction_line(p));
                }
            });
        }
        ModelsCommand::Generate(args) => crate::language::generate(&client, out, args).await?,
        ModelsCommand::Features(args) => crate::features::features(&client, out, args).await?,
        ModelsCommand::Encode(args) => crate::features::encode(&client, out, args).await?,
        ModelsCommand::Export { model, output } => {
            crate::language::export(&client, &model, output).await?
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn steer(client: &Client, out: &str, model: &str, action: &str) -> Result<(), ClientError> {
    let s = client
        .request(
            Method::POST,
            &format!("/api/models/{}/{action}", segment(model)),
            Some(json!({})),
        )
        .await?;
    print(out, &s, print_status);
    Ok(())
}

pub async fn datasets(
    conn: &Connection,
    command: DatasetsCommand,
) -> Result<ExitCode, ClientError> {
    let client = Client::new(conn);
    let out = conn.output.as_str();
    match command {
        DatasetsCommand::List => {
            let list = client.request(Method::GET, "/api/datasets", None).await?;
            print(out, &list, |l| {
                for d in l["datasets"].as_array().into_iter().flatten() {
                    let origin = match (d["builtin"] == true, d["status"].as_str()) {
                        (true, _) => String::new(),
                        (false, Some("ready")) | (false, None) => "  (uploaded)".into(),
                        (false, Some(status)) => format!("  ({status})"),
                    };
                    println!(
                        "{:<22} {:<15} {:>7} rows {:>4} features{origin}",
                        d["name"].as_str().unwrap_or_default(),
                        d["task"].as_str().unwrap_or_default(),
                        d["n_rows"],
                        d["n_features"],
                    );
                }
            });
        }
        DatasetsCommand::Show { name } => {
            let d = client
                .request(
                    Method::GET,
                    &format!("/api/datasets/{}", segment(&name)),
                    None,
                )
                .await?;
            print(out, &d, |d| {
                println!("{}", serde_json::to_string_pretty(d).unwrap_or_default())
            });
        }
        DatasetsCommand::Upload {
            file,
            name,
            target,
            task,
        } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let mut pairs = vec![("name", name.as_str())];
            if let Some(target) = &target {
                pairs.push(("target", target.as_str()));
            }
            if let Some(task) = &task {
                pairs.push(("task", task.as_str()));
            }
            let path = format!("/api/datasets?{}", query(&pairs));
            let content_type = if task.as_deref() == Some("text") {
                "application/octet-stream"
            } else {
                "text/csv"
            };
            let d = client.send_raw(&path, content_type, bytes).await?;
            print(out, &d, |d| {
                println!(
                    "uploaded {}: {} rows, {} features, {}",
                    name,
                    d["n_rows"],
                    d["n_features"],
                    d["task"].as_str().unwrap_or_default()
                )
            });
        }
        DatasetsCommand::Extract(args) => {
            return crate::extract::extract(&client, out, args).await;
        }
        DatasetsCommand::Cancel { name } => {
            return crate::extract::cancel(&client, out, &name).await;
        }
        DatasetsCommand::Delete { name } => {
            client
                .request(
                    Method::DELETE,
                    &format!("/api/datasets/{}", segment(&name)),
                    None,
                )
                .await?;
            print(out, &json!({"deleted": name}), |_| {
                println!("deleted dataset {name}")
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs a client command on a small runtime and turns its outcome into an exit code.
pub fn run(
    future: impl std::future::Future<Output = Result<ExitCode, ClientError>>,
) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(match runtime.block_on(future) {
        Ok(code) => code,
        Err(ClientError::Refused { status, message }) => {
            eprintln!("error: the server answered {status}: {message}");
            ExitCode::from(EXIT_REFUSED)
        }
        Err(ClientError::Unreachable(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(EXIT_UNREACHABLE)
        }
        Err(ClientError::Other(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_REFUSED)
        }
    })
}

/// One prediction as a line: a class label, a value, or an anomaly score with its flag (any
/// other family's answer as its JSON).
fn prediction_line(p: &Value) -> String {
    if let Some(label) = p.get("label").and_then(Value::as_str) {
        return label.to_string();
    }
    if let Some(value) = p.get("value") {
        return value.to_string();
    }
    match (p.get("score"), p.get("is_anomaly").and_then(Value::as_bool)) {
        (Some(score), Some(true)) => format!("{score}\tanomaly"),
        (Some(score), Some(false)) => format!("{score}\tnormal"),
        _ => p.to_string(),
    }
}
