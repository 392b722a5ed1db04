//! Where each tensor lives in the one flat parameter vector the hand-written step trains (and
//! in its gradient and AdamW moments, which share the layout), and the conversion to and from
//! the named weights the rest of the family uses.

use std::ops::Range;

use super::super::model::GptConfig;
use super::super::weights::{Dense, GptWeights, LayerWeights, Norm};

/// Offsets of one block's tensors. Query, key and value are one `[C, 3C]` matrix so their
/// product is one call; biases are `None` when the model has none.
#[derive(Debug, Clone)]
pub struct BlockOffsets {
    pub ln_1: usize,
    pub ln_1_bias: Option<usize>,
    pub qkv: usize,
    pub qkv_bias: Option<usize>,
    pub proj: usize,
    pub proj_bias: Option<usize>,
    pub ln_2: usize,
    pub ln_2_bias: Option<usize>,
    pub fc: usize,
    pub fc_bias: Option<usize>,
    pub mlp_proj: usize,
    pub mlp_proj_bias: Option<usize>,
}

#[derive(Debug, Clone)]
pub struct Layout {
    pub config: GptConfig,
    pub wte: usize,
    pub wpe: usize,
    pub blocks: Vec<BlockOffsets>,
    pub ln_f: usize,
    pub ln_f_bias: Option<usize>,
    pub len: usize,
    /// The ranges weight decay applies to: embeddings and matrices, not norms or biases.
    pub decayed: Vec<Range<usize>>,
}

struct Cursor {
    at: usize,
    decayed: Vec<Range<usize>>,
}

impl Cursor {
    fn take(&mut self, len: usize, decay: bool) -> usize {
        let start = self.at;
        self.at += len;
        if decay {
            self.decayed.push(start..self.at);
        }
        start
    }

    fn bias(&mut self, present: bool, len: usize) -> Option<usize> {
        present.then(|| self.take(len, false))
    }
}

impl Layout {
    pub fn new(config: &GptConfig) -> Self {
        let (c, bias) = (config.n_embd, config.bias);
        let mut at = Cursor {
            at: 0,
            decayed: Vec::new(),
        };
        let wte = at.take(config.vocab_size * c, true);
        let wpe = at.take(config.block_size * c, true);
        let blocks = (0..config.n_layer)
            .map(|_| BlockOffsets {
                ln_1: at.take(c, false),
                ln_1_bias: at.bias(bias, c),
                qkv: at.take(c * 3 * c, true),
                qkv_bias: at.bias(bias, 3 * c),
                proj: at.take(c * c, true),
                proj_bias: at.bias(bias, c),
                ln_2: at.take(c, false),
                ln_2_bias: at.bias(bias, c),
                fc: at.take(c * 4 * c, true),
                fc_bias: at.bias(bias, 4 * c),
                mlp_proj: at.take(4 * c * c, true),
                mlp_proj_bias: at.bias(bias, c),
            })
            .collect();
        let ln_f = at.take(c, false);
        let ln_f_bias = at.bias(bias, c);
        Layout {
            config: config.clone(),
            wte,
            wpe,
            blocks,
            ln_f,
            ln_f_bias,
            len: at.at,
            decayed: at.decayed,
        }
    }

    /// The named weights packed into one vector.
    pub fn pack(&self, weights: &GptWeights) -> Vec<f32> {
        let c = self.config.n_embd;
        let mut p = vec![0.0; self.len];
        put(&mut p, self.wte, &weights.wte);
        put(&mut p, self.wpe, &weights.wpe);
        for (o, layer) in self.blocks.iter().zip(&weights.layers) {
            put_norm(&mut p, o.ln_1, o.ln_1_bias, &layer.ln_1);
            for (part, dense) in [&layer.q, &layer.k, &layer.v].into_iter().enumerate() {
                for row in 0..c {
                    let to = o.qkv + row * 3 * c + part * c;
                    p[to..to + c].copy_from_slice(&dense.weight[row * c..(row + 1) * c]);
                }
                if let (Some(at), Some(bias)) = (o.qkv_bias, &dense.bias) {
                    put(&mut p, at + part * c, bias);
                }
            }
            put_dense(&mut p, o.proj, o.proj_bias, &layer.proj);
            put_norm(&mut p, o.ln_2, o.ln_2_bias, &layer.ln_2);
            put_dense(&mut p, o.fc, o.fc_bias, &layer.fc);
            put_dense(&mut p, o.mlp_proj, o.mlp_proj_bias, &layer.mlp_proj);
        }
        put_norm(&mut p, self.ln_f, self.ln_f_bias, &weights.ln_f);
        p
    }

    /// The vector back as named weights.
    pub fn unpack(&self, p: &[f32]) -> GptWeights {
        let (c, v, t) = (
            self.config.n_embd,
            self.config.vocab_size,
            self.config.block_size,
        );
        let layers = self
            .blocks
            .iter()
            .map(|o| {
                let part = |k: usize| Dense {
                    d_in: c,
                    d_out: c,
                    weight: (0..c)
                        .flat_map(|row| {
                            let from = o.qkv + row * 3 * c + k * c;
                            p[from..from + c].iter().copied()
                        })
                        .collect(),
                    bias: o
                        .qkv_bias
                        .map(|at| p[at + k * c..at + (k + 1) * c].to_vec()),
                };
                LayerWeights {
                    ln_1: norm(p, o.ln_1, o.ln_1_bias, c),
                    q: part(0),
                    k: part(1),
                    v: part(2),
                    proj: dense(p, o.proj, o.proj_bias, c, c),
                    ln_2: norm(p, o.ln_2, o.ln_2_bias, c),
                    fc: dense(p, o.fc, o.fc_bias, c, 4 * c),
                    mlp_proj: dense(p, o.mlp_proj, o.mlp_proj_bias, 4 * c, c),
                }
            })
            .collect();
        GptWeights {
            config: self.config.clone(),
            wte: p[self.wte..self.wte + v * c].to_vec(),
            wpe: p[self.wpe..self.wpe + t * c].to_vec(),
            layers,
            ln_f: norm(p, self.ln_f, self.ln_f_bias, c),
        }
    }
}

fn put(p: &mut [f32], at: usize, values: &[f32]) {
    p[at..at + values.len()].copy_from_slice(values);
}

fn put_norm(p: &mut [f32], at: usize, bias_at: Option<usize>, norm: &Norm) {
    put(p, at, &norm.weight);
    if let (Some(at), Some(bias)) = (bias_at, &norm.bias) {
        put(p, at, bias);
    }
}

fn put_dense(p: &mut [f32], at: usize, bias_at: Option<usize>, dense: &Dense) {
    put(p, at, &dense.weight);
    if let (Some(at), Some(bias)) = (bias_at, &dense.bias) {
        put(p, at, bias);
    }
}

fn norm(p: &[f32], at: usize, bias_at: Option<usize>, width: usize) -> Norm {
    Norm {
        weight: p[at..at + width].to_vec(),
        bias: bias_at.map(|at| p[at..at + width].to_vec()),
    }
}

fn dense(p: &[f32], at: usize, bias_at: Option<usize>, d_in: usize, d_out: usize) -> Dense {
    Dense {
        d_in,
        d_out,
        weight: p[at..at + d_in * d_out].to_vec(),
        bias: bias_at.map(|at| p[at..at + d_out].to_vec()),
    }
}
