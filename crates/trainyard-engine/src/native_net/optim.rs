//! The optimisers of `Hyperparameters::optimizer` on one flat parameter vector, with burn's
//! update rules and defaults (so a run means the same on either path): Adam and SGD add
//! `weight_decay * param` to the gradient, AdamW decays the parameters themselves; Adam's
//! epsilon is burn's 1e-5, scaled as burn scales it.

use rayon::prelude::*;
use trainyard_core::Hyperparameters;
use trainyard_core::hyperparameters::OptimizerKind;

use crate::simd::simd_fn;

const MAGIC: &[u8; 8] = b"TYDENSE1";
const BETA_1: f32 = 0.9;
const BETA_2: f32 = 0.999;
const EPSILON: f32 = 1e-5;

#[derive(Debug, Clone, PartialEq)]
pub struct Optimizer {
    kind: OptimizerKind,
    weight_decay: f32,
    momentum: f32,
    /// Updates made so far.
    time: u64,
    /// Adam's first moment, or SGD's velocity.
    m: Vec<f32>,
    /// Adam's second moment (empty for SGD).
    v: Vec<f32>,
}

impl Optimizer {
    pub fn new(hp: &Hyperparameters, len: usize) -> Self {
        let adaptive = hp.optimizer != OptimizerKind::Sgd;
        Optimizer {
            kind: hp.optimizer,
            weight_decay: hp.weight_decay as f32,
            momentum: hp.momentum as f32,
            time: 0,
            m: vec![0.0; len],
            v: if adaptive { vec![0.0; len] } else { vec![] },
        }
    }

    pub fn step(&mut self, params: &mut [f32], grads: &[f32], learning_rate: f64) {
        self.time += 1;
        let lr = learning_rate as f32;
        let decay = self.weight_decay;
        match self.kind {
            OptimizerKind::Sgd => {
                let momentum = self.momentum;
                for ((p, &g), m) in params.iter_mut().zip(grads).zip(&mut self.m) {
                    let g = g + decay * *p;
                    *m = if momentum > 0.0 { momentum * *m + g } else { g };
                    *p -= lr * *m;
                }
            }
            OptimizerKind::Adam | OptimizerKind::Adamw => {
                let decoupled = self.kind == OptimizerKind::Adamw;
                let time = self.time.min(i32::MAX as u64) as i32;
                let correction_2 = (1.0 - BETA_2.powi(time)).sqrt();
                let factor = correction_2 / (1.0 - BETA_1.powi(time));
                let epsilon = EPSILON * correction_2;
                let shrink = if decoupled { 1.0 - lr * decay } else { 1.0 };
                let l2 = if decoupled { 0.0 } else { decay };
                let rule = AdamRule {
                    lr,
                    l2,
                    shrink,
                    factor,
                    epsilon,
                };
                // Element-wise, so the split changes no result.
                params
                    .par_chunks_mut(CHUNK)
                    .zip(grads.par_chunks(CHUNK))
                    .zip(self.m.par_chunks_mut(CHUNK))
                    .zip(self.v.par_chunks_mut(CHUNK))
                    .for_each(|(((p, g), m), v)| adam_chunk(p, g, m, v, &rule));
            }
        }
    }

    /// The state as bytes, marked so a resume knows which path wrote it.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32 + 4 * (self.m.len() + self.v.len()));
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.time.to_le_bytes());
        out.extend_from_slice(&(self.m.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.v.len() as u64).to_le_bytes());
        for x in self.m.iter().chain(&self.v) {
            out.extend_from_slice(&x.to_le_bytes());
        }
        out
    }

    /// Restores the state `to_bytes` wrote for the same optimiser and parameter count.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<(), String> {
        let rest = bytes
            .strip_prefix(MAGIC.as_slice())
            .ok_or("the optimiser state was not written by this path")?;
        let word = |i: usize| -> Result<u64, String> {
            let b = rest
                .get(8 * i..8 * i + 8)
                .ok_or("truncated optimiser state")?;
            Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
        };
        let (time, m_len, v_len) = (word(0)?, word(1)? as usize, word(2)? as usize);
        if m_len != self.m.len() || v_len != self.v.len() {
            return Err(format!(
                "optimiser state for {m_len} parameters ({v_len} second moments); this network has {} ({})",
                self.m.len(),
                self.v.len()
            ));
        }
        let floats = &rest[24..];
        if floats.len() != 4 * (m_len + v_len) {
            return Err("truncated optimiser state".into());
        }
        let mut values = floats
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")));
        self.m.iter_mut().for_each(|x| *x = values.next().unwrap());
        self.v.iter_mut().for_each(|x| *x = values.next().unwrap());
        self.time = time;
        Ok(())
    }
}

/// Parameters per parallel task of an Adam update.
const CHUNK: usize = 1 << 14;

/// One Adam update's constants.
struct AdamRule {
    lr: f32,
    /// Weight decay added to the gradient (Adam), or 0.
    l2: f32,
    /// What the parameter is multiplied by before the step (AdamW's decay), or 1.
    shrink: f32,
    factor: f32,
    epsilon: f32,
}

simd_fn! {
    fn adam_chunk(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], rule: &AdamRule) {
        let moments = m.iter_mut().zip(v.iter_mut());
        for ((p, &g), (m, v)) in p.iter_mut().zip(g).zip(moments) {
            let g = g + rule.l2 * *p;
            *m = BETA_1 * *m + (1.0 - BETA_1) * g;
            *v = BETA_2 * *v + (1.0 - BETA_2) * g * g;
            let delta = *m * rule.factor / (v.sqrt() + rule.epsilon);
            *p = *p * rule.shrink - rule.lr * delta;
        }
    }
}

pub fn is_native_state(bytes: &[u8]) -> bool {
    bytes.starts_with(MAGIC)
}
