//! The seeded train/validation split, and standardisation fitted on the training part only.

use serde::{Deserialize, Serialize};
use trainyard_core::Task;

use crate::{Dataset, SeededRng, Table};

/// Standardises features (and regression targets). Fitted on training rows only and stored
/// with the model, so prediction applies exactly the transform training saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scaler {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    /// Identity (0, 1) for classification.
    pub target_mean: f32,
    pub target_std: f32,
}

impl Scaler {
    /// Per-feature statistics for tabular data; one shared mean and std for images, so that
    /// pixels keep their relative scale.
    pub fn fit(train: &Table, task: Task, per_feature: bool) -> Self {
        let d = train.n_features;
        let n = train.len().max(1) as f64;
        let (mean, std) = if per_feature {
            let mut sum = vec![0f64; d];
            let mut sq = vec![0f64; d];
            for row in train.x.chunks_exact(d) {
                for (j, v) in row.iter().enumerate() {
                    sum[j] += *v as f64;
                    sq[j] += (*v as f64) * (*v as f64);
                }
            }
            let mean: Vec<f64> = sum.iter().map(|s| s / n).collect();
            let std = sq
                .iter()
                .zip(&mean)
                .map(|(s, m)| guard_std((s / n - m * m).max(0.0).sqrt()))
                .collect();
            (mean.iter().map(|m| *m as f32).collect(), std)
        } else {
            let (m, s) = mean_std(train.x.iter().map(|v| *v as f64));
            (vec![m as f32; d], vec![guard_std(s); d])
        };
        let (target_mean, target_std) = match task {
            Task::Regression => {
                let (m, s) = mean_std(train.y.iter().map(|v| *v as f64));
                (m as f32, guard_std(s))
            }
            Task::Classification | Task::Unlabeled | Task::Text => (0.0, 1.0),
        };
        Scaler {
            mean,
            std,
            target_mean,
            target_std,
        }
    }

    pub fn n_features(&self) -> usize {
        self.mean.len()
    }

    /// Standardises row-major features in place.
    pub fn transform(&self, x: &mut [f32]) {
        let d = self.mean.len();
        for row in x.chunks_exact_mut(d) {
            for (j, v) in row.iter_mut().enumerate() {
                *v = (*v - self.mean[j]) / self.std[j];
            }
        }
    }

    pub fn transform_target(&self, y: f32) -> f32 {
        (y - self.target_mean) / self.target_std
    }

    pub fn inverse_target(&self, y: f32) -> f32 {
        y * self.target_std + self.target_mean
    }

    fn apply(&self, mut table: Table) -> Table {
        self.transform(&mut table.x);
        for y in &mut table.y {
            *y = self.transform_target(*y);
        }
        table
    }
}

fn mean_std(values: impl Iterator<Item = f64> + Clone) -> (f64, f64) {
    let (n, sum) = values
        .clone()
        .fold((0usize, 0f64), |(n, s), v| (n + 1, s + v));
    let mean = sum / n.max(1) as f64;
    let var = values.map(|v| (v - mean) * (v - mean)).sum::<f64>() / n.max(1) as f64;
    (mean, var.sqrt())
}

/// A constant feature has no spread; dividing by 1 leaves it at zero after centring.
fn guard_std(std: f64) -> f32 {
    if std < 1e-8 { 1.0 } else { std as f32 }
}

/// A dataset split and scaled for training.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub train: Table,
    pub validation: Table,
    /// The dataset's own held-out test split, scaled the same way.
    pub test: Option<Table>,
    pub scaler: Scaler,
}

/// Shuffles rows with `seed`, holds out `validation_split` of them, fits the scaler on the rest.
pub fn prepare(ds: &Dataset, validation_split: f64, seed: u64) -> Prepared {
    let n = ds.table.len();
    let mut order: Vec<usize> = (0..n).collect();
    SeededRng::derive(seed, 1).shuffle(&mut order);
    let n_val =
        ((n as f64 * validation_split).round() as usize).clamp(1, n.saturating_sub(1).max(1));
    let (val_idx, train_idx) = order.split_at(n_val);
    let train = ds.table.select(train_idx);
    let scaler = Scaler::fit(&train, ds.info.task, ds.info.image_shape.is_none());
    Prepared {
        validation: scaler.apply(ds.table.select(val_idx)),
        test: ds.test.clone().map(|t| scaler.apply(t)),
        train: scaler.apply(train),
        scaler,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SyntheticSpec;

    #[test]
    fn split_is_seeded_and_disjoint() {
        let ds = SyntheticSpec {
            n_samples: 100,
            ..Default::default()
        }
        .generate();
        let a = prepare(&ds, 0.2, 1);
        let b = prepare(&ds, 0.2, 1);
        let c = prepare(&ds, 0.2, 2);
        assert_eq!(a.train.len(), 80);
        assert_eq!(a.validation.len(), 20);
        assert_eq!(a.train, b.train);
        assert_ne!(a.train, c.train);
    }

    #[test]
    fn scaler_is_fitted_on_training_rows_only() {
        let ds = SyntheticSpec {
            n_samples: 200,
            ..Default::default()
        }
        .generate();
        let p = prepare(&ds, 0.25, 3);
        let d = p.train.n_features;
        for j in 0..d {
            let col: Vec<f32> = p.train.x.iter().skip(j).step_by(d).copied().collect();
            let mean = col.iter().sum::<f32>() / col.len() as f32;
            assert!(mean.abs() < 1e-4, "train column {j} mean {mean}");
        }
        let val_mean: f32 =
            p.validation.x.iter().step_by(d).sum::<f32>() / p.validation.len() as f32;
        assert!(
            val_mean.abs() > 1e-6,
            "validation is transformed, not refitted"
        );
    }

    #[test]
    fn regression_targets_round_trip() {
        let ds = SyntheticSpec {
            task: Task::Regression,
            n_samples: 50,
            ..Default::default()
        }
        .generate();
        let p = prepare(&ds, 0.2, 0);
        let y = 3.25;
        assert!((p.scaler.inverse_target(p.scaler.transform_target(y)) - y).abs() < 1e-5);
    }
}
