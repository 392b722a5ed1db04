//! The sparse-autoencoder speed workloads: an SAE 512 -> 4096 trained with Adam on batches
//! of 1024 tokens, `relu` (L1 weighted by decoder norms) and `topk` (k = 32, unit-norm
//! decoder), steps per second over 100 steps after 5 warm-up steps. The activations are a
//! fixed formula both sides compute (`benches/peers/torch_sae.py` has the other side), so
//! both train on the same numbers.

use std::time::Instant;

use serde_json::{Value, json};
use trainyard_engine::sae::Architecture;
use trainyard_engine::sae::linalg::{View, matmul};
use trainyard_engine::sae::spec::{DecoderNorm, SaeHyperparameters};
use trainyard_engine::sae::train::{LayerData, init_layer, train_step};

pub const D_IN: usize = 512;
pub const BATCH: usize = 1024;
const ROWS: usize = 16 * BATCH;
/// Steps before timing starts; `SAE_WARMUP` (read by both sides) measures a later regime, as
/// `SAE_WARMUP=400` the sparse one a relu SAE settles into.
const WARMUP: u64 = 5;
const STEPS: u64 = 100;

/// Row `i`, column `j`: a few smooth components with a per-row mix, as the peer computes it.
fn activations() -> Vec<f32> {
    (0..ROWS)
        .flat_map(|i| {
            (0..D_IN).map(move |j| {
                let (i, j) = (i as f64, j as f64);
                ((0.013 * i * (j + 1.0)).sin() + 0.5 * (0.37 * i + 0.11 * j).cos()
                    - 0.25 * (0.07 * j).sin()) as f32
            })
        })
        .collect()
}

fn warmup_steps() -> u64 {
    std::env::var("SAE_WARMUP")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(WARMUP)
}

pub fn run(name: &str) -> anyhow::Result<Value> {
    let warmup = warmup_steps();
    let architecture = if name == "sae_relu" {
        Architecture::Relu
    } else {
        Architecture::Topk
    };
    let hp = SaeHyperparameters {
        architecture,
        k: 32,
        expansion_factor: 8,
        batch_size: BATCH,
        max_steps: warmup + STEPS,
        learning_rate: 4e-4,
        warmup_steps: 0,
        lr_decay_steps: 0,
        grad_clip: 0.0,
        // The peer applies its L1 coefficient from the first step: no warm-up here either.
        l1_warmup_steps: 0,
        decoder_norm: if architecture == Architecture::Relu {
            DecoderNorm::Penalty
        } else {
            DecoderNorm::Unit
        },
        ..SaeHyperparameters::default()
    };
    let data = LayerData {
        layer: 0,
        d_in: D_IN,
        scale: 1.0,
        train: activations(),
        validation: vec![],
    };
    let mut state = init_layer(&hp, &data);
    let whole = Instant::now();
    let mut started = whole;
    let mut last = Default::default();
    for step in 0..warmup + STEPS {
        if step == warmup {
            started = Instant::now();
        }
        let rows = (step as usize * BATCH) % ROWS;
        let batch = &data.train[rows * D_IN..(rows + BATCH) * D_IN];
        last = train_step(&hp, &mut state, batch, step, hp.learning_rate);
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(json!({
        "workload": name,
        "steps_per_second": STEPS as f64 / seconds,
        "warmup_steps": warmup,
        // Every step, warm-up included: the whole run's rate.
        "run_steps_per_second": (warmup + STEPS) as f64 / whole.elapsed().as_secs_f64(),
        // The last step's, as the peer reports it.
        "final_l0": last.l0,
        "threads": crate::bench::rayon_threads(),
    }))
}

/// Rounds of the five products timed by `products`, after one untimed round.
const PRODUCT_ROUNDS: usize = 40;

/// The five matrix products of one dense relu step at the workload's shapes (encode, decode,
/// the decoder's gradient, the codes' gradient, the encoder's gradient), nothing else: what
/// a step can cost at least with this matrix kernel. The peer times the same products with
/// its own kernel (MKL), so the two figures bound what either side's step can reach.
pub fn products() -> Value {
    let (n, d, m) = (BATCH, D_IN, D_IN * 8);
    let (x, w_enc, w_dec) = (fill(n * d, 0.1), fill(m * d, 0.2), fill(m * d, 0.3));
    let g_out = fill(n * d, 0.4);
    let (mut z, mut g_pre) = (vec![0.0; n * m], vec![0.0; n * m]);
    let (mut x_hat, mut g_w_dec, mut g_w_enc) =
        (vec![0.0; n * d], vec![0.0; m * d], vec![0.0; m * d]);
    let mut round = || {
        matmul(
            &mut z,
            View::new(&x, n, d),
            View::new(&w_enc, m, d).t(),
            false,
        );
        matmul(
            &mut x_hat,
            View::new(&z, n, m),
            View::new(&w_dec, m, d),
            false,
        );
        matmul(
            &mut g_w_dec,
            View::new(&z, n, m).t(),
            View::new(&g_out, n, d),
            false,
        );
        matmul(
            &mut g_pre,
            View::new(&g_out, n, d),
            View::new(&w_dec, m, d).t(),
            false,
        );
        matmul(
            &mut g_w_enc,
            View::new(&g_pre, n, m).t(),
            View::new(&x, n, d),
            false,
        );
    };
    round();
    let started = Instant::now();
    for _ in 0..PRODUCT_ROUNDS {
        round();
    }
    let seconds = started.elapsed().as_secs_f64();
    let flops = 5.0 * 2.0 * (n * d * m) as f64 * PRODUCT_ROUNDS as f64;
    json!({
        "workload": "sae_products",
        "matmul_gflops": flops / seconds / 1e9,
        "products_per_second": PRODUCT_ROUNDS as f64 / seconds,
        "threads": crate::bench::rayon_threads(),
    })
}

/// A deterministic matrix of small values of both signs, for timing products.
pub fn fill(len: usize, seed: f32) -> Vec<f32> {
    (0..len)
        .map(|i| ((i as f32 * 0.618 + seed).fract() - 0.5) * 0.1)
        .collect()
}
