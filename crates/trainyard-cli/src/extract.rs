//! `trainyard datasets extract` and `datasets cancel`: activation datasets read from a trained
//! language model by the server's workers, followed with a progress line.

use std::process::ExitCode;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::encoding::segment;
use crate::remote::{Client, ClientError, print};

/// What `datasets extract` asks for.
#[derive(Debug, clap::Args)]
pub struct ExtractArgs {
    #[arg(long)]
    pub name: String,
    /// The transformer_lm model's id.
    #[arg(long)]
    pub source_model: String,
    /// The text corpus read through it.
    #[arg(long, default_value = "shakespeare")]
    pub text_dataset: String,
    /// Blocks, comma-separated (default: the middle one).
    #[arg(long, value_delimiter = ',')]
    pub layers: Vec<usize>,
    /// resid_post (default), mlp_out or attn_out.
    #[arg(long)]
    pub site: Option<String>,
    /// Training tokens to read (default 262144).
    #[arg(long)]
    pub n_tokens: Option<usize>,
    /// Follow it until it ends; exit 1 unless it is ready.
    #[arg(long)]
    pub watch: bool,
}

pub async fn extract(
    client: &Client,
    out: &str,
    args: ExtractArgs,
) -> Result<ExitCode, ClientError> {
    let mut body = json!({"name": args.name, "kind": "activations",
        "source_model": args.source_model, "text_dataset": args.text_dataset});
    if !args.layers.is_empty() {
        body["layers"] = json!(args.layers);
    }
    if let Some(site) = &args.site {
        body["site"] = json!(site);
    }
    if let Some(n) = args.n_tokens {
        body["n_tokens"] = json!(n);
    }
    let created = client
        .request(Method::POST, "/api/datasets", Some(body))
        .await?;
    if !args.watch {
        print(out, &created, |d| {
            println!(
                "extracting {}: {} tokens of layer(s) {} (follow it with `trainyard datasets show {}`)",
                args.name, d["n_rows"], d["extracted_from"]["layers"], args.name
            )
        });
        return Ok(ExitCode::SUCCESS);
    }
    let path = format!("/api/datasets/{}", segment(&args.name));
    let last = loop {
        let d = client.request(Method::GET, &path, None).await?;
        if d["status"] != "initializing" {
            break d;
        }
        if out != "json" {
            let e = &d["extraction"];
            eprint!(
                "\rextracting {}: {:>5.1}%  shard {}/{}  ",
                args.name,
                e["progress"].as_f64().unwrap_or(0.0) * 100.0,
                e["shards_done"],
                e["shards_total"]
                    .as_u64()
                    .map_or("?".into(), |t| t.to_string())
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    if out != "json" {
        eprintln!();
    }
    print(out, &last, |d| match d["status"].as_str() {
        Some("ready") => println!(
            "{} ready: {} tokens x {} ({} bytes)",
            args.name, d["n_rows"], d["n_features"], d["bytes"]
        ),
        other => println!(
            "{} ended {}: {}",
            args.name,
            other.unwrap_or("?"),
            d["extraction"]["error"]
                .as_str()
                .unwrap_or("no error recorded")
        ),
    });
    Ok(if last["status"] == "ready" {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

pub async fn cancel(client: &Client, out: &str, name: &str) -> Result<ExitCode, ClientError> {
    let path = format!("/api/datasets/{}/cancel", segment(name));
    let d: Value = client.request(Method::POST, &path, Some(json!({}))).await?;
    print(out, &d, |_| println!("cancelled the extraction of {name}"));
    Ok(ExitCode::SUCCESS)
}
