//! The language family on the model-family seam: `transformer_lm` on a text corpus, with
//! checkpoints at every evaluation and on pause (exact resume), and a served model that
//! generates text.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use burn::tensor::Device;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use trainyard_core::{EpochMetrics, Task, TrainingEvent, ValidationError};
use trainyard_data::DatasetInfo;
use trainyard_data::text::{CharTokenizer, EncodedCorpus, builtin_corpus};

use super::model::{Gpt, GptConfig, token_tensor};
use super::train::{LmCheckpoint, LmObserver, load_weights, weights};
use super::{Evaluation, LmData, LmHyperparameters, spec};
use crate::container::{read_sections, write_sections};
use crate::family::{
    Artifact, Family, Finished, GenerateRequest, Generated, Job, Limits, Plan, Reporter,
    SavedCheckpoint, Served,
};
use crate::{Control, PredictError, Stop, TrainError};

const CHECKPOINT_MAGIC: &[u8; 8] = b"TYLMCK01";
const MODEL_MAGIC: &[u8; 8] = b"TYLMMD01";

pub struct Language;

#[derive(Serialize, Deserialize)]
struct CheckpointHeader {
    step: u64,
    evaluations: Vec<Evaluation>,
}

#[derive(Serialize, Deserialize)]
struct ModelHeader {
    format: u32,
    config: GptConfig,
    tokenizer: CharTokenizer,
    hyperparameters: LmHyperparameters,
    metrics: BTreeMap<String, f64>,
}

fn encode_checkpoint(checkpoint: &LmCheckpoint) -> SavedCheckpoint {
    let header = CheckpointHeader {
        step: checkpoint.step,
        evaluations: checkpoint.evaluations.clone(),
    };
    let header = serde_json::to_vec(&header).expect("checkpoint header serialises");
    SavedCheckpoint {
        epoch: checkpoint.evaluations.len() as u32,
        step: checkpoint.step,
        bytes: write_sections(
            CHECKPOINT_MAGIC,
            &[&header, &checkpoint.model, &checkpoint.optimizer],
        ),
    }
}

fn decode_checkpoint(bytes: &[u8]) -> Result<LmCheckpoint, String> {
    let sections =
        read_sections(CHECKPOINT_MAGIC, "language checkpoint", bytes).map_err(|e| e.to_string())?;
    let [header, model, optimizer] = sections[..] else {
        return Err("a language checkpoint has three sections".into());
    };
    let header: CheckpointHeader = serde_json::from_slice(header).map_err(|e| e.to_string())?;
    Ok(LmCheckpoint {
        step: header.step,
        evaluations: header.evaluations,
        model: model.to_vec(),
        optimizer: optimizer.to_vec(),
    })
}

/// Forwards evaluations as epoch events and checkpoints to the reporter.
struct Forward<'a> {
    reporter: &'a mut dyn Reporter,
    /// The 1-based number of the next evaluation (an epoch for progress and metrics).
    next: u32,
}

impl LmObserver for Forward<'_> {
    fn evaluation(&mut self, e: &Evaluation) {
        let values = BTreeMap::from([
            ("perplexity".to_string(), e.val_loss.exp()),
            ("step".to_string(), e.step as f64),
            ("tokens_per_second".to_string(), e.tokens_per_second),
        ]);
        let epoch = self.next;
        self.next += 1;
        self.reporter.event(TrainingEvent::Epoch(EpochMetrics {
            epoch,
            train_loss: e.train_loss,
            val_loss: e.val_loss,
            learning_rate: e.learning_rate,
            samples_per_second: e.tokens_per_second,
            epoch_seconds: e.seconds,
            values,
        }));
    }

    fn checkpoint(&mut self, checkpoint: &LmCheckpoint) -> Result<(), TrainError> {
        let saved = encode_checkpoint(checkpoint);
        let bytes = self
            .reporter
            .checkpoint(&saved)
            .map_err(TrainError::Checkpoint)?;
        self.reporter.event(TrainingEvent::CheckpointWritten {
            epoch: saved.epoch,
            step: saved.step,
            bytes,
        });
        Ok(())
    }
}

/// Evaluations, numbered as the epochs of progress reporting.
fn evaluations_planned(hp: &LmHyperparameters) -> u32 {
    hp.max_steps.div_ceil(hp.eval_interval) as u32
}

impl Family for Language {
    fn name(&self) -> &'static str {
        "language"
    }

    fn algorithms(&self) -> Vec<&'static str> {
        vec!["transformer_lm"]
    }

    fn plan(
        &self,
        _algorithm: &str,
        dataset: &DatasetInfo,
        hyperparameters: &Map<String, Value>,
        limits: &Limits,
    ) -> Result<Plan, ValidationError> {
        if dataset.task != Task::Text {
            return Err(ValidationError::new(
                "dataset",
                format!(
                    "transformer_lm learns from text, but '{}' is a {} dataset; use shakespeare",
                    dataset.name, dataset.task
                ),
            ));
        }
        let hp = spec::resolve(hyperparameters, dataset.n_rows)?;
        check_memory(&hp, limits)?;
        Ok(Plan {
            hyperparameters: serde_json::to_value(&hp).expect("hyperparameters serialise"),
            epochs: evaluations_planned(&hp),
        })
    }

    fn train(
        &self,
        job: Job,
        control: &Control,
        reporter: &mut dyn Reporter,
    ) -> Result<Finished, TrainError> {
        let text =
            builtin_corpus(&job.dataset.info.name).map_err(|e| TrainError::Fit(e.to_string()))?;
        // The dataset's size in characters is its row count: no need to count the text again.
        let hp = spec::resolve(&job.hyperparameters, job.dataset.info.n_rows)
            .map_err(|e| TrainError::Fit(e.to_string()))?;
        let EncodedCorpus {
            tokenizer,
            train: train_tokens,
            validation,
        } = EncodedCorpus::new(&text);
        let resume = job
            .resume
            .as_deref()
            .map(decode_checkpoint)
            .transpose()
            .map_err(TrainError::Resume)?;
        reporter.event(TrainingEvent::Started {
            total_epochs: evaluations_planned(&hp),
            start_epoch: resume.as_ref().map_or(0, |c| c.evaluations.len() as u32),
            train_samples: train_tokens.len(),
            validation_samples: validation.len(),
        });
        let data = LmData {
            train: &train_tokens,
            validation: &validation,
            vocab_size: tokenizer.vocab_size(),
        };
        let mut forward = Forward {
            reporter,
            next: resume
                .as_ref()
                .map_or(1, |c| c.evaluations.len() as u32 + 1),
        };
        let run = super::train(&hp, &data, resume.as_ref(), control, &mut forward)?;
        match run.stopped {
            Some(Stop::Cancel) => return Ok(Finished::Cancelled),
            Some(Stop::Pause) => return Ok(Finished::Paused),
            None => {}
        }
        let metrics = final_metrics(&run.evaluations);
        let header = ModelHeader {
            format: 1,
            config: hp.config(tokenizer.vocab_size()),
            tokenizer,
            hyperparameters: hp,
            metrics: metrics.clone(),
        };
        let header = serde_json::to_vec(&header).expect("model header serialises");
        let bytes = write_sections(MODEL_MAGIC, &[&header, &weights(&run.model)?]);
        Ok(Finished::Completed(Artifact { bytes, metrics }))
    }

    fn checkpoint_position(&self, bytes: &[u8]) -> Result<(u32, u64), String> {
        let checkpoint = decode_checkpoint(bytes)?;
        Ok((checkpoint.evaluations.len() as u32, checkpoint.step))
    }

    fn load(&self, bytes: &[u8]) -> Result<Arc<dyn Served>, PredictError> {
        let sections = read_sections(MODEL_MAGIC, "language model", bytes)?;
        let [header, weights] = sections[..] else {
            return Err(PredictError::Artifact(
                "a language model has two sections".into(),
            ));
        };
        let header: ModelHeader =
            serde_json::from_slice(header).map_err(|e| PredictError::Artifact(e.to_string()))?;
        let device = Device::flex();
        let model = load_weights(Gpt::new(&header.config, &device), weights)
            .map_err(|e| PredictError::Artifact(e.to_string()))?;
        Ok(Arc::new(LanguageModel {
            model,
            config: header.config,
            tokenizer: header.tokenizer,
        }))
    }
}

/// Character vocabularies are small; 256 bounds any the built-in corpora give.
const VOCAB_BOUND: usize = 256;

/// Refuses a model whose training would not fit the job's memory budget.
fn check_memory(hp: &LmHyperparameters, limits: &Limits) -> Result<(), ValidationError> {
    let needed_mb = hp.config(VOCAB_BOUND).estimated_bytes(hp.batch_size) / (1 << 20) as f64;
    if needed_mb > limits.job_memory_mb as f64 {
        return Err(ValidationError::new(
            "hyperparameters",
            format!(
                "the job needs about {needed_mb:.0} MB at batch size {}, over the memory budget of {} MB; \
                 lower batch_size, block_size, n_embd or n_layer, or raise the server's --job-memory-mb",
                hp.batch_size, limits.job_memory_mb
            ),
        ));
    }
    Ok(())
}

fn final_metrics(evaluations: &[Evaluation]) -> BTreeMap<String, f64> {
    let mut metrics = BTreeMap::new();
    if let Some(last) = evaluations.last() {
        metrics.insert("val_loss".into(), last.val_loss);
        metrics.insert("train_loss".into(), last.train_loss);
        metrics.insert("perplexity".into(), last.val_loss.exp());
        metrics.insert("steps".into(), last.step as f64);
        let mut speeds: Vec<f64> = evaluations.iter().map(|e| e.tokens_per_second).collect();
        speeds.sort_by(f64::total_cmp);
        metrics.insert("tokens_per_second".into(), speeds[speeds.len() / 2]);
    }
    metrics
}

/// A trained language model, ready to generate.
pub struct LanguageModel {
    model: Gpt,
    config: GptConfig,
    tokenizer: CharTokenizer,
}

impl Served for LanguageModel {
    fn predict(&self, _rows: &[Vec<f64>]) -> Result<Vec<Value>, PredictError> {
        Err(PredictError::Unsupported(
            "a language model generates text: POST /api/models/{id}/generate with a prompt".into(),
        ))
    }

    fn output_columns(&self) -> Vec<String> {
        vec!["text".into()]
    }

    fn feature_names(&self) -> Vec<String> {
        vec![]
    }

    fn generate(&self, request: &GenerateRequest) -> Result<Generated, PredictError> {
        let started = Instant::now();
        let mut tokens = self.tokenizer.encode(&request.prompt);
        if tokens.is_empty() {
            return Err(PredictError::Unsupported(
                "prompt: must not be empty".into(),
            ));
        }
        let prompt_truncated = tokens.len() > self.config.block_size;
        let prompt_len = tokens.len();
        let mut rng = trainyard_data::SeededRng::new(request.seed);
        let device = Device::flex();
        for _ in 0..request.max_new_tokens {
            let context = &tokens[tokens.len().saturating_sub(self.config.block_size)..];
            let logits = self
                .model
                .forward(token_tensor(context, 1, context.len(), &device))
                .into_data()
                .try_to_vec::<f32>()
                .map_err(|e| PredictError::Artifact(format!("{e:?}")))?;
            let vocab = self.tokenizer.vocab_size();
            let last = &logits[logits.len() - vocab..];
            tokens.push(sample(last, request, &mut rng));
        }
        let new = &tokens[prompt_len..];
        let seconds = started.elapsed().as_secs_f64();
        Ok(Generated {
            text: self.tokenizer.decode(new),
            tokens: new.len(),
            prompt_truncated,
            tokens_per_second: new.len() as f64 / seconds.max(1e-9),
        })
    }
}

/// The next token: greedy at temperature 0, else sampled from the softmax of the logits over
/// temperature, restricted to the `top_k` most likely.
fn sample(logits: &[f32], request: &GenerateRequest, rng: &mut trainyard_data::SeededRng) -> u32 {
    let mut ranked: Vec<(usize, f64)> = logits.iter().map(|&l| l as f64).enumerate().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    if request.temperature <= 0.0 {
        return ranked[0].0 as u32;
    }
    ranked.truncate(request.top_k.unwrap_or(ranked.len()).max(1));
    let top = ranked[0].1;
    let weights: Vec<f64> = ranked
        .iter()
        .map(|(_, l)| ((l - top) / request.temperature).exp())
        .collect();
    let mut pick = rng.next_f64() * weights.iter().sum::<f64>();
    for ((token, _), weight) in ranked.iter().zip(&weights) {
        if pick < *weight {
            return *token as u32;
        }
        pick -= weight;
    }
    ranked[ranked.len() - 1].0 as u32
}
