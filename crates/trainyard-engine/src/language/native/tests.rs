//! The hand-written network against burn's: the same weights give the same loss and the same
//! gradients (dropout, label smoothing and biases included), and a step's result does not
//! depend on the number of threads.

use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor};
use trainyard_data::SeededRng;

use super::layout::Layout;
use super::network::{Batch, backward, forward};
use super::trainer::masks;
use crate::buffers::Buffers;
use crate::language::model::{AttentionDropout, Dropout, Gpt, GptConfig, token_tensor};
use crate::language::train::LmHyperparameters;
use crate::language::weights::{Dense, GptWeights, LayerWeights, Norm};

fn config(bias: bool) -> GptConfig {
    GptConfig {
        vocab_size: 13,
        n_layer: 2,
        n_head: 2,
        n_embd: 8,
        block_size: 6,
        bias,
    }
}

/// Seeded weights with every tensor perturbed (so norms' gains and biases are not 1 and 0).
fn weights(config: &GptConfig, seed: u64) -> (Layout, Vec<f32>) {
    let layout = Layout::new(config);
    let mut rng = SeededRng::new(seed);
    let mut p = {
        let _guard = crate::neural::init_lock();
        let device = Device::flex();
        device.seed(seed);
        layout.pack(&GptWeights::from_model(&Gpt::new(config, &device), config))
    };
    for x in &mut p {
        *x += 0.2 * rng.normal() as f32;
    }
    (layout, p)
}

fn tokens(n: usize, vocab: usize, seed: u64) -> Vec<u32> {
    let mut rng = SeededRng::new(seed);
    (0..n).map(|_| rng.below(vocab) as u32).collect()
}

fn grad_of<const D: usize>(
    grads: &GradientsParams,
    param: &burn::module::Param<Tensor<D>>,
) -> Vec<f32> {
    grads
        .get::<D>(param.id)
        .expect("a gradient")
        .into_data()
        .try_to_vec::<f32>()
        .unwrap()
}

fn dense_grad(grads: &GradientsParams, linear: &burn::nn::Linear) -> Dense {
    let weight = grad_of(grads, &linear.weight);
    let d_out = linear.weight.val().dims()[1];
    Dense {
        d_in: weight.len() / d_out,
        d_out,
        weight,
        bias: linear.bias.as_ref().map(|b| grad_of(grads, b)),
    }
}

fn norm_grad(grads: &GradientsParams, norm: &burn::nn::LayerNorm) -> Norm {
    Norm {
        weight: grad_of(grads, &norm.gamma),
        bias: norm.beta.as_ref().map(|b| grad_of(grads, b)),
    }
}

/// burn's loss and gradients (laid out as named weights) for the same batch.
fn burn_reference(
    layout: &Layout,
    p: &[f32],
    batch: &Batch<'_>,
    mut dropout: Option<Dropout>,
) -> (f64, GptWeights) {
    let cfg = &layout.config;
    let device = Device::flex().autodiff();
    let model = layout.unpack(p).to_model(&device);
    let inputs = token_tensor(batch.inputs, batch.batch, cfg.block_size, &device);
    let targets =
        token_tensor(batch.targets, 1, batch.targets.len(), &device).reshape([batch.targets.len()]);
    let logits = model.forward_with(inputs, dropout.as_mut());
    let smoothing = (batch.smoothing > 0.0).then_some(batch.smoothing);
    let loss = CrossEntropyLossConfig::new()
        .with_smoothing(smoothing)
        .init(&device)
        .forward(logits, targets);
    let value = loss.clone().into_scalar::<f32>() as f64;
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    let layers = model
        .blocks
        .iter()
        .map(|b| LayerWeights {
            ln_1: norm_grad(&grads, &b.ln_attention),
            q: dense_grad(&grads, &b.attention.query),
            k: dense_grad(&grads, &b.attention.key),
            v: dense_grad(&grads, &b.attention.value),
            proj: dense_grad(&grads, &b.attention.output),
            ln_2: norm_grad(&grads, &b.ln_mlp),
            fc: dense_grad(&grads, &b.expand),
            mlp_proj: dense_grad(&grads, &b.project),
        })
        .collect();
    let named = GptWeights {
        config: cfg.clone(),
        wte: grad_of(&grads, &model.tokens.weight),
        wpe: grad_of(&grads, &model.positions.weight),
        layers,
        ln_f: norm_grad(&grads, &model.ln_final),
    };
    (value, named)
}

fn assert_close(name: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{name}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= 2e-5 + 1e-3 * w.abs(),
            "{name}[{i}]: {g} vs burn's {w}"
        );
    }
}

fn check_against_burn(bias: bool, smoothing: f32, dropout: f64, attention_dropout: f64) {
    let cfg = config(bias);
    let (layout, p) = weights(&cfg, 7);
    let batch_rows = 3;
    let inputs = tokens(batch_rows * cfg.block_size, cfg.vocab_size, 1);
    let targets = tokens(batch_rows * cfg.block_size, cfg.vocab_size, 2);
    let hp = LmHyperparameters {
        dropout,
        attention_dropout,
        n_layer: cfg.n_layer,
        n_embd: cfg.n_embd,
        seed: 5,
        ..LmHyperparameters::default()
    };
    let batch = Batch {
        inputs: &inputs,
        targets: &targets,
        batch: batch_rows,
        smoothing,
        masks: masks(&hp, 0, inputs.len()),
        recompute: false,
        attention_dropout: AttentionDropout::for_draw(attention_dropout, hp.seed, 0),
    };
    let mut bufs = Buffers::default();
    let tape = forward(&layout, &p, &batch, &mut bufs);
    let mut grads = vec![0.0; layout.len];
    backward(&layout, &p, &tape, &batch, 1.0, &mut grads, &mut bufs);
    let burn_dropout = Dropout::for_draw(dropout, attention_dropout, hp.seed, 0);
    let (loss, want) = burn_reference(&layout, &p, &batch, burn_dropout);
    assert!(
        (tape.loss - loss).abs() < 1e-5 * loss.abs(),
        "loss {} vs burn's {loss}",
        tape.loss
    );
    let got = layout.unpack(&grads);
    for ((name, _, g), (_, _, w)) in got.named().iter().zip(want.named().iter()) {
        assert_close(name, g, w);
    }
}

#[test]
fn loss_and_gradients_match_burns_network() {
    check_against_burn(true, 0.0, 0.0, 0.0);
}

#[test]
fn without_biases_with_label_smoothing_and_dropout_too() {
    check_against_burn(false, 0.1, 0.0, 0.0);
    check_against_burn(true, 0.0, 0.25, 0.0);
}

#[test]
fn attention_dropout_matches_burns_network_alone_and_with_dropout() {
    check_against_burn(true, 0.0, 0.0, 0.3);
    check_against_burn(false, 0.1, 0.2, 0.5);
}

#[test]
fn packing_round_trips_through_named_weights_and_burns_model() {
    let cfg = config(true);
    let (layout, p) = weights(&cfg, 3);
    let model = layout.unpack(&p).to_model(&Device::flex());
    assert_eq!(layout.pack(&GptWeights::from_model(&model, &cfg)), p);
    let decayed: usize = layout.decayed.iter().map(|r| r.len()).sum();
    let e = cfg.n_embd;
    let matrices = cfg.vocab_size * e + cfg.block_size * e + cfg.n_layer * 12 * e * e;
    assert_eq!(
        decayed, matrices,
        "embeddings and matrices decay; norms and biases do not"
    );
}

/// A network large enough for a pass to split its products among threads.
fn pool_config(n_layer: usize, n_embd: usize) -> GptConfig {
    GptConfig {
        vocab_size: 50,
        n_layer,
        n_head: 4,
        n_embd,
        block_size: 32,
        bias: true,
    }
}

/// One forward and backward pass in a pool of `threads`; with `dirty`, on buffers another
/// batch's step handed back.
fn step_in_pool(threads: usize, recompute: bool, dirty: bool, attention: f64) -> (f64, Vec<f32>) {
    let cfg = pool_config(2, 64);
    let (layout, p) = weights(&cfg, 11);
    let inputs = tokens(8 * cfg.block_size, cfg.vocab_size, 3);
    let targets = tokens(8 * cfg.block_size, cfg.vocab_size, 4);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| {
        let mut bufs = Buffers::default();
        let mut step = |inputs: &[u32], targets: &[u32]| {
            let batch = Batch {
                inputs,
                targets,
                batch: 8,
                smoothing: 0.0,
                masks: None,
                recompute,
                attention_dropout: AttentionDropout::for_draw(attention, 9, 0),
            };
            let tape = forward(&layout, &p, &batch, &mut bufs);
            let mut grads = vec![0.0; layout.len];
            backward(&layout, &p, &tape, &batch, 1.0, &mut grads, &mut bufs);
            let loss = tape.loss;
            tape.recycle(&mut bufs);
            (loss, grads)
        };
        if dirty {
            step(&targets, &inputs);
        }
        step(&inputs, &targets)
    })
}

#[test]
fn a_step_does_not_depend_on_threads_recomputing_blocks_or_stale_buffers() {
    for attention in [0.0, 0.3] {
        let one = step_in_pool(1, false, false, attention);
        for (name, other) in [
            ("three threads", step_in_pool(3, false, false, attention)),
            ("recomputed blocks", step_in_pool(2, true, false, attention)),
            (
                "buffers another batch left",
                step_in_pool(2, false, true, attention),
            ),
            (
                "recomputed on stale buffers",
                step_in_pool(2, true, true, attention),
            ),
        ] {
            assert_eq!(
                other.0, one.0,
                "{name}, attention dropout {attention}: loss"
            );
            let differ = other
                .1
                .iter()
                .zip(&one.1)
                .position(|(a, b)| a.to_bits() != b.to_bits());
            assert_eq!(
                differ, None,
                "{name}, attention dropout {attention}: the first gradient that differs"
            );
        }
    }
}

#[test]
fn a_step_is_the_same_with_or_without_avx2() {
    let wide = step_in_pool(2, false, false, 0.0);
    crate::simd::baseline_only();
    let baseline = step_in_pool(2, false, false, 0.0);
    assert_eq!(baseline.0.to_bits(), wide.0.to_bits(), "loss");
    let differ = baseline
        .1
        .iter()
        .zip(&wide.1)
        .position(|(a, b)| a.to_bits() != b.to_bits());
    assert_eq!(differ, None, "the first gradient that differs");
}

/// Steps with and without recomputed blocks hand back what they took: after the first step
/// the pool holds no more floats, however many steps follow.
#[test]
fn the_buffer_pool_stops_growing_after_the_first_step() {
    let cfg = pool_config(3, 32);
    let (layout, p) = weights(&cfg, 11);
    let inputs = tokens(4 * cfg.block_size, cfg.vocab_size, 3);
    let targets = tokens(4 * cfg.block_size, cfg.vocab_size, 4);
    for (recompute, attention) in [(false, 0.0), (true, 0.0), (false, 0.2), (true, 0.2)] {
        let mut bufs = Buffers::default();
        let mut pooled = vec![];
        for draw in 0..6 {
            let batch = Batch {
                inputs: &inputs,
                targets: &targets,
                batch: 4,
                smoothing: 0.0,
                masks: None,
                recompute,
                attention_dropout: AttentionDropout::for_draw(attention, 9, draw),
            };
            let tape = forward(&layout, &p, &batch, &mut bufs);
            let mut grads = bufs.zeroed(layout.len);
            backward(&layout, &p, &tape, &batch, 1.0, &mut grads, &mut bufs);
            tape.recycle(&mut bufs);
            bufs.give(grads);
            pooled.push(bufs.pooled_floats());
        }
        assert!(
            pooled.iter().all(|&n| n == pooled[0]),
            "recompute {recompute}, attention dropout {attention}: floats pooled after each step {pooled:?}"
        );
    }
}
