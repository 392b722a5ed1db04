//! HBOS (Goldstein and Dengel, 2012): a histogram per feature (equal-width bins over the
//! training range); a row's score is the sum over features of -log(density + alpha) of the bin
//! its value falls in. Values outside the training range by more than `tol` bins get density 0.

use serde::{Deserialize, Serialize};

use super::{Detector, Rows};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hbos {
    pub n_bins: usize,
    pub alpha: f64,
    pub tol: f64,
    /// Per feature: the low edge, the bin width and each bin's density.
    histograms: Vec<(f64, f64, Vec<f64>)>,
}

impl Hbos {
    pub fn fit(rows: Rows<'_>, n_bins: usize, alpha: f64, tol: f64) -> Self {
        let n_bins = n_bins.max(1);
        let n = rows.len().max(1) as f64;
        let histograms = (0..rows.d)
            .map(|j| {
                let column = rows.column(j);
                let lo = column.iter().copied().fold(f32::INFINITY, f32::min) as f64;
                let hi = column.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
                // A constant feature gets one unit-wide bin around its value.
                let width = if hi > lo {
                    (hi - lo) / n_bins as f64
                } else {
                    1.0
                };
                let lo = if hi > lo { lo } else { lo - 0.5 };
                let mut counts = vec![0usize; n_bins];
                for v in column {
                    let bin = (((v as f64 - lo) / width) as usize).min(n_bins - 1);
                    counts[bin] += 1;
                }
                let density = counts.iter().map(|c| *c as f64 / (n * width)).collect();
                (lo, width, density)
            })
            .collect();
        Hbos {
            n_bins,
            alpha,
            tol,
            histograms,
        }
    }
}

impl Detector for Hbos {
    fn score(&self, rows: Rows<'_>) -> Vec<f64> {
        (0..rows.len())
            .map(|i| {
                let row = rows.row(i);
                self.histograms
                    .iter()
                    .enumerate()
                    .map(|(j, (lo, width, density))| {
                        let position = (row[j] as f64 - lo) / width;
                        let last = self.n_bins as f64;
                        let d = if position < -self.tol || position > last + self.tol {
                            0.0
                        } else {
                            density[(position.max(0.0) as usize).min(self.n_bins - 1)]
                        };
                        -(d + self.alpha).ln()
                    })
                    .sum()
            })
            .collect()
    }
}
