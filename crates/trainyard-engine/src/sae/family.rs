//! `sparse_autoencoder` on the model-family seam: activations extracted from a trained
//! `transformer_lm` (the `source_model` dependency) on a text corpus, one autoencoder per
//! requested layer, checkpoints at every evaluation and on pause, and a served model that
//! lists features, shows their top contexts, encodes text and exports in SAELens's layout.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use trainyard_core::{EpochMetrics, Task, TrainingEvent, ValidationError};
use trainyard_data::DatasetInfo;
use trainyard_data::extracted::ActivationSet;
use trainyard_data::text::builtin_corpus;

use super::cache;
use super::codec::{SaeShape, decode_checkpoint, encode_checkpoint, sae_sections};
use super::extract::{Extracted, Source};
use super::features::{
    LossRecovered, Splice, feature_statistics, loss_recovered_from, next_token_loss,
};
use super::memory;
use super::spec::{self, SaeHyperparameters};
use super::train::{LayerData, SaeCheckpoint, SaeEvaluation, SaeObserver, SaeRun, train};
use crate::container::{u32_bytes, write_sections};
use crate::family::{
    Artifact, Dependency, Family, Finished, Job, Limits, Plan, Reporter, SavedCheckpoint, Served,
};
use crate::language::family::language_model_config;
use crate::{Control, PredictError, Stop, TrainError};

pub(super) const MODEL_MAGIC: &[u8; 8] = b"TYSAEMD1";
pub const SOURCE_FIELD: &str = "hyperparameters.source_model";

pub struct SparseAutoencoders;

/// What the model file says about one layer's autoencoder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerSummary {
    pub layer: usize,
    pub shape: SaeShape,
    /// Inputs were multiplied by this before encoding (`normalize_activations`).
    pub scale: f32,
    /// When a language model produced the activations.
    pub loss_recovered: Option<LossRecovered>,
    pub metrics: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelHeader {
    pub format: u32,
    pub hyperparameters: SaeHyperparameters,
    pub layers: Vec<LayerSummary>,
    pub metrics: BTreeMap<String, f64>,
}

fn planned_evaluations(hp: &SaeHyperparameters) -> u32 {
    hp.max_steps.div_ceil(hp.log_interval) as u32
}

/// An activation matrix is one layer of known width: no source model, and `k` and memory
/// are checked here.
fn check_matrix(
    hp: &SaeHyperparameters,
    dataset: &DatasetInfo,
    limits: &Limits,
) -> Result<(), ValidationError> {
    if hp.source_model.is_some() {
        return Err(ValidationError::new(
            SOURCE_FIELD,
            format!(
                "'{}' holds activations already; leave source_model out (it reads a text corpus)",
                dataset.name
            ),
        ));
    }
    if !hp.layers.is_empty() && hp.layers != [0] {
        return Err(ValidationError::new(
            "hyperparameters.layers",
            "an activation matrix is a single layer; leave layers out",
        ));
    }
    if dataset.n_rows < 16 {
        return Err(ValidationError::new(
            "dataset",
            format!(
                "'{}' has {} rows; an autoencoder needs at least 16 tokens",
                dataset.name, dataset.n_rows
            ),
        ));
    }
    spec::check_against_source(hp, 1, dataset.n_features)?;
    let sized = SaeHyperparameters {
        n_tokens: dataset.n_rows,
        ..hp.clone()
    };
    memory::check_fits(&sized, 1, dataset.n_features, limits.job_memory_mb)
}

impl Family for SparseAutoencoders {
    fn name(&self) -> &'static str {
        "sparse_autoencoder"
    }

    fn algorithms(&self) -> Vec<&'static str> {
        vec!["sparse_autoencoder"]
    }

    fn plan(
        &self,
        _algorithm: &str,
        dataset: &DatasetInfo,
        hyperparameters: &Map<String, Value>,
        limits: &Limits,
    ) -> Result<Plan, ValidationError> {
        if let Some(from) = &dataset.extracted_from {
            let hp = super::dataset::resolve_on_dataset(hyperparameters, dataset, from, limits)?;
            return Ok(Plan {
                hyperparameters: serde_json::to_value(&hp).expect("hyperparameters serialise"),
                epochs: planned_evaluations(&hp),
            });
        }
        let matrix = dataset.task == Task::Unlabeled;
        if !matrix && (dataset.task != Task::Text || dataset.classes.is_some()) {
            return Err(ValidationError::new(
                "dataset",
                format!(
                    "a sparse autoencoder learns a language model's activations on a text \
                     corpus (shakespeare, or an upload with task=text) or an activation matrix \
                     (an upload with task=activations); '{}' is neither",
                    dataset.name
                ),
            ));
        }
        let hp = spec::resolve(hyperparameters)?;
        if matrix {
            check_matrix(&hp, dataset, limits)?;
        } else if hp.source_model.is_none() {
            return Err(ValidationError::new(
                SOURCE_FIELD,
                "required: the id of a trained transformer_lm whose activations to learn",
            ));
        }
        Ok(Plan {
            hyperparameters: serde_json::to_value(&hp).expect("hyperparameters serialise"),
            epochs: planned_evaluations(&hp),
        })
    }

    fn dependencies(&self, hyperparameters: &Map<String, Value>) -> Vec<Dependency> {
        hyperparameters
            .get("source_model")
            .and_then(Value::as_str)
            .map(|id| Dependency {
                field: SOURCE_FIELD.into(),
                model_id: id.into(),
                algorithms: vec!["transformer_lm"],
                inspect: true,
            })
            .into_iter()
            .collect()
    }

    fn check_dependency(
        &self,
        hyperparameters: &Map<String, Value>,
        field: &str,
        model_file: &[u8],
        limits: &Limits,
    ) -> Result<(), ValidationError> {
        let config = language_model_config(model_file)
            .map_err(|e| ValidationError::new(field, e.to_string()))?;
        let hp = spec::resolve(hyperparameters)?;
        spec::check_against_source(&hp, config.n_layer, config.n_embd)?;
        memory::check_fits(
            &hp,
            hp.layers.len().max(1),
            config.n_embd,
            limits.job_memory_mb,
        )
    }

    fn memory_estimate_mb(&self, job: &Job) -> Option<f64> {
        let hp = spec::resolve(&job.hyperparameters).ok()?;
        let info = &job.dataset.info;
        if let Some(from) = &info.extracted_from {
            let fitted =
                memory::fitted_mb(&hp, hp.layers.len(), from.d_model, job.limits.job_memory_mb);
            let config = language_model_config(job.dependencies.get(SOURCE_FIELD)?).ok()?;
            let source = ((config.parameters() * 4 * 3) as f64
                + crate::memory::BACKEND_RUNTIME_BYTES)
                / (1 << 20) as f64;
            return Some(fitted + source + super::dataset::dataset_mb(from));
        }
        if info.task == Task::Unlabeled {
            let sized = SaeHyperparameters {
                n_tokens: info.n_rows,
                ..hp
            };
            return Some(memory::fitted_mb(
                &sized,
                1,
                info.n_features,
                job.limits.job_memory_mb,
            ));
        }
        let config = language_model_config(job.dependencies.get(SOURCE_FIELD)?).ok()?;
        // The source model's file, its decoded weights and the module built from them, the
        // corpus it reads, and the tensor backend it runs on.
        let source = ((config.parameters() * 4 * 3 + info.n_rows) as f64
            + crate::memory::BACKEND_RUNTIME_BYTES)
            / (1 << 20) as f64;
        let layers = hp.layers.len().max(1);
        // Cached activations are written (or read) whole beside the job's own copy.
        let cached = match job.cache {
            Some(_) => memory::activations_mb(&hp, layers, config.n_embd),
            None => 0.0,
        };
        let fitted = memory::fitted_mb(&hp, layers, config.n_embd, job.limits.job_memory_mb);
        Some(fitted + source + cached)
    }

    fn train(
        &self,
        job: Job,
        control: &Control,
        reporter: &mut dyn Reporter,
    ) -> Result<Finished, TrainError> {
        let fit = |e: String| TrainError::Fit(e);
        let mut hp = spec::resolve(&job.hyperparameters).map_err(|e| fit(e.to_string()))?;
        let resume = job
            .resume
            .as_deref()
            .map(decode_checkpoint)
            .transpose()
            .map_err(TrainError::Resume)?;
        if let Some(set) = &job.dataset.activations {
            return train_on_dataset(&job, hp, set, resume, control, reporter);
        }
        if job.dataset.info.task == Task::Unlabeled {
            hp.layers = vec![0];
            let info = &job.dataset.info;
            let shape = (1, info.n_features);
            memory::shrink_to_budget(
                &mut hp,
                info.n_rows,
                shape,
                job.limits.job_memory_mb,
                reporter,
            );
            memory::halve_after_kills(&mut hp, job.limits.batch_halvings, reporter);
            let layers = vec![matrix_layer(&hp, &job.dataset.table)];
            let run = match fit_layers(&hp, &layers, resume, control, reporter)? {
                Ok(run) => run,
                Err(finished) => return Ok(finished),
            };
            return Ok(Finished::Completed(model_file(&hp, None, &layers, &run)));
        }
        let source_file = job.dependencies.get(SOURCE_FIELD).ok_or_else(|| {
            fit(format!(
                "{SOURCE_FIELD}: the source model was not provided to this job; train on a server"
            ))
        })?;
        let source =
            Source::decode(source_file).map_err(|e| fit(format!("{SOURCE_FIELD}: {e}")))?;
        if hp.layers.is_empty() {
            hp.layers = vec![source.config.n_layer / 2];
        }
        spec::check_against_source(&hp, source.config.n_layer, source.config.n_embd)
            .map_err(|e| fit(e.to_string()))?;
        let shape = (hp.layers.len(), source.config.n_embd);
        let tokens = hp.n_tokens;
        memory::shrink_to_budget(&mut hp, tokens, shape, job.limits.job_memory_mb, reporter);
        memory::halve_after_kills(&mut hp, job.limits.batch_halvings, reporter);
        let text = match &job.dataset.text {
            Some(text) => text.clone(),
            None => builtin_corpus(&job.dataset.info.name)
                .map_err(|e| fit(e.to_string()))?
                .into(),
        };
        let cache = job.cache.as_deref();
        let read = cache::ActivationRead {
            source: &source,
            source_file,
            corpus: &text,
            hp: &hp,
        };
        let Some(extracted) = read.cached_or_extracted(cache, control, reporter)? else {
            return Ok(stopped_before_training(control));
        };
        let origin = (&source, source_file.as_slice());
        fit_extracted(&hp, origin, &extracted, resume, control, reporter)
    }

    fn learns_extracted_activations(&self) -> bool {
        true
    }

    fn checkpoint_position(&self, bytes: &[u8]) -> Result<(u32, u64), String> {
        let checkpoint = decode_checkpoint(bytes)?;
        Ok((checkpoint.evaluations.len() as u32, checkpoint.step))
    }

    fn load(&self, bytes: &[u8]) -> Result<Arc<dyn Served>, PredictError> {
        Ok(Arc::new(super::served::ServedSae::decode(bytes)?))
    }
}

/// Trains on an extracted activation dataset: its source model comes as the job's
/// dependency, its activations with the dataset.
fn train_on_dataset(
    job: &Job,
    mut hp: SaeHyperparameters,
    set: &ActivationSet,
    resume: Option<SaeCheckpoint>,
    control: &Control,
    reporter: &mut dyn Reporter,
) -> Result<Finished, TrainError> {
    let fit = |e: String| TrainError::Fit(e);
    let source_file = job.dependencies.get(SOURCE_FIELD).ok_or_else(|| {
        fit(format!(
            "{SOURCE_FIELD}: the source model was not provided to this job; train on a server"
        ))
    })?;
    let source = Source::decode(source_file).map_err(|e| fit(format!("{SOURCE_FIELD}: {e}")))?;
    let shape = (hp.layers.len(), set.from.d_model);
    let tokens = hp.n_tokens;
    memory::shrink_to_budget(&mut hp, tokens, shape, job.limits.job_memory_mb, reporter);
    memory::halve_after_kills(&mut hp, job.limits.batch_halvings, reporter);
    let extracted = super::extract::from_dataset(set, &hp.layers, hp.normalize_activations);
    reporter.event(TrainingEvent::Note {
        message: format!(
            "activations of layer(s) {:?} read from dataset '{}'",
            hp.layers, job.dataset.info.name
        ),
    });
    fit_extracted(
        &hp,
        (&source, source_file.as_slice()),
        &extracted,
        resume,
        control,
        reporter,
    )
}

/// Trains on a language model's activations and writes the model file with what the source
/// model gives: contexts, promoted tokens and the loss recovered.
fn fit_extracted(
    hp: &SaeHyperparameters,
    (source, file): (&Source, &[u8]),
    extracted: &Extracted,
    resume: Option<SaeCheckpoint>,
    control: &Control,
    reporter: &mut dyn Reporter,
) -> Result<Finished, TrainError> {
    let run = match fit_layers(hp, &extracted.layers, resume, control, reporter)? {
        Ok(run) => run,
        Err(finished) => return Ok(finished),
    };
    let origin = Origin {
        source,
        file,
        windows: &extracted.windows,
        validation_windows: &extracted.validation_windows,
    };
    Ok(Finished::Completed(model_file(
        hp,
        Some(origin),
        &extracted.layers,
        &run,
    )))
}

/// Reports the start and trains; `Err` with how the job ended when it stopped early.
fn fit_layers(
    hp: &SaeHyperparameters,
    layers: &[LayerData],
    resume: Option<SaeCheckpoint>,
    control: &Control,
    reporter: &mut dyn Reporter,
) -> Result<Result<SaeRun, Finished>, TrainError> {
    reporter.event(TrainingEvent::Started {
        total_epochs: planned_evaluations(hp),
        start_epoch: resume.as_ref().map_or(0, |c| c.evaluations.len() as u32),
        train_samples: layers[0].rows(),
        validation_samples: layers[0].validation.len() / layers[0].d_in,
    });
    let mut forward = Forward {
        reporter,
        hp,
        next: resume
            .as_ref()
            .map_or(1, |c| c.evaluations.len() as u32 + 1),
        last_progress: Instant::now(),
    };
    let run = train(hp, layers, resume, control, &mut forward)?;
    Ok(match run.stopped {
        Some(Stop::Cancel) => Err(Finished::Cancelled),
        Some(Stop::Pause) => Err(Finished::Paused),
        None => Ok(run),
    })
}

/// An uploaded activation matrix as one layer: a tenth of the rows (chosen by `seed`, at most
/// 8192) held out for validation.
fn matrix_layer(hp: &SaeHyperparameters, table: &trainyard_data::Table) -> LayerData {
    let d = table.n_features;
    let rows = table.len();
    let mut order: Vec<usize> = (0..rows).collect();
    trainyard_data::SeededRng::new(hp.seed).shuffle(&mut order);
    let held_out = (rows / 10).clamp(1.min(rows - 1), 8192);
    let pick = |indices: &[usize]| -> Vec<f32> {
        indices
            .iter()
            .flat_map(|&r| table.x[r * d..][..d].iter().copied())
            .collect()
    };
    let (validation_rows, train_rows) = order.split_at(held_out);
    let (mut train, mut validation) = (pick(train_rows), pick(validation_rows));
    let scale = if hp.normalize_activations {
        super::stats::norm_scale(&train, d)
    } else {
        1.0
    };
    for v in train.iter_mut().chain(validation.iter_mut()) {
        *v *= scale;
    }
    LayerData {
        layer: 0,
        d_in: d,
        scale,
        train,
        validation,
    }
}

/// Where activations came from when a language model produced them.
struct Origin<'a> {
    source: &'a Source,
    file: &'a [u8],
    windows: &'a [u32],
    validation_windows: &'a [u32],
}

/// Stopped during extraction: nothing to checkpoint yet, so a pause restarts extraction.
fn stopped_before_training(control: &Control) -> Finished {
    match control.requested() {
        Some(Stop::Cancel) => Finished::Cancelled,
        _ => Finished::Paused,
    }
}

/// The model file: header, the source model's file (features and encode run it), the token
/// windows (to show contexts), then per layer its four tensors and its feature statistics.
fn model_file(
    hp: &SaeHyperparameters,
    origin: Option<Origin<'_>>,
    layers: &[LayerData],
    run: &SaeRun,
) -> Artifact {
    let last = run.evaluations.last();
    let mut metrics: BTreeMap<String, f64> = last.map(|e| e.values.clone()).unwrap_or_default();
    if let Some(e) = last {
        metrics.insert("train_loss".into(), e.train_loss);
        metrics.insert("val_loss".into(), e.val_loss);
    }
    let mut summaries = vec![];
    let mut layer_sections: Vec<Vec<u8>> = vec![];
    let mut recovered_total = 0.0;
    // The unmodified loss is the same whichever layer is spliced: compute it once.
    let original = origin
        .as_ref()
        .map(|o| next_token_loss(o.source, o.validation_windows, 0, hp.site, &Splice::Keep));
    for (state, data) in run.layers.iter().zip(layers) {
        let prefix = format!("layer{}.", state.layer);
        let mut own: BTreeMap<String, f64> = metrics
            .iter()
            .filter_map(|(k, v)| k.strip_prefix(&prefix).map(|k| (k.to_string(), *v)))
            .collect();
        let recovered = origin.as_ref().zip(original).map(|(origin, original)| {
            let splice = Splice::Autoencoder {
                sae: &state.sae,
                scale: data.scale,
                architecture: hp.architecture,
                k: hp.k,
            };
            loss_recovered_from(
                original,
                origin.source,
                origin.validation_windows,
                state.layer,
                hp.site,
                &splice,
            )
        });
        if let Some(recovered) = &recovered {
            own.extend([
                ("loss_recovered".to_string(), recovered.fraction()),
                ("ce_loss_original".to_string(), recovered.original),
                ("ce_loss_spliced".to_string(), recovered.spliced),
                ("ce_loss_zero_ablated".to_string(), recovered.zero_ablated),
            ]);
            recovered_total += recovered.fraction() / run.layers.len() as f64;
            for (name, value) in [
                ("loss_recovered", recovered.fraction()),
                ("ce_loss_spliced", recovered.spliced),
            ] {
                metrics.insert(format!("{prefix}{name}"), value);
            }
            metrics.insert("ce_loss_original".into(), recovered.original);
        }
        let features = feature_statistics(&state.sae, data, hp.architecture, hp.k);
        let (shape, tensors) = sae_sections(&state.sae);
        layer_sections.extend(tensors);
        layer_sections.push(serde_json::to_vec(&features).expect("features serialise"));
        summaries.push(LayerSummary {
            layer: state.layer,
            shape,
            scale: data.scale,
            loss_recovered: recovered,
            metrics: own,
        });
    }
    if origin.is_some() {
        metrics.insert("loss_recovered".into(), recovered_total);
    }
    let header = serde_json::to_vec(&ModelHeader {
        format: 1,
        hyperparameters: hp.clone(),
        layers: summaries,
        metrics: metrics.clone(),
    })
    .expect("model header serialises");
    let (file, windows) = match &origin {
        Some(origin) => (origin.file, u32_bytes(origin.windows)),
        None => (&[][..], vec![]),
    };
    let mut sections: Vec<&[u8]> = vec![&header, file, &windows];
    sections.extend(layer_sections.iter().map(Vec::as_slice));
    Artifact {
        bytes: write_sections(MODEL_MAGIC, &sections),
        metrics,
    }
}

/// Evaluations as epoch events, steps as throttled progress, checkpoints and resampling
/// notes to the reporter.
struct Forward<'a> {
    reporter: &'a mut dyn Reporter,
    hp: &'a SaeHyperparameters,
    next: u32,
    last_progress: Instant,
}

impl SaeObserver for Forward<'_> {
    fn step(&mut self, done: u64) {
        if self.last_progress.elapsed() < crate::neural::PROGRESS_INTERVAL {
            return;
        }
        self.last_progress = Instant::now();
        self.reporter.event(crate::family::step_progress(
            done,
            self.hp.log_interval,
            self.hp.max_steps,
        ));
    }

    fn evaluation(&mut self, e: &SaeEvaluation) {
        let epoch = self.next;
        self.next += 1;
        self.reporter.event(TrainingEvent::Epoch(EpochMetrics {
            epoch,
            train_loss: e.train_loss,
            val_loss: e.val_loss,
            learning_rate: e.learning_rate,
            samples_per_second: e.tokens_per_second,
            epoch_seconds: e.seconds,
            values: e.values.clone(),
        }));
    }

    fn checkpoint(&mut self, checkpoint: &SaeCheckpoint) -> Result<(), TrainError> {
        let saved = SavedCheckpoint {
            epoch: checkpoint.evaluations.len() as u32,
            step: checkpoint.step,
            bytes: encode_checkpoint(checkpoint),
        };
        crate::family::report_checkpoint(self.reporter, &saved)
    }

    fn resampled(&mut self, step: u64, layer: usize, latents: usize) {
        self.reporter.event(TrainingEvent::Resampled {
            step,
            layer,
            latents,
        });
    }
}
