//! The text-classification workload: which of five plays a line of the built-in Shakespeare
//! comes from. Trainyard trains its default `transformer_classifier`; the split is written as
//! CSV so a peer (a bag-of-words logistic regression) learns and is scored on the same rows.
//! `text_classify_pretrained` first trains a language model on the rest of the corpus (every
//! line but the ones the classifier is scored on) and starts the classifier from it.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use serde_json::{Map, Value, json};
use trainyard_data::labeled_text::parse_labeled_texts;
use trainyard_data::text::{builtin_corpus, corpus_dataset};
use trainyard_engine::Control;
use trainyard_engine::family::{Families, Finished, Job, Limits, Reporter, SavedCheckpoint};
use trainyard_engine::language::classify::{INIT_FROM_FIELD, split};

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

/// Hyperparameters from the JSON object in the environment variable `name`, or none (the
/// defaults): for trying other settings against the same peer.
fn hyperparameters(name: &str) -> anyhow::Result<Map<String, Value>> {
    match std::env::var(name) {
        Ok(text) => serde_json::from_str(&text)
            .with_context(|| format!("{name} must be a JSON object of hyperparameters")),
        Err(_) => Ok(Map::new()),
    }
}

/// The language model the pretrained variant starts from: the classifier's default body
/// (byte-level BPE of 2,000 tokens, two blocks), trained on sentences rather than single lines.
/// `TRAINYARD_BENCH_LM_HYPERPARAMETERS` overrides these.
fn language_model_hyperparameters() -> anyhow::Result<Map<String, Value>> {
    let Value::Object(mut hp) = json!({
        "tokenizer": "bpe", "vocab_size": 2000, "n_layer": 2, "dropout": 0.1,
        "batch_size": 32, "max_steps": 2000, "eval_interval": 500,
    }) else {
        unreachable!("a JSON object literal")
    };
    hp.extend(hyperparameters("TRAINYARD_BENCH_LM_HYPERPARAMETERS")?);
    Ok(hp)
}

fn train(
    dataset: trainyard_data::Dataset,
    algorithm: &str,
    hyperparameters: Map<String, Value>,
    dependencies: BTreeMap<String, Vec<u8>>,
) -> anyhow::Result<trainyard_engine::family::Artifact> {
    let job = Job {
        dataset: Arc::new(dataset),
        algorithm: algorithm.into(),
        hyperparameters,
        limits: Limits {
            job_memory_mb: 8192,
            batch_halvings: 0,
        },
        resume: None,
        dependencies,
        cache: None,
    };
    let family = Families::builtin().for_algorithm(algorithm)?.clone();
    match family.train(job, &Control::default(), &mut Evaluations)? {
        Finished::Completed(artifact) => Ok(artifact),
        _ => anyhow::bail!("the {algorithm} did not complete"),
    }
}

/// A `transformer_lm` trained on `corpus` without the lines the classifier is scored on
/// (nor any line with the same text): the model file. With `TRAINYARD_BENCH_LM_FILE` set, the
/// model in that file when it exists (to try classifier settings on one language model), else
/// the one trained now, saved there.
fn pretrain(corpus: &str, held_out: &HashSet<&str>) -> anyhow::Result<Vec<u8>> {
    let saved = std::env::var_os("TRAINYARD_BENCH_LM_FILE").map(std::path::PathBuf::from);
    if let Some(path) = saved.as_ref().filter(|p| p.exists()) {
        eprintln!("starting from the language model in {}", path.display());
        return std::fs::read(path).with_context(|| format!("reading {}", path.display()));
    }
    let text: Vec<&str> = corpus
        .lines()
        .filter(|line| !held_out.contains(line.trim()))
        .collect();
    let dataset = corpus_dataset(
        "shakespeare-without-validation",
        text.join("\n"),
        "the built-in corpus less the classifier's validation lines",
        "public domain",
    )?;
    eprintln!("pretraining a language model on the corpus less the validation lines");
    let hp = language_model_hyperparameters()?;
    let model = train(dataset, "transformer_lm", hp, BTreeMap::new())?.bytes;
    if let Some(path) = saved {
        std::fs::write(&path, &model).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(model)
}

/// Trains the default classifier on the plays' lines (first a language model to start it from
/// when `pretrained`); writes `train.csv` and `validation.csv` (the classifier's own split) and
/// `plays.csv` (every row, to upload) under `export` when given.
pub fn run(export: Option<&Path>, pretrained: bool) -> anyhow::Result<Value> {
    let corpus = builtin_corpus("shakespeare")?;
    let rows = play_lines(&corpus);
    let all: Vec<usize> = (0..rows.len()).collect();
    let dataset = parse_labeled_texts("plays", &csv_of(&rows, &all)?, "play")?;
    let seed = trainyard_engine::language::LmHyperparameters::default().seed;
    let (train_rows, validation) = split(rows.len(), seed);
    if let Some(dir) = export {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::write(dir.join("train.csv"), csv_of(&rows, &train_rows)?)?;
        std::fs::write(dir.join("validation.csv"), csv_of(&rows, &validation)?)?;
        // Every row in order: uploaded as is, a classifier splits it as above.
        std::fs::write(dir.join("plays.csv"), csv_of(&rows, &all)?)?;
    }
    let started = Instant::now();
    let mut hp = hyperparameters("TRAINYARD_BENCH_HYPERPARAMETERS")?;
    let mut dependencies = BTreeMap::new();
    if pretrained {
        let held_out: HashSet<&str> = validation.iter().map(|&i| rows[i].0.as_str()).collect();
        dependencies.insert(INIT_FROM_FIELD.to_string(), pretrain(&corpus, &held_out)?);
        hp.insert("init_from".into(), json!("pretrained"));
    }
    let artifact = train(dataset, "transformer_classifier", hp, dependencies)?;
    let metric = |name: &str| artifact.metrics.get(name).copied().unwrap_or(f64::NAN);
    let workload = if pretrained {
        "text_classify_pretrained"
    } else {
        "text_classify"
    };
    Ok(json!({
        "workload": workload,
        "accuracy": metric("accuracy"),
        "macro_f1": metric("macro_f1"),
        "train_seconds": started.elapsed().as_secs_f64(),
        "rows": rows.len(),
    }))
}
