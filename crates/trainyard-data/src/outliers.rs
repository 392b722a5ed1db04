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
}

/// Shuttle as ODDS publishes it: class High dropped, every class but Rad.Flow an outlier
/// (49,097 rows, 3,511 outliers), split `train_fraction`/rest after a shuffle seeded by `seed`.
pub fn shuttle_odds_split(seed: u64, train_fraction: f64) -> Result<OutlierSplit, DataError> {
    let ds = load_builtin("shuttle")?;
    let classes = ds.info.classes.clone().unwrap_or_default();
    let index = |name: &str| classes.iter().position(|c| c == name).map(|i| i as f32);
    let (Some(high), Some(normal)) = (index("High"), index("Rad.Flow")) else {
        return Err(DataError::Unknown(
            "shuttle without classes High and Rad.Flow".into(),
        ));
    };
    let d = ds.info.n_features;
    let mut rows: Vec<(&[f32], bool)> = ds
        .table
        .y
        .iter()
        .enumerate()
        .filter(|(_, y)| **y != high)
        .map(|(i, y)| (&ds.table.x[i * d..(i + 1) * d], *y != normal))
        .collect();
    SeededRng::new(seed).shuffle(&mut rows);
    let cut = (rows.len() as f64 * train_fraction) as usize;
    let (train, test) = rows.split_at(cut);
    let (mean, std) = moments(train.iter().map(|(x, _)| *x), d);
    let scale = |x: &[f32]| -> Vec<f32> {
        (0..d)
            .map(|j| ((x[j] as f64 - mean[j]) / std[j]) as f32)
            .collect::<Vec<_>>()
    };
    Ok(OutlierSplit {
        d,
        train: train.iter().flat_map(|(x, _)| scale(x)).collect(),
        train_outlier: train.iter().map(|(_, o)| *o).collect(),
        test: test.iter().flat_map(|(x, _)| scale(x)).collect(),
        test_outlier: test.iter().map(|(_, o)| *o).collect(),
    })
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
