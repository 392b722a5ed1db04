//! `transformer_classifier` on the family seam: labeled texts split by seed, tokenised (by its
//! own tokenizer or the `init_from` language model's), cut to the context with the number of
//! cut texts recorded, trained by the shared step loop; the served model answers
//! `predict_texts`.

use std::collections::BTreeMap;
use std::sync::Arc;

use burn::tensor::Device;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use trainyard_core::ValidationError;
use trainyard_data::tokenizer::TextTokenizer;
use trainyard_data::{DatasetInfo, SeededRng};

use super::LmHyperparameters;
use super::bundle::{Bundle, Head};
use super::classifier::{
    ClassifierData, LabeledTokens, Labels, Pooling, TextClassifier, fit_to_context, probabilities,
};
use super::family::{
    Forward, check_memory, evaluations_planned, final_metrics, outcome, read_model, start,
    vocab_bound,
};
use super::model::{Gpt, GptConfig};
use super::spec::{self, Target};
use super::steps::{load_weights, train_steps, weights};
use super::train::ClassWeights;
use super::weights::{GptWeights, dense};
use crate::container::{read_sections, write_sections};
use crate::family::{
    Artifact, BundleFile, ExportInfo, Finished, Job, Limits, Plan, Reporter, Served,
};
use crate::{Control, PredictError, TrainError};

pub const MODEL_MAGIC: &[u8; 8] = b"TYTCMD01";
pub const INIT_FROM_FIELD: &str = "hyperparameters.init_from";
/// The share of rows kept for validation (at least one).
const VALIDATION_FRACTION: f64 = 0.1;

#[derive(Serialize, Deserialize)]
struct ModelHeader {
    format: u32,
    config: GptConfig,
    tokenizer: TextTokenizer,
    classes: Vec<String>,
    hyperparameters: LmHyperparameters,
    metrics: BTreeMap<String, f64>,
}

pub fn plan(
    dataset: &DatasetInfo,
    hyperparameters: &Map<String, Value>,
    limits: &Limits,
) -> Result<Plan, ValidationError> {
    let classes = match &dataset.classes {
        Some(classes) if dataset.task == trainyard_core::Task::Text => classes.len(),
        _ => {
            return Err(ValidationError::new(
                "dataset",
                format!(
                    "transformer_classifier learns from labeled texts, but '{}' is not one; upload \
                     a CSV or JSON Lines file with a text column and task=text&target=<label column>",
                    dataset.name
                ),
            ));
        }
    };
    let hp = spec::resolve(hyperparameters, Target::Labels { classes })?;
    check_memory(training_mb(&hp, None), &hp, limits)?;
    Ok(Plan {
        hyperparameters: serde_json::to_value(&hp).expect("hyperparameters serialise"),
        epochs: evaluations_planned(&hp),
    })
}

/// burn's autodiff, which trains the classifier, holds about this many times the activations
/// the language model's formula counts (dropout masks and attention's intermediates too): a
/// classifier started from the default language model (4 blocks of 128 over characters,
/// batches of 32 texts padded to 64 tokens) peaked at 190 MB where the formula gave 111.
const BURN_ACTIVATIONS: f64 = 2.0;

/// A classifier's training memory. Its body has the `init_from` model's shape when `job`
/// holds that model (the shape and tokenizer replace the classifier's own), else its own.
pub(super) fn training_mb(hp: &LmHyperparameters, job: Option<&Job>) -> f64 {
    let config = job
        .and_then(|job| job.dependencies.get(INIT_FROM_FIELD))
        .and_then(|bytes| read_model(bytes).ok())
        .map(|(header, _)| header.config)
        .unwrap_or_else(|| hp.config(vocab_bound(hp)));
    let weights = config.estimated_bytes(0);
    let activations = config.estimated_bytes(hp.batch_size) - weights;
    (weights + BURN_ACTIVATIONS * activations + crate::memory::BACKEND_RUNTIME_BYTES)
        / (1 << 20) as f64
}

/// Row indices for training and validation: a seeded shuffle, the first tenth validating.
pub fn split(rows: usize, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut order: Vec<usize> = (0..rows).collect();
    let mut rng = SeededRng::derive(seed, 5_000_000);
    for i in (1..rows).rev() {
        order.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
    }
    let validation = ((rows as f64 * VALIDATION_FRACTION).round() as usize).max(1);
    let train = order.split_off(validation);
    (train, order)
}

/// The tokens of the chosen rows, each cut to `block` tokens; and how many were cut.
fn tokenize(
    tokenizer: &TextTokenizer,
    texts: &[String],
    labels: &[f32],
    rows: &[usize],
    block: usize,
) -> (LabeledTokens, usize) {
    let mut cut = 0;
    let mut out = LabeledTokens::default();
    for &i in rows {
        let (tokens, was_cut) = fit_to_context(tokenizer.encode(&texts[i]), block);
        cut += usize::from(was_cut);
        out.rows.push(tokens);
        out.labels.push(labels[i] as u32);
    }
    (out, cut)
}

fn class_weights(hp: &LmHyperparameters, labels: &[u32], classes: usize) -> Option<Vec<f32>> {
    match hp.class_weights.as_ref()? {
        ClassWeights::Given(weights) => Some(weights.iter().map(|&w| w as f32).collect()),
        ClassWeights::Balanced => {
            let mut counts = vec![0usize; classes];
            labels.iter().for_each(|&l| counts[l as usize] += 1);
            Some(
                counts
                    .iter()
                    .map(|&c| labels.len() as f32 / (classes * c.max(1)) as f32)
                    .collect(),
            )
        }
    }
}

/// The tokenizer, network shape and starting weights: the `init_from` language model's, or
/// a tokenizer fitted on the training texts.
fn starting_point(
    job: &Job,
    hp: &LmHyperparameters,
    train_texts: &str,
) -> Result<(TextTokenizer, GptConfig, Option<Vec<u8>>), TrainError> {
    let Some(id) = &hp.init_from else {
        let tokenizer = TextTokenizer::fit(hp.tokenizer, train_texts, hp.vocab_size)
            .map_err(|e| TrainError::Fit(e.to_string()))?;
        let config = hp.config(tokenizer.vocab_size());
        return Ok((tokenizer, config, None));
    };
    let bytes = job.dependencies.get(INIT_FROM_FIELD).ok_or_else(|| {
        TrainError::Fit(format!(
            "{INIT_FROM_FIELD}: model '{id}' was not provided to this job"
        ))
    })?;
    let (header, weights) = read_model(bytes)
        .map_err(|e| TrainError::Fit(format!("{INIT_FROM_FIELD}: model '{id}': {e}")))?;
    Ok((header.tokenizer, header.config, Some(weights.to_vec())))
}

pub fn train(
    job: Job,
    control: &Control,
    reporter: &mut dyn Reporter,
) -> Result<Finished, TrainError> {
    let dataset = &job.dataset;
    let (Some(texts), Some(classes)) = (&dataset.texts, &dataset.info.classes) else {
        return Err(TrainError::Fit("the dataset has no labeled texts".into()));
    };
    let hp = spec::resolve(
        &job.hyperparameters,
        Target::Labels {
            classes: classes.len(),
        },
    )
    .map_err(|e| TrainError::Fit(e.to_string()))?;
    let (train_rows, validation_rows) = split(texts.len(), hp.seed);
    let joined: String = train_rows
        .iter()
        .map(|&i| texts[i].as_str())
        .collect::<Vec<_>>()
        .join("\n");
    let (tokenizer, config, init) = starting_point(&job, &hp, &joined)?;
    let labels = &dataset.table.y;
    let (train_set, cut_train) =
        tokenize(&tokenizer, texts, labels, &train_rows, config.block_size);
    let (validation, cut_validation) = tokenize(
        &tokenizer,
        texts,
        labels,
        &validation_rows,
        config.block_size,
    );
    let resume = start(
        &job,
        &hp,
        reporter,
        train_set.rows.len(),
        validation.rows.len(),
    )?;
    let data = ClassifierData {
        train: &train_set,
        validation: &validation,
        classes: classes.len(),
        init: init.as_deref(),
        config: config.clone(),
    };
    let weights_per_class = class_weights(&hp, &train_set.labels, classes.len());
    let objective = Labels::new(&hp, &data, weights_per_class);
    let mut forward = Forward::new(reporter, &hp, resume.as_ref());
    let run = train_steps(&hp, &objective, resume.as_ref(), control, &mut forward)?;
    let best = match outcome(&run, &mut forward) {
        Ok(best) => best,
        Err(finished) => return Ok(finished),
    };
    let mut metrics = final_metrics(&run.evaluations, best);
    let kept = best.map_or(run.evaluations.last(), |i| run.evaluations.get(i));
    metrics.extend(kept.map(|e| e.values.clone()).unwrap_or_default());
    metrics.insert("truncated_rows".into(), (cut_train + cut_validation) as f64);
    let header = ModelHeader {
        format: 1,
        config,
        tokenizer,
        classes: classes.clone(),
        hyperparameters: hp,
        metrics: metrics.clone(),
    };
    let header = serde_json::to_vec(&header).expect("model header serialises");
    let bytes = write_sections(MODEL_MAGIC, &[&header, &weights(&run.model)?]);
    Ok(Finished::Completed(Artifact { bytes, metrics }))
}

pub fn load(bytes: &[u8]) -> Result<Arc<dyn Served>, PredictError> {
    let sections = read_sections(MODEL_MAGIC, "text classifier", bytes)?;
    let [header, weights] = sections[..] else {
        return Err(PredictError::Artifact(
            "a text classifier has two sections".into(),
        ));
    };
    let header: ModelHeader =
        serde_json::from_slice(header).map_err(|e| PredictError::Artifact(e.to_string()))?;
    let device = Device::flex();
    let model = TextClassifier {
        body: Gpt::new(&header.config, &device),
        head: burn::nn::LinearConfig::new(header.config.n_embd, header.classes.len()).init(&device),
    };
    let model = load_weights(model, weights).map_err(|e| PredictError::Artifact(e.to_string()))?;
    Ok(Arc::new(ClassifierModel { model, header }))
}

/// A trained text classifier, ready to label texts.
pub struct ClassifierModel {
    model: TextClassifier,
    header: ModelHeader,
}

impl Served for ClassifierModel {
    fn predict(&self, _rows: &[Vec<f64>]) -> Result<Vec<Value>, PredictError> {
        Err(PredictError::Unsupported(
            "a text classifier labels texts: send {\"inputs\": [\"a text\", ...]}".into(),
        ))
    }

    fn predict_texts(&self, texts: &[String]) -> Result<Vec<Value>, PredictError> {
        let block = self.header.config.block_size;
        let (rows, cut): (Vec<Vec<u32>>, Vec<bool>) = texts
            .iter()
            .map(|text| fit_to_context(self.header.tokenizer.encode(text), block))
            .unzip();
        let pooling: Pooling = self.header.hyperparameters.pooling;
        let probs = probabilities(&self.model, &rows, pooling, 64);
        Ok(probs
            .iter()
            .zip(cut)
            .map(|(p, was_cut)| {
                let index = crate::model::argmax(p);
                let by_class: Map<String, Value> = self
                    .header
                    .classes
                    .iter()
                    .zip(p)
                    .map(|(class, &q)| (class.clone(), json!(q)))
                    .collect();
                json!({"label": self.header.classes[index], "class_index": index,
                       "probabilities": by_class,
                       "truncated": was_cut})
            })
            .collect())
    }

    fn output_columns(&self) -> Vec<String> {
        vec!["label".into(), "class_index".into()]
    }

    fn export(&self, about: &ExportInfo) -> Result<Vec<BundleFile>, PredictError> {
        let weights = GptWeights::from_model(&self.model.body, &self.header.config);
        let head = dense(&self.model.head);
        super::bundle::files(&Bundle {
            weights: &weights,
            tokenizer: &self.header.tokenizer,
            hyperparameters: &self.header.hyperparameters,
            metrics: &self.header.metrics,
            about,
            head: Some(Head {
                dense: &head,
                classes: &self.header.classes,
                pooling: self.header.hyperparameters.pooling,
            }),
        })
    }

    fn feature_names(&self) -> Vec<String> {
        vec!["text".into()]
    }
}
