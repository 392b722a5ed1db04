//! Datasets with known outliers, for evaluating anomaly detectors.

use crate::{DataError, SeededRng, load_builtin};

/// Rows split for an unsupervised detector: fit on `train` (no labels), evaluate on `test`.
/// Features are standardised with the training part's mean and standard deviation.
#[derive(Debug, Clone)]
pub struct OutlierSplit {
    pub d: usize,
    pub train: Vec<f32>,
    pub train_outlier: Vec<bool>,
    pub test: Vec<f32>,
    pub test_outlier: Vec<bool>,
    /// The standardisation fitted on the training rows, per column.
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
}

/// Shuttle's ODDS variant (the built-in `shuttle`) split `train_fraction`/rest after a shuffle
/// seeded by `seed`.
pub fn shuttle_odds_split(seed: u64, train_fraction: f64) -> Result<OutlierSplit, DataError> {
    let ds = load_builtin("shuttle")?;
    let outlier: Vec<bool> = ds.table.y.iter().map(|y| *y == 1.0).collect();
    Ok(outlier_split(
        &ds.table.x,
        ds.info.n_features,
        &outlier,
        seed,
        train_fraction,
    ))
}

/// Shuffles rows with a generator seeded by `seed`, keeps the first `train_fraction` for
/// fitting and standardises every row with the fitting part's statistics.
pub fn outlier_split(
    x: &[f32],
    d: usize,
    outlier: &[bool],
    seed: u64,
    train_fraction: f64,
) -> OutlierSplit {
    let n = x.len() / d;
    let mut order: Vec<usize> = (0..n).collect();
    SeededRng::new(seed).shuffle(&mut order);
    let cut = ((n as f64 * train_fraction) as usize).clamp(1, n);
    let (train, test) = order.split_at(cut);
    let row = |i: usize| &x[i * d..(i + 1) * d];
    let (mean, std) = moments(train.iter().map(|i| row(*i)), d);
    let scaled = |rows: &[usize]| -> Vec<f32> {
        let mut out = Vec::with_capacity(rows.len() * d);
        for i in rows {
            out.extend((0..d).map(|j| ((row(*i)[j] as f64 - mean[j]) / std[j]) as f32));
        }
        out
    };
    let labels = |rows: &[usize]| -> Vec<bool> {
        if outlier.is_empty() {
            vec![]
        } else {
            rows.iter().map(|i| outlier[*i]).collect()
        }
    };
    OutlierSplit {
        d,
        train: scaled(train),
        train_outlier: labels(train),
        test: scaled(test),
        test_outlier: labels(test),
        mean,
        std,
    }
}

/// Per-column mean and standard deviation (1 for a constant column).
fn moments<'a>(rows: impl Iterator<Item = &'a [f32]>, d: usize) -> (Vec<f64>, Vec<f64>) {
    let (mut sum, mut sq, mut n) = (vec![0f64; d], vec![0f64; d], 0f64);
    for x in rows {
        for j in 0..d {
            sum[j] += x[j] as f64;
            sq[j] += (x[j] as f64).powi(2);
        }
        n += 1.0;
    }
    let mean: Vec<f64> = sum.iter().map(|s| s / n.max(1.0)).collect();
    let std = (0..d)
        .map(|j| {
            let v = sq[j] / n.max(1.0) - mean[j] * mean[j];
            if v > 0.0 { v.sqrt() } else { 1.0 }
        })
        .collect();
    (mean, std)
}
