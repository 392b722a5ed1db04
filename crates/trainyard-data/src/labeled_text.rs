//! Labeled texts for text classifiers: a CSV (header row) or JSON Lines file with a `text`
//! column and a label column. Labels are strings; classes are their sorted distinct values.

use std::collections::BTreeSet;
use std::sync::Arc;

use trainyard_core::Task;

use crate::{DataError, Dataset, DatasetInfo, Table};

/// The fewest rows worth splitting into training and validation.
pub const MIN_ROWS: usize = 10;

fn error(message: impl Into<String>) -> DataError {
    DataError::Text(message.into())
}

/// Reads `(text, label)` rows: JSON Lines when the file starts with `{`, else CSV.
fn read_rows(bytes: &[u8], label: &str) -> Result<Vec<(String, String)>, DataError> {
    let trimmed = bytes.trim_ascii_start();
    if trimmed.first() == Some(&b'{') {
        return read_jsonl(trimmed, label);
    }
    let mut reader = csv::Reader::from_reader(bytes);
    let headers = reader
        .headers()
        .map_err(|e| error(format!("line 1: {e}")))?
        .clone();
    let column = |name: &str| {
        headers
            .iter()
            .position(|h| h.trim() == name)
            .ok_or_else(|| {
                error(format!(
                    "no '{name}' column; the header has: {}",
                    headers.iter().collect::<Vec<_>>().join(", ")
                ))
            })
    };
    let (text_at, label_at) = (column("text")?, column(label)?);
    let mut rows = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let record = record.map_err(|e| error(format!("line {}: {e}", i + 2)))?;
        let field = |at: usize| record.get(at).unwrap_or_default().to_string();
        rows.push((field(text_at), field(label_at)));
    }
    Ok(rows)
}

fn read_jsonl(bytes: &[u8], label: &str) -> Result<Vec<(String, String)>, DataError> {
    let text = std::str::from_utf8(bytes).map_err(|e| error(format!("not UTF-8: {e}")))?;
    let mut rows = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let at = |message: String| error(format!("line {}: {message}", i + 1));
        let value: serde_json::Value =
            serde_json::from_str(line).map_err(|e| at(format!("not JSON ({e})")))?;
        let text = value["text"]
            .as_str()
            .ok_or_else(|| at("no string field 'text'".into()))?;
        let class = match &value[label] {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::Bool(b) => b.to_string(),
            _ => return Err(at(format!("no string or number field '{label}'"))),
        };
        rows.push((text.to_string(), class));
    }
    Ok(rows)
}

/// A labeled text dataset from a CSV or JSON Lines upload; `label` names the label column.
pub fn parse_labeled_texts(name: &str, bytes: &[u8], label: &str) -> Result<Dataset, DataError> {
    let rows = read_rows(bytes, label)?;
    if let Some(i) = rows.iter().position(|(text, _)| text.trim().is_empty()) {
        return Err(error(format!("row {}: the text is empty", i + 1)));
    }
    if rows.len() < MIN_ROWS {
        return Err(error(format!(
            "a labeled text dataset needs at least {MIN_ROWS} rows; this one has {}",
            rows.len()
        )));
    }
    let classes: Vec<String> = rows
        .iter()
        .map(|(_, c)| c.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if classes.len() < 2 {
        return Err(error(format!(
            "the label column '{label}' has {} distinct value(s); classification needs two or more",
            classes.len()
        )));
    }
    let y = rows
        .iter()
        .map(|(_, c)| classes.binary_search(c).expect("a class of the rows") as f32)
        .collect();
    let texts: Vec<String> = rows.into_iter().map(|(text, _)| text).collect();
    Ok(Dataset {
        info: DatasetInfo {
            name: name.into(),
            description: format!("uploaded labeled texts, label column '{label}'"),
            task: Task::Text,
            n_rows: texts.len(),
            n_features: 0,
            feature_names: vec![],
            target_name: label.into(),
            classes: Some(classes),
            image_shape: None,
            test_rows: None,
            license: "provided by the uploader".into(),
            extracted_from: None,
        },
        table: Table {
            x: vec![],
            y,
            n_features: 0,
        },
        test: None,
        text: None,
        texts: Some(Arc::from(texts)),
        activations: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_and_jsonl_give_the_same_rows_and_bad_files_name_the_problem() {
        let mut csv = String::from("id,text,sentiment\n");
        let mut jsonl = String::new();
        for i in 0..12 {
            let label = if i % 3 == 0 { "neg" } else { "pos" };
            csv.push_str(&format!("{i},\"review, number {i}\",{label}\n"));
            jsonl.push_str(&format!(
                "{{\"text\": \"review, number {i}\", \"sentiment\": \"{label}\"}}\n"
            ));
        }
        let a = parse_labeled_texts("r", csv.as_bytes(), "sentiment").unwrap();
        let b = parse_labeled_texts("r", jsonl.as_bytes(), "sentiment").unwrap();
        assert_eq!(a.texts, b.texts);
        assert_eq!(a.table.y, b.table.y);
        assert_eq!(
            a.info.classes,
            Some(vec!["neg".to_string(), "pos".to_string()])
        );
        assert_eq!(a.texts.as_ref().unwrap()[1], "review, number 1");
        assert_eq!(a.info.n_rows, 12);
        for (bytes, expected) in [
            ("id,body,sentiment\n1,a,b\n".to_string(), "no 'text' column"),
            (csv.replace("sentiment", "label"), "no 'sentiment' column"),
            (csv.replace(",neg", ",pos"), "two or more"),
            ("text,sentiment\na,b\n".to_string(), "at least 10 rows"),
            ("{\"text\": 1}\n".to_string(), "line 1"),
        ] {
            let err = parse_labeled_texts("r", bytes.as_bytes(), "sentiment").unwrap_err();
            assert!(err.to_string().contains(expected), "{err}");
        }
    }
}
