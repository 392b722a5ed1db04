//! Random forests grow a few trees at a time (one per thread): they obey cancel and pause
//! between those rounds, a forest resumed from a checkpoint's bytes is identical to one grown
//! without interruption, and the thread count changes nothing.

mod common;

use std::sync::Arc;

use common::*;
use serde_json::json;
use trainyard_core::{Algorithm, TrainingEvent};
use trainyard_engine::{Checkpoint, Control, Observer, Outcome, Recorder, train};

/// Requests a stop (through `control`) as soon as the first tree is reported.
struct StopAfterFirstTree {
    control: Arc<Control>,
    pause: bool,
    recorder: Recorder,
}

impl Observer for StopAfterFirstTree {
    fn event(&mut self, event: TrainingEvent) {
        if matches!(event, TrainingEvent::Progress { .. }) {
            if self.pause {
                self.control.pause();
            } else {
                self.control.cancel();
            }
        }
        self.recorder.event(event);
    }

    fn checkpoint(&mut self, checkpoint: &Checkpoint) -> Result<u64, String> {
        self.recorder.checkpoint(checkpoint)
    }
}

fn trees_reported(events: &[TrainingEvent]) -> Vec<u32> {
    events
        .iter()
        .filter_map(|e| match e {
            TrainingEvent::Progress { batch, .. } => Some(*batch),
            _ => None,
        })
        .collect()
}

/// Trees grown in one round: one per thread.
fn round() -> u32 {
    rayon::current_num_threads() as u32
}

#[test]
fn a_cancelled_forest_stops_within_one_round_of_trees() {
    let req = request(
        "wine_quality",
        Algorithm::RandomForest,
        json!({"n_estimators": 100}),
    );
    let control = Control::new();
    let mut observer = StopAfterFirstTree {
        control: control.clone(),
        pause: false,
        recorder: Recorder::default(),
    };
    let outcome = train(req, &control, &mut observer).unwrap();
    assert!(matches!(outcome, Outcome::Cancelled), "{outcome:?}");
    assert_eq!(trees_reported(&observer.recorder.events), vec![round()]);
}

#[test]
fn a_paused_forest_resumes_identical_to_an_uninterrupted_one() {
    for dataset in ["wine_quality", "california_housing"] {
        let hp = json!({"n_estimators": 12, "max_depth": 8, "seed": 11});
        let req = request(dataset, Algorithm::RandomForest, hp);
        let (straight, _) = train_to_completion(req.clone());

        let control = Control::new();
        let mut observer = StopAfterFirstTree {
            control: control.clone(),
            pause: true,
            recorder: Recorder::default(),
        };
        let Outcome::Paused(ckpt) = train(req.clone(), &control, &mut observer).unwrap() else {
            panic!("{dataset}: expected a pause")
        };
        assert_eq!(
            ckpt.state.global_step,
            u64::from(round()),
            "{dataset}: trees in the checkpoint"
        );
        assert_eq!(observer.recorder.checkpoints.len(), 1);

        let mut resumed = req;
        resumed.resume = Some(Checkpoint::from_bytes(&ckpt.to_bytes()).unwrap());
        let (model, rec) = train_to_completion(resumed);
        if model.weights != straight.weights {
            let (a, b) = (&model.weights, &straight.weights);
            let at = a
                .iter()
                .zip(b.iter())
                .position(|(x, y)| x != y)
                .unwrap_or(a.len().min(b.len()));
            let lo = at.saturating_sub(200);
            panic!(
                "{dataset}: trees differ at byte {at} of {}/{}: ...{} vs ...{}",
                a.len(),
                b.len(),
                String::from_utf8_lossy(&a[lo..(at + 80).min(a.len())]),
                String::from_utf8_lossy(&b[lo..(at + 80).min(b.len())])
            );
        }
        assert_eq!(*trees_reported(&rec.events).last().unwrap(), 12);
        for key in ["accuracy", "r2"] {
            if let Some(v) = straight.header.metrics.get(key) {
                assert_eq!(metric(&model, key), *v, "{dataset}: {key}");
            }
        }
    }
}

#[test]
fn a_forest_is_the_same_on_one_thread_as_on_several() {
    for dataset in ["wine_quality", "california_housing"] {
        let hp = json!({"n_estimators": 5, "max_depth": 6, "seed": 3});
        let req = request(dataset, Algorithm::RandomForest, hp);
        let on_threads = |threads| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| train_to_completion(req.clone()).0)
        };
        let (one, three) = (on_threads(1), on_threads(3));
        assert!(one.weights == three.weights, "{dataset}: trees differ");
    }
}

#[test]
fn a_forest_checkpoint_does_not_resume_a_different_forest() {
    let req = request("iris", Algorithm::RandomForest, json!({"n_estimators": 5}));
    let control = Control::new();
    let mut observer = StopAfterFirstTree {
        control: control.clone(),
        pause: true,
        recorder: Recorder::default(),
    };
    let Outcome::Paused(ckpt) = train(req, &control, &mut observer).unwrap() else {
        panic!("expected a pause")
    };
    let mut other = request(
        "iris",
        Algorithm::RandomForest,
        json!({"n_estimators": 5, "max_depth": 3}),
    );
    other.resume = Some(ckpt);
    let err = train(other, &Control::default(), &mut Recorder::default()).unwrap_err();
    assert!(err.to_string().contains("hyperparameters"), "{err}");
}
