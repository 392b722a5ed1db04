//! Reviving dead latents: each is re-initialised towards an input the autoencoder
//! reconstructs badly (chosen with probability proportional to its squared error), with its
//! optimiser state reset, as Anthropic's "Towards Monosemanticity" describes.

use trainyard_data::SeededRng;

use super::linalg::dot;
use super::model::normalize;
use super::spec::SaeHyperparameters;
use super::train::LayerState;

/// The new encoder rows get this fraction of the mean live encoder norm.
const ENCODER_SCALE: f32 = 0.2;

/// Resamples the latents dead at `step` from `batch`; returns how many.
pub fn resample(
    hp: &SaeHyperparameters,
    state: &mut LayerState,
    batch: &[f32],
    step: u64,
) -> usize {
    let dead: Vec<usize> = (0..state.sae.d_sae)
        .filter(|&j| state.since_fired[j] >= hp.dead_window_tokens)
        .collect();
    if dead.is_empty() {
        return 0;
    }
    let sae = &mut state.sae;
    let d = sae.d_in;
    let codes = sae.encode(batch, hp.architecture, hp.k);
    let reconstruction = sae.decode(&codes);
    let weights: Vec<f64> = batch
        .chunks(d)
        .zip(reconstruction.chunks(d))
        .map(|(x, h)| {
            let e: f64 = x.iter().zip(h).map(|(a, b)| f64::from(a - b).powi(2)).sum();
            e * e
        })
        .collect();
    let total: f64 = weights.iter().sum();
    let alive: Vec<usize> = (0..sae.d_sae).filter(|j| !dead.contains(j)).collect();
    let encoder_norm = if alive.is_empty() {
        1.0
    } else {
        alive
            .iter()
            .map(|&j| {
                let row = &sae.w_enc[j * d..][..d];
                dot(row, row).sqrt()
            })
            .sum::<f32>()
            / alive.len() as f32
    };
    let mut rng = SeededRng::derive(hp.seed ^ 0x7E5A, step * 4096 + state.layer as u64);
    for &j in &dead {
        let row = pick(&weights, total, &mut rng);
        let mut direction: Vec<f32> = batch[row * d..][..d]
            .iter()
            .zip(&sae.b_dec)
            .map(|(x, b)| x - b)
            .collect();
        normalize(&mut direction);
        sae.w_dec[j * d..][..d].copy_from_slice(&direction);
        for (e, v) in sae.w_enc[j * d..][..d].iter_mut().zip(&direction) {
            *e = v * encoder_norm * ENCODER_SCALE;
        }
        sae.b_enc[j] = 0.0;
        state.since_fired[j] = 0;
    }
    state.adam.reset_latents(&dead, d);
    dead.len()
}

/// An index drawn with probability proportional to `weights` (uniform when all are zero).
fn pick(weights: &[f64], total: f64, rng: &mut SeededRng) -> usize {
    if total <= 0.0 {
        return rng.below(weights.len());
    }
    let mut target = rng.next_f64() * total;
    for (i, w) in weights.iter().enumerate() {
        target -= w;
        if target <= 0.0 {
            return i;
        }
    }
    weights.len() - 1
}
