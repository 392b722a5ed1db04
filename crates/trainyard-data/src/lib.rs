//! Datasets for Trainyard: the built-in ones embedded in the binary (verified by sha256 at load),
//! user CSV and Parquet files read through the same path, a seeded synthetic generator, and the seeded
//! train/validation split with scaling fitted on the training part only.

pub mod activations;
mod builtin;
mod csv_table;
mod error;
pub mod extracted;
mod idx;
pub mod labeled_text;
mod outliers;
mod parquet_table;
mod prepare;
mod rng;
mod synthetic;
mod table;
pub mod text;
pub mod tokenizer;
pub mod tokens;

pub use builtin::{BUILTIN_NAMES, builtin_info, load_builtin, raw_builtin_bytes};
pub use csv_table::{CsvOptions, parse_csv};
pub use error::DataError;
pub use outliers::{OutlierSplit, outlier_split, shuttle_odds_split};
pub use parquet_table::{is_parquet, parse_parquet};
pub use prepare::{Prepared, Scaler, prepare};
pub use rng::SeededRng;
pub use synthetic::SyntheticSpec;
pub use table::{Dataset, DatasetInfo, Table};

/// Reads an uploaded table: Parquet when the bytes are a Parquet file, CSV otherwise.
pub fn parse_table(bytes: &[u8], options: &CsvOptions) -> Result<Dataset, DataError> {
    if is_parquet(bytes) {
        parse_parquet(bytes, options)
    } else {
        parse_csv(bytes, options)
    }
}
