//! The text-classification workload: which of five plays a line of the built-in Shakespeare
//! comes from. Trainyard trains its default `transformer_classifier`; the split is written as
//! CSV so a peer (a bag-of-words logistic regression) learns and is scored on the same rows.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use serde_json::{Map, Value, json};
use trainyard_data::labeled_text::parse_labeled_texts;
use trainyard_data::text::builtin_corpus;
use trainyard_engine::Control;
use trainyard_engine::family::{Families, Finished, Job, Limits, Reporter, SavedCheckpoint};
use trainyard_engine::language::classify::split;

const PLAYS: usize = 5;
const LINES_PER_PLAY: usize = 1000;

/// Lines of 30 to 100 characters from the first plays with enough of them, labeled by play.
/// A play starts at "by William Shakespeare"; its title is two lines up (in this corpus
/// sometimes glued to the previous play's last line, which keeps it distinct all the same).
fn play_lines(corpus: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = corpus.lines().collect();
    let starts: Vec<usize> = (2..lines.len())
        .filter(|&i| lines[i].trim() == "by William Shakespeare")
        .collect();
    let mut rows = Vec::new();
    let mut plays = 0;
    for (k, &start) in starts.iter().enumerate() {
        let end = starts.get(k + 1).copied().unwrap_or(lines.len());
        let title = lines[start - 2].trim().to_string();
        let body: Vec<&str> = lines[start + 1..end]
            .iter()
            .map(|l| l.trim())
            .filter(|l| (30..=100).contains(&l.len()) && l.chars().any(|c| c.is_lowercase()))
            .take(LINES_PER_PLAY)
            .collect();
        if body.len() < LINES_PER_PLAY {
            continue;
        }
        rows.extend(body.into_iter().map(|l| (l.to_string(), title.clone())));
        plays += 1;
        if plays == PLAYS {
            break;
        }
    }
    rows
}

fn csv_of(rows: &[(String, String)], indices: &[usize]) -> anyhow::Result<Vec<u8>> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record(["text", "play"])?;
    for &i in indices {
        writer.write_record([&rows[i].0, &rows[i].1])?;
    }
    Ok(writer.into_inner()?)
}

/// Prints each evaluation to stderr, so a long run shows how it learns.
struct Evaluations;

impl Reporter for Evaluations {
    fn event(&mut self, event: trainyard_core::TrainingEvent) {
        if let trainyard_core::TrainingEvent::Epoch(m) = event {
            eprintln!(
                "evaluation {}: train_loss {:.4}, val_loss {:.4}, accuracy {:.4}",
                m.epoch,
                m.train_loss,
                m.val_loss,
                m.values.get("accuracy").copied().unwrap_or(f64::NAN)
            );
        }
    }

    fn checkpoint(&mut self, _: &SavedCheckpoint) -> Result<u64, String> {
        Ok(0)
    }
}

/// Trains the default classifier on the plays' lines; writes `train.csv` and
/// `validation.csv` (the classifier's own split) and `plays.csv` (every row, to upload)
/// under `export` when given.
/// The classifier's hyperparameters: its defaults, or the JSON object in
/// `TRAINYARD_BENCH_HYPERPARAMETERS` (for trying other settings against the same peer).
fn hyperparameters() -> anyhow::Result<Map<String, Value>> {
    match std::env::var("TRAINYARD_BENCH_HYPERPARAMETERS") {
        Ok(text) => serde_json::from_str(&text)
            .context("TRAINYARD_BENCH_HYPERPARAMETERS must be a JSON object of hyperparameters"),
        Err(_) => Ok(Map::new()),
    }
}

pub fn run(export: Option<&Path>) -> anyhow::Result<Value> {
    let rows = play_lines(&builtin_corpus("shakespeare")?);
    let all: Vec<usize> = (0..rows.len()).collect();
    let dataset = parse_labeled_texts("plays", &csv_of(&rows, &all)?, "play")?;
    let seed = trainyard_engine::language::LmHyperparameters::default().seed;
    if let Some(dir) = export {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let (train, validation) = split(rows.len(), seed);
        std::fs::write(dir.join("train.csv"), csv_of(&rows, &train)?)?;
        std::fs::write(dir.join("validation.csv"), csv_of(&rows, &validation)?)?;
        // Every row in order: uploaded as is, a classifier splits it as above.
        std::fs::write(dir.join("plays.csv"), csv_of(&rows, &all)?)?;
    }
    let job = Job {
        dataset: Arc::new(dataset),
        algorithm: "transformer_classifier".into(),
        hyperparameters: hyperparameters()?,
        limits: Limits {
            job_memory_mb: 8192,
            batch_halvings: 0,
        },
        resume: None,
        dependencies: Default::default(),
        cache: None,
    };
    let family = Families::builtin()
        .for_algorithm("transformer_classifier")?
        .clone();
    let started = Instant::now();
    let Finished::Completed(artifact) = family.train(job, &Control::default(), &mut Evaluations)?
    else {
        anyhow::bail!("the classifier did not complete");
    };
    let metric = |name: &str| artifact.metrics.get(name).copied().unwrap_or(f64::NAN);
    Ok(json!({
        "workload": "text_classify",
        "accuracy": metric("accuracy"),
        "macro_f1": metric("macro_f1"),
        "train_seconds": started.elapsed().as_secs_f64(),
        "rows": rows.len(),
    }))
}
