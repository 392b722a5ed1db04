//! Adam over the autoencoder's four tensors, gradient clipping, and the unit-norm decoder
//! constraint (project the gradient, step, renormalise).

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::linalg::{axpy, dot};
use super::model::{Grads, Sae, normalize};
use crate::simd::simd_fn;

const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const EPSILON: f32 = 1e-8;
/// Elements per parallel task in the element-wise updates and the norm's partial sums.
const CHUNK: usize = 1 << 14;

/// Adam's moments, shaped as the parameters, and its step count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Adam {
    pub t: u64,
    pub m: [Vec<f32>; 4],
    pub v: [Vec<f32>; 4],
}

impl Adam {
    pub fn new(sae: &Sae) -> Adam {
        let zeros = || {
            [
                vec![0.0; sae.w_enc.len()],
                vec![0.0; sae.b_enc.len()],
                vec![0.0; sae.w_dec.len()],
                vec![0.0; sae.b_dec.len()],
            ]
        };
        Adam {
            t: 0,
            m: zeros(),
            v: zeros(),
        }
    }

    pub fn step(&mut self, sae: &mut Sae, grads: &Grads, learning_rate: f64) {
        self.t += 1;
        let t = self.t as i32;
        let correction1 = 1.0 - BETA1.powi(t);
        let correction2 = 1.0 - BETA2.powi(t);
        let step_size = (learning_rate * correction2.sqrt() / correction1) as f32;
        let params: [&mut Vec<f32>; 4] = [
            &mut sae.w_enc,
            &mut sae.b_enc,
            &mut sae.w_dec,
            &mut sae.b_dec,
        ];
        let gradients = [&grads.w_enc, &grads.b_enc, &grads.w_dec, &grads.b_dec];
        for (i, (param, grad)) in params.into_iter().zip(gradients).enumerate() {
            // Element-wise, so splitting it over threads changes no bit.
            param
                .par_chunks_mut(CHUNK)
                .zip(grad.par_chunks(CHUNK))
                .zip(self.m[i].par_chunks_mut(CHUNK))
                .zip(self.v[i].par_chunks_mut(CHUNK))
                .for_each(|(((param, grad), m), v)| adam_chunk(param, grad, m, v, step_size));
        }
    }

    /// Forgets the moments of the latents in `latents` (resampled ones start fresh).
    pub fn reset_latents(&mut self, latents: &[usize], d_in: usize) {
        for &j in latents {
            for moments in [&mut self.m, &mut self.v] {
                moments[0][j * d_in..][..d_in].fill(0.0);
                moments[1][j] = 0.0;
                moments[2][j * d_in..][..d_in].fill(0.0);
            }
        }
    }
}

simd_fn! {
    fn adam_chunk(param: &mut [f32], grad: &[f32], m: &mut [f32], v: &mut [f32], step_size: f32) {
        for (((p, g), m), v) in param.iter_mut().zip(grad).zip(m).zip(v) {
            *m = BETA1 as f32 * *m + (1.0 - BETA1 as f32) * g;
            *v = BETA2 as f32 * *v + (1.0 - BETA2 as f32) * g * g;
            *p -= step_size * *m / (v.sqrt() + EPSILON);
        }
    }
}

simd_fn! {
    /// In eight lanes (a fixed order, so both compilations agree) so the sum vectorises.
    fn sum_of_squares(values: &[f32]) -> f64 {
        let mut lanes = [0.0f64; 8];
        let whole = values.len() / 8 * 8;
        for chunk in values[..whole].chunks_exact(8) {
            for l in 0..8 {
                lanes[l] += f64::from(chunk[l]) * f64::from(chunk[l]);
            }
        }
        let tail: f64 = values[whole..].iter().map(|v| f64::from(*v) * f64::from(*v)).sum();
        lanes.iter().sum::<f64>() + tail
    }
}

/// The gradients' global norm; scaled down to `max_norm` when above it (0 disables).
pub fn clip(grads: &mut Grads, max_norm: f64) -> f64 {
    let all = [&grads.w_enc, &grads.b_enc, &grads.w_dec, &grads.b_dec];
    // Fixed chunks summed in order: the same bits whatever the threads.
    let norm = all
        .iter()
        .flat_map(|g| {
            g.par_chunks(CHUNK)
                .map(sum_of_squares)
                .collect::<Vec<f64>>()
        })
        .sum::<f64>()
        .sqrt();
    if max_norm > 0.0 && norm > max_norm {
        let scale = (max_norm / norm) as f32;
        for g in [
            &mut grads.w_enc,
            &mut grads.b_enc,
            &mut grads.w_dec,
            &mut grads.b_dec,
        ] {
            g.par_iter_mut().for_each(|v| *v *= scale);
        }
    }
    norm
}

/// Removes from each decoder row's gradient its component along the (unit) row, so a step
/// moves the direction rather than its length.
pub fn project_decoder_gradient(sae: &Sae, grads: &mut Grads) {
    let d = sae.d_in;
    sae.w_dec
        .par_chunks(d)
        .zip(grads.w_dec.par_chunks_mut(d))
        .for_each(|(row, grad)| {
            let along = dot(row, grad);
            axpy(grad, -along, row);
        });
}

pub fn normalize_decoder(sae: &mut Sae) {
    sae.w_dec.par_chunks_mut(sae.d_in).for_each(normalize);
}
