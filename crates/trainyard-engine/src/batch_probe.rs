//! `batch_size: "auto"`: every batch size that fits the memory budget trains for a moment on a
//! throwaway copy of the network, and the run trains with the fastest. The choice is recorded in
//! the checkpoint, so a resumed run keeps it and stays exact.

use std::time::{Duration, Instant};

use trainyard_core::{Hyperparameters, ProbedBatchSize};
use trainyard_data::{SeededRng, Table};

use crate::learner::Learner;
use crate::memory::MemoryEstimate;
use crate::network::DropoutMasks;

/// The smallest batch size tried, and the largest: beyond it an epoch of these datasets has too
/// few updates for the default epochs to converge, whatever the speed.
const SMALLEST: usize = 16;
const LARGEST: usize = 1024;
/// Each epoch keeps at least this many steps.
const MIN_STEPS_PER_EPOCH: usize = 8;
/// How long each batch size trains once warm; at least `MIN_TIMED_STEPS` steps are timed.
const PROBE_TIME: Duration = Duration::from_millis(150);
const MIN_TIMED_STEPS: usize = 2;
const MAX_TIMED_STEPS: usize = 50;

/// The batch sizes worth trying: powers of two from 16 up to the largest that fits the budget
/// (`budget_mb` 0: none), at most 1024 and at most an eighth of the training rows. Never empty:
/// a tiny dataset or budget still gets the largest power of two that is allowed, or 1.
pub(crate) fn candidates(estimate: &MemoryEstimate, budget_mb: u64, n_train: usize) -> Vec<usize> {
    let fits = |batch: usize| budget_mb == 0 || estimate.mb_at(batch) <= budget_mb as f64;
    let cap = LARGEST.min(n_train / MIN_STEPS_PER_EPOCH).max(1);
    let mut out: Vec<usize> = std::iter::successors(Some(SMALLEST), |b| Some(b * 2))
        .take_while(|&b| b <= cap && fits(b))
        .collect();
    if out.is_empty() {
        let mut batch = cap.min(SMALLEST).next_power_of_two();
        while batch > 1 && (batch > cap || !fits(batch)) {
            batch /= 2;
        }
        out.push(batch);
    }
    out
}

/// The fastest batch size; a tie goes to the smaller one (more updates per epoch).
pub(crate) fn fastest(probed: &[ProbedBatchSize]) -> u32 {
    probed
        .iter()
        .fold(None::<&ProbedBatchSize>, |best, p| match best {
            Some(b) if b.samples_per_second >= p.samples_per_second => Some(b),
            _ => Some(p),
        })
        .map_or(SMALLEST as u32, |p| p.batch_size)
}

/// What a probe trains: the network as initialised, and the training rows.
pub(crate) struct ProbeSetup<'a> {
    pub learner: &'a dyn Learner,
    pub hp: &'a Hyperparameters,
    pub train: &'a Table,
}

pub(crate) fn probe(
    setup: &ProbeSetup,
    candidates: &[usize],
    mut progress: impl FnMut(usize, usize),
) -> Vec<ProbedBatchSize> {
    let n = setup.train.len();
    let mut order: Vec<usize> = (0..n).collect();
    SeededRng::derive(setup.hp.seed, 30_000).shuffle(&mut order);
    let mut probed = Vec::with_capacity(candidates.len());
    for (i, &batch) in candidates.iter().enumerate() {
        let samples_per_second = time_batch_size(setup, &order, batch);
        probed.push(ProbedBatchSize {
            batch_size: batch as u32,
            samples_per_second,
        });
        progress(i + 1, candidates.len());
    }
    probed
}

fn time_batch_size(setup: &ProbeSetup, order: &[usize], batch: usize) -> f64 {
    let mut learner = setup.learner.fresh_copy();
    let mut step = |i: usize| {
        let start = (i * batch) % order.len();
        let rows: Vec<usize> = (0..batch)
            .map(|k| order[(start + k) % order.len()])
            .collect();
        let (x, y) = learner.batch(setup.train, &rows, None);
        let mut masks = DropoutMasks {
            rng: SeededRng::derive(setup.hp.seed, 1 << 41 | i as u64),
        };
        learner.step(x, &y, setup.hp.learning_rate, &mut masks);
    };
    step(0);
    let started = Instant::now();
    let mut timed = 0;
    while timed < MAX_TIMED_STEPS && (timed < MIN_TIMED_STEPS || started.elapsed() < PROBE_TIME) {
        step(timed + 1);
        timed += 1;
    }
    (timed * batch) as f64 / started.elapsed().as_secs_f64().max(1e-9)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn estimate(fixed_mb: f64, per_sample_mb: f64) -> MemoryEstimate {
        MemoryEstimate {
            fixed_bytes: fixed_mb * 1048576.0,
            per_sample_bytes: per_sample_mb * 1048576.0,
        }
    }

    #[test]
    fn candidates_stop_at_the_budget_the_cap_and_an_eighth_of_the_rows() {
        let small = estimate(10.0, 0.01);
        assert_eq!(
            candidates(&small, 0, 60_000),
            vec![16, 32, 64, 128, 256, 512, 1024]
        );
        // 10 MB + 0.1 MB a sample: 64 samples fit 20 MB, 128 do not.
        assert_eq!(
            candidates(&estimate(10.0, 0.1), 20, 60_000),
            vec![16, 32, 64]
        );
        assert_eq!(candidates(&small, 0, 1_000), vec![16, 32, 64]);
        // Too few rows for 16: the largest power of two under an eighth of them.
        assert_eq!(candidates(&small, 0, 40), vec![4]);
        assert_eq!(candidates(&small, 0, 3), vec![1]);
        // A budget that 16 samples do not fit still gets the largest batch that does.
        assert_eq!(candidates(&estimate(10.0, 1.0), 14, 60_000), vec![4]);
    }

    #[test]
    fn the_fastest_wins_and_a_tie_goes_to_the_smaller() {
        let p = |batch_size, samples_per_second| ProbedBatchSize {
            batch_size,
            samples_per_second,
        };
        assert_eq!(fastest(&[p(16, 10.0), p(32, 30.0), p(64, 20.0)]), 32);
        assert_eq!(fastest(&[p(16, 30.0), p(32, 30.0)]), 16);
    }
}
