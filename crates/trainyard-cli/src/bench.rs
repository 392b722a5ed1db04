//! `trainyard bench`: the speed and quality of default training runs on this machine, next to
//! their targets. It prints only what it measured in this run: comparisons with PyTorch and other
//! peers belong to the side-by-side harness in `benches/peers`, which measures both.

use std::time::Instant;

use serde_json::{Map, Value, json};
use trainyard_core::{Algorithm, Hyperparameters};
use trainyard_data::load_builtin;
use trainyard_engine::{Checkpoint, Control, Observer, Outcome, Recorder, TrainRequest};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Also run the full-size mnist cnn (slow on CPU).
    #[arg(long)]
    cnn: bool,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Measure the isolation forest on shuttle's ODDS split instead (fit, score, quality).
    #[arg(long)]
    anomaly: bool,
    /// With --anomaly, --workload text_classify or --workload tabular: also write the split as
    /// CSV files here, for a peer to measure on.
    #[arg(long)]
    export: Option<std::path::PathBuf>,
    /// Measure one peer workload and print a JSON line: mlp_b128, mlp_b512 (MLP 784-256-10,
    /// AdamW, one MNIST epoch), cnn (the default CNN), lm_speed (300 steps of nanoGPT's
    /// character-level Shakespeare recipe), lm_quality (its 2000 steps, then validation
    /// loss), lm_generate (2000 tokens sampled from that network) or text_classify (the default
    /// transformer_classifier on which of five plays a line comes from; text_classify_pretrained
    /// starts it from a language model trained on the rest of the corpus), sae_relu or sae_topk
    /// (an SAE 512 -> 4096, batches of 1024 tokens) or sae_products (only the five matrix
    /// products of that SAE's dense step: the ceiling of its speed). The `_bf16` workloads
    /// are the networks with `precision: "bf16"`; bf16_products times the networks' products
    /// in f32 and in bf16 on this CPU (no peer). tabular runs every default tabular model
    /// (seed 000's datasets and algorithms) and prints a line for each. `benches/peers/run`
    /// runs these alternately with their peers.
    #[arg(long, value_parser = ["mlp_b128", "mlp_b512", "cnn", "mlp_b128_bf16", "mlp_b512_bf16", "cnn_bf16", "lm_speed", "lm_quality", "lm_generate", "text_classify", "text_classify_pretrained", "sae_relu", "sae_topk", "sae_products", "bf16_products", "tabular"])]
    workload: Option<String>,
}

/// Collects nothing: the benchmark reads the run's own evaluations.
struct Quiet;

impl trainyard_engine::language::LmObserver for Quiet {
    fn evaluation(&mut self, _: &trainyard_engine::language::Evaluation) {}

    fn checkpoint(
        &mut self,
        _: &trainyard_engine::language::LmCheckpoint,
    ) -> Result<(), trainyard_engine::TrainError> {
        Ok(())
    }
}

/// nanoGPT's recipe on the built-in corpus: training throughput, and for lm_quality the
/// validation loss over 50 batches after 2000 steps.
fn run_lm_workload(name: &str) -> anyhow::Result<Value> {
    use trainyard_data::text::{EncodedCorpus, builtin_corpus};
    use trainyard_engine::language::{LmData, LmHyperparameters};
    let corpus = EncodedCorpus::new(&builtin_corpus("shakespeare")?);
    if name == "lm_generate" {
        return run_generate_workload(&corpus);
    }
    let quality = name == "lm_quality";
    let steps = if quality { 2000 } else { 300 };
    let hp = LmHyperparameters {
        max_steps: steps,
        eval_interval: steps,
        eval_batches: if quality { 50 } else { 1 },
        ..LmHyperparameters::default()
    };
    let data = LmData {
        train: &corpus.train,
        validation: &corpus.validation,
        vocab_size: corpus.tokenizer.vocab_size(),
        teacher: None,
    };
    let run = trainyard_engine::language::train(&hp, &data, None, &Control::default(), &mut Quiet)?;
    let last = run
        .evaluations
        .last()
        .ok_or_else(|| anyhow::anyhow!("{name}: no evaluation"))?;
    let mut out = json!({
        "workload": name,
        "tokens_per_second": last.tokens_per_second,
        "train_seconds": last.seconds,
        "threads": rayon_threads(),
    });
    if quality {
        out["val_loss"] = json!(last.val_loss);
    }
    Ok(out)
}

/// Sampling speed: 2000 tokens (temperature 1) from nanoGPT's network after "ROMEO:", with
/// the key-value cache. Weights are freshly initialised: speed does not depend on them.
fn run_generate_workload(corpus: &trainyard_data::text::EncodedCorpus) -> anyhow::Result<Value> {
    use trainyard_engine::family::GenerateRequest;
    use trainyard_engine::language::{GptWeights, LmHyperparameters};
    let config = LmHyperparameters::default().config(corpus.tokenizer.vocab_size());
    let weights = GptWeights::initialised(&config);
    let request = GenerateRequest {
        prompt: "ROMEO:".into(),
        max_new_tokens: 2000,
        temperature: 1.0,
        top_k: None,
        top_p: None,
        stop: vec![],
        seed: 1,
    };
    let generated = trainyard_engine::language::generate::generate(
        &weights,
        &corpus.tokenizer,
        &request,
        &mut |_| true,
    )?;
    Ok(json!({
        "workload": "lm_generate",
        "tokens_per_second": generated.tokens_per_second,
        "threads": 1,
    }))
}

/// The training thread pool's size: RAYON_NUM_THREADS when set, else one per core.
pub(crate) fn rayon_threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// One epoch of a peer workload; the training throughput of that epoch, as a JSON line.
fn run_workload(name: &str) -> anyhow::Result<Value> {
    if name.starts_with("lm_") {
        return run_lm_workload(name);
    }
    if name == "sae_products" {
        return Ok(crate::bench_sae::products());
    }
    if name == "bf16_products" {
        return Ok(crate::bench_bf16::products());
    }
    if name.starts_with("sae_") {
        return crate::bench_sae::run(name);
    }
    let (network, precision) = match name.strip_suffix("_bf16") {
        Some(network) => (network, "bf16"),
        None => (name, "fp32"),
    };
    let (algorithm, overrides) = match network {
        "mlp_b128" | "mlp_b512" => (
            Algorithm::Mlp,
            json!({"epochs": 1, "optimizer": "adamw", "hidden_layers": [256],
                   "batch_size": if network == "mlp_b128" { 128 } else { 512 },
                   "validation_split": 0.05, "checkpoint_seconds": 0, "precision": precision}),
        ),
        _ => (
            Algorithm::Cnn,
            json!({"epochs": 1, "batch_size": 128, "validation_split": 0.05, "checkpoint_seconds": 0,
                   "precision": precision}),
        ),
    };
    let dataset = load_builtin("mnist")?;
    let overrides: Map<String, Value> = overrides.as_object().cloned().unwrap_or_default();
    let hp = Hyperparameters::resolve(algorithm, &dataset.info.shape(), &overrides)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let request = TrainRequest {
        dataset,
        algorithm,
        hyperparameters: hp,
        resume: None,
        batch_halvings: 0,
    };
    let mut recorder = Recorder::default();
    trainyard_engine::train(request, &Control::default(), &mut recorder)?;
    let epoch = recorder
        .epochs()
        .first()
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("{name}: no epoch finished"))?;
    Ok(json!({
        "workload": name,
        "samples_per_second": epoch.samples_per_second,
        "epoch_seconds": epoch.epoch_seconds,
        "accuracy": epoch.monitored("val_accuracy"),
        "threads": rayon_threads(),
    }))
}

struct Case {
    dataset: &'static str,
    algorithm: Algorithm,
    overrides: Value,
    target_seconds: f64,
    metric: &'static str,
    bar: f64,
}

fn run_case(case: &Case) -> anyhow::Result<Value> {
    let dataset = load_builtin(case.dataset)?;
    let overrides: Map<String, Value> = case.overrides.as_object().cloned().unwrap_or_default();
    let hp = Hyperparameters::resolve(case.algorithm, &dataset.info.shape(), &overrides)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let request = TrainRequest {
        dataset,
        algorithm: case.algorithm,
        hyperparameters: hp,
        resume: None,
        batch_halvings: 0,
    };
    let mut recorder = Recorder::default();
    let started = Instant::now();
    let outcome = trainyard_engine::train(request, &Control::default(), &mut recorder)?;
    let seconds = started.elapsed().as_secs_f64();
    let Outcome::Completed(model) = outcome else {
        anyhow::bail!("{} did not complete", case.dataset)
    };
    let value = model
        .header
        .metrics
        .get(case.metric)
        .copied()
        .unwrap_or(f64::NAN);
    let peak = recorder
        .epochs()
        .iter()
        .map(|m| m.samples_per_second)
        .fold(0.0, f64::max);
    Ok(json!({
        "dataset": case.dataset,
        "algorithm": case.algorithm.name(),
        "seconds": seconds,
        "target_seconds": case.target_seconds,
        "fast_enough": seconds <= case.target_seconds,
        "metric": case.metric,
        "value": value,
        "bar": case.bar,
        "good_enough": value >= case.bar,
        "samples_per_second": peak,
    }))
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.anomaly {
        return crate::bench_anomaly::run(args.json, args.export.as_deref());
    }
    if let Some(workload @ ("text_classify" | "text_classify_pretrained")) =
        args.workload.as_deref()
    {
        let pretrained = workload == "text_classify_pretrained";
        println!(
            "{}",
            crate::bench_text::run(args.export.as_deref(), pretrained)?
        );
        return Ok(());
    }
    if args.workload.as_deref() == Some("tabular") {
        return crate::bench_tabular::run(args.export.as_deref());
    }
    if let Some(workload) = &args.workload {
        println!("{}", run_workload(workload)?);
        return Ok(());
    }
    let mut cases = vec![
        Case {
            dataset: "iris",
            algorithm: Algorithm::Mlp,
            overrides: json!({}),
            target_seconds: 1.0,
            metric: "accuracy",
            bar: 0.93,
        },
        Case {
            dataset: "wine_quality",
            algorithm: Algorithm::Mlp,
            overrides: json!({}),
            target_seconds: 3.0,
            metric: "accuracy",
            bar: 0.55,
        },
        Case {
            dataset: "california_housing",
            algorithm: Algorithm::Mlp,
            overrides: json!({}),
            target_seconds: 2.0,
            metric: "r2",
            bar: 0.75,
        },
        Case {
            dataset: "california_housing",
            algorithm: Algorithm::LinearRegression,
            overrides: json!({}),
            target_seconds: 2.0,
            metric: "r2",
            bar: 0.58,
        },
        Case {
            dataset: "synthetic",
            algorithm: Algorithm::Mlp,
            overrides: json!({}),
            target_seconds: 1.5,
            metric: "accuracy",
            bar: 0.90,
        },
        Case {
            dataset: "mnist",
            algorithm: Algorithm::Mlp,
            overrides: json!({}),
            target_seconds: 12.0,
            metric: "test_accuracy",
            bar: 0.97,
        },
        // The reference workload: MLP 784-256-10, AdamW, batch 128, one epoch over 60,000 samples.
        Case {
            dataset: "mnist",
            algorithm: Algorithm::Mlp,
            overrides: json!({"epochs": 1, "optimizer": "adamw", "batch_size": 128, "hidden_layers": [256], "validation_split": 0.05}),
            target_seconds: f64::INFINITY,
            metric: "test_accuracy",
            bar: 0.0,
        },
    ];
    let reference_case = cases.len() - 1;
    if args.cnn {
        cases.push(Case {
            dataset: "mnist",
            algorithm: Algorithm::Cnn,
            overrides: json!({}),
            target_seconds: 120.0,
            metric: "test_accuracy",
            bar: 0.985,
        });
    }
    // Decode every dataset once first so no case pays for it.
    for case in &cases {
        load_builtin(case.dataset)?;
    }
    let mut results = Vec::new();
    for case in &cases {
        let result = run_case(case)?;
        if !args.json {
            println!(
                "{:<20} {:<18} {:>7.2}s (target {:>5.1}s {})  {} {:.4} (bar {:.3} {})  {:>8.0} samples/s",
                case.dataset,
                case.algorithm.name(),
                result["seconds"].as_f64().unwrap_or_default(),
                case.target_seconds,
                if result["fast_enough"].as_bool() == Some(true) {
                    "ok"
                } else {
                    "SLOW"
                },
                case.metric,
                result["value"].as_f64().unwrap_or_default(),
                case.bar,
                if result["good_enough"].as_bool() == Some(true) {
                    "ok"
                } else {
                    "LOW"
                },
                result["samples_per_second"].as_f64().unwrap_or_default(),
            );
        }
        results.push(result);
    }
    let reference = results[reference_case]["samples_per_second"]
        .as_f64()
        .unwrap_or_default();
    let (checkpoint_seconds, checkpoint_bytes) = checkpoint_cost()?;
    if !args.json {
        println!(
            "checkpoint of the MNIST mlp: {:.1} ms to serialise and write durably, {:.2} MB",
            checkpoint_seconds * 1000.0,
            checkpoint_bytes as f64 / 1e6
        );
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({"cases": results, "mlp_784_256_10_adamw_b128_samples_per_second": reference})
            )?
        );
    } else {
        println!(
            "MLP 784-256-10 AdamW batch 128: {reference:.0} samples/s (compare with a peer measured in the same run: benches/peers)"
        );
    }
    Ok(())
}

/// Times what a checkpoint costs the training thread: serialising it and writing it durably.
struct TimedCheckpoints {
    dir: std::path::PathBuf,
    writes: Vec<(f64, usize)>,
}

impl Observer for TimedCheckpoints {
    fn event(&mut self, _event: trainyard_core::TrainingEvent) {}

    fn checkpoint(&mut self, checkpoint: &Checkpoint) -> Result<u64, String> {
        use std::io::Write;
        let started = Instant::now();
        let bytes = checkpoint.to_bytes();
        let path = self
            .dir
            .join(format!("c{}.tyck", checkpoint.state.global_step));
        let mut file = std::fs::File::create(&path).map_err(|e| e.to_string())?;
        file.write_all(&bytes)
            .and_then(|_| file.sync_all())
            .map_err(|e| e.to_string())?;
        self.writes
            .push((started.elapsed().as_secs_f64(), bytes.len()));
        Ok(bytes.len() as u64)
    }
}

/// Checkpoint write time and size for the default MNIST mlp.
pub fn checkpoint_cost() -> anyhow::Result<(f64, usize)> {
    let dataset = load_builtin("mnist")?;
    let overrides: Map<String, Value> = json!({"epochs": 4})
        .as_object()
        .cloned()
        .unwrap_or_default();
    let hp = Hyperparameters::resolve(Algorithm::Mlp, &dataset.info.shape(), &overrides)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let dir = std::env::temp_dir().join(format!("trainyard-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut observer = TimedCheckpoints {
        dir: dir.clone(),
        writes: vec![],
    };
    let request = TrainRequest {
        dataset,
        algorithm: Algorithm::Mlp,
        hyperparameters: hp,
        resume: None,
        batch_halvings: 0,
    };
    trainyard_engine::train(request, &Control::default(), &mut observer)?;
    std::fs::remove_dir_all(&dir)?;
    let n = observer.writes.len().max(1) as f64;
    let mean = observer.writes.iter().map(|w| w.0).sum::<f64>() / n;
    Ok((mean, observer.writes.last().map_or(0, |w| w.1)))
}
