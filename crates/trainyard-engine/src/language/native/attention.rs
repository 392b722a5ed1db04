//! Causal self-attention over the packed query, key and value projections, forward and
//! backward, every (window, head) in parallel; dropout on the probabilities draws each head's
//! mask where the head is computed.

use rayon::prelude::*;

use super::kernels::{Mat, Out, SharedMut, matmul, softmax_in_place};
use super::layout::Layout;
use crate::buffers::Buffers;
use crate::language::model::AttentionDropout;

/// Heads' geometry: `(time, width, heads, head width)`.
fn heads(layout: &Layout) -> (usize, usize, usize, usize) {
    let cfg = &layout.config;
    let c = cfg.n_embd;
    (cfg.block_size, c, cfg.n_head, c / cfg.n_head)
}

/// Causal self-attention of every (window, head) in parallel: the probabilities (before
/// dropout) and the heads' outputs side by side, `[rows, C]`.
pub(super) fn attention(
    layout: &Layout,
    qkv: &[f32],
    batch: usize,
    drop: Option<(AttentionDropout, usize)>,
    bufs: &mut Buffers,
) -> (Vec<f32>, Vec<f32>) {
    let (t, c, nh, hs) = heads(layout);
    let scale = 1.0 / (hs as f32).sqrt();
    let mut att = bufs.stale(batch * nh * t * t);
    let mut out = bufs.stale(batch * t * c);
    // The dropped probabilities, per head: what multiplies the values.
    let mut dropped = bufs.stale(if drop.is_some() { att.len() } else { 0 });
    let shared = SharedMut::new(&mut out);
    let head = |bh: usize, att: &mut [f32], scratch: Option<&mut [f32]>| {
        let (b, h) = (bh / nh, bh % nh);
        let base = b * t * 3 * c + h * hs;
        let q = Mat::rows(qkv, base, t, hs, 3 * c);
        let k = Mat::rows(qkv, base + c, t, hs, 3 * c);
        let v = Mat::rows(qkv, base + 2 * c, t, hs, 3 * c);
        matmul(Out::of(att, t, t), q, k.t(), false, scale, false);
        for (i, row) in att.chunks_exact_mut(t).enumerate() {
            softmax_in_place(&mut row[..=i]);
            row[i + 1..].fill(0.0);
        }
        let weights: &[f32] = match (drop, scratch) {
            (Some((masks, layer)), Some(scratch)) => {
                masks.fill(layer, bh, t, scratch);
                multiply_into(scratch, att);
                scratch
            }
            _ => att,
        };
        // SAFETY: head `h` of window `b` owns rows `b*t..(b+1)*t`, columns `h*hs..(h+1)*hs`.
        let dst = unsafe { Out::shared(shared, b * t * c + h * hs, t, hs, c) };
        matmul(dst, Mat::of(weights, t, t), v, false, 1.0, false);
    };
    let per_head = att.par_chunks_mut(t * t);
    match drop {
        Some(_) => per_head
            .zip(dropped.par_chunks_mut(t * t))
            .enumerate()
            .for_each(|(bh, (att, scratch))| head(bh, att, Some(scratch))),
        None => per_head
            .enumerate()
            .for_each(|(bh, att)| head(bh, att, None)),
    }
    bufs.give(dropped);
    (att, out)
}

/// `product *= by`, element by element.
fn multiply_into(product: &mut [f32], by: &[f32]) {
    for (x, y) in product.iter_mut().zip(by) {
        *x *= y;
    }
}

/// The gradient of the query, key and value projections, `[rows, 3C]`, from the heads'
/// output gradient.
pub(super) fn attention_backward(
    layout: &Layout,
    qkv: &[f32],
    att: &[f32],
    dout: &[f32],
    batch: usize,
    drop: Option<(AttentionDropout, usize)>,
    bufs: &mut Buffers,
) -> Vec<f32> {
    let (t, c, nh, hs) = heads(layout);
    let scale = 1.0 / (hs as f32).sqrt();
    let mut dqkv = bufs.stale(batch * t * 3 * c);
    let mut datt_all = bufs.stale(att.len());
    let mut dropped = bufs.stale(if drop.is_some() { att.len() } else { 0 });
    let shared = SharedMut::new(&mut dqkv);
    let head = |bh: usize, att: &[f32], datt: &mut [f32], scratch: Option<&mut [f32]>| {
        let (b, h) = (bh / nh, bh % nh);
        let base = b * t * 3 * c + h * hs;
        let q = Mat::rows(qkv, base, t, hs, 3 * c);
        let k = Mat::rows(qkv, base + c, t, hs, 3 * c);
        let v = Mat::rows(qkv, base + 2 * c, t, hs, 3 * c);
        let dy = Mat::rows(dout, b * t * c + h * hs, t, hs, c);
        matmul(Out::of(datt, t, t), dy, v.t(), false, 1.0, false);
        // With dropout the values were weighted by the dropped probabilities: the gradient
        // reaches the probabilities through the mask, drawn again here.
        let weights: &[f32] = match (drop, scratch) {
            (Some((masks, layer)), Some(scratch)) => {
                masks.fill(layer, bh, t, scratch);
                multiply_into(datt, scratch);
                multiply_into(scratch, att);
                scratch
            }
            _ => att,
        };
        // SAFETY: head `h` of window `b` owns rows `b*t..(b+1)*t` of its q, k and v columns.
        let (dq, dk, dv) = unsafe {
            (
                Out::shared(shared, base, t, hs, 3 * c),
                Out::shared(shared, base + c, t, hs, 3 * c),
                Out::shared(shared, base + 2 * c, t, hs, 3 * c),
            )
        };
        matmul(dv, Mat::of(weights, t, t).t(), dy, false, 1.0, false);
        // Softmax backward; entries above the diagonal have zero probability and stay zero.
        for (a, g) in att.chunks_exact(t).zip(datt.chunks_exact_mut(t)) {
            let inner: f32 = a.iter().zip(g.iter()).map(|(a, g)| a * g).sum();
            for (g, a) in g.iter_mut().zip(a) {
                *g = a * (*g - inner);
            }
        }
        let dpre = Mat::of(datt, t, t);
        matmul(dq, dpre, k, false, scale, false);
        matmul(dk, dpre.t(), q, false, scale, false);
    };
    let per_head = att.par_chunks(t * t).zip(datt_all.par_chunks_mut(t * t));
    match drop {
        Some(_) => per_head
            .zip(dropped.par_chunks_mut(t * t))
            .enumerate()
            .for_each(|(bh, ((att, datt), scratch))| head(bh, att, datt, Some(scratch))),
        None => per_head
            .enumerate()
            .for_each(|(bh, (att, datt))| head(bh, att, datt, None)),
    }
    bufs.give(dropped);
    bufs.give(datt_all);
    dqkv
}
