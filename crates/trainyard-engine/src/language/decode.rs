//! Inference one token at a time with a key-value cache: each layer keeps the keys and values
//! of the positions already seen, so a new token costs one pass over the weights plus one
//! attention row, and generating n tokens is O(n) passes instead of O(n) full-context forwards.
//!
//! Plain `f32` loops over [`GptWeights`]: at batch one a matrix-vector product per layer is
//! all there is, and a tensor library's per-operation overhead would dominate it. The engine's
//! tests hold it to the training network's logits.

use super::weights::{Dense, GptWeights, LAYER_NORM_EPSILON, Norm};

pub struct Decoder<'w> {
    weights: &'w GptWeights,
    /// Per layer, `[positions, n_embd]` keys and values of the positions seen.
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
    len: usize,
}

impl<'w> Decoder<'w> {
    pub fn new(weights: &'w GptWeights) -> Self {
        let layers = weights.layers.len();
        let capacity = weights.config.block_size * weights.config.n_embd;
        Decoder {
            weights,
            keys: (0..layers).map(|_| Vec::with_capacity(capacity)).collect(),
            values: (0..layers).map(|_| Vec::with_capacity(capacity)).collect(),
            len: 0,
        }
    }

    /// Positions in the cache.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True when the context is full: the next token needs a [`Decoder::reset`] first.
    pub fn is_full(&self) -> bool {
        self.len == self.weights.config.block_size
    }

    pub fn reset(&mut self) {
        self.keys.iter_mut().for_each(Vec::clear);
        self.values.iter_mut().for_each(Vec::clear);
        self.len = 0;
    }

    /// Feeds tokens in order; returns the logits after the last (empty for no tokens).
    pub fn feed(&mut self, tokens: &[u32]) -> Vec<f32> {
        let mut logits = Vec::new();
        for &token in tokens {
            logits = self.step(token);
        }
        logits
    }

    /// Feeds one token at the next position and returns the next token's logits.
    ///
    /// # Panics
    /// When the context is full or the token is outside the vocabulary.
    pub fn step(&mut self, token: u32) -> Vec<f32> {
        let config = &self.weights.config;
        assert!(
            !self.is_full(),
            "the context holds {} tokens",
            config.block_size
        );
        let e = config.n_embd;
        let (token, position) = (token as usize, self.len);
        let mut x: Vec<f32> = self.weights.wte[token * e..(token + 1) * e]
            .iter()
            .zip(&self.weights.wpe[position * e..(position + 1) * e])
            .map(|(a, b)| a + b)
            .collect();
        for (index, layer) in self.weights.layers.iter().enumerate() {
            let h = layer_norm(&x, &layer.ln_1);
            let q = matvec(&layer.q, &h);
            self.keys[index].extend(matvec(&layer.k, &h));
            self.values[index].extend(matvec(&layer.v, &h));
            let context = attend(&q, &self.keys[index], &self.values[index], config.n_head);
            add(&mut x, &matvec(&layer.proj, &context));
            let mut hidden = matvec(&layer.fc, &layer_norm(&x, &layer.ln_2));
            hidden.iter_mut().for_each(|v| *v = gelu(*v));
            add(&mut x, &matvec(&layer.mlp_proj, &hidden));
        }
        self.len += 1;
        let x = layer_norm(&x, &self.weights.ln_f);
        self.weights
            .wte
            .chunks_exact(e)
            .map(|row| dot(row, &x))
            .collect()
    }
}

/// Causal attention of one query over every cached position, head by head.
fn attend(q: &[f32], keys: &[f32], values: &[f32], heads: usize) -> Vec<f32> {
    let e = q.len();
    let d = e / heads;
    let positions = keys.len() / e;
    let scale = 1.0 / (d as f32).sqrt();
    let mut out = vec![0.0; e];
    let mut scores = vec![0.0f32; positions];
    for head in 0..heads {
        let span = head * d..(head + 1) * d;
        for (p, score) in scores.iter_mut().enumerate() {
            *score = dot(
                &q[span.clone()],
                &keys[p * e + span.start..p * e + span.end],
            ) * scale;
        }
        let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut total = 0.0;
        for score in &mut scores {
            *score = (*score - max).exp();
            total += *score;
        }
        let slot = &mut out[span.clone()];
        for (p, weight) in scores.iter().enumerate() {
            let value = &values[p * e + span.start..p * e + span.end];
            for (o, v) in slot.iter_mut().zip(value) {
                *o += weight / total * v;
            }
        }
    }
    out
}

fn matvec(dense: &Dense, x: &[f32]) -> Vec<f32> {
    let mut out = dense.bias.clone().unwrap_or_else(|| vec![0.0; dense.d_out]);
    // Row by row (`out += x[i] * W[i, :]`): contiguous, so it vectorises.
    for (xi, row) in x.iter().zip(dense.weight.chunks_exact(dense.d_out)) {
        for (o, w) in out.iter_mut().zip(row) {
            *o += xi * w;
        }
    }
    out
}

fn layer_norm(x: &[f32], norm: &Norm) -> Vec<f32> {
    let n = x.len() as f32;
    let mean = x.iter().sum::<f32>() / n;
    let variance = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    let inv = 1.0 / (variance + LAYER_NORM_EPSILON).sqrt();
    x.iter()
        .enumerate()
        .map(|(i, v)| {
            let shift = norm.bias.as_ref().map_or(0.0, |b| b[i]);
            (v - mean) * inv * norm.weight[i] + shift
        })
        .collect()
}

/// Exact GELU, as the network trains with.
fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + libm::erff(x * std::f32::consts::FRAC_1_SQRT_2))
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn add(x: &mut [f32], delta: &[f32]) {
    x.iter_mut().zip(delta).for_each(|(a, b)| *a += b);
}
