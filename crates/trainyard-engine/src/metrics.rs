//! Validation metrics computed on the host from model outputs.

use std::collections::BTreeMap;

use trainyard_core::Task;
use trainyard_data::Scaler;

use crate::model::argmax;

/// Metrics for a batch of outputs against targets. Classification outputs are per-class scores;
/// regression outputs and targets are standardised and reported on the original scale.
pub fn task_metrics(
    task: Task,
    outputs: &[f32],
    targets: &[f32],
    scaler: &Scaler,
) -> BTreeMap<String, f64> {
    let mut m = BTreeMap::new();
    let n = targets.len().max(1) as f64;
    match task {
        Task::Classification => {
            let k = outputs.len() / targets.len().max(1);
            let correct = outputs
                .chunks_exact(k.max(1))
                .zip(targets)
                .filter(|(scores, y)| argmax(scores) == **y as usize)
                .count();
            m.insert("accuracy".into(), correct as f64 / n);
        }
        Task::Unlabeled | Task::Text => {}
        Task::Regression => {
            let pairs = outputs.iter().zip(targets).map(|(p, y)| {
                (
                    scaler.inverse_target(*p) as f64,
                    scaler.inverse_target(*y) as f64,
                )
            });
            let mean_y = pairs.clone().map(|(_, y)| y).sum::<f64>() / n;
            let (mut abs, mut sq, mut tot) = (0.0, 0.0, 0.0);
            for (p, y) in pairs {
                abs += (p - y).abs();
                sq += (p - y) * (p - y);
                tot += (y - mean_y) * (y - mean_y);
            }
            m.insert("mae".into(), abs / n);
            m.insert("rmse".into(), (sq / n).sqrt());
            m.insert("r2".into(), if tot > 0.0 { 1.0 - sq / tot } else { 0.0 });
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> Scaler {
        Scaler {
            mean: vec![],
            std: vec![],
            target_mean: 0.0,
            target_std: 1.0,
        }
    }

    #[test]
    fn accuracy_counts_argmax_hits() {
        let outputs = [0.9, 0.1, 0.2, 0.8, 0.6, 0.4];
        let m = task_metrics(
            Task::Classification,
            &outputs,
            &[0.0, 1.0, 1.0],
            &identity(),
        );
        assert!((m["accuracy"] - 2.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn regression_metrics_on_the_original_scale() {
        let scaler = Scaler {
            target_mean: 10.0,
            target_std: 2.0,
            ..identity()
        };
        let m = task_metrics(Task::Regression, &[0.0, 1.0], &[0.0, 0.0], &scaler);
        assert_eq!(m["mae"], 1.0);
        assert_eq!(m["rmse"], 2f64.sqrt());
        let perfect = task_metrics(Task::Regression, &[1.0, -1.0], &[1.0, -1.0], &scaler);
        assert_eq!(perfect["r2"], 1.0);
    }
}
