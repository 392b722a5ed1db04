//! What a trained autoencoder's latents respond to, computed once after training over the
//! extracted tokens: how often each fires, its largest activation, and the contexts where it
//! fires most; and how much of the source model's loss survives the reconstruction.

use burn::tensor::{Device, Tensor, TensorData, activation};
use serde::{Deserialize, Serialize};

use super::extract::Source;
use super::model::{Architecture, Sae};
use super::train::LayerData;
use crate::language::Site;
use crate::language::model::token_tensor;

/// Top contexts kept per latent.
pub const TOP_CONTEXTS: usize = 8;
/// Rows encoded at a time.
const CHUNK_ROWS: usize = 4096;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerFeatures {
    /// Fraction of tokens on which each latent fires.
    pub frequency: Vec<f32>,
    pub max_activation: Vec<f32>,
    /// Per latent, its strongest `(row, activation)` over the training tokens, strongest first.
    pub top: Vec<Vec<(u32, f32)>>,
}

pub fn feature_statistics(
    sae: &Sae,
    data: &LayerData,
    architecture: Architecture,
    k: usize,
) -> LayerFeatures {
    let d = data.d_in;
    let m = sae.d_sae;
    let mut fired = vec![0u64; m];
    let mut max_activation = vec![0.0f32; m];
    let mut top: Vec<Vec<(u32, f32)>> = vec![Vec::new(); m];
    let rows = data.rows();
    for (c, chunk) in data.train.chunks(CHUNK_ROWS * d).enumerate() {
        let codes = sae.encode(chunk, architecture, k);
        for (i, row) in codes.rows.iter().enumerate() {
            let global = (c * CHUNK_ROWS + i) as u32;
            for &(j, v) in row {
                let j = j as usize;
                fired[j] += 1;
                max_activation[j] = max_activation[j].max(v);
                keep_top(&mut top[j], global, v);
            }
        }
    }
    LayerFeatures {
        frequency: fired
            .iter()
            .map(|&f| f as f32 / rows.max(1) as f32)
            .collect(),
        max_activation,
        top,
    }
}

/// Inserts `(row, value)` into a list of at most [`TOP_CONTEXTS`], strongest first.
fn keep_top(list: &mut Vec<(u32, f32)>, row: u32, value: f32) {
    if list.len() == TOP_CONTEXTS && list.last().is_some_and(|&(_, v)| v >= value) {
        return;
    }
    let at = list.partition_point(|&(_, v)| v >= value);
    list.insert(at, (row, value));
    list.truncate(TOP_CONTEXTS);
}

/// The source model's next-token loss on `windows`, plain, with the autoencoder's
/// reconstruction spliced in at (`layer`, `site`), and with that site zeroed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LossRecovered {
    pub original: f64,
    pub spliced: f64,
    pub zero_ablated: f64,
}

impl LossRecovered {
    /// `(zero - spliced) / (zero - original)`: 1 when the reconstruction loses nothing.
    pub fn fraction(&self) -> f64 {
        let span = self.zero_ablated - self.original;
        if span.abs() < 1e-12 {
            return 1.0;
        }
        (self.zero_ablated - self.spliced) / span
    }
}

/// How a site's activations are replaced in a forward pass.
pub enum Splice<'a> {
    Keep,
    Zero,
    /// Scaled by `scale`, reconstructed, unscaled.
    Autoencoder {
        sae: &'a Sae,
        scale: f32,
        architecture: Architecture,
        k: usize,
    },
}

pub fn loss_recovered(
    source: &Source,
    windows: &[u32],
    layer: usize,
    site: Site,
    splice: &Splice<'_>,
) -> LossRecovered {
    let original = next_token_loss(source, windows, layer, site, &Splice::Keep);
    loss_recovered_from(original, source, windows, layer, site, splice)
}

/// [`loss_recovered`] when the unmodified loss is known (it is the same for every layer).
pub fn loss_recovered_from(
    original: f64,
    source: &Source,
    windows: &[u32],
    layer: usize,
    site: Site,
    splice: &Splice<'_>,
) -> LossRecovered {
    let loss = |how: &Splice<'_>| next_token_loss(source, windows, layer, site, how);
    LossRecovered {
        original,
        spliced: loss(splice),
        zero_ablated: loss(&Splice::Zero),
    }
}

/// Mean cross-entropy of predicting each window's next tokens.
pub fn next_token_loss(
    source: &Source,
    windows: &[u32],
    layer: usize,
    site: Site,
    splice: &Splice<'_>,
) -> f64 {
    let block = source.config.block_size;
    let device = Device::flex();
    let (mut total, mut count) = (0.0f64, 0usize);
    for chunk in windows.chunks(32 * block) {
        let rows = chunk.len() / block;
        let input = token_tensor(chunk, rows, block, &device);
        let logits = source
            .model
            .forward_hooked(input, &mut |l, at, x: Tensor<3>| {
                if l != layer || at != site {
                    return x;
                }
                replace(x, splice)
            });
        let log_probs = activation::log_softmax(logits, 1)
            .into_data()
            .try_to_vec::<f32>()
            .expect("logits are f32");
        let vocab = source.config.vocab_size;
        for w in 0..rows {
            for t in 0..block - 1 {
                let target = chunk[w * block + t + 1] as usize;
                total -= f64::from(log_probs[(w * block + t) * vocab + target]);
                count += 1;
            }
        }
    }
    total / count.max(1) as f64
}

fn replace(x: Tensor<3>, splice: &Splice<'_>) -> Tensor<3> {
    match splice {
        Splice::Keep => x,
        Splice::Zero => x.zeros_like(),
        Splice::Autoencoder {
            sae,
            scale,
            architecture,
            k,
        } => {
            let dims = x.dims();
            let device = x.device();
            let values: Vec<f32> = x
                .into_data()
                .try_to_vec::<f32>()
                .expect("activations are f32")
                .into_iter()
                .map(|v| v * scale)
                .collect();
            let codes = sae.encode(&values, *architecture, *k);
            let rebuilt: Vec<f32> = sae.decode(&codes).into_iter().map(|v| v / scale).collect();
            Tensor::from_data(TensorData::new(rebuilt, dims), &device)
        }
    }
}
