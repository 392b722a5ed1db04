/// Why a dataset could not be loaded. CSV errors name the line and column so a user can fix the
/// file.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DataError {
    #[error("{}", csv_message(.line, .column, .message))]
    Csv {
        line: Option<usize>,
        column: Option<String>,
        message: String,
    },
    #[error("{}", parquet_message(*.row_group, *.row, .column, .message))]
    Parquet {
        row_group: Option<usize>,
        row: Option<usize>,
        column: Option<String>,
        message: String,
    },
    #[error("unknown dataset '{0}'; built-in datasets are: {names}", names = crate::BUILTIN_NAMES.join(", "))]
    Unknown(String),
    #[error(
        "dataset file '{file}' is corrupt: sha256 {actual}, expected {expected}; reinstall trainyard"
    )]
    Checksum {
        file: String,
        expected: String,
        actual: String,
    },
    #[error("invalid IDX file '{file}': {message}")]
    Idx { file: String, message: String },
    #[error("invalid dataset option {field}: {message}")]
    Option { field: String, message: String },
    /// A text corpus that cannot be used.
    #[error("{0}")]
    Text(String),
}

fn csv_message(line: &Option<usize>, column: &Option<String>, message: &str) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!("line {l}, column '{c}': {message}"),
        (Some(l), None) => format!("line {l}: {message}"),
        (None, Some(c)) => format!("column '{c}': {message}"),
        (None, None) => message.to_string(),
    }
}

fn parquet_message(
    row_group: Option<usize>,
    row: Option<usize>,
    column: &Option<String>,
    message: &str,
) -> String {
    let mut place = vec![];
    if let Some(g) = row_group {
        place.push(format!("row group {g}"));
    }
    if let Some(r) = row {
        place.push(format!("row {r}"));
    }
    if let Some(c) = column {
        place.push(format!("column '{c}'"));
    }
    if place.is_empty() {
        message.to_string()
    } else {
        format!("{}: {message}", place.join(", "))
    }
}

impl DataError {
    pub(crate) fn csv(
        line: Option<usize>,
        column: Option<&str>,
        message: impl Into<String>,
    ) -> Self {
        DataError::Csv {
            line,
            column: column.map(str::to_string),
            message: message.into(),
        }
    }
}
