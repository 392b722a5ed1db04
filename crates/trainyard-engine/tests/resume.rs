//! Determinism and exact resume: the same seed gives the same run, and a run split by a
//! checkpoint (serialized to bytes and loaded into a fresh trainer) ends bit-identical to an
//! uninterrupted one.

mod common;

use std::sync::Arc;

use common::*;
use serde_json::json;
use trainyard_core::{Algorithm, EpochMetrics};
use trainyard_data::{Dataset, Table, load_builtin};
use trainyard_engine::{Checkpoint, Control, Outcome, Recorder, TrainRequest, TrainedModel, train};

/// Epoch metrics without the wall-clock fields, which legitimately differ between runs.
/// (epoch, train_loss, val_loss, learning_rate, task metrics)
type Learned = (u32, f64, f64, f64, Vec<(String, f64)>);

fn learned(history: &[EpochMetrics]) -> Vec<Learned> {
    history
        .iter()
        .map(|m| {
            (
                m.epoch,
                m.train_loss,
                m.val_loss,
                m.learning_rate,
                m.values.clone().into_iter().collect(),
            )
        })
        .collect()
}

fn split_run(req: TrainRequest, half: u32) -> (TrainedModel, Vec<EpochMetrics>) {
    // The checkpoint a run writes after epoch `half` is what a run that died there leaves.
    let mut rec = Recorder::default();
    let _ = train(req.clone(), &Control::default(), &mut rec).unwrap();
    let ckpt = rec
        .checkpoints
        .iter()
        .find(|c| c.state.epoch == half)
        .expect("checkpoint at half")
        .clone();

    // A fresh trainer sees only the bytes, as a new process would.
    let mut second = req;
    second.resume = Some(Checkpoint::from_bytes(&ckpt.to_bytes()).unwrap());
    let (model, rec) = train_to_completion(second);
    let mut all = ckpt.state.history.clone();
    all.extend(rec.epochs());
    (model, all)
}

fn assert_exact_resume(req: TrainRequest, half: u32) {
    let (straight, rec) = train_to_completion(req.clone());
    let (resumed, history) = split_run(req, half);
    assert_eq!(
        learned(&rec.epochs()),
        learned(&history),
        "metric history differs"
    );
    assert_eq!(
        weights_fingerprint(&straight),
        weights_fingerprint(&resumed),
        "final weights differ"
    );
    assert_eq!(straight.header.metrics, resumed.header.metrics);
}

#[test]
fn same_seed_gives_identical_runs() {
    let req = request(
        "iris",
        Algorithm::Mlp,
        json!({"epochs": 15, "dropout": 0.2}),
    );
    let (a, ra) = train_to_completion(req.clone());
    let (b, rb) = train_to_completion(req.clone());
    assert_eq!(weights_fingerprint(&a), weights_fingerprint(&b));
    assert_eq!(learned(&ra.epochs()), learned(&rb.epochs()));

    let mut other = req;
    other.hyperparameters.seed += 1;
    let (c, _) = train_to_completion(other);
    assert_ne!(
        weights_fingerprint(&a),
        weights_fingerprint(&c),
        "a different seed changes the run"
    );
}

#[test]
fn mlp_resumes_exactly() {
    let req = request(
        "wine_quality",
        Algorithm::Mlp,
        json!({"epochs": 8, "dropout": 0.1, "optimizer": "adamw", "weight_decay": 0.01, "lr_schedule": "cosine"}),
    );
    assert_exact_resume(req, 4);
}

fn small_mnist(rows: usize) -> Arc<Dataset> {
    let full = load_builtin("mnist").unwrap();
    let idx: Vec<usize> = (0..rows).collect();
    let test: Table = full.test.as_ref().unwrap().select(&idx[..rows / 4]);
    let mut info = full.info.clone();
    info.n_rows = rows;
    Arc::new(Dataset {
        info,
        table: full.table.select(&idx),
        test: Some(test),
        text: None,
        texts: None,
        activations: None,
    })
}

#[test]
fn cnn_resumes_exactly() {
    let req = request_on(
        small_mnist(1200),
        Algorithm::Cnn,
        json!({"epochs": 4, "conv_channels": [4, 8], "hidden_layers": [32], "dropout": 0.1}),
    );
    assert_exact_resume(req, 2);
}

#[test]
fn an_augmented_cnn_resumes_exactly_and_augmentation_changes_training() {
    let spec = json!({"epochs": 2, "conv_channels": [4], "hidden_layers": [16],
        "augment_shift": 2, "augment_rotate": 10.0, "augment_erase": 0.5});
    let req = request_on(small_mnist(600), Algorithm::Cnn, spec.clone());
    assert_exact_resume(req.clone(), 1);
    let mut plain_spec = spec;
    for key in ["augment_shift", "augment_rotate", "augment_erase"] {
        plain_spec[key] = json!(0);
    }
    let plain = request_on(small_mnist(600), Algorithm::Cnn, plain_spec);
    let (augmented, _) = train_to_completion(req);
    let (plain, _) = train_to_completion(plain);
    assert_ne!(weights_fingerprint(&augmented), weights_fingerprint(&plain));
}

#[test]
fn pause_writes_a_checkpoint_that_resumes_exactly() {
    let req = request("iris", Algorithm::Mlp, json!({"epochs": 6}));
    let (straight, straight_rec) = train_to_completion(req.clone());

    struct PauseAfter {
        inner: Recorder,
        control: Arc<Control>,
        batches: u32,
    }
    impl trainyard_engine::Observer for PauseAfter {
        fn event(&mut self, e: trainyard_core::TrainingEvent) {
            self.inner.event(e);
        }
        fn checkpoint(&mut self, c: &Checkpoint) -> Result<u64, String> {
            self.batches += 1;
            if self.batches == 2 {
                self.control.pause();
            }
            self.inner.checkpoint(c)
        }
    }
    let control = Control::new();
    let mut obs = PauseAfter {
        inner: Recorder::default(),
        control: control.clone(),
        batches: 0,
    };
    let outcome = train(req.clone(), &control, &mut obs).unwrap();
    let Outcome::Paused(ckpt) = outcome else {
        panic!("expected pause, got {outcome:?}")
    };
    assert_eq!(
        ckpt.state.epoch, 2,
        "paused at the first batch boundary after the request"
    );

    let mut resumed = req;
    resumed.resume = Some(Checkpoint::from_bytes(&ckpt.to_bytes()).unwrap());
    let (model, rec) = train_to_completion(resumed);
    let mut history = ckpt.state.history.clone();
    history.extend(rec.epochs());
    assert_eq!(learned(&history), learned(&straight_rec.epochs()));
    assert_eq!(weights_fingerprint(&model), weights_fingerprint(&straight));
}

#[test]
fn cancel_stops_before_the_next_batch() {
    let control = Control::new();
    control.cancel();
    let mut rec = Recorder::default();
    let outcome = train(
        request("iris", Algorithm::Mlp, json!({})),
        &control,
        &mut rec,
    )
    .unwrap();
    assert!(matches!(outcome, Outcome::Cancelled));
    assert!(rec.epochs().is_empty());
}

#[test]
fn checkpoint_from_another_run_is_refused() {
    let mut rec = Recorder::default();
    let _ = train(
        request("iris", Algorithm::Mlp, json!({"epochs": 3})),
        &Control::default(),
        &mut rec,
    )
    .unwrap();
    let mut other = request(
        "iris",
        Algorithm::Mlp,
        json!({"epochs": 3, "hidden_layers": [8]}),
    );
    other.resume = Some(rec.checkpoints[0].clone());
    let err = train(other, &Control::default(), &mut Recorder::default()).unwrap_err();
    assert!(err.to_string().contains("architecture"), "{err}");
}

#[test]
fn corrupt_checkpoint_bytes_are_detected() {
    let mut rec = Recorder::default();
    let _ = train(
        request("iris", Algorithm::Mlp, json!({"epochs": 2})),
        &Control::default(),
        &mut rec,
    )
    .unwrap();
    let mut bytes = rec.checkpoints[0].to_bytes();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    assert!(
        Checkpoint::from_bytes(&bytes)
            .unwrap_err()
            .to_string()
            .contains("corrupt")
    );
    assert!(Checkpoint::from_bytes(&bytes[..mid]).is_err());
}

#[test]
fn early_stopping_restores_the_best_weights() {
    let req = request(
        "synthetic",
        Algorithm::Mlp,
        json!({"epochs": 60, "learning_rate": 0.05, "early_stopping": {"monitor": "val_loss", "patience": 3}}),
    );
    let (model, rec) = train_to_completion(req);
    let epochs = rec.epochs();
    assert!(
        epochs.len() < 60,
        "stopped early after {} epochs",
        epochs.len()
    );
    let best = epochs
        .iter()
        .map(|m| m.val_loss)
        .fold(f64::INFINITY, f64::min);
    assert!(
        (metric(&model, "val_loss") - best).abs() < 1e-6,
        "final val_loss is the best epoch's"
    );
    assert!(
        rec.events
            .iter()
            .any(|e| matches!(e, trainyard_core::TrainingEvent::EarlyStopped { .. }))
    );
}

#[test]
fn persistent_non_finite_loss_fails_after_the_rollbacks_naming_epoch_and_batch() {
    let req = request(
        "california_housing",
        Algorithm::Mlp,
        json!({"learning_rate": 10.0, "optimizer": "sgd", "epochs": 5}),
    );
    let mut rec = Recorder::default();
    let err = train(req, &Control::default(), &mut rec).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("at epoch") && msg.contains("batch") && msg.contains("after 3 rollbacks"),
        "{msg}"
    );
    let rollbacks = rec
        .events
        .iter()
        .filter(|e| matches!(e, trainyard_core::TrainingEvent::RolledBack { .. }))
        .count();
    assert_eq!(rollbacks, 3);
}

#[test]
fn a_non_finite_loss_rolls_back_with_the_learning_rate_halved() {
    let req = request(
        "california_housing",
        Algorithm::Mlp,
        json!({"optimizer": "sgd", "learning_rate": 1.0, "epochs": 3}),
    );
    let (model, rec) = train_to_completion(req);
    let rollbacks: Vec<f64> = rec
        .events
        .iter()
        .filter_map(|e| match e {
            trainyard_core::TrainingEvent::RolledBack {
                learning_rate_scale,
                ..
            } => Some(*learning_rate_scale),
            _ => None,
        })
        .collect();
    assert_eq!(rollbacks, vec![0.5, 0.25]);
    let epochs = rec.epochs();
    assert_eq!(
        epochs.iter().map(|m| m.epoch).collect::<Vec<_>>(),
        vec![1, 2, 3],
        "no duplicate epochs after rollbacks"
    );
    assert_eq!(epochs[0].learning_rate, 0.25);
    // Training goes on with finite losses. How well it learns after diverging twice depends on
    // the CPU's float kernels (it collapses to the mean on some), so no quality bar here.
    assert!(
        epochs
            .iter()
            .all(|m| m.train_loss.is_finite() && m.val_loss.is_finite()),
        "{epochs:?}"
    );
    assert!(
        metric(&model, "r2").is_finite(),
        "{:?}",
        model.header.metrics
    );
}

#[test]
fn a_memory_budget_halves_the_batch_size_or_fails_clearly() {
    let req = request(
        "mnist",
        Algorithm::Mlp,
        // About 243 MB before the batch (the job's copy of mnist and its test split, the model,
        // an evaluation batch, the backend), 16 MB per 1,024 samples: 255 MB fits a batch of 512.
        json!({"epochs": 1, "batch_size": 1024, "memory_budget_mb": 255}),
    );
    let (_, rec) = train_to_completion(req);
    let reduced = rec.events.iter().find_map(|e| match e {
        trainyard_core::TrainingEvent::BatchSizeReduced { from, to, .. } => Some((*from, *to)),
        _ => None,
    });
    let (from, to) = reduced.expect("batch size was reduced");
    assert_eq!(from, 1024);
    assert!(to < 1024 && to.is_power_of_two(), "{to}");

    let req = request(
        "mnist",
        Algorithm::Mlp,
        json!({"epochs": 1, "memory_budget_mb": 100}),
    );
    let err = train(req, &Control::default(), &mut Recorder::default()).unwrap_err();
    assert!(err.to_string().contains("memory_budget_mb"), "{err}");
}

#[test]
fn time_based_checkpoints_land_mid_epoch_and_resume_exactly() {
    // Small batches make the single epoch take well over a second.
    let req = request(
        "mnist",
        Algorithm::Mlp,
        json!({"epochs": 2, "batch_size": 8, "checkpoint_seconds": 1}),
    );
    let (straight, rec) = train_to_completion(req.clone());
    let mid = rec
        .checkpoints
        .iter()
        .find(|c| c.state.next_batch > 0 && c.state.epoch == 0)
        .expect("a checkpoint inside the first epoch")
        .clone();
    let mut resumed = req;
    resumed.resume = Some(Checkpoint::from_bytes(&mid.to_bytes()).unwrap());
    let (model, _) = train_to_completion(resumed);
    assert_eq!(weights_fingerprint(&model), weights_fingerprint(&straight));
    assert_eq!(model.header.metrics, straight.header.metrics);
}

#[test]
fn a_checkpoint_carries_a_bounded_history() {
    let req = request(
        "iris",
        Algorithm::LogisticRegression,
        json!({"epochs": 1003, "checkpoint_every": 1002}),
    );
    let (_, rec) = train_to_completion(req);
    let ckpt = rec.checkpoints.last().expect("the epoch-1002 checkpoint");
    assert_eq!(ckpt.state.epoch, 1002);
    let kept: Vec<u32> = ckpt.state.history.iter().map(|m| m.epoch).collect();
    assert_eq!(
        kept,
        (3..=1002).collect::<Vec<_>>(),
        "the newest 1,000 epochs"
    );
}

#[test]
fn batch_size_auto_probes_what_fits_and_resumes_with_its_choice() {
    let spec = |batch: serde_json::Value| json!({"epochs": 4, "hidden_layers": [16], "batch_size": batch, "memory_budget_mb": 1000});
    let auto = request("wine_quality", Algorithm::Mlp, spec(json!("auto")));
    let (straight, rec) = train_to_completion(auto.clone());
    let probed = rec.events.iter().find_map(|e| match e {
        trainyard_core::TrainingEvent::BatchSizeProbed { chosen, probed, .. } => {
            Some((*chosen, probed.clone()))
        }
        _ => None,
    });
    let (chosen, probed) = probed.expect("the probe is reported");
    let sizes: Vec<u32> = probed.iter().map(|p| p.batch_size).collect();
    // wine_quality trains on 1,279 rows: an epoch keeps at least 8 steps, so 128 is the largest.
    assert_eq!(sizes, vec![16, 32, 64, 128], "{probed:?}");
    let best = probed
        .iter()
        .map(|p| p.samples_per_second)
        .fold(0.0, f64::max);
    assert!(best > 0.0, "{probed:?}");
    let chosen_speed = probed.iter().find(|p| p.batch_size == chosen).unwrap();
    assert_eq!(
        chosen_speed.samples_per_second, best,
        "the fastest is chosen"
    );
    assert_eq!(metric(&straight, "batch_size"), chosen as f64);

    // Resumed from its checkpoint, the run keeps its choice instead of probing again, and
    // ends as the same run with that batch size given explicitly.
    let ckpt = rec
        .checkpoints
        .iter()
        .find(|c| c.state.epoch == 2)
        .expect("checkpoint after epoch 2");
    let mut second = auto;
    second.resume = Some(Checkpoint::from_bytes(&ckpt.to_bytes()).unwrap());
    let (resumed, resumed_rec) = train_to_completion(second);
    assert!(
        !resumed_rec
            .events
            .iter()
            .any(|e| matches!(e, trainyard_core::TrainingEvent::BatchSizeProbed { .. })),
        "a resumed run does not probe again"
    );
    let explicit = request("wine_quality", Algorithm::Mlp, spec(json!(chosen)));
    let (fixed, fixed_rec) = train_to_completion(explicit);
    assert_eq!(learned(&rec.epochs()), learned(&fixed_rec.epochs()));
    assert_eq!(weights_fingerprint(&straight), weights_fingerprint(&fixed));
    assert_eq!(weights_fingerprint(&resumed), weights_fingerprint(&fixed));
}
