//! Isolation forest (Liu, Ting and Zhou, 2008) with scikit-learn's conventions: each tree grows
//! on `max_samples` rows drawn without replacement (default min(256, n)) to depth
//! ceil(log2(max_samples)); a row's score is 2^(-E[h(x)] / c(max_samples)), where h is the path
//! length plus c(size) of the leaf it lands in, and c(n) = 2H(n-1) - 2(n-1)/n is the average
//! path length of an unsuccessful search in a binary search tree. 0.5 means "no evidence"; near
//! 1 is anomalous. Tree `i` is a pure function of (seed, i), so a fit can stop and resume between
//! trees and end identical.

use serde::{Deserialize, Serialize};
use trainyard_data::SeededRng;

use super::{Detector, Rows};
use crate::Control;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IsolationForestParams {
    pub n_estimators: usize,
    /// Rows per tree; None: min(256, n).
    pub max_samples: Option<usize>,
    pub seed: u64,
}

impl Default for IsolationForestParams {
    fn default() -> Self {
        IsolationForestParams {
            n_estimators: 100,
            max_samples: None,
            seed: 42,
        }
    }
}

/// A node, flat so that scoring walks plain arrays: a split sends rows with
/// `row[feature] < value` to `left`, the rest to `right`; a leaf (`feature == LEAF`) holds in
/// `value` the whole path length of a row that ends there (depth + c(size)).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Node {
    feature: u32,
    value: f32,
    left: u32,
    right: u32,
}

const LEAF: u32 = u32::MAX;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tree {
    nodes: Vec<Node>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IsolationForest {
    pub params: IsolationForestParams,
    /// The rows each tree was grown on.
    pub samples: usize,
    trees: Vec<Tree>,
}

const EULER_GAMMA: f64 = 0.577_215_664_901_532_9;

/// Average path length of an unsuccessful search among `n` rows.
pub fn c(n: usize) -> f64 {
    match n {
        0 | 1 => 0.0,
        2 => 1.0,
        n => {
            let n = n as f64;
            2.0 * ((n - 1.0).ln() + EULER_GAMMA) - 2.0 * (n - 1.0) / n
        }
    }
}

impl IsolationForest {
    /// An empty forest to grow (see [`IsolationForest::grow_tree`]).
    pub fn new(params: IsolationForestParams, n_rows: usize) -> Self {
        let samples = params.max_samples.unwrap_or(256).min(n_rows).max(1);
        IsolationForest {
            params,
            samples,
            trees: Vec::new(),
        }
    }

    /// Fits all trees, checking `control` between them; None when asked to stop. (A trainer that
    /// checkpoints grows trees itself with [`IsolationForest::grow_tree`].)
    pub fn fit(rows: Rows<'_>, params: IsolationForestParams, control: &Control) -> Option<Self> {
        let mut forest = IsolationForest::new(params, rows.len());
        while forest.trees.len() < forest.params.n_estimators {
            if control.requested().is_some() {
                return None;
            }
            forest.grow_tree(rows);
        }
        Some(forest)
    }

    pub fn trees_grown(&self) -> usize {
        self.trees.len()
    }

    /// Grows the next tree.
    pub fn grow_tree(&mut self, rows: Rows<'_>) {
        let index = self.trees.len() as u64;
        let mut rng = SeededRng::derive(self.params.seed, 5 << 40 | index);
        let mut picked: Vec<usize> = (0..rows.len()).collect();
        // A partial Fisher-Yates shuffle: the first `samples` rows, without replacement.
        for i in 0..self.samples {
            let j = i + rng.below(picked.len() - i);
            picked.swap(i, j);
        }
        picked.truncate(self.samples);
        let depth_limit = (self.samples as f64).log2().ceil() as usize;
        let mut nodes = Vec::new();
        build(rows, &mut picked, 0, depth_limit, &mut rng, &mut nodes);
        self.trees.push(Tree { nodes });
    }

    fn path_length(tree: &Tree, row: &[f32]) -> f32 {
        let mut node = tree.nodes[0];
        while node.feature != LEAF {
            let next = if row[node.feature as usize] < node.value {
                node.left
            } else {
                node.right
            };
            node = tree.nodes[next as usize];
        }
        node.value
    }
}

/// Builds the subtree of `rows` indexed by `picked` and returns its node index.
fn build(
    rows: Rows<'_>,
    picked: &mut [usize],
    depth: usize,
    depth_limit: usize,
    rng: &mut SeededRng,
    nodes: &mut Vec<Node>,
) -> u32 {
    let at = nodes.len() as u32;
    nodes.push(Node {
        feature: LEAF,
        value: (depth as f64 + c(picked.len())) as f32,
        left: 0,
        right: 0,
    });
    if picked.len() <= 1 || depth >= depth_limit {
        return at;
    }
    // A random feature that is not constant here (a constant one cannot split: try others).
    let mut features: Vec<usize> = (0..rows.d).collect();
    while !features.is_empty() {
        let feature = features.swap_remove(rng.below(features.len()));
        let (lo, hi) = picked
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &i| {
                let v = rows.x[i * rows.d + feature];
                (lo.min(v), hi.max(v))
            });
        // Also skips NaN-only ranges.
        if hi.partial_cmp(&lo) != Some(std::cmp::Ordering::Greater) {
            continue;
        }
        let threshold = (lo as f64 + rng.next_f64() * (hi as f64 - lo as f64)) as f32;
        // Rounding may land on `lo`; keep both sides non-empty.
        let threshold = if threshold <= lo { hi } else { threshold };
        let split = partition(picked, |i| rows.x[i * rows.d + feature] < threshold);
        let (left_rows, right_rows) = picked.split_at_mut(split);
        let left = build(rows, left_rows, depth + 1, depth_limit, rng, nodes);
        let right = build(rows, right_rows, depth + 1, depth_limit, rng, nodes);
        nodes[at as usize] = Node {
            feature: feature as u32,
            value: threshold,
            left,
            right,
        };
        return at;
    }
    at
}

/// Moves the items for which `left` holds to the front; returns how many there are.
fn partition(items: &mut [usize], left: impl Fn(usize) -> bool) -> usize {
    let mut split = 0;
    for k in 0..items.len() {
        if left(items[k]) {
            items.swap(split, k);
            split += 1;
        }
    }
    split
}

impl Detector for IsolationForest {
    fn score(&self, rows: Rows<'_>) -> Vec<f64> {
        let norm = c(self.samples);
        if self.trees.is_empty() || norm == 0.0 {
            // One training row (or none) isolates nothing: no evidence either way.
            return vec![0.5; rows.len()];
        }
        // Tree by tree, so each tree stays in cache while every row walks it.
        let mut total = vec![0f64; rows.len()];
        for tree in &self.trees {
            for (i, sum) in total.iter_mut().enumerate() {
                *sum += Self::path_length(tree, rows.row(i)) as f64;
            }
        }
        let trees = self.trees.len() as f64;
        total
            .into_iter()
            .map(|sum| 2f64.powf(-(sum / trees) / norm))
            .collect()
    }
}
