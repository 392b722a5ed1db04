//! Activation datasets extracted from a trained language model: what they were read from
//! (stored in the dataset's description) and their contents once loaded for training.

use serde::{Deserialize, Serialize};

/// Where an extracted activation dataset's rows come from, and what extraction measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExtractedFrom {
    /// The `transformer_lm` model whose activations these are.
    pub source_model: String,
    /// The text corpus its windows were read from.
    pub text_dataset: String,
    /// Blocks (0-based), every one from the same forward pass.
    pub layers: Vec<usize>,
    /// `resid_post`, `mlp_out` or `attn_out`.
    pub site: String,
    /// Training tokens (rows); a tenth as many more are held out.
    pub n_tokens: usize,
    pub validation_tokens: usize,
    /// The model's width: each row's length.
    pub d_model: usize,
    /// The model's context: tokens per window.
    pub block_size: usize,
    /// Per layer, filled in when extraction completes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub statistics: Vec<LayerStatistics>,
}

/// One layer's activations summarised over the training rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerStatistics {
    pub layer: usize,
    /// The mean Euclidean norm of a row.
    pub mean_norm: f64,
    /// The norm of the mean row (how far the activations sit from the origin).
    pub mean_vector_norm: f64,
    /// The mean row itself, `d_model` values.
    pub mean: Vec<f32>,
}

/// An extracted activation dataset's contents: raw activations (not normalised) per layer,
/// row `r` of a layer being token `r` of the windows.
#[derive(Debug, Clone, PartialEq)]
pub struct ActivationSet {
    pub from: ExtractedFrom,
    /// Per layer of `from.layers`: `n_tokens x d_model`, row-major.
    pub train: Vec<Vec<f32>>,
    pub validation: Vec<Vec<f32>>,
    /// Training windows, `block_size` tokens each, concatenated.
    pub windows: Vec<u32>,
    pub validation_windows: Vec<u32>,
}

impl ActivationSet {
    pub fn bytes(&self) -> usize {
        let floats: usize = self
            .train
            .iter()
            .chain(&self.validation)
            .map(Vec::len)
            .sum();
        (floats + self.windows.len() + self.validation_windows.len()) * 4
    }
}

/// Mean norm, mean row and its norm of `rows x d` values.
pub fn layer_statistics(layer: usize, values: &[f32], d: usize) -> LayerStatistics {
    let rows = (values.len() / d.max(1)).max(1);
    let mut mean = vec![0f64; d];
    let mut norms = 0f64;
    for row in values.chunks_exact(d) {
        let mut squared = 0f64;
        for (m, v) in mean.iter_mut().zip(row) {
            let v = f64::from(*v);
            *m += v;
            squared += v * v;
        }
        norms += squared.sqrt();
    }
    let mean: Vec<f32> = mean.iter().map(|m| (m / rows as f64) as f32).collect();
    let mean_vector_norm = mean
        .iter()
        .map(|m| f64::from(*m).powi(2))
        .sum::<f64>()
        .sqrt();
    LayerStatistics {
        layer,
        mean_norm: norms / rows as f64,
        mean_vector_norm,
        mean,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_of_two_rows() {
        let s = layer_statistics(3, &[3.0, 4.0, -3.0, -4.0], 2);
        assert_eq!(s.layer, 3);
        assert!((s.mean_norm - 5.0).abs() < 1e-12);
        assert_eq!(s.mean, vec![0.0, 0.0]);
        assert_eq!(s.mean_vector_norm, 0.0);
    }
}
