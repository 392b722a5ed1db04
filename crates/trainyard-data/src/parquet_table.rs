//! Reads a Parquet file into a dataset through the same assembly as CSV (target column, task
//! inference, class encoding). Columns are flat; features must be numeric or boolean. Every
//! error names the row group and row (0-based) and the column.

use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;

use crate::csv_table::{CsvOptions, RawTable, assemble};
use crate::{DataError, Dataset};

/// Parquet files start and end with this magic.
pub const PARQUET_MAGIC: &[u8; 4] = b"PAR1";

/// Whether `bytes` look like a Parquet file rather than CSV text.
pub fn is_parquet(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes.starts_with(PARQUET_MAGIC) && bytes.ends_with(PARQUET_MAGIC)
}

fn error(
    row_group: Option<usize>,
    row: Option<usize>,
    column: Option<&str>,
    message: impl Into<String>,
) -> DataError {
    DataError::Parquet {
        row_group,
        row,
        column: column.map(str::to_string),
        message: message.into(),
    }
}

pub fn parse_parquet(bytes: &[u8], options: &CsvOptions) -> Result<Dataset, DataError> {
    let reader = SerializedFileReader::new(bytes::Bytes::copy_from_slice(bytes)).map_err(|e| {
        error(
            None,
            None,
            None,
            format!("not a readable Parquet file: {e}"),
        )
    })?;
    let schema = reader.metadata().file_metadata().schema_descr();
    let header: Vec<String> = schema
        .columns()
        .iter()
        .map(|c| c.name().to_string())
        .collect();
    if let Some(nested) = schema.columns().iter().find(|c| c.path().parts().len() > 1) {
        return Err(error(
            None,
            None,
            Some(&nested.path().string()),
            "nested columns are not supported; flatten the file",
        ));
    }
    let target_col = match &options.target {
        Some(target) => Some(header.iter().position(|h| h == target).ok_or_else(|| {
            error(
                None,
                None,
                Some(target),
                format!(
                    "target column not found; the file has: {}",
                    header.join(", ")
                ),
            )
        })?),
        None => None,
    };
    if header.len() == usize::from(target_col.is_some()) {
        return Err(error(
            None,
            None,
            None,
            "need at least one feature column besides the target",
        ));
    }
    let mut raw = RawTable {
        header,
        target_col,
        x: Vec::new(),
        raw_targets: Vec::new(),
        rows: 0,
    };
    // Where each data row came from, for errors found after reading (a bad target value).
    let mut origin: Vec<(usize, usize)> = Vec::new();
    for group in 0..reader.num_row_groups() {
        let rows = reader
            .get_row_group(group)
            .and_then(|g| g.get_row_iter(None).map(|it| it.collect::<Vec<_>>()))
            .map_err(|e| error(Some(group), None, None, e.to_string()))?;
        for (index, row) in rows.into_iter().enumerate() {
            let row = row.map_err(|e| error(Some(group), Some(index), None, e.to_string()))?;
            for (col, (name, field)) in row.get_column_iter().enumerate() {
                let at = |message: String| error(Some(group), Some(index), Some(name), message);
                if Some(col) == raw.target_col {
                    raw.raw_targets.push(
                        target_text(field)
                            .ok_or_else(|| at(format!("{field} cannot be a target")))?,
                    );
                } else {
                    raw.x.push(number(field).map_err(at)?);
                }
            }
            origin.push((group, index));
            raw.rows += 1;
        }
    }
    if raw.rows < 2 {
        return Err(error(
            None,
            None,
            None,
            format!("need at least 2 data rows, got {}", raw.rows),
        ));
    }
    assemble(raw, options, &|row, column, message| {
        let (group, index) = origin[row];
        error(Some(group), Some(index), Some(column), message)
    })
}

/// A feature cell as a finite f32.
fn number(field: &Field) -> Result<f32, String> {
    let value = match field {
        Field::Bool(b) => f64::from(u8::from(*b)),
        Field::Byte(v) => f64::from(*v),
        Field::Short(v) => f64::from(*v),
        Field::Int(v) => f64::from(*v),
        Field::Long(v) => *v as f64,
        Field::UByte(v) => f64::from(*v),
        Field::UShort(v) => f64::from(*v),
        Field::UInt(v) => f64::from(*v),
        Field::ULong(v) => *v as f64,
        Field::Float(v) => f64::from(*v),
        Field::Double(v) => *v,
        Field::Null => return Err("missing value; features must be numeric".into()),
        other => return Err(format!("{other} is not a number; features must be numeric")),
    };
    if !value.is_finite() || (value as f32).is_infinite() {
        return Err(format!("{value} is not allowed; values must be finite"));
    }
    Ok(value as f32)
}

/// A target cell as the text the shared assembly reads (numbers print as CSV would hold them).
fn target_text(field: &Field) -> Option<String> {
    Some(match field {
        Field::Str(s) => s.clone(),
        Field::Bool(b) => b.to_string(),
        Field::Float(v) => v.to_string(),
        Field::Double(v) => v.to_string(),
        Field::Null => return None,
        other => match number(other) {
            Ok(_) => other.to_string(),
            Err(_) => return None,
        },
    })
}

#[cfg(test)]
mod tests;
