//! Datasets for Trainyard: the built-in ones embedded in the binary (verified by sha256 at load),
//! user CSV files read through the same path, a seeded synthetic generator, and the seeded
//! train/validation split with scaling fitted on the training part only.

mod builtin;
mod csv_table;
mod error;
mod idx;
mod outliers;
mod prepare;
mod rng;
mod synthetic;
mod table;

pub use builtin::{BUILTIN_NAMES, builtin_info, load_builtin, raw_builtin_bytes};
pub use csv_table::{CsvOptions, parse_csv};
pub use error::DataError;
pub use outliers::{OutlierSplit, shuttle_odds_split};
pub use prepare::{Prepared, Scaler, prepare};
pub use rng::SeededRng;
pub use synthetic::SyntheticSpec;
pub use table::{Dataset, DatasetInfo, Table};
