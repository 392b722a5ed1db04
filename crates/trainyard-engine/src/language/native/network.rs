//! The transformer's forward and backward passes over flat `f32` buffers: the same network as
//! `language::model::Gpt` (pre-norm blocks, causal attention, exact GELU, tied head), with
//! every activation the backward pass needs kept on a [`Tape`]. Products run through `gemm`
//! (split over output rows, never over sums) and reductions run in a fixed order, so a step's
//! result does not depend on the number of threads.

use rayon::prelude::*;

use super::attention::{attention, attention_backward};
use super::kernels::{
    Mat, NormStats, Out, add_bias, add_column_sums, gelu_backward, gelu_keeping_slope, layer_norm,
    layer_norm_backward, matmul, softmax_in_place,
};
use super::layout::{BlockOffsets, Layout};
use crate::buffers::Buffers;
use crate::language::model::AttentionDropout;
use crate::language::weights::LAYER_NORM_EPSILON;

/// Dropout masks (0 or `1 / (1 - p)`) in the order the network draws them.
pub struct Masks {
    pub embedding: Vec<f32>,
    /// Per block: the attention output's and the MLP output's.
    pub blocks: Vec<(Vec<f32>, Vec<f32>)>,
}

/// One micro-batch: `batch` windows of the model's `block_size` tokens, row-major.
pub struct Batch<'a> {
    pub inputs: &'a [u32],
    pub targets: &'a [u32],
    pub batch: usize,
    /// Targets smoothed towards uniform by this much.
    pub smoothing: f32,
    pub masks: Option<Masks>,
    /// Keep only each block's input and recompute the block in the backward pass (gradient
    /// checkpointing): one block's activations alive at a time, the same results.
    pub recompute: bool,
    /// Dropout on the attention probabilities; each head's mask is drawn where the head is
    /// computed and drawn again in the backward pass.
    pub attention_dropout: Option<AttentionDropout>,
}

struct BlockTape {
    ln_1: Vec<f32>,
    ln_1_stats: NormStats,
    qkv: Vec<f32>,
    /// Attention probabilities, `[batch, heads, time, time]`.
    att: Vec<f32>,
    att_out: Vec<f32>,
    /// The residual stream after attention.
    mid: Vec<f32>,
    ln_2: Vec<f32>,
    ln_2_stats: NormStats,
    /// GELU's slope at the MLP's pre-activations.
    fc_slope: Vec<f32>,
    fc_act: Vec<f32>,
}

/// What the forward pass keeps for the backward one.
pub struct Tape {
    /// The residual stream entering each block, and after the last.
    residual: Vec<Vec<f32>>,
    blocks: Vec<BlockTape>,
    ln_f: Vec<f32>,
    ln_f_stats: NormStats,
    /// Softmax of the logits, `[rows, vocab]`.
    probs: Vec<f32>,
    /// Mean cross-entropy over the batch's positions.
    pub loss: f64,
}

impl BlockTape {
    fn recycle(self, bufs: &mut Buffers) {
        for buffer in [
            self.ln_1,
            self.qkv,
            self.att,
            self.att_out,
            self.mid,
            self.ln_2,
            self.fc_slope,
            self.fc_act,
        ] {
            bufs.give(buffer);
        }
        self.ln_1_stats.recycle(bufs);
        self.ln_2_stats.recycle(bufs);
    }
}

impl NormStats {
    fn recycle(self, bufs: &mut Buffers) {
        bufs.give(self.mean);
        bufs.give(self.rstd);
    }
}

impl Tape {
    /// Hands every buffer back for the next step's forward pass.
    pub fn recycle(self, bufs: &mut Buffers) {
        for buffer in self.residual.into_iter().chain([self.ln_f, self.probs]) {
            bufs.give(buffer);
        }
        self.ln_f_stats.recycle(bufs);
        for block in self.blocks {
            block.recycle(bufs);
        }
    }
}

/// Row statistics for a layer norm to fill.
fn stats(rows: usize, bufs: &mut Buffers) -> NormStats {
    NormStats {
        mean: bufs.stale(rows),
        rstd: bufs.stale(rows),
    }
}

fn slice(p: &[f32], at: usize, len: usize) -> &[f32] {
    &p[at..at + len]
}

fn apply_mask(x: &mut [f32], mask: Option<&Vec<f32>>) {
    if let Some(mask) = mask {
        for (v, m) in x.iter_mut().zip(mask) {
            *v *= m;
        }
    }
}

/// `out = x @ w (+ bias)` for `x` of `rows x d_in` and `w` of `d_in x d_out`.
#[allow(clippy::too_many_arguments)]
fn linear(
    x: &[f32],
    p: &[f32],
    w: usize,
    bias: Option<usize>,
    d_in: usize,
    d_out: usize,
    bufs: &mut Buffers,
) -> Vec<f32> {
    let rows = x.len() / d_in;
    let mut out = bufs.stale(rows * d_out);
    matmul(
        Out::of(&mut out, rows, d_out),
        Mat::of(x, rows, d_in),
        Mat::rows(p, w, d_in, d_out, d_out),
        false,
        1.0,
        true,
    );
    if let Some(b) = bias {
        add_bias(&mut out, slice(p, b, d_out));
    }
    out
}

fn norm(
    x: &[f32],
    p: &[f32],
    w: usize,
    bias: Option<usize>,
    c: usize,
    bufs: &mut Buffers,
) -> (Vec<f32>, NormStats) {
    let mut out = bufs.stale(x.len());
    let mut s = stats(x.len() / c, bufs);
    let bias = bias.map(|b| slice(p, b, c));
    layer_norm(
        &mut out,
        &mut s,
        x,
        slice(p, w, c),
        bias,
        LAYER_NORM_EPSILON,
    );
    (out, s)
}

/// The forward pass; with targets it computes the loss and keeps the softmax for backward.
pub fn forward(layout: &Layout, p: &[f32], batch: &Batch<'_>, bufs: &mut Buffers) -> Tape {
    let cfg = &layout.config;
    let (t, c) = (cfg.block_size, cfg.n_embd);
    let rows = batch.batch * t;
    let mut x = bufs.stale(rows * c);
    for (row, (&token, out)) in batch.inputs.iter().zip(x.chunks_exact_mut(c)).enumerate() {
        let tok = slice(p, layout.wte + token as usize * c, c);
        let pos = slice(p, layout.wpe + (row % t) * c, c);
        for ((o, a), b) in out.iter_mut().zip(tok).zip(pos) {
            *o = a + b;
        }
    }
    apply_mask(&mut x, batch.masks.as_ref().map(|m| &m.embedding));
    let mut residual = vec![x];
    let mut blocks = Vec::with_capacity(layout.blocks.len());
    for (l, o) in layout.blocks.iter().enumerate() {
        let drop = BlockDropout::of(batch, l);
        let (out, tape) = block_forward(layout, o, p, &residual[l], batch.batch, drop, bufs);
        residual.push(out);
        if batch.recompute {
            tape.recycle(bufs);
        } else {
            blocks.push(tape);
        }
    }
    let (ln_f, ln_f_stats) = norm(
        &residual[cfg.n_layer],
        p,
        layout.ln_f,
        layout.ln_f_bias,
        c,
        bufs,
    );
    let v = cfg.vocab_size;
    let mut probs = bufs.stale(rows * v);
    matmul(
        Out::of(&mut probs, rows, v),
        Mat::of(&ln_f, rows, c),
        Mat::rows(p, layout.wte, v, c, c).t(),
        false,
        1.0,
        true,
    );
    let loss = cross_entropy(&mut probs, batch.targets, v, batch.smoothing);
    Tape {
        residual,
        blocks,
        ln_f,
        ln_f_stats,
        probs,
        loss,
    }
}

/// Turns logits into probabilities in place and returns the mean (smoothed) cross-entropy.
fn cross_entropy(logits: &mut [f32], targets: &[u32], v: usize, smoothing: f32) -> f64 {
    let mut losses = vec![0.0f64; targets.len()];
    logits
        .par_chunks_mut(v)
        .zip(targets.par_iter())
        .zip(losses.par_iter_mut())
        .for_each(|((row, &target), loss)| {
            let mean_logit = row.iter().sum::<f32>() / v as f32;
            let target_logit = row[target as usize];
            let log_norm = softmax_in_place(row);
            let hard = log_norm - target_logit;
            let uniform = log_norm - mean_logit;
            *loss = ((1.0 - smoothing) * hard + smoothing * uniform) as f64;
        });
    losses.iter().sum::<f64>() / targets.len().max(1) as f64
}

/// One block's dropout: its masks for the attention and MLP outputs, and the attention
/// probabilities' (with the block's index, which keys them).
#[derive(Clone, Copy)]
struct BlockDropout<'a> {
    outputs: Option<&'a (Vec<f32>, Vec<f32>)>,
    attention: Option<(AttentionDropout, usize)>,
}

impl<'a> BlockDropout<'a> {
    fn of(batch: &'a Batch<'_>, layer: usize) -> Self {
        BlockDropout {
            outputs: batch.masks.as_ref().map(|m| &m.blocks[layer]),
            attention: batch.attention_dropout.map(|a| (a, layer)),
        }
    }
}

fn block_forward(
    layout: &Layout,
    o: &BlockOffsets,
    p: &[f32],
    x: &[f32],
    batch: usize,
    drop: BlockDropout<'_>,
    bufs: &mut Buffers,
) -> (Vec<f32>, BlockTape) {
    let c = layout.config.n_embd;
    let masks = drop.outputs;
    let (ln_1, ln_1_stats) = norm(x, p, o.ln_1, o.ln_1_bias, c, bufs);
    let qkv = linear(&ln_1, p, o.qkv, o.qkv_bias, c, 3 * c, bufs);
    let (att, att_out) = attention(layout, &qkv, batch, drop.attention, bufs);
    let mut mid = linear(&att_out, p, o.proj, o.proj_bias, c, c, bufs);
    apply_mask(&mut mid, masks.map(|m| &m.0));
    add_into(&mut mid, x);
    let (ln_2, ln_2_stats) = norm(&mid, p, o.ln_2, o.ln_2_bias, c, bufs);
    let mut fc_slope = linear(&ln_2, p, o.fc, o.fc_bias, c, 4 * c, bufs);
    let mut fc_act = bufs.stale(fc_slope.len());
    gelu_keeping_slope(&mut fc_act, &mut fc_slope);
    let mut out = linear(&fc_act, p, o.mlp_proj, o.mlp_proj_bias, 4 * c, c, bufs);
    apply_mask(&mut out, masks.map(|m| &m.1));
    add_into(&mut out, &mid);
    let tape = BlockTape {
        ln_1,
        ln_1_stats,
        qkv,
        att,
        att_out,
        mid,
        ln_2,
        ln_2_stats,
        fc_slope,
        fc_act,
    };
    (out, tape)
}

/// `sum += residual`, in place over the branch's output (float addition commutes, so this is
/// bit for bit `residual + sum`).
fn add_into(sum: &mut [f32], residual: &[f32]) {
    for (s, r) in sum.iter_mut().zip(residual) {
        *s += r;
    }
}

/// The backward pass of a forward pass with targets: adds every parameter's gradient of the
/// loss times `scale` to `grads` (laid out as the parameters).
pub fn backward(
    layout: &Layout,
    p: &[f32],
    tape: &Tape,
    batch: &Batch<'_>,
    scale: f32,
    grads: &mut [f32],
    bufs: &mut Buffers,
) {
    let cfg = &layout.config;
    let (c, v) = (cfg.n_embd, cfg.vocab_size);
    let rows = batch.inputs.len();
    // The mean loss's gradient: (softmax - smoothed one-hot target) / rows.
    let mut dlogits = bufs.stale(tape.probs.len());
    dlogits.copy_from_slice(&tape.probs);
    let per_row = scale / rows as f32;
    let (uniform, hard) = (batch.smoothing / v as f32, 1.0 - batch.smoothing);
    dlogits
        .par_chunks_mut(v)
        .zip(batch.targets.par_iter())
        .for_each(|(row, &target)| {
            row[target as usize] -= hard;
            for g in row.iter_mut() {
                *g = (*g - uniform) * per_row;
            }
        });
    let mut dln_f = bufs.stale(rows * c);
    matmul(
        Out::of(&mut dln_f, rows, c),
        Mat::of(&dlogits, rows, v),
        Mat::rows(p, layout.wte, v, c, c),
        false,
        1.0,
        true,
    );
    matmul(
        Out::rows(grads, layout.wte, v, c, c),
        Mat::of(&dlogits, rows, v).t(),
        Mat::of(&tape.ln_f, rows, c),
        true,
        1.0,
        true,
    );
    bufs.give(dlogits);
    // The final norm's backward adds into it.
    let mut dx = bufs.zeroed(rows * c);
    norm_backward(
        &mut dx,
        grads,
        layout.ln_f,
        layout.ln_f_bias,
        &dln_f,
        &tape.residual[cfg.n_layer],
        &tape.ln_f_stats,
        p,
        c,
    );
    bufs.give(dln_f);
    for (l, o) in layout.blocks.iter().enumerate().rev() {
        let drop = BlockDropout::of(batch, l);
        let x = &tape.residual[l];
        match tape.blocks.get(l) {
            Some(block) => block_backward(layout, o, p, block, x, drop, &mut dx, grads, bufs),
            None => {
                let (out, block) = block_forward(layout, o, p, x, batch.batch, drop, bufs);
                block_backward(layout, o, p, &block, x, drop, &mut dx, grads, bufs);
                bufs.give(out);
                block.recycle(bufs);
            }
        }
    }
    apply_mask(&mut dx, batch.masks.as_ref().map(|m| &m.embedding));
    let t = cfg.block_size;
    for (row, (&token, d)) in batch.inputs.iter().zip(dx.chunks_exact(c)).enumerate() {
        for (at, g) in [
            (layout.wte + token as usize * c, d),
            (layout.wpe + (row % t) * c, d),
        ] {
            for (acc, g) in grads[at..at + c].iter_mut().zip(g) {
                *acc += g;
            }
        }
    }
    bufs.give(dx);
}

#[allow(clippy::too_many_arguments)]
fn norm_backward(
    dx: &mut [f32],
    grads: &mut [f32],
    w: usize,
    bias: Option<usize>,
    dout: &[f32],
    x: &[f32],
    stats: &NormStats,
    p: &[f32],
    c: usize,
) {
    // A norm's bias directly follows its weight in the layout.
    let (head, tail) = grads.split_at_mut(w + c);
    let dbias = bias.map(|b| &mut tail[b - (w + c)..b - (w + c) + c]);
    layer_norm_backward(
        dx,
        &mut head[w..w + c],
        dbias,
        dout,
        x,
        stats,
        slice(p, w, c),
    );
}

/// Adds `x^T @ d` to the weight's gradient and `d`'s column sums to the bias's; returns
/// `d @ w^T`, the input's gradient.
#[allow(clippy::too_many_arguments)]
fn linear_backward(
    grads: &mut [f32],
    p: &[f32],
    w: usize,
    bias: Option<usize>,
    x: &[f32],
    d: &[f32],
    d_in: usize,
    d_out: usize,
    bufs: &mut Buffers,
) -> Vec<f32> {
    let rows = x.len() / d_in;
    matmul(
        Out::rows(grads, w, d_in, d_out, d_out),
        Mat::of(x, rows, d_in).t(),
        Mat::of(d, rows, d_out),
        true,
        1.0,
        true,
    );
    if let Some(b) = bias {
        add_column_sums(&mut grads[b..b + d_out], d);
    }
    let mut dx = bufs.stale(rows * d_in);
    matmul(
        Out::of(&mut dx, rows, d_in),
        Mat::of(d, rows, d_out),
        Mat::rows(p, w, d_in, d_out, d_out).t(),
        false,
        1.0,
        true,
    );
    dx
}

#[allow(clippy::too_many_arguments)]
fn block_backward(
    layout: &Layout,
    o: &BlockOffsets,
    p: &[f32],
    tape: &BlockTape,
    x: &[f32],
    drop: BlockDropout<'_>,
    dx: &mut [f32],
    grads: &mut [f32],
    bufs: &mut Buffers,
) {
    let c = layout.config.n_embd;
    let masks = drop.outputs;
    let batch = dx.len() / (c * layout.config.block_size);
    let mut d = bufs.stale(dx.len());
    d.copy_from_slice(dx);
    apply_mask(&mut d, masks.map(|m| &m.1));
    let mut dfc = linear_backward(
        grads,
        p,
        o.mlp_proj,
        o.mlp_proj_bias,
        &tape.fc_act,
        &d,
        4 * c,
        c,
        bufs,
    );
    gelu_backward(&mut dfc, &tape.fc_slope);
    let dln_2 = linear_backward(grads, p, o.fc, o.fc_bias, &tape.ln_2, &dfc, c, 4 * c, bufs);
    bufs.give(dfc);
    norm_backward(
        dx,
        grads,
        o.ln_2,
        o.ln_2_bias,
        &dln_2,
        &tape.mid,
        &tape.ln_2_stats,
        p,
        c,
    );
    bufs.give(dln_2);
    d.copy_from_slice(dx);
    apply_mask(&mut d, masks.map(|m| &m.0));
    let datt_out = linear_backward(grads, p, o.proj, o.proj_bias, &tape.att_out, &d, c, c, bufs);
    bufs.give(d);
    let dqkv = attention_backward(
        layout,
        &tape.qkv,
        &tape.att,
        &datt_out,
        batch,
        drop.attention,
        bufs,
    );
    bufs.give(datt_out);
    let dln_1 = linear_backward(
        grads,
        p,
        o.qkv,
        o.qkv_bias,
        &tape.ln_1,
        &dqkv,
        c,
        3 * c,
        bufs,
    );
    bufs.give(dqkv);
    norm_backward(
        dx,
        grads,
        o.ln_1,
        o.ln_1_bias,
        &dln_1,
        x,
        &tape.ln_1_stats,
        p,
        c,
    );
    bufs.give(dln_1);
}
