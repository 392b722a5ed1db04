//! The model-family seam. A family owns everything that differs between kinds of models: which
//! datasets it accepts, its typed hyperparameters, its trainer (which obeys [`Control`], reports
//! events and checkpoints, and resumes), its metrics, its artifact and what serving it means
//! (`predict`, threshold changes, streaming). The server, queue, store and streams only ever
//! see the trait objects here, so a new family is a new module registered in [`Families`].

mod registry;
pub mod tabular;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Map, Value};
use trainyard_core::{TrainingEvent, ValidationError};
use trainyard_data::{Dataset, DatasetInfo};

use crate::resident::{self, JobMemory};
use crate::{Control, PredictError, TrainError};

pub use registry::Families;

/// What the server allows every job, whatever its family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Memory one job may use, in MB.
    pub job_memory_mb: u64,
    /// Times the job's worker process was killed as if out of memory (SIGKILL): each halves
    /// the batch the job trains with, for families that can train at any batch size.
    pub batch_halvings: u32,
}

/// A validated model spec, ready to be stored with the run.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The complete hyperparameters (defaults filled in), as users see them.
    pub hyperparameters: Value,
    /// Epochs the run reports progress over (1 for one-pass fits).
    pub epochs: u32,
}

/// One training job as the family receives it.
#[derive(Clone)]
pub struct Job {
    pub dataset: Arc<Dataset>,
    pub algorithm: String,
    /// The user's hyperparameters as stored with the run (the family resolves them again).
    pub hyperparameters: Map<String, Value>,
    pub limits: Limits,
    /// A checkpoint this family wrote earlier for the same run: continue from it.
    pub resume: Option<Vec<u8>>,
    /// The model files of the trained models this job reads (see [`Family::dependencies`]),
    /// by the field that names them.
    pub dependencies: BTreeMap<String, Vec<u8>>,
    /// Where work an earlier job did can be found again (see [`JobCache`]); None trains
    /// without one.
    pub cache: Option<Arc<dyn JobCache>>,
}

/// Work a job can skip when an earlier job did it: bytes a family saves under a key derived
/// from everything they depend on (an autoencoder's extracted activations: the source model's
/// file, the corpus, the layers), so a key never names two contents. A miss, a damaged entry or
/// a failed write costs only the work again, so neither is an error.
pub trait JobCache: Send + Sync {
    fn get(&self, key: &str) -> Option<Vec<u8>>;
    fn put(&self, key: &str, bytes: &[u8]);

    /// Where the entry lies on this machine's disk, when the cache keeps it there: a family
    /// may map it instead of reading it. Entries are written whole and replaced by renaming,
    /// never changed in place.
    fn path(&self, _key: &str) -> Option<std::path::PathBuf> {
        None
    }
}

/// A trained model that another model's training reads: a distillation teacher, weights to
/// start from, the model whose activations are learned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    /// The hyperparameter that names it, as errors name it (`hyperparameters.teacher`).
    pub field: String,
    pub model_id: String,
    /// The algorithms it may have been trained with.
    pub algorithms: Vec<&'static str>,
    /// The family checks the model file itself at create time ([`Family::check_dependency`]);
    /// otherwise the server does not read it until the job runs.
    pub inspect: bool,
}

/// A checkpoint as its family serialised it, with where training stood.
#[derive(Debug, Clone, PartialEq)]
pub struct SavedCheckpoint {
    pub epoch: u32,
    pub step: u64,
    pub bytes: Vec<u8>,
}

/// Where a family's trainer reports to. `checkpoint` persists one and returns its size in
/// bytes; an error there fails the run.
pub trait Reporter: Send {
    fn event(&mut self, event: TrainingEvent);
    fn checkpoint(&mut self, checkpoint: &SavedCheckpoint) -> Result<u64, String>;
}

/// Hands a checkpoint to the reporter and reports it written (families trained by steps).
pub(crate) fn report_checkpoint(
    reporter: &mut dyn Reporter,
    saved: &SavedCheckpoint,
) -> Result<(), crate::TrainError> {
    let bytes = reporter
        .checkpoint(saved)
        .map_err(crate::TrainError::Checkpoint)?;
    reporter.event(TrainingEvent::CheckpointWritten {
        epoch: saved.epoch,
        step: saved.step,
        bytes,
    });
    Ok(())
}

/// Progress of a run trained by steps and evaluated every `interval` steps: step `done` as a
/// batch of the evaluation window under way (an "epoch" of progress reporting).
pub(crate) fn step_progress(done: u64, interval: u64, max_steps: u64) -> TrainingEvent {
    let window_start = (done - 1) / interval * interval;
    let batches = interval.min(max_steps - window_start);
    let batch = done - window_start;
    TrainingEvent::Progress {
        epoch: (window_start / interval) as u32 + 1,
        batch: batch as u32,
        batches: batches as u32,
        fraction: batch as f64 / batches as f64,
    }
}

/// A trained model file and its final metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct Artifact {
    pub bytes: Vec<u8>,
    pub metrics: BTreeMap<String, f64>,
}

/// How a family's training ended, when it did not fail.
#[derive(Debug)]
pub enum Finished {
    Completed(Artifact),
    Cancelled,
    /// Stopped after writing a checkpoint through the reporter.
    Paused,
}

/// A kind of model. Implementations are plain values registered in [`Families`].
pub trait Family: Send + Sync {
    /// Shown in errors and listings: "tabular", "anomaly".
    fn name(&self) -> &'static str;

    /// The algorithm names this family trains; each belongs to exactly one family.
    fn algorithms(&self) -> Vec<&'static str>;

    /// Checks that `algorithm` can learn `dataset` and resolves the user's hyperparameters:
    /// unknown keys, wrong types and out-of-range values are errors naming the field
    /// (relative to `hyperparameters`, or `algorithm`/`dataset`).
    fn plan(
        &self,
        algorithm: &str,
        dataset: &DatasetInfo,
        hyperparameters: &Map<String, Value>,
        limits: &Limits,
    ) -> Result<Plan, ValidationError>;

    /// Trains to completion, cancellation or pause, checking `control` often enough that a
    /// stop takes effect within a fraction of a second.
    fn train(
        &self,
        job: Job,
        control: &Control,
        reporter: &mut dyn Reporter,
    ) -> Result<Finished, TrainError>;

    /// Reads a checkpoint back (a damaged one is an error, so resume skips it) and says
    /// where it stood: `(epoch, step)`.
    fn checkpoint_position(&self, bytes: &[u8]) -> Result<(u32, u64), String>;

    /// Decodes a model file this family wrote, ready to serve.
    fn load(&self, bytes: &[u8]) -> Result<Arc<dyn Served>, PredictError>;

    /// The trained models a job with these (resolved) hyperparameters reads. The server checks
    /// at create time that each exists in the project, has an allowed algorithm and has a
    /// completed run, and hands their newest completed model files to the job.
    fn dependencies(&self, hyperparameters: &Map<String, Value>) -> Vec<Dependency> {
        let _ = hyperparameters;
        vec![]
    }

    /// Checks what depends on a dependency's model file itself (an autoencoder's layers
    /// against its source model's depth); errors name the field. Called at create time for
    /// dependencies marked `inspect`.
    fn check_dependency(
        &self,
        hyperparameters: &Map<String, Value>,
        field: &str,
        model_file: &[u8],
        limits: &Limits,
    ) -> Result<(), ValidationError> {
        let _ = (hyperparameters, field, model_file, limits);
        Ok(())
    }

    /// The memory, in MB, this job was admitted with: what the family's budget check
    /// estimated for it (at the batch size it will train with). Recorded beside the job's
    /// measured peak; None when the family does not estimate.
    fn memory_estimate_mb(&self, job: &Job) -> Option<f64> {
        let _ = job;
        None
    }

    /// Whether the family learns activation datasets extracted from a language model
    /// (`DatasetInfo::extracted_from`, contents in `Dataset::activations`); the server
    /// refuses such a dataset for the others.
    fn learns_extracted_activations(&self) -> bool {
        false
    }
}

/// Why a change to a served model was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AdjustError {
    #[error("{0}")]
    Invalid(#[from] ValidationError),
    #[error("{0}")]
    Unsupported(String),
}

/// A served model after an adjustment: its new file, metrics and what changed.
#[derive(Debug, Clone, PartialEq)]
pub struct Adjusted {
    pub artifact: Artifact,
    /// What the change did, for the response (e.g. the new fraction flagged).
    pub summary: Value,
}

/// What a language model is asked to continue.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateRequest {
    pub prompt: String,
    pub max_new_tokens: usize,
    /// 0 picks the most likely token every time.
    pub temperature: f64,
    pub top_k: Option<usize>,
    /// Sample from the smallest set of likeliest tokens whose probabilities reach this.
    pub top_p: Option<f64>,
    /// Generation ends before the first of these strings; it is not part of the text.
    pub stop: Vec<String>,
    pub seed: u64,
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// `max_new_tokens` were generated.
    Length,
    /// A stop string appeared.
    Stop,
    /// The receiver went away (a streaming client disconnected).
    Cancelled,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Length => "length",
            FinishReason::Stop => "stop",
            FinishReason::Cancelled => "cancelled",
        }
    }
}

/// Text a language model produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    pub text: String,
    pub tokens: usize,
    /// The prompt was longer than the context: only its last `block_size` tokens were used.
    pub prompt_truncated: bool,
    pub finish_reason: FinishReason,
    pub tokens_per_second: f64,
}

/// Receives generated text as it is produced; `false` stops generation (the client left).
pub type TextSink<'a> = dyn FnMut(&str) -> bool + 'a;

/// What a bundle's model card says about where the model came from.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportInfo {
    pub model_id: String,
    pub model_name: String,
    pub dataset: String,
    pub run_id: String,
}

/// A file of a model's export bundle.
#[derive(Debug, Clone, PartialEq)]
pub struct BundleFile {
    pub name: String,
    pub bytes: Vec<u8>,
}

/// How a features listing is ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeatureSort {
    Index,
    Frequency,
    MaxActivation,
}

/// A page of features.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureQuery {
    pub layer: Option<usize>,
    pub sort: FeatureSort,
    pub limit: usize,
    pub offset: usize,
}

/// A trained model, decoded once and shared by concurrent requests.
pub trait Served: Send + Sync + 'static {
    /// One JSON answer per input row, in order.
    fn predict(&self, rows: &[Vec<f64>]) -> Result<Vec<Value>, PredictError>;

    /// One JSON answer per text, in order (text classifiers).
    fn predict_texts(&self, texts: &[String]) -> Result<Vec<Value>, PredictError> {
        let _ = texts;
        Err(PredictError::Unsupported(
            "this model predicts from rows of numbers, not texts".into(),
        ))
    }

    /// The names of the columns `predict` answers, flattened for CSV (`score`, `is_anomaly`).
    fn output_columns(&self) -> Vec<String>;

    /// The inputs' feature names, in order.
    fn feature_names(&self) -> Vec<String>;

    /// Continues a prompt (language models), handing text to `sink` as it is produced (held
    /// back only while it could be the start of a stop string).
    fn generate(
        &self,
        request: &GenerateRequest,
        sink: &mut TextSink<'_>,
    ) -> Result<Generated, PredictError> {
        let _ = (request, sink);
        Err(PredictError::Unsupported(
            "this model does not generate text; use predict".into(),
        ))
    }

    /// The files of an export bundle: the weights and everything needed to use them outside
    /// Trainyard.
    fn export(&self, about: &ExportInfo) -> Result<Vec<BundleFile>, PredictError> {
        let _ = about;
        Err(PredictError::Unsupported(
            "this kind of model has no export bundle".into(),
        ))
    }

    /// A page of the model's learned features (sparse autoencoders).
    fn features(&self, query: &FeatureQuery) -> Result<Value, PredictError> {
        let _ = query;
        Err(PredictError::Unsupported(
            "this model has no features to list; sparse autoencoders do".into(),
        ))
    }

    /// One feature with its top activating contexts.
    fn feature(&self, layer: Option<usize>, index: usize) -> Result<Value, PredictError> {
        let _ = (layer, index);
        Err(PredictError::Unsupported(
            "this model has no features to show; sparse autoencoders do".into(),
        ))
    }

    /// Each token of `text` with its strongest `top` features.
    fn encode_text(
        &self,
        text: &str,
        layer: Option<usize>,
        top: usize,
    ) -> Result<Value, PredictError> {
        let _ = (text, layer, top);
        Err(PredictError::Unsupported(
            "this model does not encode text into features; sparse autoencoders do".into(),
        ))
    }

    /// Changes how the model answers without refitting it (an anomaly threshold).
    fn adjust(&self, changes: &Map<String, Value>) -> Result<Adjusted, AdjustError> {
        let _ = changes;
        Err(AdjustError::Unsupported(
            "this model has no settings that change after training".into(),
        ))
    }

    /// Opens a streaming session, continuing from `state` when a session saved one. The
    /// default session answers each message with `predict` and keeps no state.
    fn open_stream(
        self: Arc<Self>,
        state: Option<&[u8]>,
    ) -> Result<Box<dyn StreamSession>, String> {
        let _ = state;
        Ok(Box::new(StatelessSession(self)))
    }
}

/// One client's stream: rows in, answers out, in order.
pub trait StreamSession: Send {
    fn process(&mut self, rows: &[Vec<f64>]) -> Result<Vec<Value>, PredictError>;

    /// The session's learned state to checkpoint; None when it learns nothing.
    fn state(&self) -> Option<Vec<u8>>;
}

pub(crate) struct StatelessSession<S: ?Sized>(pub(crate) Arc<S>);

impl<S: Served + ?Sized> StreamSession for StatelessSession<S> {
    fn process(&mut self, rows: &[Vec<f64>]) -> Result<Vec<Value>, PredictError> {
        self.0.predict(rows)
    }

    fn state(&self) -> Option<Vec<u8>> {
        None
    }
}

/// Trains `job` with `family`, then reports how it ended (`Finished` with the metrics, or
/// `Failed` with the reason), as every trainer's stream ends.
pub fn run(
    family: &dyn Family,
    job: Job,
    control: &Control,
    reporter: &mut dyn Reporter,
) -> Result<Finished, TrainError> {
    let mut measured = Measured {
        estimate_mb: family.memory_estimate_mb(&job),
        memory: JobMemory::begin(),
        peak_seen_mb: 0.0,
        inner: reporter,
    };
    let mut result = crate::on_pool_worker(|| family.train(job, control, &mut measured));
    if let Ok(Finished::Completed(artifact)) = &mut result {
        measured.annotate(&mut artifact.metrics);
    }
    let reporter = measured.inner;
    match &result {
        Ok(Finished::Completed(artifact)) => reporter.event(TrainingEvent::Finished {
            metrics: artifact.metrics.clone(),
        }),
        Err(e) => reporter.event(TrainingEvent::Failed {
            reason: e.to_string(),
        }),
        Ok(_) => {}
    }
    result
}

/// What an attempt says when it trains at a smaller batch because its worker was killed
/// (`Limits::batch_halvings`); every family that halves says it the same way.
pub(crate) fn halved_after_kills(halvings: u32, from: usize, to: usize) -> TrainingEvent {
    TrainingEvent::Note {
        message: format!(
            "the worker was killed (out of memory?) {halvings} time(s): batch size {from} \
             halved to {to}"
        ),
    }
}

/// Adds the job's memory (estimate and measured peak) to every epoch's metrics.
struct Measured<'a> {
    inner: &'a mut dyn Reporter,
    memory: JobMemory,
    estimate_mb: Option<f64>,
    peak_seen_mb: f64,
}

impl Measured<'_> {
    fn annotate(&mut self, metrics: &mut BTreeMap<String, f64>) {
        if let Some(estimate) = self.estimate_mb {
            metrics.insert(resident::ESTIMATE_METRIC.into(), round_mb(estimate));
        }
        // The kernel's counters lag by a few pages; the figure users see never goes down.
        if let Some(peak) = self.memory.peak_mb() {
            self.peak_seen_mb = self.peak_seen_mb.max(peak);
            metrics.insert(resident::PEAK_METRIC.into(), round_mb(self.peak_seen_mb));
        }
    }
}

fn round_mb(mb: f64) -> f64 {
    (mb * 10.0).round() / 10.0
}

impl Reporter for Measured<'_> {
    fn event(&mut self, mut event: TrainingEvent) {
        if let TrainingEvent::Epoch(metrics) = &mut event {
            self.annotate(&mut metrics.values);
        }
        self.inner.event(event);
    }

    fn checkpoint(&mut self, checkpoint: &SavedCheckpoint) -> Result<u64, String> {
        self.inner.checkpoint(checkpoint)
    }
}

/// Checks rows before they reach a model: at least one, `d` values each, all finite as f32.
/// Returns them flattened, row-major.
pub fn check_rows(rows: &[Vec<f64>], names: &[String]) -> Result<Vec<f32>, PredictError> {
    let d = names.len();
    if rows.is_empty() {
        return Err(PredictError::Empty);
    }
    let mut x = Vec::with_capacity(rows.len() * d);
    for (r, row) in rows.iter().enumerate() {
        if row.len() != d {
            return Err(PredictError::FeatureCount {
                expected: d,
                given: row.len(),
                row: r,
                names: crate::model::summarize(names),
            });
        }
        for (f, v) in row.iter().enumerate() {
            // A finite f64 beyond f32's range would become infinite inside the model.
            if !v.is_finite() || (*v as f32).is_infinite() {
                return Err(PredictError::NotFinite {
                    row: r,
                    feature: f,
                    value: *v,
                });
            }
            x.push(*v as f32);
        }
    }
    Ok(x)
}
