//! The language family on the model-family seam: `transformer_lm` on a text corpus, with
//! checkpoints at every evaluation and on pause (exact resume), and a served model that
//! generates text.

use burn::tensor::Device;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;
use trainyard_core::{EpochMetrics, Task, TrainingEvent, ValidationError};
use trainyard_data::DatasetInfo;
use trainyard_data::text::{EncodedCorpus, builtin_corpus};
use trainyard_data::tokenizer::{TextTokenizer, TokenizerKind};

use super::corpus_cache::encoded_corpus;
use super::model::{Gpt, GptConfig};
use super::spec::Target;
use super::steps::StepRun;
use super::train::{LmCheckpoint, LmObserver, load_weights, weights};
use super::weights::GptWeights;
use super::{Evaluation, LmData, LmHyperparameters, classify, spec};
use crate::container::{read_sections, write_sections};
use crate::family::{
    Artifact, BundleFile, Dependency, ExportInfo, Family, Finished, GenerateRequest, Generated,
    Job, Limits, Plan, Reporter, SavedCheckpoint, Served, TextSink,
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
pub(super) struct ModelHeader {
    format: u32,
    pub(super) config: GptConfig,
    pub(super) tokenizer: TextTokenizer,
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
        bytes: {
            let mut sections: Vec<&[u8]> = vec![&header, &checkpoint.model, &checkpoint.optimizer];
            sections.extend(checkpoint.best_model.as_deref());
            write_sections(CHECKPOINT_MAGIC, &sections)
        },
    }
}

pub(super) fn decode_checkpoint(bytes: &[u8]) -> Result<LmCheckpoint, String> {
    let sections =
        read_sections(CHECKPOINT_MAGIC, "language checkpoint", bytes).map_err(|e| e.to_string())?;
    let (header, model, optimizer, best_model) = match sections[..] {
        [header, model, optimizer] => (header, model, optimizer, None),
        [header, model, optimizer, best] => (header, model, optimizer, Some(best.to_vec())),
        _ => return Err("a language checkpoint has three or four sections".into()),
    };
    let header: CheckpointHeader = serde_json::from_slice(header).map_err(|e| e.to_string())?;
    Ok(LmCheckpoint {
        step: header.step,
        evaluations: header.evaluations,
        model: model.to_vec(),
        optimizer: optimizer.to_vec(),
        best_model,
    })
}

/// Forwards evaluations as epoch events, steps as throttled progress events and checkpoints
/// to the reporter.
pub(super) struct Forward<'a> {
    reporter: &'a mut dyn Reporter,
    /// The 1-based number of the next evaluation (an epoch for progress and metrics).
    next: u32,
    eval_interval: u64,
    max_steps: u64,
    last_progress: Instant,
}

impl<'a> Forward<'a> {
    pub(super) fn new(
        reporter: &'a mut dyn Reporter,
        hp: &LmHyperparameters,
        resume: Option<&LmCheckpoint>,
    ) -> Self {
        Forward {
            reporter,
            eval_interval: hp.eval_interval,
            max_steps: hp.max_steps,
            last_progress: Instant::now(),
            next: resume.map_or(1, |c| c.evaluations.len() as u32 + 1),
        }
    }
}

/// How a run that returned ended: `Err` with the job's outcome when it was cancelled or
/// paused; else the index of the evaluation whose weights were kept (early stopping), after
/// reporting an early stop.
pub(super) fn outcome<M>(
    run: &StepRun<M>,
    forward: &mut Forward<'_>,
) -> Result<Option<usize>, Finished> {
    match run.stopped {
        Some(Stop::Cancel) => return Err(Finished::Cancelled),
        Some(Stop::Pause) => return Err(Finished::Paused),
        None => {}
    }
    let best = run
        .best_step
        .and_then(|step| run.evaluations.iter().position(|e| e.step == step));
    if run.stopped_early {
        forward.reporter.event(TrainingEvent::EarlyStopped {
            epoch: run.evaluations.len() as u32,
            best_epoch: best.map_or(0, |i| i as u32 + 1),
        });
    }
    Ok(best)
}

impl LmObserver for Forward<'_> {
    /// Progress within the evaluation window under way: `batch` is its steps done.
    fn step(&mut self, done: u64) {
        if self.last_progress.elapsed() < crate::neural::PROGRESS_INTERVAL {
            return;
        }
        self.last_progress = Instant::now();
        self.reporter.event(crate::family::step_progress(
            done,
            self.eval_interval,
            self.max_steps,
        ));
    }

    fn evaluation(&mut self, e: &Evaluation) {
        let mut values = BTreeMap::from([
            ("perplexity".to_string(), e.val_loss.exp()),
            ("step".to_string(), e.step as f64),
            ("tokens_per_second".to_string(), e.tokens_per_second),
            ("grad_norm".to_string(), e.grad_norm),
        ]);
        values.extend(e.values.clone());
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
        crate::family::report_checkpoint(self.reporter, &encode_checkpoint(checkpoint))
    }
}

/// Evaluations, numbered as the epochs of progress reporting.
/// Reads the checkpoint to resume from, if any, and reports the start.
pub(super) fn start(
    job: &Job,
    hp: &LmHyperparameters,
    reporter: &mut dyn Reporter,
    train_samples: usize,
    validation_samples: usize,
) -> Result<Option<LmCheckpoint>, TrainError> {
    let resume = job
        .resume
        .as_deref()
        .map(decode_checkpoint)
        .transpose()
        .map_err(TrainError::Resume)?;
    reporter.event(TrainingEvent::Started {
        total_epochs: evaluations_planned(hp),
        start_epoch: resume.as_ref().map_or(0, |c| c.evaluations.len() as u32),
        train_samples,
        validation_samples,
    });
    Ok(resume)
}

pub(super) fn evaluations_planned(hp: &LmHyperparameters) -> u32 {
    hp.max_steps.div_ceil(hp.eval_interval) as u32
}

impl Family for Language {
    fn name(&self) -> &'static str {
        "language"
    }

    fn algorithms(&self) -> Vec<&'static str> {
        vec!["transformer_lm", "transformer_classifier"]
    }

    fn plan(
        &self,
        algorithm: &str,
        dataset: &DatasetInfo,
        hyperparameters: &Map<String, Value>,
        limits: &Limits,
    ) -> Result<Plan, ValidationError> {
        if algorithm == "transformer_classifier" {
            return classify::plan(dataset, hyperparameters, limits);
        }
        if dataset.task == Task::Text && dataset.classes.is_some() {
            return Err(ValidationError::new(
                "dataset",
                format!(
                    "'{}' holds labeled texts, which train transformer_classifier; upload the \
                     texts as a corpus (task=text without a target) for a language model",
                    dataset.name
                ),
            ));
        }
        if dataset.task != Task::Text {
            return Err(ValidationError::new(
                "dataset",
                format!(
                    "transformer_lm learns from text, but '{}' is a {} dataset; use shakespeare \
                     or upload a corpus with task=text",
                    dataset.name, dataset.task
                ),
            ));
        }
        let hp = spec::resolve(
            hyperparameters,
            Target::Corpus {
                chars: dataset.n_rows,
            },
        )?;
        check_memory(training_mb(&hp), &hp, limits)?;
        Ok(Plan {
            hyperparameters: serde_json::to_value(&hp).expect("hyperparameters serialise"),
            epochs: evaluations_planned(&hp),
        })
    }

    fn memory_estimate_mb(&self, job: &Job) -> Option<f64> {
        let info = &job.dataset.info;
        if job.algorithm == "transformer_classifier" {
            let classes = info.classes.as_ref()?.len();
            let hp = spec::resolve(&job.hyperparameters, Target::Labels { classes }).ok()?;
            return Some(classify::training_mb(&hp, Some(job)));
        }
        let chars = info.n_rows;
        let hp = spec::resolve(&job.hyperparameters, Target::Corpus { chars }).ok()?;
        Some(job_mb(&hp, chars))
    }

    fn train(
        &self,
        job: Job,
        control: &Control,
        reporter: &mut dyn Reporter,
    ) -> Result<Finished, TrainError> {
        if job.algorithm == "transformer_classifier" {
            return classify::train(job, control, reporter);
        }
        let text = match &job.dataset.text {
            Some(text) => text.clone(),
            None => builtin_corpus(&job.dataset.info.name)
                .map_err(|e| TrainError::Fit(e.to_string()))?
                .into(),
        };
        // The dataset's size in characters is its row count: no need to count the text again.
        let chars = job.dataset.info.n_rows;
        let hp = spec::resolve(&job.hyperparameters, Target::Corpus { chars })
            .map_err(|e| TrainError::Fit(e.to_string()))?;
        let EncodedCorpus {
            tokenizer,
            train: train_tokens,
            validation,
        } = encoded_corpus(
            job.cache.as_deref(),
            &text,
            hp.tokenizer,
            hp.vocab_size,
            reporter,
        )?;
        let resume = start(&job, &hp, reporter, train_tokens.len(), validation.len())?;
        let teacher = teacher(&job, &hp, &tokenizer)?;
        let data = LmData {
            train: &train_tokens,
            validation: &validation,
            vocab_size: tokenizer.vocab_size(),
            teacher: teacher.as_ref(),
        };
        let mut forward = Forward::new(reporter, &hp, resume.as_ref());
        let run = super::train(&hp, &data, resume.as_ref(), control, &mut forward)?;
        let best = match outcome(&run, &mut forward) {
            Ok(best) => best,
            Err(finished) => return Ok(finished),
        };
        let metrics = final_metrics(&run.evaluations, best);
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
        if bytes.starts_with(classify::MODEL_MAGIC) {
            return classify::load(bytes);
        }
        let (header, model) = decode_model(bytes)?;
        Ok(Arc::new(LanguageModel {
            weights: GptWeights::from_model(&model, &header.config),
            tokenizer: header.tokenizer,
            hyperparameters: header.hyperparameters,
            metrics: header.metrics,
        }))
    }

    /// A distillation teacher, or the language model a classifier starts from.
    fn dependencies(&self, hyperparameters: &Map<String, Value>) -> Vec<Dependency> {
        [
            ("teacher", TEACHER_FIELD),
            ("init_from", classify::INIT_FROM_FIELD),
        ]
        .into_iter()
        .filter_map(|(key, field)| {
            let id = hyperparameters.get(key)?.as_str()?;
            // Frozen parts are the starting model's: its depth is in its file.
            let freezes = hyperparameters
                .get("freeze")
                .and_then(Value::as_array)
                .is_some_and(|parts| !parts.is_empty());
            Some(Dependency {
                field: field.into(),
                model_id: id.into(),
                algorithms: vec!["transformer_lm"],
                inspect: key == "init_from" && freezes,
            })
        })
        .collect()
    }

    fn check_dependency(
        &self,
        hyperparameters: &Map<String, Value>,
        field: &str,
        model_file: &[u8],
        _limits: &Limits,
    ) -> Result<(), ValidationError> {
        if field != classify::INIT_FROM_FIELD {
            return Ok(());
        }
        let config = language_model_config(model_file)
            .map_err(|e| ValidationError::new(field, e.to_string()))?;
        let freeze: Vec<String> = hyperparameters
            .get("freeze")
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default();
        spec::check_freeze(&freeze, config.n_layer)
    }
}

const TEACHER_FIELD: &str = "hyperparameters.teacher";

/// A model file's header and its weights record, not yet loaded into a network.
pub(super) fn read_model(bytes: &[u8]) -> Result<(ModelHeader, &[u8]), PredictError> {
    let sections = read_sections(MODEL_MAGIC, "language model", bytes)?;
    let [header, weights] = sections[..] else {
        return Err(PredictError::Artifact(
            "a language model has two sections".into(),
        ));
    };
    let header: ModelHeader =
        serde_json::from_slice(header).map_err(|e| PredictError::Artifact(e.to_string()))?;
    Ok((header, weights))
}

/// A `transformer_lm` model file's network, its shape and its tokenizer (another family
/// reading a language model: an autoencoder's source of activations).
pub(crate) fn decode_language_model(
    bytes: &[u8],
) -> Result<(GptConfig, TextTokenizer, Gpt), PredictError> {
    let (header, model) = decode_model(bytes)?;
    Ok((header.config, header.tokenizer, model))
}

/// A `transformer_lm` model file's network shape, read from its header alone.
pub(crate) fn language_model_config(bytes: &[u8]) -> Result<GptConfig, PredictError> {
    Ok(read_model(bytes)?.0.config)
}

/// A model file's header and network.
fn decode_model(bytes: &[u8]) -> Result<(ModelHeader, Gpt), PredictError> {
    let (header, weights) = read_model(bytes)?;
    let model = load_weights(Gpt::new(&header.config, &Device::flex()), weights)
        .map_err(|e| PredictError::Artifact(e.to_string()))?;
    Ok((header, model))
}

/// The distillation teacher handed to the job: same vocabulary, a context at least as long.
fn teacher(
    job: &Job,
    hp: &LmHyperparameters,
    tokenizer: &TextTokenizer,
) -> Result<Option<Gpt>, TrainError> {
    let Some(id) = &hp.teacher else {
        return Ok(None);
    };
    let bytes = job.dependencies.get(TEACHER_FIELD).ok_or_else(|| {
        TrainError::Fit(format!(
            "{TEACHER_FIELD}: model '{id}' was not provided to this job; distillation runs on a server"
        ))
    })?;
    let (header, model) = decode_model(bytes)
        .map_err(|e| TrainError::Fit(format!("{TEACHER_FIELD}: model '{id}': {e}")))?;
    if &header.tokenizer != tokenizer {
        return Err(TrainError::Fit(format!(
            "{TEACHER_FIELD}: model '{id}' was trained on text with another vocabulary; \
             distil from a model trained on the same dataset"
        )));
    }
    if header.config.block_size < hp.block_size {
        return Err(TrainError::Fit(format!(
            "{TEACHER_FIELD}: model '{id}' reads {} tokens of context, fewer than block_size {}",
            header.config.block_size, hp.block_size
        )));
    }
    Ok(Some(model))
}

/// Character vocabularies are small; 256 bounds any the built-in corpora give.
const CHAR_VOCAB_BOUND: usize = 256;

/// Refuses a model whose training (`needed_mb`) would not fit the job's memory budget.
pub(super) fn check_memory(
    needed_mb: f64,
    hp: &LmHyperparameters,
    limits: &Limits,
) -> Result<(), ValidationError> {
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

/// The largest vocabulary `hp`'s tokenizer can give.
pub(super) fn vocab_bound(hp: &LmHyperparameters) -> usize {
    match hp.tokenizer {
        TokenizerKind::Char => CHAR_VOCAB_BOUND,
        TokenizerKind::Bpe => hp.vocab_size,
    }
}

/// Copies of the parameters a checkpoint holds for a moment on top of training's own: the
/// network rebuilt to serialise it, its weights as bytes, AdamW's two moments as bytes, and
/// the checkpoint's encoding of them. Measured on `shakespeare` at batch 1 with 4 blocks: the
/// peak passed the estimate without them by 6.5 times the parameters' f32 bytes at n_embd 384
/// (333.8 MB against 149.2) and 7.2 times at n_embd 256 (177.9 against 86.5).
const CHECKPOINT_PARAMETER_COPIES: f64 = 7.0;

/// The model's training memory at its batch size (weights, optimiser state, activations, and
/// a checkpoint's copies of the parameters).
fn training_mb(hp: &LmHyperparameters) -> f64 {
    let config = hp.config(vocab_bound(hp));
    let checkpoint = CHECKPOINT_PARAMETER_COPIES * 4.0 * config.parameters() as f64;
    let training = if hp.gradient_checkpointing {
        config.estimated_bytes_recomputing(hp.batch_size)
    } else {
        config.estimated_bytes(hp.batch_size)
    };
    (training + checkpoint + crate::memory::BACKEND_RUNTIME_BYTES) / (1 << 20) as f64
}

/// What a job holds: training memory, plus the corpus as text and as `u32` tokens (at most
/// one per character) when the job reads a corpus.
fn job_mb(hp: &LmHyperparameters, corpus_chars: usize) -> f64 {
    training_mb(hp) + corpus_chars as f64 * 5.0 / (1 << 20) as f64
}

/// The final metrics: the kept model's evaluation (the best one under early stopping, else
/// the last), the steps trained, and the median speed.
pub(super) fn final_metrics(
    evaluations: &[Evaluation],
    best: Option<usize>,
) -> BTreeMap<String, f64> {
    let mut metrics = BTreeMap::new();
    if let Some(last) = evaluations.last() {
        let kept = best.map_or(last, |i| &evaluations[i]);
        metrics.insert("val_loss".into(), kept.val_loss);
        metrics.insert("train_loss".into(), kept.train_loss);
        metrics.insert("perplexity".into(), kept.val_loss.exp());
        metrics.insert("steps".into(), last.step as f64);
        if best.is_some() {
            metrics.insert("best_step".into(), kept.step as f64);
        }
        let mut speeds: Vec<f64> = evaluations.iter().map(|e| e.tokens_per_second).collect();
        speeds.sort_by(f64::total_cmp);
        metrics.insert("tokens_per_second".into(), speeds[speeds.len() / 2]);
    }
    metrics
}

/// A trained language model, ready to generate and export.
pub struct LanguageModel {
    weights: GptWeights,
    tokenizer: TextTokenizer,
    hyperparameters: LmHyperparameters,
    metrics: BTreeMap<String, f64>,
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

    fn generate(
        &self,
        request: &GenerateRequest,
        sink: &mut TextSink<'_>,
    ) -> Result<Generated, PredictError> {
        super::generate::generate(&self.weights, &self.tokenizer, request, sink)
    }

    fn export(&self, about: &ExportInfo) -> Result<Vec<BundleFile>, PredictError> {
        super::bundle::files(&super::bundle::Bundle {
            weights: &self.weights,
            tokenizer: &self.tokenizer,
            hyperparameters: &self.hyperparameters,
            metrics: &self.metrics,
            about,
            head: None,
        })
    }
}
