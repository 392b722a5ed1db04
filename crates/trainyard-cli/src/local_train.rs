//! `trainyard train`: trains on this machine with a progress bar and a per-epoch table, writes
//! checkpoints to a directory and resumes from the newest valid one.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Map, Value, json};
use trainyard_core::{EpochMetrics, TrainingEvent};
use trainyard_data::load_builtin;
use trainyard_engine::Control;
use trainyard_engine::family::{
    Families, Family, Finished, Job, Limits, Reporter, SavedCheckpoint,
};

#[derive(clap::Args)]
pub struct TrainArgs {
    /// A built-in dataset: iris, wine_quality, california_housing, mnist, synthetic, shuttle,
    /// shakespeare.
    #[arg(long)]
    dataset: String,
    /// linear_regression, logistic_regression, mlp, cnn, random_forest; isolation_forest, ecod,
    /// hbos, half_space_trees; transformer_lm (on shakespeare).
    #[arg(long)]
    algorithm: String,
    /// A hyperparameter, KEY=VALUE; VALUE is read as JSON when it parses (e.g. hidden_layers=[64,32]).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Write checkpoints into this directory.
    #[arg(long)]
    checkpoint_dir: Option<PathBuf>,
    /// Resume from the newest valid checkpoint in this directory.
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Save the trained model (weights, preprocessing, metrics) to this file.
    #[arg(long)]
    save_model: Option<PathBuf>,
    /// `table` for people, `json` for scripts.
    #[arg(long, default_value = "table", value_parser = ["table", "json"])]
    output: String,
}

pub fn parse_sets(sets: &[String]) -> anyhow::Result<Map<String, Value>> {
    let mut map = Map::new();
    for item in sets {
        let Some((key, raw)) = item.split_once('=') else {
            bail!("--set {item}: expected KEY=VALUE, e.g. --set epochs=20");
        };
        let value = serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_string()));
        map.insert(key.trim().to_string(), value);
    }
    Ok(map)
}

/// The newest checkpoint in `dir` that reads back intact; damaged ones are reported and skipped.
fn newest_valid_checkpoint(family: &dyn Family, dir: &Path) -> anyhow::Result<Vec<u8>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading checkpoint directory {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "tyck"))
        .collect();
    files.sort();
    for file in files.iter().rev() {
        let read = std::fs::read(file).map_err(|e| e.to_string());
        match read.and_then(|b| family.checkpoint_position(&b).map(|_| b)) {
            Ok(bytes) => return Ok(bytes),
            Err(e) => eprintln!("warning: skipping {}: {e}", file.display()),
        }
    }
    bail!(
        "no valid checkpoint in {}; train without --resume to start over",
        dir.display()
    )
}

struct CliObserver {
    checkpoint_dir: Option<PathBuf>,
    bar: Option<ProgressBar>,
    table: bool,
    epochs: Vec<EpochMetrics>,
    regression: bool,
    /// The epoch of the newest checkpoint written, for the message after an interrupt.
    last_checkpoint_epoch: Option<u32>,
}

impl CliObserver {
    fn print_header(&self) {
        let cols = if self.regression {
            "        r2       mae      rmse"
        } else {
            "  accuracy"
        };
        self.println(format!(
            "{:>6} {:>11} {:>11}{cols} {:>10} {:>11}",
            "epoch", "train_loss", "val_loss", "lr", "samples/s"
        ));
    }

    fn println(&self, line: String) {
        // A hidden bar (output is not a terminal) prints nothing, so print directly.
        match &self.bar {
            Some(bar) if !bar.is_hidden() => bar.println(line),
            _ => println!("{line}"),
        }
    }
}

impl Reporter for CliObserver {
    fn event(&mut self, event: TrainingEvent) {
        match event {
            TrainingEvent::Started {
                total_epochs,
                start_epoch,
                train_samples,
                validation_samples,
            } => {
                if self.table {
                    println!(
                        "training on {train_samples} rows, validating on {validation_samples}; epochs {}..{total_epochs}",
                        start_epoch + 1
                    );
                    let bar = ProgressBar::new(total_epochs as u64 * 1000);
                    bar.set_style(
                        ProgressStyle::with_template(
                            "{bar:40} {percent:>3}% {msg} [{elapsed_precise} < {eta_precise}]",
                        )
                        .unwrap(),
                    );
                    bar.set_position(start_epoch as u64 * 1000);
                    self.bar = Some(bar);
                }
            }
            TrainingEvent::Progress {
                epoch,
                fraction,
                batch,
                batches,
            } => {
                if let Some(bar) = &self.bar {
                    bar.set_position(((epoch - 1) as f64 * 1000.0 + fraction * 1000.0) as u64);
                    bar.set_message(format!("epoch {epoch} batch {batch}/{batches}"));
                }
            }
            TrainingEvent::Epoch(m) => {
                if self.table {
                    if self.epochs.is_empty() {
                        self.print_header();
                    }
                    let values = if self.regression {
                        format!(
                            "{:>10.4}{:>10.4}{:>10.4}",
                            m.values.get("r2").unwrap_or(&f64::NAN),
                            m.values.get("mae").unwrap_or(&f64::NAN),
                            m.values.get("rmse").unwrap_or(&f64::NAN)
                        )
                    } else {
                        format!("{:>10.4}", m.values.get("accuracy").unwrap_or(&f64::NAN))
                    };
                    self.println(format!(
                        "{:>6} {:>11.5} {:>11.5}{values} {:>10.2e} {:>11.0}",
                        m.epoch, m.train_loss, m.val_loss, m.learning_rate, m.samples_per_second
                    ));
                    if let Some(bar) = &self.bar {
                        bar.set_position(m.epoch as u64 * 1000);
                    }
                }
                self.epochs.push(m);
            }
            TrainingEvent::EarlyStopped { epoch, best_epoch } => {
                if self.table {
                    self.println(format!(
                        "early stopping after epoch {epoch}; restoring epoch {best_epoch}'s weights"
                    ));
                }
            }
            TrainingEvent::RolledBack {
                epoch,
                batch,
                resumed_at_epoch,
                learning_rate_scale,
            } => {
                self.println(format!(
                    "non-finite loss at epoch {epoch}, batch {batch}: rolled back to epoch {resumed_at_epoch}, learning rate x{learning_rate_scale}"
                ));
            }
            TrainingEvent::BatchSizeReduced {
                from,
                to,
                estimated_mb,
                budget_mb,
            } => {
                self.println(format!("batch size {from} -> {to} to fit the memory budget ({estimated_mb:.0} MB > {budget_mb} MB)"));
            }
            TrainingEvent::Note { message } => self.println(message),
            TrainingEvent::BatchSizeProbed { chosen, probed, .. } => {
                let tried: Vec<String> = probed
                    .iter()
                    .map(|p| format!("{} at {:.0}/s", p.batch_size, p.samples_per_second))
                    .collect();
                self.println(format!(
                    "batch size auto: {chosen}, the fastest of {}",
                    tried.join(", ")
                ));
            }
            TrainingEvent::Preparing { stage, done, total } => {
                if self.table && done == total {
                    self.println(format!("{stage}: {done} of {total} done"));
                }
            }
            TrainingEvent::Resampled {
                step,
                layer,
                latents,
            } => {
                self.println(format!(
                    "step {step}: resampled {latents} dead latents of layer {layer}"
                ));
            }
            TrainingEvent::CheckpointWritten { .. }
            | TrainingEvent::Finished { .. }
            | TrainingEvent::Failed { .. } => {}
        }
    }

    fn checkpoint(&mut self, checkpoint: &SavedCheckpoint) -> Result<u64, String> {
        let Some(dir) = &self.checkpoint_dir else {
            return Ok(0);
        };
        let name = format!(
            "checkpoint-e{:05}-s{:010}.tyck",
            checkpoint.epoch, checkpoint.step
        );
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, &checkpoint.bytes)
            .and_then(|_| std::fs::rename(&tmp, dir.join(&name)))
            .map_err(|e| format!("{}: {e}", dir.join(&name).display()))?;
        self.last_checkpoint_epoch = Some(checkpoint.epoch);
        Ok(checkpoint.bytes.len() as u64)
    }
}

pub fn run(args: TrainArgs) -> anyhow::Result<ExitCode> {
    let families = Families::builtin();
    let family = families
        .for_algorithm(&args.algorithm)
        .map_err(|e| anyhow::anyhow!(e.message))?
        .clone();
    let dataset = load_builtin(&args.dataset)?;
    let limits = Limits {
        job_memory_mb: trainyard_server::state::default_job_memory_mb(),
        batch_halvings: 0,
    };
    let hyperparameters = parse_sets(&args.set)?;
    let plan = family
        .plan(&args.algorithm, &dataset.info, &hyperparameters, &limits)
        .map_err(|e| {
            let field = e.field.strip_prefix("hyperparameters.").unwrap_or(&e.field);
            anyhow::anyhow!("--set {field}: {}", e.message)
        })?;
    let resume = args
        .resume
        .as_deref()
        .map(|dir| newest_valid_checkpoint(family.as_ref(), dir))
        .transpose()?;
    if let Some(dir) = &args.checkpoint_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let table = args.output == "table";
    let job = Job {
        dataset: dataset.clone(),
        algorithm: args.algorithm.clone(),
        hyperparameters,
        limits,
        resume,
        dependencies: Default::default(),
        cache: None,
    };
    let mut observer = CliObserver {
        checkpoint_dir: args.checkpoint_dir.clone(),
        bar: None,
        table,
        epochs: vec![],
        regression: dataset.info.task == trainyard_core::Task::Regression,
        last_checkpoint_epoch: None,
    };
    let control = Control::new();
    watch_ctrl_c(control.clone(), args.checkpoint_dir.is_some());
    let started = std::time::Instant::now();
    let outcome = trainyard_engine::family::run(family.as_ref(), job, &control, &mut observer);
    if let Some(bar) = &observer.bar {
        bar.finish_and_clear();
    }
    let seconds = started.elapsed().as_secs_f64();
    match outcome {
        Ok(Finished::Completed(model)) => {
            if let Some(path) = &args.save_model {
                std::fs::write(path, &model.bytes)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            if table {
                println!("finished in {seconds:.2}s");
                let width = model.metrics.keys().map(String::len).max().unwrap_or(0);
                for (k, v) in &model.metrics {
                    println!("  {k:<width$} {v:.6}");
                }
            } else {
                let out = json!({
                    "dataset": args.dataset,
                    "algorithm": args.algorithm,
                    "hyperparameters": plan.hyperparameters,
                    "seconds": seconds,
                    "epochs": observer.epochs,
                    "metrics": model.metrics,
                });
                println!("{}", serde_json::to_string_pretty(&out)?);
            }
            Ok(ExitCode::SUCCESS)
        }
        Ok(Finished::Paused) => {
            eprintln!(
                "interrupted: checkpoint written at epoch {}; continue with --resume {}",
                observer.last_checkpoint_epoch.unwrap_or_default(),
                args.checkpoint_dir.unwrap_or_default().display()
            );
            Ok(ExitCode::from(130))
        }
        Ok(Finished::Cancelled) => {
            eprintln!("interrupted; pass --checkpoint-dir to be able to resume");
            Ok(ExitCode::from(130))
        }
        Err(e) => {
            eprintln!("training failed: {e}");
            Ok(ExitCode::from(1))
        }
    }
}

/// Ctrl-C pauses (checkpointing) when there is somewhere to write the checkpoint, else cancels.
fn watch_ctrl_c(control: Arc<Control>, can_checkpoint: bool) {
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async {
            if tokio::signal::ctrl_c().await.is_ok() {
                if can_checkpoint {
                    control.pause()
                } else {
                    control.cancel()
                }
            }
        });
    });
}
