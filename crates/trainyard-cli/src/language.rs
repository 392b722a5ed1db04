//! `trainyard models generate` (text printed as the server produces it) and
//! `trainyard models export` (the bundle written to a file).

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::encoding::segment;
use crate::remote::{Client, ClientError};

#[derive(Args)]
pub struct GenerateArgs {
    model: String,
    #[arg(long)]
    prompt: String,
    #[arg(long, default_value_t = 200)]
    max_new_tokens: usize,
    #[arg(long, default_value_t = 0.8)]
    temperature: f64,
    #[arg(long)]
    top_k: Option<usize>,
    #[arg(long)]
    top_p: Option<f64>,
    /// End before this string (repeatable).
    #[arg(long)]
    stop: Vec<String>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub async fn generate(
    client: &Client,
    output: &str,
    args: GenerateArgs,
) -> Result<(), ClientError> {
    let body = json!({"prompt": args.prompt, "max_new_tokens": args.max_new_tokens,
                      "temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p,
                      "stop": args.stop, "seed": args.seed});
    let url = format!(
        "{}/api/models/{}/generate",
        client.base,
        segment(&args.model)
    );
    let request = client
        .http()
        .post(url)
        .header("accept", "text/event-stream")
        .json(&body);
    let mut events = client.send(request).await?.bytes_stream();
    let table = output != "json";
    if table {
        print!("{}", args.prompt);
    }
    let mut buffer = String::new();
    while let Some(chunk) = events.next().await {
        let chunk = chunk.map_err(|e| anyhow::anyhow!("the stream broke off: {e}"))?;
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let kind = field(&block, "event:").unwrap_or_default();
            let data: Value = field(&block, "data:")
                .and_then(|d| serde_json::from_str(&d).ok())
                .unwrap_or(Value::Null);
            match kind.as_str() {
                "token" if table => {
                    print!("{}", data["text"].as_str().unwrap_or_default());
                    let _ = std::io::stdout().flush();
                }
                "done" => {
                    finish(table, &data);
                    return Ok(());
                }
                "error" => {
                    let message = data["error"]["message"].as_str().unwrap_or("unknown error");
                    return Err(anyhow::anyhow!("generation failed: {message}").into());
                }
                _ => {}
            }
        }
    }
    Err(anyhow::anyhow!("the server closed the stream before generation finished; retry").into())
}

fn field(block: &str, name: &str) -> Option<String> {
    block
        .lines()
        .find_map(|line| line.strip_prefix(name))
        .map(|v| v.trim_start().to_string())
}

fn finish(table: bool, done: &Value) {
    if !table {
        println!("{}", serde_json::to_string_pretty(done).unwrap_or_default());
        return;
    }
    println!();
    eprintln!(
        "({} tokens, {:.0} tokens/s, finished by {}{})",
        done["tokens"],
        done["tokens_per_second"].as_f64().unwrap_or(0.0),
        done["finish_reason"].as_str().unwrap_or("length"),
        if done["prompt_truncated"] == true {
            "; prompt truncated to the context"
        } else {
            ""
        }
    );
}

pub async fn export(
    client: &Client,
    model: &str,
    output: Option<PathBuf>,
) -> Result<(), ClientError> {
    let url = format!("{}/api/models/{}/export", client.base, segment(model));
    let response = client.send(client.http().get(url)).await?;
    let bytes = response
        .bytes()
        .await
        .map_err(|e| anyhow::anyhow!("the download broke off: {e}; retry"))?;
    let path = output.unwrap_or_else(|| PathBuf::from(format!("{model}.tar")));
    std::fs::write(&path, &bytes).with_context(|| format!("writing {}", path.display()))?;
    println!("wrote {} ({} bytes)", path.display(), bytes.len());
    Ok(())
}
