//! Fitting a random forest a few trees at a time (one per thread): `Control` is checked
//! between them, progress is reported after the first few and then at most ten times a
//! second, and checkpoints hold the trees built so far (time-based, and on pause).

use std::time::{Duration, Instant};

use rayon::prelude::*;

use trainyard_core::{Task, TrainingEvent};
use trainyard_data::{Table, prepare};

use crate::checkpoint::{Checkpoint, LoopState};
use crate::forest::{Forest, TreeGrower};
use crate::model::TrainedModel;
use crate::network::Architecture;
use crate::neural::{PROGRESS_INTERVAL, check_resumable, write_checkpoint};
use crate::{Control, Observer, Outcome, Stop, TrainError, TrainRequest, final_metrics_header};

fn snapshot(state: &LoopState, trees: &[String]) -> Checkpoint {
    Checkpoint {
        state: state.clone(),
        model: serde_json::to_vec(trees).expect("trees serialize"),
        optimizer: vec![],
        best_model: None,
    }
}

pub(crate) fn train_forest(
    req: TrainRequest,
    control: &Control,
    observer: &mut dyn Observer,
) -> Result<Outcome, TrainError> {
    let hp = &req.hyperparameters;
    let info = &req.dataset.info;
    let prepared = prepare(&req.dataset, hp.validation_split, hp.seed);
    let n_trees = hp.n_estimators as usize;
    let mut state = LoopState::start(
        req.algorithm,
        hp.clone(),
        Architecture::new(req.algorithm, hp, info),
        prepared.scaler.clone(),
    );
    // Each tree as JSON text, the form it is checkpointed and saved in (see `Forest::Grown`).
    let mut trees: Vec<String> = vec![];
    if let Some(ckpt) = req.resume {
        check_resumable(&ckpt.state, &state)?;
        trees = serde_json::from_slice(&ckpt.model)
            .map_err(|e| TrainError::Resume(format!("forest trees: {e}")))?;
        state = ckpt.state;
    }
    observer.event(TrainingEvent::Started {
        total_epochs: 1,
        start_epoch: 0,
        train_samples: prepared.train.len(),
        validation_samples: prepared.validation.len(),
    });
    let grower = TreeGrower::new(&prepared.train, info.task, hp).map_err(TrainError::Fit)?;
    let started = Instant::now();
    let checkpoint_interval =
        (hp.checkpoint_seconds > 0).then(|| Duration::from_secs(hp.checkpoint_seconds as u64));
    let mut last_checkpoint = Instant::now();
    let mut last_progress = Instant::now();
    let mut reported = false;
    while trees.len() < n_trees {
        if let Some(stop) = control.requested() {
            return match stop {
                Stop::Cancel => Ok(Outcome::Cancelled),
                Stop::Pause => {
                    let ckpt = snapshot(&state, &trees);
                    write_checkpoint(observer, &ckpt)?;
                    Ok(Outcome::Paused(ckpt))
                }
            };
        }
        trees.extend(grow_next(&grower, trees.len(), n_trees)?);
        let built = trees.len();
        state.global_step = built as u64;
        state.next_batch = built as u32;
        if !reported || built == n_trees || last_progress.elapsed() >= PROGRESS_INTERVAL {
            (reported, last_progress) = (true, Instant::now());
            observer.event(TrainingEvent::Progress {
                epoch: 1,
                batch: built as u32,
                batches: n_trees as u32,
                fraction: built as f64 / n_trees as f64,
            });
        }
        if checkpoint_interval.is_some_and(|every| last_checkpoint.elapsed() >= every)
            && built < n_trees
        {
            write_checkpoint(observer, &snapshot(&state, &trees))?;
            last_checkpoint = Instant::now();
        }
    }
    let forest = Forest::grown(trees, info.n_classes()).map_err(TrainError::Fit)?;
    let mut header = final_metrics_header(info, req.algorithm, hp, prepared.scaler.clone());
    header.metrics = score(&forest, &prepared, info.task)?;
    header
        .metrics
        .insert("fit_seconds".into(), started.elapsed().as_secs_f64());
    Ok(Outcome::Completed(TrainedModel {
        header,
        weights: forest.to_bytes(),
    }))
}

/// The next trees from index `next`, one per thread, grown in parallel: each tree depends
/// only on its index, so the forest is the same whatever the thread count, and `Control` is
/// still checked every few trees.
fn grow_next(grower: &TreeGrower, next: usize, n_trees: usize) -> Result<Vec<String>, TrainError> {
    let end = n_trees.min(next + rayon::current_num_threads().max(1));
    (next..end)
        .into_par_iter()
        .map(|index| grower.grow(index).map(|tree| tree.to_json()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(TrainError::Fit)
}

/// Validation metrics, the training score and the test split's metrics when there is one.
fn score(
    forest: &Forest,
    prepared: &trainyard_data::Prepared,
    task: Task,
) -> Result<std::collections::BTreeMap<String, f64>, TrainError> {
    let d = prepared.train.n_features;
    let metrics_of = |table: &Table| {
        let outputs = forest
            .predict_outputs(&table.x, d)
            .map_err(TrainError::Fit)?;
        Ok::<_, TrainError>(crate::metrics::task_metrics(
            task,
            &outputs,
            &table.y,
            &prepared.scaler,
        ))
    };
    let mut metrics = metrics_of(&prepared.validation)?;
    let key = if task == Task::Classification {
        "accuracy"
    } else {
        "r2"
    };
    let train_metrics = metrics_of(&prepared.train)?;
    metrics.insert(format!("train_{key}"), train_metrics[key]);
    if let Some(test) = &prepared.test {
        let test_metrics = metrics_of(test)?;
        metrics.extend(
            test_metrics
                .into_iter()
                .map(|(k, v)| (format!("test_{k}"), v)),
        );
    }
    Ok(metrics)
}
