//! ECOD (Li et al., 2022): a row is anomalous when its values sit in the tails of each
//! feature's empirical distribution. Per feature, the left- and right-tail probabilities are
//! read from the training data's ECDF (counting the scored value itself, so unseen extremes stay
//! finite); the tail that matches the feature's skew is used, never less than the mean of both
//! tails; the score is the sum over features of -log of those probabilities. No hyperparameters.

use serde::{Deserialize, Serialize};

use super::{Detector, Rows};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ecod {
    /// Each feature's training values, sorted.
    sorted: Vec<Vec<f32>>,
    /// The sign of each feature's skewness (-1, 0 or 1).
    skew: Vec<i8>,
}

impl Ecod {
    pub fn fit(rows: Rows<'_>) -> Self {
        let mut sorted = Vec::with_capacity(rows.d);
        let mut skew = Vec::with_capacity(rows.d);
        for j in 0..rows.d {
            let mut column = rows.column(j);
            skew.push(skewness_sign(&column));
            column.sort_by(f32::total_cmp);
            sorted.push(column);
        }
        Ecod { sorted, skew }
    }
}

fn skewness_sign(values: &[f32]) -> i8 {
    let n = values.len() as f64;
    let mean = values.iter().map(|v| *v as f64).sum::<f64>() / n;
    let (m2, m3) = values.iter().fold((0.0, 0.0), |(m2, m3), v| {
        let d = *v as f64 - mean;
        (m2 + d * d, m3 + d * d * d)
    });
    let skew = if m2 > 0.0 {
        (m3 / n) / (m2 / n).powf(1.5)
    } else {
        0.0
    };
    if skew > 0.0 {
        1
    } else if skew < 0.0 {
        -1
    } else {
        0
    }
}

impl Detector for Ecod {
    fn score(&self, rows: Rows<'_>) -> Vec<f64> {
        (0..rows.len())
            .map(|i| {
                let row = rows.row(i);
                let mut total = 0.0;
                for (j, column) in self.sorted.iter().enumerate() {
                    let n = column.len() as f64;
                    let v = row[j];
                    let at_or_below = column.partition_point(|x| *x <= v) as f64;
                    let at_or_above = n - column.partition_point(|x| *x < v) as f64;
                    let left = -((at_or_below + 1.0) / (n + 1.0)).ln();
                    let right = -((at_or_above + 1.0) / (n + 1.0)).ln();
                    let skewed = match self.skew[j] {
                        -1 => left,
                        1 => right,
                        _ => left + right,
                    };
                    total += skewed.max((left + right) / 2.0);
                }
                total
            })
            .collect()
    }
}
