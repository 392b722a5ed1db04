//! Reading a language model's activations: windows of the corpus (evenly spread over the
//! training split, so every part of the text is represented) go through the model once, and
//! a hook copies every requested layer's activations at the chosen site.

use burn::tensor::{Device, Tensor};
use trainyard_data::text::{VALIDATION_FRACTION, split_corpus};
use trainyard_data::tokenizer::TextTokenizer;

use super::stats::norm_scale;
use super::train::LayerData;
use crate::language::model::token_tensor;
use crate::language::{Gpt, GptConfig, Site};
use crate::{Control, TrainError};

/// Windows per forward pass.
const BATCH_WINDOWS: usize = 32;

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
    let block = source.config.block_size;
    let (train_text, validation_text) = split_corpus(text, VALIDATION_FRACTION);
    let train_tokens = source.tokenizer.encode(train_text);
    let validation_tokens = source.tokenizer.encode(validation_text);
    if train_tokens.len() < block || validation_tokens.len() < block {
        return Err(TrainError::Fit(format!(
            "the corpus is too short for the source model's context of {block} tokens"
        )));
    }
    let train_windows = n_tokens.div_ceil(block);
    let validation_windows = (train_windows / 10).clamp(4, 256);
    let windows = cut_windows(&train_tokens, block, train_windows);
    let held_out = cut_windows(&validation_tokens, block, validation_windows);
    let total = (windows.len() + held_out.len()) as u64;
    let mut done = 0u64;
    let mut read = |tokens: &[u32]| -> Result<Option<Vec<Vec<f32>>>, TrainError> {
        let mut out = vec![Vec::new(); layers.len()];
        for chunk in tokens.chunks(BATCH_WINDOWS * block) {
            if control.requested().is_some() {
                return Ok(None);
            }
            for (buffer, values) in out.iter_mut().zip(activations(source, chunk, layers, site)) {
                buffer.extend(values);
            }
            done += chunk.len() as u64;
            progress(done, total);
        }
        Ok(Some(out))
    };
    let Some(train) = read(&windows)? else {
        return Ok(None);
    };
    let Some(validation) = read(&held_out)? else {
        return Ok(None);
    };
    let d = source.config.n_embd;
    let layers = layers
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
        .collect();
    Ok(Some(Extracted {
        layers,
        windows,
        validation_windows: held_out,
        block,
    }))
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
