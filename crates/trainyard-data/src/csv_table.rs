//! Reads a CSV file with a header row into a [`Table`]. Every error names the line (1-based,
//! counting the header) and the column, so a user can find and fix the cell.

use std::collections::BTreeSet;

use trainyard_core::Task;

use crate::{DataError, Dataset, DatasetInfo, Table};

/// How to read a CSV file into a dataset.
#[derive(Debug, Clone)]
pub struct CsvOptions {
    pub name: String,
    /// The target column; `None` reads every column as a feature (an unlabeled dataset).
    pub target: Option<String>,
    /// `None` infers: a non-numeric target, or an integer target with at most
    /// [`MAX_INFERRED_CLASSES`] distinct values, is classification.
    pub task: Option<Task>,
    pub description: String,
    pub license: String,
}

const MAX_INFERRED_CLASSES: usize = 20;

pub fn parse_csv(bytes: &[u8], options: &CsvOptions) -> Result<Dataset, DataError> {
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(DataError::csv(
            None,
            None,
            "the file is empty; expected a header row and data rows",
        ));
    }
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(bytes);
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| DataError::csv(Some(1), None, format!("unreadable header: {e}")))?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    let target_col = match &options.target {
        Some(target) => Some(header.iter().position(|h| h == target).ok_or_else(|| {
            DataError::csv(
                Some(1),
                Some(target),
                format!(
                    "target column not found; the header has: {}",
                    header.join(", ")
                ),
            )
        })?),
        None => None,
    };
    let n_features = header.len() - usize::from(target_col.is_some());
    if n_features == 0 {
        return Err(DataError::csv(
            Some(1),
            None,
            "need at least one feature column besides the target",
        ));
    }

    let mut x = Vec::new();
    let mut raw_targets: Vec<String> = Vec::new();
    let mut rows = 0usize;
    for (i, record) in reader.records().enumerate() {
        let line = i + 2;
        let record = record.map_err(|e| DataError::csv(Some(line), None, e.to_string()))?;
        if record.len() == 1 && record[0].trim().is_empty() {
            continue; // blank line
        }
        if record.len() != header.len() {
            return Err(DataError::csv(
                Some(line),
                None,
                format!(
                    "has {} fields but the header has {}",
                    record.len(),
                    header.len()
                ),
            ));
        }
        for (col, cell) in record.iter().enumerate() {
            if Some(col) == target_col {
                raw_targets.push(cell.trim().to_string());
            } else {
                x.push(parse_number(cell, line, &header[col])?);
            }
        }
        rows += 1;
    }
    if rows < 2 {
        return Err(DataError::csv(
            None,
            None,
            format!("need at least 2 data rows, got {rows}"),
        ));
    }
    let raw = RawTable {
        header,
        target_col,
        x,
        raw_targets,
        rows,
    };
    assemble(raw, options, &|row, column, message| {
        DataError::csv(Some(row + 2), Some(column), message)
    })
}

/// Rows as a reader found them: numeric features, the target column's cells as text.
pub(crate) struct RawTable {
    pub header: Vec<String>,
    pub target_col: Option<usize>,
    pub x: Vec<f32>,
    pub raw_targets: Vec<String>,
    pub rows: usize,
}

/// Where a cell sits, for errors: data row (0-based), column, message.
pub(crate) type Locate<'a> = &'a dyn Fn(usize, &str, String) -> DataError;

/// Turns read rows into a dataset: infers or checks the task and encodes the target; with no
/// target column the dataset is unlabeled.
pub(crate) fn assemble(
    raw: RawTable,
    options: &CsvOptions,
    locate: Locate<'_>,
) -> Result<Dataset, DataError> {
    let RawTable {
        header,
        target_col,
        x,
        raw_targets,
        rows,
    } = raw;
    let n_features = header.len() - usize::from(target_col.is_some());
    let Some(target_col) = target_col else {
        let info = DatasetInfo {
            name: options.name.clone(),
            description: options.description.clone(),
            task: Task::Unlabeled,
            n_rows: rows,
            n_features,
            feature_names: header,
            target_name: String::new(),
            classes: None,
            image_shape: None,
            test_rows: None,
            license: options.license.clone(),
            extracted_from: None,
        };
        let table = Table {
            x,
            y: vec![],
            n_features,
        };
        return Ok(Dataset {
            info,
            table,
            test: None,
            text: None,
            texts: None,
            activations: None,
        });
    };

    let target_name = &header[target_col];
    let numeric: Option<Vec<f64>> = raw_targets.iter().map(|t| t.parse::<f64>().ok()).collect();
    let task = options
        .task
        .unwrap_or_else(|| infer_task(numeric.as_deref()));
    let (y, classes) = match task {
        Task::Regression => {
            let values = numeric.ok_or_else(|| {
                let (row, bad) = raw_targets
                    .iter()
                    .enumerate()
                    .find(|(_, t)| t.parse::<f64>().is_err())
                    .map(|(i, t)| (i, t.clone()))
                    .unwrap_or_default();
                locate(
                    row,
                    target_name,
                    format!("'{bad}' is not a number; a regression target must be numeric"),
                )
            })?;
            if let Some((i, v)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
                let message = format!("{v} is not allowed; values must be finite");
                return Err(locate(i, target_name, message));
            }
            (values.iter().map(|v| *v as f32).collect(), None)
        }
        Task::Classification => encode_classes(&raw_targets, numeric.is_some(), target_name)?,
        Task::Unlabeled | Task::Text => unreachable!("a target column was named"),
    };

    let feature_names: Vec<String> = header
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != target_col)
        .map(|(_, h)| h.clone())
        .collect();
    let info = DatasetInfo {
        name: options.name.clone(),
        description: options.description.clone(),
        task,
        n_rows: y.len(),
        n_features,
        feature_names,
        target_name: target_name.clone(),
        classes,
        image_shape: None,
        test_rows: None,
        license: options.license.clone(),
        extracted_from: None,
    };
    Ok(Dataset {
        info,
        table: Table { x, y, n_features },
        test: None,
        text: None,
        texts: None,
        activations: None,
    })
}

fn parse_number(cell: &str, line: usize, column: &str) -> Result<f32, DataError> {
    let trimmed = cell.trim();
    let value: f64 = trimmed.parse().map_err(|_| {
        let shown = if trimmed.is_empty() {
            "an empty cell".to_string()
        } else {
            format!("'{trimmed}'")
        };
        DataError::csv(
            Some(line),
            Some(column),
            format!("{shown} is not a number; features must be numeric"),
        )
    })?;
    check_finite(value, line, column)?;
    Ok(value as f32)
}

fn check_finite(value: f64, line: usize, column: &str) -> Result<(), DataError> {
    if value.is_finite() {
        Ok(())
    } else {
        Err(DataError::csv(
            Some(line),
            Some(column),
            format!("{value} is not allowed; values must be finite"),
        ))
    }
}

fn infer_task(numeric: Option<&[f64]>) -> Task {
    match numeric {
        None => Task::Classification,
        Some(values) => {
            let integral = values.iter().all(|v| v.fract() == 0.0);
            let distinct: BTreeSet<i64> = values.iter().map(|v| *v as i64).collect();
            if integral && distinct.len() <= MAX_INFERRED_CLASSES {
                Task::Classification
            } else {
                Task::Regression
            }
        }
    }
}

/// The most classes a target column may have: the output layer, the probabilities in every
/// prediction and the metrics all grow with it.
pub const MAX_CLASSES: usize = 1_000;

/// Maps labels to class indices in sorted order (numerically when the labels are numbers).
fn encode_classes(
    raw: &[String],
    numeric: bool,
    target_name: &str,
) -> Result<(Vec<f32>, Option<Vec<String>>), DataError> {
    let mut labels: Vec<String> = raw
        .iter()
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if numeric {
        labels.sort_by(|a, b| {
            a.parse::<f64>()
                .unwrap()
                .total_cmp(&b.parse::<f64>().unwrap())
        });
    }
    if labels.len() > MAX_CLASSES {
        return Err(DataError::csv(
            None,
            Some(target_name),
            format!(
                "{} distinct classes, over the limit of {MAX_CLASSES}; is this column a continuous value? upload it with task=regression",
                labels.len()
            ),
        ));
    }
    if labels.len() < 2 {
        return Err(DataError::csv(
            None,
            Some(target_name),
            format!(
                "every row has the class '{}'; classification needs at least 2 classes",
                labels[0]
            ),
        ));
    }
    let index: std::collections::HashMap<&str, usize> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (l.as_str(), i))
        .collect();
    let y = raw.iter().map(|t| index[t.as_str()] as f32).collect();
    Ok((y, Some(labels)))
}

#[cfg(test)]
mod tests;
