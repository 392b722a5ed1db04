//! `trainyard models watch`: follows a model's event stream (SSE) with a progress bar and a
//! metrics row per epoch, reconnecting from the last sequence number if the connection drops.

use std::process::ExitCode;
use std::time::Duration;

use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::Method;
use serde_json::Value;

use crate::remote::{Client, ClientError, EXIT_REFUSED};

struct View {
    json: bool,
    bar: Option<ProgressBar>,
}

impl View {
    fn line(&self, text: String) {
        match &self.bar {
            Some(bar) if !bar.is_hidden() => bar.println(text),
            _ => println!("{text}"),
        }
    }

    fn show(&mut self, event: &Value) {
        if self.json {
            println!("{event}");
            return;
        }
        let data = &event["data"];
        match event["type"].as_str().unwrap_or_default() {
            "progress" => {
                if let Some(bar) = &self.bar {
                    bar.set_position((data["percent"].as_f64().unwrap_or(0.0) * 10.0) as u64);
                    bar.set_message(format!(
                        "epoch {} batch {}/{}",
                        data["epoch"], data["batch"], data["batches"]
                    ));
                }
            }
            "epoch" => {
                let mut metrics: Vec<String> = ["train_loss", "val_loss", "accuracy", "r2", "rmse"]
                    .iter()
                    .filter_map(|k| data[*k].as_f64().map(|v| format!("{k} {v:.4}")))
                    .collect();
                metrics.insert(0, format!("epoch {:>4}", data["epoch"]));
                self.line(metrics.join("  "));
            }
            "status" => {
                self.line(format!(
                    "status: {} ({})",
                    data["status"].as_str().unwrap_or_default(),
                    data["stage"].as_str().unwrap_or_default()
                ));
                if let Some(error) = data["error"].as_str() {
                    self.line(format!("  {error}"));
                }
            }
            "note" => self.line(format!(
                "note: {}",
                data["message"].as_str().unwrap_or_default()
            )),
            "attempt" => self.line(format!("attempt {} started", data["attempt"])),
            _ => {}
        }
    }
}

/// Follows the latest run of `model` until it ends. Exit 0 when it completes, 1 otherwise.
pub async fn follow(client: &Client, model: &str, output: &str) -> Result<ExitCode, ClientError> {
    let status = client
        .request(
            Method::GET,
            &format!("/api/models/{}/status", crate::encoding::segment(model)),
            None,
        )
        .await?;
    let run_id = status["run_id"].clone();
    let bar = (output == "table").then(|| {
        let bar = ProgressBar::new(1000);
        bar.set_style(
            ProgressStyle::with_template("{bar:40} {percent:>3}% {msg} [{elapsed_precise}]")
                .unwrap(),
        );
        bar
    });
    let mut view = View {
        json: output == "json",
        bar,
    };
    let mut last_seq = 0i64;
    let mut final_status: Option<Value> = None;
    let mut backoff = Backoff::new();
    while final_status.is_none() {
        let url = format!(
            "{}/api/models/{}/events?after={last_seq}",
            client.base,
            crate::encoding::segment(model)
        );
        let response = match client.http().get(url).send().await {
            Ok(r) if r.status().is_success() => r,
            Ok(r) if !r.status().is_server_error() => {
                return Err(ClientError::Refused {
                    status: r.status(),
                    message: r.text().await.unwrap_or_default(),
                });
            }
            // Away (restarting, unreachable) or unwell: wait and pick up after the last event.
            failed => {
                let why = match failed {
                    Ok(r) => format!("the server answered {}", r.status()),
                    Err(e) => format!("cannot reach {}: {e}", client.base),
                };
                backoff.wait(&why, &view).await?;
                continue;
            }
        };
        backoff.reset();
        let mut body = response.bytes_stream();
        let mut buffer = String::new();
        while let Some(chunk) = body.next().await {
            let Ok(chunk) = chunk else { break };
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buffer.find("\n\n") {
                let block: String = buffer.drain(..end + 2).collect();
                let Some(data) = block.lines().find_map(|l| l.strip_prefix("data:")) else {
                    continue;
                };
                let Ok(event) = serde_json::from_str::<Value>(data.trim()) else {
                    continue;
                };
                last_seq = event["seq"].as_i64().unwrap_or(last_seq);
                // Only the latest run: older runs' history is replayed first and skipped.
                if !run_id.is_null() && event["run_id"] != run_id {
                    continue;
                }
                view.show(&event);
                if event["type"] == "status"
                    && matches!(
                        event["data"]["status"].as_str(),
                        Some("completed" | "failed" | "cancelled")
                    )
                {
                    final_status = Some(event["data"].clone());
                }
            }
        }
        if final_status.is_none() {
            // The stream ended early (dropped as too slow, or the server stopping).
            backoff.wait("the event stream closed", &view).await?;
        }
    }
    if let Some(bar) = &view.bar {
        bar.finish_and_clear();
    }
    let final_status = final_status.expect("the loop ends with a final status");
    if output == "table" {
        println!(
            "final status: {}",
            final_status["status"].as_str().unwrap_or_default()
        );
        if let Some(metrics) = final_status["metrics"].as_object() {
            for (k, v) in metrics {
                println!("  {k:<18} {v}");
            }
        }
    }
    Ok(if final_status["status"] == "completed" {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_REFUSED)
    })
}

/// Reconnection delays: 0.5 s doubling to 8 s; gives up after five minutes without a stream.
struct Backoff {
    delay: Duration,
    away_since: Option<std::time::Instant>,
}

const GIVE_UP_AFTER: Duration = Duration::from_secs(300);

impl Backoff {
    fn new() -> Self {
        Backoff {
            delay: Duration::from_millis(500),
            away_since: None,
        }
    }

    fn reset(&mut self) {
        *self = Backoff::new();
    }

    async fn wait(&mut self, why: &str, view: &View) -> Result<(), ClientError> {
        let since = *self.away_since.get_or_insert_with(std::time::Instant::now);
        if since.elapsed() > GIVE_UP_AFTER {
            return Err(ClientError::Unreachable(format!(
                "{why}; gave up after {GIVE_UP_AFTER:?}. Is the server running? `trainyard models watch` picks up where it left off"
            )));
        }
        let message = format!("{why}; reconnecting in {:.1}s", self.delay.as_secs_f64());
        match &view.bar {
            Some(bar) if !bar.is_hidden() => bar.set_message(message),
            _ => eprintln!("{message}"),
        }
        tokio::time::sleep(self.delay).await;
        self.delay = (self.delay * 2).min(Duration::from_secs(8));
        Ok(())
    }
}
