//! What an autoencoder job holds in memory, and the batch size that fits the job's budget.

use trainyard_core::{TrainingEvent, ValidationError};

use super::spec::SaeHyperparameters;
use crate::family::Reporter;

/// Halving stops here: smaller batches make too noisy a gradient to be worth training.
const SMALLEST_BATCH: usize = 32;

/// Memory the job holds: the activations of every layer, and per layer the autoencoder,
/// its gradients and Adam's two moments, plus the batch's dense codes.
pub(super) fn estimated_mb(hp: &SaeHyperparameters, layers: usize, d_in: usize) -> f64 {
    let d_sae = hp.d_sae(d_in) as f64;
    let parameters = 2.0 * d_sae * d_in as f64 * 4.0 * layers as f64;
    let batch = 3.0 * hp.batch_size as f64 * d_sae;
    activations_mb(hp, layers, d_in) + (parameters + batch) * 4.0 / (1 << 20) as f64
}

/// The activations of every layer, training and held-out tokens.
pub(super) fn activations_mb(hp: &SaeHyperparameters, layers: usize, d_in: usize) -> f64 {
    hp.n_tokens as f64 * 1.1 * d_in as f64 * layers as f64 * 4.0 / (1 << 20) as f64
}

/// The requested batch size, halved (not below 32) until the estimate fits `budget_mb`; None
/// when even the smallest does not fit.
pub(super) fn fitting_batch(
    hp: &SaeHyperparameters,
    layers: usize,
    d_in: usize,
    budget_mb: u64,
) -> Option<usize> {
    let mut sized = hp.clone();
    let floor = SMALLEST_BATCH.min(hp.batch_size);
    while estimated_mb(&sized, layers, d_in) > budget_mb as f64 && sized.batch_size > floor {
        sized.batch_size = (sized.batch_size / 2).max(floor);
    }
    (estimated_mb(&sized, layers, d_in) <= budget_mb as f64).then_some(sized.batch_size)
}

/// The estimate at the batch the job will train with (the fitting one, else as asked).
pub(super) fn fitted_mb(
    hp: &SaeHyperparameters,
    layers: usize,
    d_in: usize,
    budget_mb: u64,
) -> f64 {
    let sized = SaeHyperparameters {
        batch_size: fitting_batch(hp, layers, d_in, budget_mb).unwrap_or(hp.batch_size),
        ..hp.clone()
    };
    estimated_mb(&sized, layers, d_in)
}

/// Refuses a job that does not fit even at the smallest batch, saying what to lower.
pub(super) fn check_fits(
    hp: &SaeHyperparameters,
    layers: usize,
    d_in: usize,
    budget_mb: u64,
) -> Result<(), ValidationError> {
    if fitting_batch(hp, layers, d_in, budget_mb).is_some() {
        return Ok(());
    }
    let smallest = SaeHyperparameters {
        batch_size: SMALLEST_BATCH.min(hp.batch_size),
        ..hp.clone()
    };
    let needed = estimated_mb(&smallest, layers, d_in);
    Err(ValidationError::new(
        "hyperparameters",
        format!(
            "the job needs about {needed:.0} MB for {layers} layer(s) of {} tokens even at batch \
             size {}, over the memory budget of {budget_mb} MB; lower n_tokens, expansion_factor \
             or the number of layers, or raise the server's --job-memory-mb",
            hp.n_tokens, smallest.batch_size
        ),
    ))
}

/// Trains at the batch size that fits, and says so on the run when it had to shrink.
/// `n_tokens` is what the job holds (an uploaded matrix's rows).
pub(super) fn shrink_to_budget(
    hp: &mut SaeHyperparameters,
    n_tokens: usize,
    shape: (usize, usize),
    budget_mb: u64,
    reporter: &mut dyn Reporter,
) {
    let (layers, d_in) = shape;
    let sized = SaeHyperparameters {
        n_tokens,
        ..hp.clone()
    };
    let Some(batch) = fitting_batch(&sized, layers, d_in, budget_mb) else {
        // Checked at create time; a smaller budget since then trains as asked.
        return;
    };
    if batch != hp.batch_size {
        reporter.event(TrainingEvent::BatchSizeReduced {
            from: hp.batch_size as u32,
            to: batch as u32,
            estimated_mb: estimated_mb(&sized, layers, d_in),
            budget_mb: budget_mb.min(u32::MAX as u64) as u32,
        });
        hp.batch_size = batch;
    }
}

/// Halves the batch once for each time the job's worker was killed (out of memory, it seems),
/// not below 32, and says so on the run.
pub(super) fn halve_after_kills(
    hp: &mut SaeHyperparameters,
    halvings: u32,
    reporter: &mut dyn Reporter,
) {
    let floor = SMALLEST_BATCH.min(hp.batch_size);
    let halved = (hp.batch_size >> halvings.min(31)).max(floor);
    if halved < hp.batch_size {
        reporter.event(crate::family::halved_after_kills(
            halvings,
            hp.batch_size,
            halved,
        ));
        hp.batch_size = halved;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_batch_halves_until_it_fits_and_not_below_the_floor() {
        let hp = SaeHyperparameters {
            n_tokens: 1000,
            batch_size: 4096,
            ..super::super::spec::resolve(&serde_json::Map::new()).unwrap()
        };
        // d_in 128, expansion 8: d_sae 1024; parameters 4 MB, a 4096 batch 48 MB.
        let full = estimated_mb(&hp, 1, 128);
        assert!(fitting_batch(&hp, 1, 128, full.ceil() as u64) == Some(4096));
        let half = fitting_batch(&hp, 1, 128, 30).unwrap();
        assert!((32..4096).contains(&half), "{half}");
        assert!(
            estimated_mb(
                &SaeHyperparameters {
                    batch_size: half,
                    ..hp.clone()
                },
                1,
                128
            ) <= 30.0
        );
        assert_eq!(fitting_batch(&hp, 1, 128, 4), None);
        assert!(
            check_fits(&hp, 1, 128, 4)
                .unwrap_err()
                .message
                .contains("even at batch size 32")
        );
    }
}
