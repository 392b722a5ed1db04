//! The step loop on the hand-written network: the same run as `steps::train_steps` (seeded
//! windows and dropout masks, gradient accumulation, decoupled weight decay on matrices,
//! AdamW, clipping by global norm, evaluations, early stopping, checkpoints, exact resume),
//! on one flat parameter vector. Checkpoints keep the weights as burn records, so everything
//! that reads a language model's checkpoint or file is unchanged; the optimiser state is this
//! module's own, marked so a resume takes the path that wrote it.

use std::time::Instant;

use burn::tensor::Device;
use rayon::prelude::*;
use trainyard_data::SeededRng;
use trainyard_data::text::windows;

use super::kernels::adamw_chunk;
use super::layout::Layout;
use super::network::{Batch, Masks, backward, forward};
use crate::buffers::Buffers;
use crate::language::model::{AttentionDropout, DROPOUT_STREAMS, Gpt, GptConfig};
use crate::language::steps::{StepRun, early_stopping_state, finish, load_weights, weights};
use crate::language::train::{
    Evaluation, LmCheckpoint, LmData, LmHyperparameters, LmObserver, validation_windows,
};
use crate::language::weights::GptWeights;
use crate::{Control, Stop, TrainError};

const STATE_MAGIC: &[u8; 8] = b"TYADAMW1";
const BETA_1: f32 = 0.9;
const BETA_2: f32 = 0.99;
const EPSILON: f32 = 1e-8;

/// Whether a run trains on the hand-written network: next-token runs (label smoothing,
/// dropout and gradient checkpointing included). Distillation stays on burn, and a run
/// resumes on the path that wrote its checkpoint.
pub fn handles(data: &LmData<'_>, resume: Option<&LmCheckpoint>) -> bool {
    let fresh_or_ours = resume.is_none_or(|c| c.optimizer.starts_with(STATE_MAGIC));
    data.teacher.is_none() && fresh_or_ours
}

/// AdamW's moments and the number of updates made.
struct AdamW {
    m: Vec<f32>,
    v: Vec<f32>,
    time: u64,
}

impl AdamW {
    fn new(len: usize) -> Self {
        AdamW {
            m: vec![0.0; len],
            v: vec![0.0; len],
            time: 0,
        }
    }

    fn step(&mut self, p: &mut [f32], g: &[f32], lr: f32) {
        self.time += 1;
        let c1 = 1.0 - BETA_1.powi(self.time as i32);
        let c2 = 1.0 - BETA_2.powi(self.time as i32);
        const CHUNK: usize = 1 << 14;
        let (step_size, inv_c2) = (lr / c1, 1.0 / c2);
        p.par_chunks_mut(CHUNK)
            .zip(g.par_chunks(CHUNK))
            .zip(self.m.par_chunks_mut(CHUNK))
            .zip(self.v.par_chunks_mut(CHUNK))
            .for_each(|(((p, g), m), v)| {
                adamw_chunk(p, g, m, v, (BETA_1, BETA_2), step_size, inv_c2, EPSILON)
            });
    }

    fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(24 + 8 * self.m.len());
        out.extend_from_slice(STATE_MAGIC);
        out.extend_from_slice(&self.time.to_le_bytes());
        out.extend_from_slice(&(self.m.len() as u64).to_le_bytes());
        for x in self.m.iter().chain(&self.v) {
            out.extend_from_slice(&x.to_le_bytes());
        }
        out
    }

    fn from_bytes(bytes: &[u8], len: usize) -> Result<Self, TrainError> {
        let bad = |why: &str| TrainError::Resume(format!("optimizer state: {why}"));
        let rest = bytes
            .strip_prefix(STATE_MAGIC)
            .ok_or_else(|| bad("unknown format"))?;
        if rest.len() != 16 + 8 * len {
            return Err(bad("its size does not match the model"));
        }
        let word = |at: usize| u64::from_le_bytes(rest[at..at + 8].try_into().expect("8 bytes"));
        if word(8) != len as u64 {
            return Err(bad("its size does not match the model"));
        }
        let floats: Vec<f32> = rest[16..]
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
            .collect();
        Ok(AdamW {
            time: word(0),
            m: floats[..len].to_vec(),
            v: floats[len..].to_vec(),
        })
    }
}

/// The run's network and where it stands.
struct State {
    layout: Layout,
    params: Vec<f32>,
    optimizer: AdamW,
    /// The passes' buffers, taken again by every step (never saved).
    buffers: Buffers,
}

impl State {
    fn model(&self) -> Gpt {
        self.layout.unpack(&self.params).to_model(&Device::flex())
    }

    fn from_model(model: &Gpt, config: &GptConfig) -> Self {
        let layout = Layout::new(config);
        let params = layout.pack(&GptWeights::from_model(model, config));
        let optimizer = AdamW::new(layout.len);
        State {
            layout,
            params,
            optimizer,
            buffers: Buffers::default(),
        }
    }
}

/// Dropout masks for draw `draw`, drawn in the order burn's network draws them.
pub(super) fn masks(hp: &LmHyperparameters, draw: u64, rows: usize) -> Option<Masks> {
    if hp.dropout <= 0.0 {
        return None;
    }
    let mut rng = SeededRng::derive(hp.seed, DROPOUT_STREAMS + draw);
    let keep = (1.0 / (1.0 - hp.dropout)) as f32;
    let mut mask = |n: usize| -> Vec<f32> {
        (0..n)
            .map(|_| {
                if rng.next_f64() < hp.dropout {
                    0.0
                } else {
                    keep
                }
            })
            .collect()
    };
    let n = rows * hp.n_embd;
    let embedding = mask(n);
    let blocks = (0..hp.n_layer).map(|_| (mask(n), mask(n))).collect();
    Some(Masks { embedding, blocks })
}

/// One step's gradients (mean over micro-batches) and mean loss.
fn gradients(
    state: &mut State,
    hp: &LmHyperparameters,
    data: &LmData<'_>,
    step: u64,
) -> (Vec<f32>, f64) {
    let micro = hp.grad_accumulation.max(1);
    let mut grads = vec![0.0f32; state.layout.len];
    let mut loss = 0.0;
    for m in 0..micro as u64 {
        let draw = step * micro as u64 + m;
        let w = windows(data.train, hp.block_size, hp.batch_size, hp.seed, draw);
        let batch = Batch {
            inputs: &w.inputs,
            targets: &w.targets,
            batch: hp.batch_size,
            smoothing: hp.label_smoothing as f32,
            masks: masks(hp, draw, w.inputs.len()),
            recompute: hp.gradient_checkpointing,
            attention_dropout: AttentionDropout::for_draw(hp.attention_dropout, hp.seed, draw),
        };
        let tape = forward(&state.layout, &state.params, &batch, &mut state.buffers);
        loss += tape.loss / micro as f64;
        backward(
            &state.layout,
            &state.params,
            &tape,
            &batch,
            1.0 / micro as f32,
            &mut grads,
            &mut state.buffers,
        );
        tape.recycle(&mut state.buffers);
    }
    (grads, loss)
}

/// Mean next-token loss on the validation windows every evaluation reads.
fn evaluate(
    layout: &Layout,
    params: &[f32],
    tokens: &[u32],
    hp: &LmHyperparameters,
    bufs: &mut Buffers,
) -> f64 {
    let mut sum = 0.0;
    for w in validation_windows(tokens, hp) {
        let batch = Batch {
            inputs: &w.inputs,
            targets: &w.targets,
            batch: hp.batch_size,
            smoothing: 0.0,
            masks: None,
            // No backward pass follows: keep no block's activations.
            recompute: true,
            attention_dropout: None,
        };
        let tape = forward(layout, params, &batch, bufs);
        sum += tape.loss;
        tape.recycle(bufs);
    }
    sum / hp.eval_batches.max(1) as f64
}

/// A trained model's validation loss, computed as its run computed it.
pub fn validation_loss(model: &Gpt, tokens: &[u32], hp: &LmHyperparameters) -> f64 {
    let [vocab_size, _] = model.token_embedding().dims();
    let config = hp.config(vocab_size);
    let layout = Layout::new(&config);
    let params = layout.pack(&GptWeights::from_model(model, &config));
    evaluate(&layout, &params, tokens, hp, &mut Buffers::default())
}

/// Applies one step's update: clipping by global norm, decoupled decay on matrices, AdamW.
/// Returns the gradients' global norm before clipping.
fn update(state: &mut State, hp: &LmHyperparameters, mut grads: Vec<f32>, lr: f64) -> f64 {
    // Partial sums over fixed chunks, added in order: the same norm on any number of threads.
    let partials: Vec<f64> = grads
        .par_chunks(1 << 14)
        .map(|c| c.iter().map(|g| (*g as f64) * (*g as f64)).sum::<f64>())
        .collect();
    let norm = partials.iter().sum::<f64>().sqrt();
    if hp.grad_clip > 0.0 && norm > hp.grad_clip {
        let factor = (hp.grad_clip / (norm + 1e-6)) as f32;
        grads.iter_mut().for_each(|g| *g *= factor);
    }
    if hp.weight_decay > 0.0 {
        let factor = (1.0 - lr * hp.weight_decay) as f32;
        for range in &state.layout.decayed {
            state.params[range.clone()]
                .iter_mut()
                .for_each(|p| *p *= factor);
        }
    }
    state.optimizer.step(&mut state.params, &grads, lr as f32);
    norm
}

fn snapshot(
    state: &State,
    step: u64,
    evaluations: &[Evaluation],
    best: &Option<Vec<u8>>,
) -> Result<LmCheckpoint, TrainError> {
    Ok(LmCheckpoint {
        step,
        evaluations: evaluations.to_vec(),
        model: weights(&state.model())?,
        optimizer: state.optimizer.to_bytes(),
        best_model: best.clone(),
    })
}

fn start(
    hp: &LmHyperparameters,
    config: &GptConfig,
    resume: Option<&LmCheckpoint>,
) -> Result<State, TrainError> {
    let device = Device::flex();
    let Some(checkpoint) = resume else {
        // Parameters initialise lazily: reading them (`from_model`) is what draws, so it
        // happens under the lock, right after seeding.
        let _guard = crate::neural::init_lock();
        device.seed(hp.seed);
        return Ok(State::from_model(&Gpt::new(config, &device), config));
    };
    let model = load_weights(Gpt::new(config, &device), &checkpoint.model)?;
    let mut state = State::from_model(&model, config);
    state.optimizer = AdamW::from_bytes(&checkpoint.optimizer, state.layout.len)?;
    Ok(state)
}

/// Trains from `resume` (or from scratch) until `max_steps`, early stopping, or a stop from
/// `control`.
pub fn train(
    hp: &LmHyperparameters,
    data: &LmData<'_>,
    resume: Option<&LmCheckpoint>,
    control: &Control,
    observer: &mut dyn LmObserver,
) -> Result<StepRun<Gpt>, TrainError> {
    let config = hp.config(data.vocab_size);
    let mut state = start(hp, &config, resume)?;
    let first_step = resume.map_or(0, |c| c.step);
    let mut evaluations = resume.map_or_else(Vec::new, |c| c.evaluations.clone());
    let mut best_model = resume.and_then(|c| c.best_model.clone());
    let (mut loss_sum, mut losses, mut window_tokens) = (0.0, 0u64, 0usize);
    let mut window_start = Instant::now();
    let mut stopped_early = false;
    for step in first_step..hp.max_steps {
        if let Some(stop) = control.requested() {
            if stop == Stop::Pause {
                observer.checkpoint(&snapshot(&state, step, &evaluations, &best_model)?)?;
            }
            return finish(
                state.model(),
                evaluations,
                best_model,
                Some(stop),
                false,
                hp,
            );
        }
        let (grads, loss) = gradients(&mut state, hp, data, step);
        loss_sum += loss;
        losses += 1;
        window_tokens += hp.batch_size * hp.block_size * hp.grad_accumulation.max(1);
        let lr = hp.learning_rate(step);
        let grad_norm = update(&mut state, hp, grads, lr);
        let done = step + 1;
        observer.step(done);
        if done % hp.eval_interval != 0 && done != hp.max_steps {
            continue;
        }
        let seconds = window_start.elapsed().as_secs_f64();
        let evaluation = Evaluation {
            seconds,
            step: done,
            train_loss: loss_sum / losses as f64,
            val_loss: evaluate(
                &state.layout,
                &state.params,
                data.validation,
                hp,
                &mut state.buffers,
            ),
            learning_rate: lr,
            tokens_per_second: window_tokens as f64 / seconds.max(1e-9),
            grad_norm,
            values: Default::default(),
        };
        observer.evaluation(&evaluation);
        evaluations.push(evaluation);
        if let Some(es) = &hp.early_stopping {
            let (best, patience_spent) = early_stopping_state(es, &evaluations);
            if best == Some(evaluations.len() - 1) {
                best_model = Some(weights(&state.model())?);
            }
            stopped_early = patience_spent;
        }
        if stopped_early {
            break;
        }
        if done < hp.max_steps {
            observer.checkpoint(&snapshot(&state, done, &evaluations, &best_model)?)?;
        }
        (loss_sum, losses, window_tokens) = (0.0, 0, 0);
        window_start = Instant::now();
    }
    finish(
        state.model(),
        evaluations,
        best_model,
        None,
        stopped_early,
        hp,
    )
}
