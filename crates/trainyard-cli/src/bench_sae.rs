//! The sparse-autoencoder speed workloads: an SAE 512 -> 4096 trained with Adam on batches
//! of 1024 tokens, `relu` (L1 weighted by decoder norms) and `topk` (k = 32, unit-norm
//! decoder), steps per second over 100 steps after 5 warm-up steps. The activations are a
//! fixed formula both sides compute (`benches/peers/torch_sae.py` has the other side), so
//! both train on the same numbers.

use std::time::Instant;

use serde_json::{Value, json};
use trainyard_engine::sae::Architecture;
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
