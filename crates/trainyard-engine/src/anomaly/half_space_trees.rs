//! Half-space trees (Tan, Ting and Liu, 2011): a streaming detector that learns online. Each tree
//! halves a randomly perturbed work space down to a fixed height; every node counts the rows of
//! the last complete window (`reference`) and of the window being filled (`latest`). A row's
//! mass is the sum, over trees, of `reference * 2^depth` at the deepest node it reaches whose
//! reference mass is still large enough; little mass means anomalous. Scoring and learning are
//! separate, so a stream can score then learn each row, and the whole state serializes for
//! durable sessions.

use serde::{Deserialize, Serialize};
use trainyard_data::SeededRng;

use super::{Detector, Rows};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HalfSpaceTreesParams {
    pub n_trees: usize,
    pub height: u32,
    pub window_size: usize,
    pub seed: u64,
}

impl Default for HalfSpaceTreesParams {
    fn default() -> Self {
        HalfSpaceTreesParams {
            n_trees: 25,
            height: 15,
            window_size: 250,
            seed: 42,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Tree {
    /// Complete binary tree in heap order: node `k` has children `2k+1` and `2k+2`.
    feature: Vec<u32>,
    #[serde(with = "exact_floats")]
    split: Vec<f64>,
    reference: Vec<u32>,
    latest: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HalfSpaceTrees {
    pub params: HalfSpaceTreesParams,
    /// Each feature's range in the rows the trees were set up with; rows are scaled by it.
    #[serde(with = "exact_floats")]
    low: Vec<f64>,
    #[serde(with = "exact_floats")]
    span: Vec<f64>,
    trees: Vec<Tree>,
    /// Rows learned in the current window.
    in_window: usize,
    /// Complete windows learned: scores mean something from the first one on.
    windows: u64,
}

impl HalfSpaceTrees {
    /// Sets up the trees on the ranges of `rows` (at least one row) and learns them.
    pub fn fit(rows: Rows<'_>, params: HalfSpaceTreesParams) -> Self {
        let d = rows.d;
        let mut low = vec![f64::INFINITY; d];
        let mut high = vec![f64::NEG_INFINITY; d];
        for i in 0..rows.len() {
            for (j, v) in rows.row(i).iter().enumerate() {
                low[j] = low[j].min(*v as f64);
                high[j] = high[j].max(*v as f64);
            }
        }
        let span = low
            .iter()
            .zip(&high)
            .map(|(l, h)| if h > l { h - l } else { 1.0 })
            .collect();
        let nodes = (1usize << (params.height + 1)) - 1;
        let trees = (0..params.n_trees)
            .map(|t| {
                let mut rng = SeededRng::derive(params.seed, 6 << 40 | t as u64);
                // A perturbed work space around [0, 1] in every dimension.
                let mut lo = vec![0f64; d];
                let mut hi = vec![0f64; d];
                for j in 0..d {
                    let s = rng.next_f64();
                    let r = 2.0 * s.max(1.0 - s);
                    lo[j] = s - r;
                    hi[j] = s + r;
                }
                let mut tree = Tree {
                    feature: vec![0; nodes],
                    split: vec![0.0; nodes],
                    reference: vec![0; nodes],
                    latest: vec![0; nodes],
                };
                build(&mut tree, 0, &mut lo, &mut hi, &mut rng);
                tree
            })
            .collect();
        let mut model = HalfSpaceTrees {
            params,
            low,
            span,
            trees,
            in_window: 0,
            windows: 0,
        };
        for i in 0..rows.len() {
            model.learn(rows.row(i));
        }
        model
    }

    fn scaled(&self, row: &[f32]) -> Vec<f64> {
        row.iter()
            .enumerate()
            .map(|(j, v)| (*v as f64 - self.low[j]) / self.span[j])
            .collect()
    }

    /// Counts `row` in the latest window; a full window becomes the reference.
    pub fn learn(&mut self, row: &[f32]) {
        let x = self.scaled(row);
        let height = self.params.height;
        for tree in &mut self.trees {
            let mut k = 0usize;
            for depth in 0..=height {
                tree.latest[k] += 1;
                if depth == height {
                    break;
                }
                k = child(tree, k, &x);
            }
        }
        self.in_window += 1;
        if self.in_window == self.params.window_size {
            for tree in &mut self.trees {
                std::mem::swap(&mut tree.reference, &mut tree.latest);
                tree.latest.iter_mut().for_each(|m| *m = 0);
            }
            self.in_window = 0;
            self.windows += 1;
        }
    }

    /// Complete windows learned so far.
    pub fn windows(&self) -> u64 {
        self.windows
    }

    fn mass(&self, row: &[f32]) -> f64 {
        let x = self.scaled(row);
        let limit = 0.1 * self.params.window_size as f64;
        let mut total = 0.0;
        for tree in &self.trees {
            let mut k = 0usize;
            let mut depth = 0u32;
            while depth < self.params.height && (tree.reference[k] as f64) >= limit {
                let next = child(tree, k, &x);
                if (tree.reference[next] as f64) < limit {
                    break;
                }
                k = next;
                depth += 1;
            }
            total += tree.reference[k] as f64 * 2f64.powi(depth as i32);
        }
        total
    }
}

fn child(tree: &Tree, k: usize, x: &[f64]) -> usize {
    if x[tree.feature[k] as usize] < tree.split[k] {
        2 * k + 1
    } else {
        2 * k + 2
    }
}

fn build(tree: &mut Tree, k: usize, lo: &mut [f64], hi: &mut [f64], rng: &mut SeededRng) {
    if 2 * k + 2 >= tree.feature.len() {
        return;
    }
    let q = rng.below(lo.len());
    let mid = (lo[q] + hi[q]) / 2.0;
    tree.feature[k] = q as u32;
    tree.split[k] = mid;
    let saved = hi[q];
    hi[q] = mid;
    build(tree, 2 * k + 1, lo, hi, rng);
    hi[q] = saved;
    let saved = lo[q];
    lo[q] = mid;
    build(tree, 2 * k + 2, lo, hi, rng);
    lo[q] = saved;
}

impl Detector for HalfSpaceTrees {
    /// 1 minus the row's mass as a share of the most a row can have: in [0, 1], higher is more
    /// anomalous.
    fn score(&self, rows: Rows<'_>) -> Vec<f64> {
        let most = self.trees.len() as f64
            * self.params.window_size as f64
            * 2f64.powi(self.params.height as i32);
        (0..rows.len())
            .map(|i| 1.0 - (self.mass(rows.row(i)) / most).min(1.0))
            .collect()
    }
}

/// Floats as their bit patterns: JSON text does not round-trip every f64 exactly, and a saved
/// session must score exactly as it did before it was saved.
mod exact_floats {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(values: &[f64], s: S) -> Result<S::Ok, S::Error> {
        values
            .iter()
            .map(|v| v.to_bits())
            .collect::<Vec<u64>>()
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
        Ok(Vec::<u64>::deserialize(d)?
            .into_iter()
            .map(f64::from_bits)
            .collect())
    }
}
