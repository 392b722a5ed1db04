//! Reading a language model's activations: windows of the corpus (evenly spread over the
//! training split, so every part of the text is represented) go through the model in chunks
//! of whole windows, and a hook copies every requested layer's activations at the chosen site.
//! A job extracts in one go ([`extract`]); an activation dataset stores each chunk as a shard
//! ([`super::shards`]), and both read the same chunks, so their activations are the same bits.

use burn::tensor::{Device, Tensor};
use trainyard_data::extracted::ActivationSet;
use trainyard_data::text::{VALIDATION_FRACTION, split_corpus};
use trainyard_data::tokenizer::TextTokenizer;

use super::stats::norm_scale;
use super::train::LayerData;
use crate::language::model::token_tensor;
use crate::language::{Gpt, GptConfig, Site};
use crate::{Control, TrainError};

/// Windows per forward pass (and per shard of an activation dataset).
pub const BATCH_WINDOWS: usize = 32;

/// The source model, decoded.
pub struct Source {
    pub config: GptConfig,
    pub tokenizer: TextTokenizer,
    pub model: Gpt,
}

impl Source {
    /// A `transformer_lm` model file, decoded.
    pub fn decode(bytes: &[u8]) -> Result<Source, crate::PredictError> {
        let (config, tokenizer, model) = crate::language::family::decode_language_model(bytes)?;
        Ok(Source {
            config,
            tokenizer,
            model,
        })
    }
}

/// Activations of the requested layers and the token windows they came from.
pub struct Extracted {
    pub layers: Vec<LayerData>,
    /// Training windows, `block` tokens each, concatenated: row `r` of a layer's training
    /// activations is token `r` here.
    pub windows: Vec<u32>,
    pub validation_windows: Vec<u32>,
    pub block: usize,
}

/// The windows an extraction reads: `n_tokens` worth from the training split, a tenth as many
/// (at least 4 windows, at most 256) from the validation split.
pub struct ExtractionPlan {
    pub block: usize,
    pub windows: Vec<u32>,
    pub validation_windows: Vec<u32>,
}

impl ExtractionPlan {
    pub fn new(source: &Source, text: &str, n_tokens: usize) -> Result<Self, TrainError> {
        let block = source.config.block_size;
        let (train_text, validation_text) = split_corpus(text, VALIDATION_FRACTION);
        let train_tokens = source.tokenizer.encode(train_text);
        let validation_tokens = source.tokenizer.encode(validation_text);
        if train_tokens.len() < block || validation_tokens.len() < block {
            return Err(TrainError::Fit(format!(
                "the corpus is too short for the source model's context of {block} tokens"
            )));
        }
        let (train_windows, validation_windows) = planned_windows(n_tokens, block);
        Ok(ExtractionPlan {
            block,
            windows: cut_windows(&train_tokens, block, train_windows),
            validation_windows: cut_windows(&validation_tokens, block, validation_windows),
        })
    }

    fn chunk_tokens(&self) -> usize {
        BATCH_WINDOWS * self.block
    }

    fn train_chunks(&self) -> usize {
        self.windows.len().div_ceil(self.chunk_tokens())
    }

    /// Chunks in all: the training windows' first, then the validation windows'.
    pub fn chunks(&self) -> usize {
        self.train_chunks() + self.validation_windows.len().div_ceil(self.chunk_tokens())
    }

    /// Chunk `i`'s tokens, and whether it is held out.
    pub fn chunk(&self, i: usize) -> (bool, &[u32]) {
        let size = self.chunk_tokens();
        let train = self.train_chunks();
        let (held_out, tokens, at) = if i < train {
            (false, &self.windows, i)
        } else {
            (true, &self.validation_windows, i - train)
        };
        let start = at * size;
        (held_out, &tokens[start..(start + size).min(tokens.len())])
    }
}

/// Training and held-out windows of `block` tokens an extraction of `n_tokens` reads.
pub fn planned_windows(n_tokens: usize, block: usize) -> (usize, usize) {
    let train = n_tokens.div_ceil(block);
    (train, (train / 10).clamp(4, 256))
}

/// Evenly spaced window starts over `tokens`, as many as `count`, each `block` long.
fn window_starts(tokens: usize, block: usize, count: usize) -> Vec<usize> {
    let last = tokens.saturating_sub(block);
    if count <= 1 {
        return vec![0];
    }
    (0..count).map(|w| w * last / (count - 1)).collect()
}

fn cut_windows(tokens: &[u32], block: usize, count: usize) -> Vec<u32> {
    window_starts(tokens.len(), block, count)
        .into_iter()
        .flat_map(|s| tokens[s..s + block].iter().copied())
        .collect()
}

/// Extracts `n_tokens` training activations (and a tenth as many for validation) at `site`
/// of `layers`, all layers from one forward pass; `progress(done, total)` follows tokens.
#[allow(clippy::too_many_arguments)]
pub fn extract(
    source: &Source,
    text: &str,
    layers: &[usize],
    site: Site,
    n_tokens: usize,
    normalize: bool,
    control: &Control,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Option<Extracted>, TrainError> {
    let plan = ExtractionPlan::new(source, text, n_tokens)?;
    let total = (plan.windows.len() + plan.validation_windows.len()) as u64;
    let mut done = 0u64;
    let mut train = vec![Vec::new(); layers.len()];
    let mut validation = vec![Vec::new(); layers.len()];
    for i in 0..plan.chunks() {
        if control.requested().is_some() {
            return Ok(None);
        }
        let (held_out, tokens) = plan.chunk(i);
        let into = if held_out {
            &mut validation
        } else {
            &mut train
        };
        for (buffer, values) in into
            .iter_mut()
            .zip(activations(source, tokens, layers, site))
        {
            buffer.extend(values);
        }
        done += tokens.len() as u64;
        progress(done, total);
    }
    let d = source.config.n_embd;
    Ok(Some(Extracted {
        layers: normalized_layers(layers, train, validation, d, normalize),
        windows: plan.windows,
        validation_windows: plan.validation_windows,
        block: plan.block,
    }))
}

/// The layers of an extracted activation dataset an autoencoder asked for, normalised as it
/// asked: the same activations [`extract`] gives for the same source, corpus and settings.
pub fn from_dataset(set: &ActivationSet, layers: &[usize], normalize: bool) -> Extracted {
    let pick = |per_layer: &[Vec<f32>]| -> Vec<Vec<f32>> {
        layers
            .iter()
            .map(|l| {
                let i = set.from.layers.iter().position(|x| x == l);
                i.map_or_else(Vec::new, |i| per_layer[i].clone())
            })
            .collect()
    };
    Extracted {
        layers: normalized_layers(
            layers,
            pick(&set.train),
            pick(&set.validation),
            set.from.d_model,
            normalize,
        ),
        windows: set.windows.clone(),
        validation_windows: set.validation_windows.clone(),
        block: set.from.block_size,
    }
}

/// Each layer's activations, scaled (when `normalize`) so a training row's mean norm is
/// sqrt(d); the scale is kept so inference undoes it.
fn normalized_layers(
    layers: &[usize],
    train: Vec<Vec<f32>>,
    validation: Vec<Vec<f32>>,
    d: usize,
    normalize: bool,
) -> Vec<LayerData> {
    layers
        .iter()
        .zip(train.into_iter().zip(validation))
        .map(|(&layer, (mut train, mut validation))| {
            let scale = if normalize {
                norm_scale(&train, d)
            } else {
                1.0
            };
            for v in train.iter_mut().chain(validation.iter_mut()) {
                *v *= scale;
            }
            LayerData {
                layer,
                d_in: d,
                scale,
                train,
                validation,
            }
        })
        .collect()
}

/// One forward pass over whole windows; each requested layer's activations, row per token.
pub fn activations(source: &Source, tokens: &[u32], layers: &[usize], site: Site) -> Vec<Vec<f32>> {
    let block = source.config.block_size;
    let rows = tokens.len() / block;
    let device = Device::flex();
    let input = token_tensor(tokens, rows, block, &device);
    let mut captured: Vec<Vec<f32>> = vec![Vec::new(); layers.len()];
    let _ = source
        .model
        .forward_hooked(input, &mut |layer, at, x: Tensor<3>| {
            if at == site
                && let Some(i) = layers.iter().position(|&l| l == layer)
            {
                captured[i] = x
                    .clone()
                    .into_data()
                    .try_to_vec::<f32>()
                    .expect("activations are f32");
            }
            x
        });
    captured
}
