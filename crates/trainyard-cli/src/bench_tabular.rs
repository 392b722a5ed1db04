//! `trainyard bench --workload tabular`: the default tabular runs (seed 000's datasets and
//! algorithms at their default hyperparameters) timed and scored one by one, a JSON line each.
//! `--export DIR` writes each run's split exactly as Trainyard trained on it (shuffled by the
//! seed, standardised on the training rows) with its resolved hyperparameters, so a peer
//! (scikit-learn) fits the same rows with the same settings.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use serde_json::{Map, Value, json};
use trainyard_core::{Algorithm, Hyperparameters, Task};
use trainyard_data::{Table, load_builtin, prepare};
use trainyard_engine::{Control, Outcome, Recorder, TrainRequest};

/// The default runs: every tabular algorithm on the built-in datasets it suits.
const CASES: [(&str, Algorithm); 8] = [
    ("iris", Algorithm::Mlp),
    ("iris", Algorithm::LogisticRegression),
    ("wine_quality", Algorithm::Mlp),
    ("wine_quality", Algorithm::RandomForest),
    ("california_housing", Algorithm::Mlp),
    ("california_housing", Algorithm::LinearRegression),
    ("california_housing", Algorithm::RandomForest),
    ("synthetic", Algorithm::Mlp),
];

pub fn run(export: Option<&Path>) -> anyhow::Result<()> {
    for (dataset, algorithm) in CASES {
        println!("{}", run_case(dataset, algorithm, export)?);
    }
    Ok(())
}

fn run_case(dataset: &str, algorithm: Algorithm, export: Option<&Path>) -> anyhow::Result<Value> {
    let data = load_builtin(dataset)?;
    let hp = Hyperparameters::resolve(algorithm, &data.info.shape(), &Map::new())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let workload = format!("tabular_{dataset}_{}", algorithm.name());
    if let Some(dir) = export {
        let prepared = prepare(&data, hp.validation_split, hp.seed);
        let case_dir = dir.join(&workload);
        write_table(&prepared.train, &case_dir.join("train.csv"))?;
        write_table(&prepared.validation, &case_dir.join("validation.csv"))?;
        let case = json!({
            "workload": workload,
            "algorithm": algorithm.name(),
            "task": data.info.task,
            "hyperparameters": hp,
        });
        std::fs::write(case_dir.join("case.json"), case.to_string())?;
    }
    let request = TrainRequest {
        dataset: data.clone(),
        algorithm,
        hyperparameters: hp,
        resume: None,
        batch_halvings: 0,
    };
    let started = Instant::now();
    let outcome = trainyard_engine::train(request, &Control::default(), &mut Recorder::default())?;
    let train_seconds = started.elapsed().as_secs_f64();
    let Outcome::Completed(model) = outcome else {
        anyhow::bail!("{workload} did not complete")
    };
    let metric = match data.info.task {
        Task::Regression => "r2",
        _ => "accuracy",
    };
    let value = model.header.metrics.get(metric).copied().ok_or_else(|| {
        anyhow::anyhow!(
            "{workload} recorded no {metric}: its metrics are {:?}",
            model.header.metrics.keys()
        )
    })?;
    Ok(json!({"workload": workload, "train_seconds": train_seconds, metric: value}))
}

/// Features then the label (a class index or a standardised target), one row per line.
fn write_table(table: &Table, path: &Path) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(path).with_context(|| format!("writing {}", path.display()))?,
    );
    for (row, y) in table.x.chunks_exact(table.n_features).zip(&table.y) {
        for v in row {
            write!(out, "{v},")?;
        }
        writeln!(out, "{y}")?;
    }
    out.flush()?;
    Ok(())
}
