//! The tabular family: linear and logistic regression, MLPs and CNNs trained by gradient descent,
//! and random forests, on tables with a target column. Its trainer is [`crate::train`]; this
//! module adapts it to the family seam (typed checkpoints become bytes, the model file is
//! [`TrainedModel`]'s), so files written before the seam existed still load.

use std::sync::Arc;

use serde_json::{Map, Value};
use trainyard_core::{Algorithm, Hyperparameters, TrainingEvent, ValidationError};
use trainyard_data::DatasetInfo;

use super::{Artifact, Family, Finished, Job, Limits, Plan, Reporter, SavedCheckpoint, Served};
use crate::{
    Checkpoint, Control, Observer, Outcome, PredictError, Predictor, TrainError, TrainRequest,
    TrainedModel,
};

pub struct Tabular;

/// The memory a job may use: the server's budget, or the model's own when that is smaller.
fn job_budget_mb(limits: &Limits, hp: &Hyperparameters) -> u64 {
    match hp.memory_budget_mb as u64 {
        0 => limits.job_memory_mb,
        own => own.min(limits.job_memory_mb),
    }
}

fn resolve(
    algorithm: &str,
    dataset: &DatasetInfo,
    user: &Map<String, Value>,
) -> Result<(Algorithm, Hyperparameters), ValidationError> {
    let algorithm: Algorithm = algorithm.parse()?;
    let shape = dataset.shape();
    algorithm.check_fits(&dataset.name, &shape)?;
    let hp = Hyperparameters::resolve(algorithm, &shape, user)
        .map_err(|e| e.within("hyperparameters"))?;
    Ok((algorithm, hp))
}

/// Refuses a job that cannot fit its memory budget even at batch size 1.
fn check_memory(
    algorithm: Algorithm,
    hp: &Hyperparameters,
    info: &DatasetInfo,
    limits: &Limits,
) -> Result<(), ValidationError> {
    let budget = job_budget_mb(limits, hp);
    let estimate = crate::estimate_memory(algorithm, hp, info);
    if estimate
        .fitting_batch(hp.batch_size as usize, budget)
        .is_some()
    {
        return Ok(());
    }
    let smallest = if algorithm.is_gradient_based() {
        " even at batch size 1"
    } else {
        ""
    };
    Err(ValidationError::new(
        "hyperparameters",
        format!(
            "the job needs about {:.0} MB{smallest}, over the job memory budget of {budget} MB; \
             use a smaller model (fewer or narrower layers, fewer or shallower trees) or raise the \
             server's --job-memory-mb",
            estimate.mb_at(1)
        ),
    ))
}

impl Family for Tabular {
    fn name(&self) -> &'static str {
        "tabular"
    }

    fn algorithms(&self) -> Vec<&'static str> {
        Algorithm::ALL.iter().map(|a| a.name()).collect()
    }

    fn plan(
        &self,
        algorithm: &str,
        dataset: &DatasetInfo,
        hyperparameters: &Map<String, Value>,
        limits: &Limits,
    ) -> Result<Plan, ValidationError> {
        let (algorithm, hp) = resolve(algorithm, dataset, hyperparameters)?;
        check_memory(algorithm, &hp, dataset, limits)?;
        Ok(Plan {
            hyperparameters: hp.to_json(algorithm),
            epochs: if algorithm.is_gradient_based() {
                hp.epochs
            } else {
                1
            },
        })
    }

    fn train(
        &self,
        job: Job,
        control: &Control,
        reporter: &mut dyn Reporter,
    ) -> Result<Finished, TrainError> {
        let (algorithm, mut hyperparameters) =
            resolve(&job.algorithm, &job.dataset.info, &job.hyperparameters)
                .map_err(|e| TrainError::Fit(e.to_string()))?;
        // Always within the server's job budget: the engine halves the batch size until it fits.
        hyperparameters.memory_budget_mb =
            job_budget_mb(&job.limits, &hyperparameters).min(u32::MAX as u64) as u32;
        let resume = match job.resume {
            Some(bytes) => Some(
                Checkpoint::from_bytes(&bytes).map_err(|e| TrainError::Resume(e.to_string()))?,
            ),
            None => None,
        };
        let request = TrainRequest {
            dataset: job.dataset,
            algorithm,
            hyperparameters,
            resume,
            batch_halvings: job.limits.batch_halvings,
        };
        let mut adapter = Adapter(reporter);
        Ok(match crate::train(request, control, &mut adapter)? {
            Outcome::Completed(model) => Finished::Completed(Artifact {
                bytes: model.to_bytes(),
                metrics: model.header.metrics,
            }),
            Outcome::Cancelled => Finished::Cancelled,
            Outcome::Paused(_) => Finished::Paused,
        })
    }

    fn memory_estimate_mb(&self, job: &Job) -> Option<f64> {
        let info = &job.dataset.info;
        let (algorithm, hp) = resolve(&job.algorithm, info, &job.hyperparameters).ok()?;
        let estimate = crate::estimate_memory(algorithm, &hp, info);
        let budget = job_budget_mb(&job.limits, &hp);
        let batch = if hp.batch_size_auto {
            // The largest batch the probe may choose.
            let train_rows = (info.n_rows as f64 * (1.0 - hp.validation_split)) as usize;
            let tried = crate::batch_probe::candidates(&estimate, budget, train_rows);
            tried.last().copied().unwrap_or(1)
        } else {
            estimate
                .fitting_batch(hp.batch_size as usize, budget)
                .unwrap_or(1)
        };
        Some(estimate.mb_at(batch))
    }

    fn checkpoint_position(&self, bytes: &[u8]) -> Result<(u32, u64), String> {
        let ckpt = Checkpoint::from_bytes(bytes).map_err(|e| e.to_string())?;
        Ok((ckpt.state.epoch, ckpt.state.global_step))
    }

    fn load(&self, bytes: &[u8]) -> Result<Arc<dyn Served>, PredictError> {
        let model = TrainedModel::from_bytes(bytes)?;
        Ok(Arc::new(model.predictor()?))
    }
}

/// The engine's typed observer on top of a family reporter.
struct Adapter<'a>(&'a mut dyn Reporter);

impl Observer for Adapter<'_> {
    fn event(&mut self, event: TrainingEvent) {
        // The seam reports how training ended, for every family alike (see `family::run`).
        if !matches!(
            event,
            TrainingEvent::Finished { .. } | TrainingEvent::Failed { .. }
        ) {
            self.0.event(event);
        }
    }

    fn checkpoint(&mut self, checkpoint: &Checkpoint) -> Result<u64, String> {
        self.0.checkpoint(&SavedCheckpoint {
            epoch: checkpoint.state.epoch,
            step: checkpoint.state.global_step,
            bytes: checkpoint.to_bytes(),
        })
    }
}

impl Served for Predictor {
    fn predict(&self, rows: &[Vec<f64>]) -> Result<Vec<Value>, PredictError> {
        Ok(Predictor::predict(self, rows)?
            .into_iter()
            .map(|p| serde_json::to_value(p).expect("predictions serialize"))
            .collect())
    }

    fn output_columns(&self) -> Vec<String> {
        let columns: &[&str] = match self.header().classes {
            Some(_) => &["label", "class_index", "probabilities"],
            None => &["value"],
        };
        columns.iter().map(|c| c.to_string()).collect()
    }

    fn feature_names(&self) -> Vec<String> {
        self.header().feature_names.clone()
    }
}
