//! `transformer_classifier`: the language model's blocks with a classification head over the
//! pooled hidden states of a text's real tokens. Texts are right-padded to the batch's longest;
//! attention is causal, so a real position never sees the padding after it, and pooling
//! (the mean of the real positions, or the last one) ignores the padding too: a text's
//! prediction does not depend on what it is batched with.

use std::collections::{BTreeMap, HashSet};

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::nn::loss::{CrossEntropyLoss, CrossEntropyLossConfig};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Device, Int, Tensor, TensorData, activation};
use serde::{Deserialize, Serialize};
use trainyard_data::SeededRng;

use super::LmHyperparameters;
use super::model::{Dropout, Gpt, GptConfig, token_tensor};
use super::steps::{Objective, load_weights};
use crate::TrainError;

/// How a text's hidden states become one vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// The mean over the text's tokens.
    #[default]
    Mean,
    /// The last token's state (it has attended to the whole text).
    Last,
}

#[derive(Module, Debug)]
pub struct TextClassifier {
    pub body: Gpt,
    pub head: Linear,
}

impl TextClassifier {
    /// Class logits `[rows, classes]` for right-padded `tokens` with `lengths` real tokens.
    pub fn forward(
        &self,
        tokens: Tensor<2, Int>,
        lengths: &[usize],
        pooling: Pooling,
        dropout: Option<&mut Dropout>,
    ) -> Tensor<2> {
        let device = tokens.device();
        let hidden = self.body.hidden(tokens, dropout);
        let [rows, time, width] = hidden.dims();
        let mut weights = vec![0.0f32; rows * time];
        for (row, &length) in lengths.iter().enumerate() {
            let slots = &mut weights[row * time..row * time + length];
            match pooling {
                Pooling::Mean => slots.fill(1.0 / length as f32),
                Pooling::Last => slots[length - 1] = 1.0,
            }
        }
        let weights = Tensor::<3>::from_data(TensorData::new(weights, [rows, time, 1]), &device);
        let pooled: Tensor<2> = (hidden * weights).sum_dim(1).reshape([rows, width]);
        self.head.forward(pooled)
    }
}

/// Texts as token ids (already cut to the context) with their class indices.
#[derive(Debug, Clone, Default)]
pub struct LabeledTokens {
    pub rows: Vec<Vec<u32>>,
    pub labels: Vec<u32>,
}

/// A text's tokens cut to the context (`block` tokens; an empty text is one unknown token),
/// and whether it was cut.
pub fn fit_to_context(mut tokens: Vec<u32>, block: usize) -> (Vec<u32>, bool) {
    let cut = tokens.len() > block;
    tokens.truncate(block);
    if tokens.is_empty() {
        tokens.push(0);
    }
    (tokens, cut)
}

/// Right-pads rows to the longest: the tokens as `[rows, longest]` and each row's length.
pub fn padded(rows: &[&[u32]], device: &Device) -> (Tensor<2, Int>, Vec<usize>) {
    let longest = rows.iter().map(|r| r.len()).max().unwrap_or(1).max(1);
    let mut flat = Vec::with_capacity(rows.len() * longest);
    for row in rows {
        flat.extend_from_slice(row);
        flat.extend(std::iter::repeat_n(0, longest - row.len()));
    }
    let lengths = rows.iter().map(|r| r.len().max(1)).collect();
    (token_tensor(&flat, rows.len(), longest, device), lengths)
}

/// What a classifier learns from.
pub struct ClassifierData<'a> {
    pub train: &'a LabeledTokens,
    pub validation: &'a LabeledTokens,
    pub classes: usize,
    /// A trained language model's weights (same shape) to start the body from.
    pub init: Option<&'a [u8]>,
    pub config: GptConfig,
}

pub struct Labels<'a> {
    pub hp: &'a LmHyperparameters,
    pub data: &'a ClassifierData<'a>,
    pub loss_fn: CrossEntropyLoss,
}

impl<'a> Labels<'a> {
    pub fn new(
        hp: &'a LmHyperparameters,
        data: &'a ClassifierData<'a>,
        class_weights: Option<Vec<f32>>,
    ) -> Self {
        let smoothing = (hp.label_smoothing > 0.0).then_some(hp.label_smoothing as f32);
        let loss_fn = CrossEntropyLossConfig::new()
            .with_weights(class_weights)
            .with_smoothing(smoothing)
            .init(&Device::flex().autodiff());
        Labels { hp, data, loss_fn }
    }
}

impl Objective for Labels<'_> {
    type Model = TextClassifier;

    fn init(&self, device: &Device) -> Result<TextClassifier, TrainError> {
        let mut body = Gpt::new(&self.data.config, device);
        if let Some(bytes) = self.data.init {
            body = load_weights(body, bytes)
                .map_err(|e| TrainError::Fit(format!("hyperparameters.init_from: {e}")))?;
        }
        let head = LinearConfig::new(self.data.config.n_embd, self.data.classes).init(device);
        Ok(TextClassifier { body, head })
    }

    /// `batch_size` rows drawn at seeded positions for this draw.
    fn loss(&self, model: &TextClassifier, draw: u64, device: &Device) -> Tensor<1> {
        let hp = self.hp;
        let mut rng = SeededRng::derive(hp.seed, 4_000_000 + draw);
        let n = self.data.train.rows.len();
        let picks: Vec<usize> = (0..hp.batch_size)
            .map(|_| (rng.next_u64() % n as u64) as usize)
            .collect();
        let rows: Vec<&[u32]> = picks
            .iter()
            .map(|&i| &self.data.train.rows[i][..])
            .collect();
        let labels: Vec<u32> = picks.iter().map(|&i| self.data.train.labels[i]).collect();
        let (tokens, lengths) = padded(&rows, device);
        let mut dropout = Dropout::for_draw(hp.dropout, hp.attention_dropout, hp.seed, draw);
        let logits = model.forward(tokens, &lengths, self.hp.pooling, dropout.as_mut());
        let targets = token_tensor(&labels, 1, labels.len(), device).reshape([labels.len()]);
        self.loss_fn.forward(logits, targets)
    }

    fn evaluate(&self, model: &TextClassifier) -> (f64, BTreeMap<String, f64>) {
        evaluate(
            model,
            self.data.validation,
            self.hp.pooling,
            self.hp.batch_size,
            self.data.classes,
        )
    }

    fn tokens_per_draw(&self) -> usize {
        self.hp.batch_size * self.hp.block_size
    }

    fn frozen(&self, model: &TextClassifier) -> HashSet<ParamId> {
        frozen_parameters(model, &self.hp.freeze)
    }
}

/// Class probabilities for each row, `[rows][classes]`, in batches.
pub fn probabilities(
    model: &TextClassifier,
    rows: &[Vec<u32>],
    pooling: Pooling,
    batch: usize,
) -> Vec<Vec<f32>> {
    let device = Device::flex();
    let mut out = Vec::with_capacity(rows.len());
    for chunk in rows.chunks(batch.max(1)) {
        let refs: Vec<&[u32]> = chunk.iter().map(Vec::as_slice).collect();
        let (tokens, lengths) = padded(&refs, &device);
        let probs = activation::softmax(model.forward(tokens, &lengths, pooling, None), 1);
        let [_, classes] = probs.dims();
        let flat = probs.into_data().try_to_vec::<f32>().unwrap_or_default();
        out.extend(flat.chunks(classes).map(<[f32]>::to_vec));
    }
    out
}

/// Validation cross-entropy, accuracy and macro-F1 (the mean over classes of each class's F1).
pub fn evaluate(
    model: &TextClassifier,
    data: &LabeledTokens,
    pooling: Pooling,
    batch: usize,
    classes: usize,
) -> (f64, BTreeMap<String, f64>) {
    let probs = probabilities(model, &data.rows, pooling, batch);
    let n = data.labels.len().max(1) as f64;
    let mut loss = 0.0;
    let mut confusion = vec![[0usize; 3]; classes]; // true positives, predicted, actual
    for (p, &label) in probs.iter().zip(&data.labels) {
        loss -= (p[label as usize].max(1e-12) as f64).ln();
        let predicted = crate::model::argmax(p);
        confusion[predicted][1] += 1;
        confusion[label as usize][2] += 1;
        if predicted == label as usize {
            confusion[predicted][0] += 1;
        }
    }
    let correct: usize = confusion.iter().map(|c| c[0]).sum();
    let f1: f64 = confusion
        .iter()
        .map(|&[tp, predicted, actual]| {
            if predicted + actual == 0 {
                0.0
            } else {
                2.0 * tp as f64 / (predicted + actual) as f64
            }
        })
        .sum::<f64>()
        / classes.max(1) as f64;
    let metrics = BTreeMap::from([
        ("accuracy".to_string(), correct as f64 / n),
        ("macro_f1".to_string(), f1),
    ]);
    (loss / n, metrics)
}

/// The parameters named by `freeze`: `embeddings` (token and position), `blocks.N`,
/// `ln_final`.
pub fn frozen_parameters(model: &TextClassifier, freeze: &[String]) -> HashSet<ParamId> {
    #[derive(Default)]
    struct Ids(HashSet<ParamId>);
    impl ModuleVisitor for Ids {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0.insert(param.id);
        }
    }
    let mut ids = Ids::default();
    for part in freeze {
        match part.as_str() {
            "embeddings" => {
                model.body.tokens.visit(&mut ids);
                model.body.positions.visit(&mut ids);
            }
            "ln_final" => model.body.ln_final.visit(&mut ids),
            block => {
                let index = block
                    .strip_prefix("blocks.")
                    .and_then(|i| i.parse::<usize>().ok());
                if let Some(block) = index.and_then(|i| model.body.blocks.get(i)) {
                    block.visit(&mut ids);
                }
            }
        }
    }
    ids.0
}

/// The parts `freeze` may name for a network of `n_layer` blocks.
pub fn freezable(n_layer: usize) -> Vec<String> {
    let mut parts = vec!["embeddings".to_string(), "ln_final".to_string()];
    parts.extend((0..n_layer).map(|i| format!("blocks.{i}")));
    parts
}
