//! Unsupervised anomaly detectors on numeric rows: isolation forest, ECOD, HBOS and (for
//! streams) half-space trees. Each fits on
//! unlabeled rows and scores rows so that higher means more anomalous. [`family`] serves them
//! through the model-family seam: hyperparameters ([`spec`]), training, the model file and
//! serving ([`model`]).

mod ecod;
pub mod family;
mod half_space_trees;
mod hbos;
mod isolation_forest;
pub mod metrics;
pub mod model;
pub mod spec;

pub use ecod::Ecod;
pub use half_space_trees::{HalfSpaceTrees, HalfSpaceTreesParams};
pub use hbos::Hbos;
pub use isolation_forest::{IsolationForest, IsolationForestParams};

/// Rows as a flat row-major slice with `d` columns.
#[derive(Debug, Clone, Copy)]
pub struct Rows<'a> {
    pub x: &'a [f32],
    pub d: usize,
}

impl<'a> Rows<'a> {
    pub fn new(x: &'a [f32], d: usize) -> Self {
        assert!(d > 0 && x.len().is_multiple_of(d), "rows of {d} columns");
        Rows { x, d }
    }

    pub fn len(&self) -> usize {
        self.x.len() / self.d
    }

    pub fn is_empty(&self) -> bool {
        self.x.is_empty()
    }

    pub fn row(&self, i: usize) -> &'a [f32] {
        &self.x[i * self.d..(i + 1) * self.d]
    }

    /// Column `j`'s values, in row order.
    pub fn column(&self, j: usize) -> Vec<f32> {
        (0..self.len()).map(|i| self.x[i * self.d + j]).collect()
    }
}

/// A fitted detector.
pub trait Detector {
    /// One score per row; higher is more anomalous.
    fn score(&self, rows: Rows<'_>) -> Vec<f64>;
}
