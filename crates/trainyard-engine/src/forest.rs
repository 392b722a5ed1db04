//! Random forests (smartcore trees): grown a few trees at a time (one per thread), so a forest
//! obeys `Control` between rounds, reports progress, and checkpoints the trees built so far.
//!
//! Each tree is a one-tree smartcore forest seeded by `(seed, tree index)`: that keeps smartcore's
//! per-split feature sampling (its public single-tree fit considers every feature at every
//! split) while making tree `i` a pure function of the seed and `i`. A forest resumed from a
//! checkpoint is therefore identical to one grown without interruption.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use smartcore::ensemble::random_forest_classifier::{
    RandomForestClassifier, RandomForestClassifierParameters,
};
use smartcore::ensemble::random_forest_regressor::{
    RandomForestRegressor, RandomForestRegressorParameters,
};
use smartcore::linalg::basic::matrix::DenseMatrix;
use trainyard_core::{Hyperparameters, Task};
use trainyard_data::{SeededRng, Table};

type Classifier = RandomForestClassifier<f32, u32, DenseMatrix<f32>, Vec<u32>>;
type Regressor = RandomForestRegressor<f32, f32, DenseMatrix<f32>, Vec<f32>>;

/// One tree of a grown forest.
#[derive(Debug, Serialize, Deserialize)]
pub enum Tree {
    Class(Classifier),
    Value(Regressor),
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Forest {
    /// Model files written before forests grew tree by tree.
    Classifier { model: Classifier, n_classes: usize },
    /// Model files written before forests grew tree by tree.
    Regressor(Regressor),
    /// Each tree is kept as the JSON it was first written as: JSON floats do not round-trip
    /// bit for bit, so a tree read back from a checkpoint and written again would differ in the
    /// last digit from one never checkpointed. Keeping the text keeps resumed forests identical.
    Grown {
        trees: Vec<String>,
        n_classes: usize,
        #[serde(skip)]
        parsed: Vec<Tree>,
    },
}

fn matrix(x: &[f32], d: usize) -> Result<DenseMatrix<f32>, String> {
    if d == 0 || !x.len().is_multiple_of(d) {
        return Err(format!(
            "{} values do not form rows of {d} features",
            x.len()
        ));
    }
    DenseMatrix::new(x.len() / d, d, x.to_vec(), false).map_err(|e| e.to_string())
}

/// The seed of tree `index`: independent of how many trees were grown before a restart.
fn tree_seed(seed: u64, index: usize) -> u64 {
    SeededRng::derive(seed, 3 << 40 | index as u64).next_u64()
}

/// The training rows as smartcore wants them, built once per fit.
pub struct TreeGrower {
    x: DenseMatrix<f32>,
    classes: Option<Vec<u32>>,
    values: Vec<f32>,
    depth: u16,
    seed: u64,
}

impl TreeGrower {
    pub fn new(train: &Table, task: Task, hp: &Hyperparameters) -> Result<Self, String> {
        let x = matrix(&train.x, train.n_features)?;
        let classes =
            (task == Task::Classification).then(|| train.y.iter().map(|v| *v as u32).collect());
        Ok(TreeGrower {
            x,
            classes,
            values: train.y.clone(),
            depth: hp.max_depth.min(u16::MAX as u32) as u16,
            seed: hp.seed,
        })
    }

    /// Grows tree `index` on its own bootstrap sample.
    pub fn grow(&self, index: usize) -> Result<Tree, String> {
        let seed = tree_seed(self.seed, index);
        match &self.classes {
            Some(y) => {
                let params = RandomForestClassifierParameters::default()
                    .with_n_trees(1)
                    .with_seed(seed)
                    .with_max_depth(self.depth);
                Classifier::fit(&self.x, y, params)
                    .map(Tree::Class)
                    .map_err(|e| e.to_string())
            }
            None => {
                let params = RandomForestRegressorParameters {
                    n_trees: 1,
                    seed,
                    max_depth: Some(self.depth),
                    ..Default::default()
                };
                Regressor::fit(&self.x, &self.values, params)
                    .map(Tree::Value)
                    .map_err(|e| e.to_string())
            }
        }
    }
}

/// One tree's output for every row.
enum TreeOutput {
    Votes(Vec<u32>),
    Values(Vec<f32>),
}

impl TreeOutput {
    /// Adds a vote per row to its class's column of `out`, or the values to `out`.
    fn add_to(self, out: &mut [f32], width: usize) -> Result<(), String> {
        match self {
            TreeOutput::Votes(votes) => {
                for (i, c) in votes.iter().enumerate() {
                    let slot = out
                        .get_mut(i * width + *c as usize)
                        .ok_or_else(|| format!("tree voted for unknown class {c}"))?;
                    *slot += 1.0;
                }
            }
            TreeOutput::Values(values) => {
                for (o, v) in out.iter_mut().zip(values) {
                    *o += v;
                }
            }
        }
        Ok(())
    }
}

impl Tree {
    fn predict(&self, m: &DenseMatrix<f32>) -> Result<TreeOutput, String> {
        match self {
            Tree::Class(t) => t.predict(m).map(TreeOutput::Votes),
            Tree::Value(t) => t.predict(m).map(TreeOutput::Values),
        }
        .map_err(|e| e.to_string())
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a tree serializes")
    }
}

fn parse_trees(trees: &[String]) -> Result<Vec<Tree>, String> {
    trees
        .iter()
        .enumerate()
        .map(|(i, t)| serde_json::from_str(t).map_err(|e| format!("random forest tree {i}: {e}")))
        .collect()
}

impl Forest {
    /// Per-row outputs in the network's layout: the share of trees voting for each class, or
    /// the mean value. Fails (never panics) on input a model cannot score.
    pub fn predict_outputs(&self, x: &[f32], d: usize) -> Result<Vec<f32>, String> {
        let m = matrix(x, d)?;
        let rows = x.len() / d;
        if rows == 0 {
            return Ok(vec![]);
        }
        match self {
            Forest::Classifier { model, n_classes } => {
                let classes = model.predict(&m).map_err(|e| e.to_string())?;
                one_hot(&classes, *n_classes)
            }
            Forest::Regressor(model) => model.predict(&m).map_err(|e| e.to_string()),
            Forest::Grown {
                parsed: trees,
                n_classes,
                ..
            } => {
                if trees.is_empty() {
                    return Err("the forest has no trees".into());
                }
                let width = if *n_classes > 0 { *n_classes } else { 1 };
                let mut out = vec![0.0f32; rows * width];
                // A few trees at a time (one per thread), added in tree order: the sums are
                // those of a serial pass, and only a round's outputs are held at once.
                for round in trees.chunks(rayon::current_num_threads().max(1)) {
                    let outputs: Vec<TreeOutput> = round
                        .par_iter()
                        .map(|tree| tree.predict(&m))
                        .collect::<Result<_, _>>()?;
                    for output in outputs {
                        output.add_to(&mut out, width)?;
                    }
                }
                let n = trees.len() as f32;
                out.iter_mut().for_each(|o| *o /= n);
                Ok(out)
            }
        }
    }

    /// A forest of trees in their JSON text (see [`Tree::to_json`]).
    pub fn grown(trees: Vec<String>, n_classes: usize) -> Result<Self, String> {
        let parsed = parse_trees(&trees)?;
        Ok(Forest::Grown {
            trees,
            n_classes,
            parsed,
        })
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("forest serializes")
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        let forest: Forest =
            serde_json::from_slice(bytes).map_err(|e| format!("random forest weights: {e}"))?;
        Ok(match forest {
            Forest::Grown {
                trees, n_classes, ..
            } => Forest::grown(trees, n_classes)?,
            legacy => legacy,
        })
    }
}

fn one_hot(classes: &[u32], n_classes: usize) -> Result<Vec<f32>, String> {
    let mut out = vec![0.0; classes.len() * n_classes];
    for (i, c) in classes.iter().enumerate() {
        let slot = out
            .get_mut(i * n_classes + *c as usize)
            .ok_or_else(|| format!("the forest predicted unknown class {c}"))?;
        *slot = 1.0;
    }
    Ok(out)
}
