//! `trainyard bench --anomaly`: the isolation forest (100 trees), ECOD and HBOS on shuttle's ODDS split
//! (seeded 60/40, standardised): fit seconds, scoring throughput and ROC-AUC. `--export DIR`
//! writes the same split as CSV so a peer (scikit-learn, PyOD) measures the same rows.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use serde_json::json;
use trainyard_data::{OutlierSplit, shuttle_odds_split};
use trainyard_engine::Control;
use trainyard_engine::anomaly::metrics::{precision_at_n, roc_auc};
use trainyard_engine::anomaly::{
    Detector, Ecod, Hbos, IsolationForest, IsolationForestParams, Rows,
};

pub fn run(json_output: bool, export: Option<&Path>) -> anyhow::Result<()> {
    let split = shuttle_odds_split(7, 0.6)?;
    if let Some(dir) = export {
        write_split(&split, dir)?;
    }
    let train = Rows::new(&split.train, split.d);
    let test = Rows::new(&split.test, split.d);
    for name in ["isolation_forest", "ecod", "hbos"] {
        let started = Instant::now();
        let detector: Box<dyn Detector> = match name {
            "isolation_forest" => Box::new(
                IsolationForest::fit(train, IsolationForestParams::default(), &Control::default())
                    .context("the fit was stopped")?,
            ),
            "ecod" => Box::new(Ecod::fit(train)),
            _ => Box::new(Hbos::fit(train, 10, 0.1, 0.5)),
        };
        let fit_seconds = started.elapsed().as_secs_f64();
        let started = Instant::now();
        let scores = detector.score(test);
        let score_seconds = started.elapsed().as_secs_f64();
        let result = json!({
            "workload": format!("{name}_shuttle"),
            "train_rows": train.len(),
            "test_rows": test.len(),
            "fit_seconds": fit_seconds,
            "score_seconds": score_seconds,
            "rows_per_second": test.len() as f64 / score_seconds,
            "roc_auc": roc_auc(&scores, &split.test_outlier),
            "precision_at_n": precision_at_n(&scores, &split.test_outlier),
        });
        if json_output {
            println!("{result}");
        } else {
            println!(
                "{name} on shuttle ({} train / {} test rows): fit {:.3} s, score {:.3} s ({:.0} rows/s), ROC-AUC {:.4}",
                train.len(),
                test.len(),
                fit_seconds,
                score_seconds,
                result["rows_per_second"].as_f64().unwrap_or(0.0),
                result["roc_auc"].as_f64().unwrap_or(f64::NAN)
            );
        }
    }
    Ok(())
}

fn write_split(split: &OutlierSplit, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (name, x, outlier) in [
        ("train.csv", &split.train, &split.train_outlier),
        ("test.csv", &split.test, &split.test_outlier),
    ] {
        let path = dir.join(name);
        let mut out = std::io::BufWriter::new(
            std::fs::File::create(&path).with_context(|| format!("writing {}", path.display()))?,
        );
        for (row, o) in x.chunks_exact(split.d).zip(outlier.iter()) {
            for v in row {
                write!(out, "{v},")?;
            }
            writeln!(out, "{}", u8::from(*o))?;
        }
    }
    Ok(())
}
