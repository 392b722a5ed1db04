//! The built-in datasets, embedded in the binary as the gzip files in `datasets/` and checked
//! against their sha256 each time they are decoded. Decoded datasets are cached per process.

use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, Mutex, OnceLock};

use sha2::{Digest, Sha256};
use trainyard_core::Task;

use crate::csv_table::{CsvOptions, parse_csv};
use crate::idx::read_idx_u8;
use crate::{DataError, Dataset, DatasetInfo, SyntheticSpec, Table};

/// Names accepted wherever a dataset is named.
pub const BUILTIN_NAMES: [&str; 7] = [
    "iris",
    "wine_quality",
    "california_housing",
    "mnist",
    "synthetic",
    "shuttle",
    "shakespeare",
];

struct EmbeddedFile {
    name: &'static str,
    sha256: &'static str,
    bytes: &'static [u8],
}

macro_rules! embedded {
    ($file:literal, $sha:literal) => {
        EmbeddedFile {
            name: $file,
            sha256: $sha,
            bytes: include_bytes!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../datasets/",
                $file
            )),
        }
    };
}

static FILES: [EmbeddedFile; 9] = [
    embedded!(
        "iris.csv.gz",
        "08bc9d2900ba143eea5de6beceacee006666df89f64f0e44daa431be604bae1f"
    ),
    embedded!(
        "winequality-red.csv.gz",
        "bfded8adb9d2709f4c88b911787fedee4d75962a3593c3d175285ab299445462"
    ),
    embedded!(
        "california_housing.csv.gz",
        "c0972030de4d2836d4930fd3a143aaf51c2b938b85c65a14f18b645c7664287b"
    ),
    embedded!(
        "mnist-train-images-idx3-ubyte.gz",
        "0b367032e93c5d0cea0925647cfdb18614af8ee15f83e6f2fc2ad904a6835971"
    ),
    embedded!(
        "mnist-train-labels-idx1-ubyte.gz",
        "1787548bbe0bff1ec2ecdc0ef292b02df999e2d1a6002d27500982c652b17203"
    ),
    embedded!(
        "mnist-t10k-images-idx3-ubyte.gz",
        "1a1a05eab793c14bb050b398624a11b0ffd1a2953baed553b1b9bd079e2a20be"
    ),
    embedded!(
        "mnist-t10k-labels-idx1-ubyte.gz",
        "b91679a0acfe4ba0e50a2437a903084cba1f5f92592b016a25a7dfd00455798b"
    ),
    embedded!(
        "shuttle.csv.gz",
        "c147a92e373a61d0122633cc2a2f22023ee45dc89b6c25071b57389c2a448156"
    ),
    embedded!(
        "shakespeare.txt.gz",
        "315a122776be4e3f7bb982803c09d14b29e1e47d5544632278c7f2188ebacb20"
    ),
];

/// The decompressed content of an embedded file, after its checksum is verified.
pub fn raw_builtin_bytes(file: &str) -> Result<Vec<u8>, DataError> {
    let entry = FILES
        .iter()
        .find(|f| f.name == file)
        .ok_or_else(|| DataError::Unknown(file.to_string()))?;
    decompress_verified(file, entry.sha256, entry.bytes)
}

fn decompress_verified(file: &str, expected: &str, gz: &[u8]) -> Result<Vec<u8>, DataError> {
    let actual = hex::encode(Sha256::digest(gz));
    if actual != expected {
        return Err(DataError::Checksum {
            file: file.into(),
            expected: expected.into(),
            actual,
        });
    }
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(gz)
        .read_to_end(&mut out)
        .map_err(|e| DataError::Checksum {
            file: format!("{file} ({e})"),
            expected: expected.into(),
            actual: "undecodable".into(),
        })?;
    Ok(out)
}

fn csv_builtin(
    name: &str,
    file: &str,
    target: &str,
    description: &str,
    license: &str,
) -> Result<Dataset, DataError> {
    let bytes = raw_builtin_bytes(file)?;
    parse_csv(
        &bytes,
        &CsvOptions {
            name: name.into(),
            target: Some(target.into()),
            task: None,
            description: description.into(),
            license: license.into(),
        },
    )
}

const UCI: &str = "CC BY 4.0 (UCI Machine Learning Repository)";

fn decode(name: &str) -> Result<Dataset, DataError> {
    match name {
        "shakespeare" => text_builtin(
            name,
            "Shakespeare's plays as plain text (5 MB): a character-level language-modelling corpus",
        ),
        "iris" => csv_builtin(
            name,
            "iris.csv.gz",
            "species",
            "Fisher's iris: 4 flower measurements, 3 species",
            UCI,
        ),
        "wine_quality" => csv_builtin(
            name,
            "winequality-red.csv.gz",
            "quality",
            "Red wine quality (Cortez et al. 2009): 11 physico-chemical features, quality score 3-8 as classes",
            UCI,
        ),
        "california_housing" => {
            let mut ds = csv_builtin(
                name,
                "california_housing.csv.gz",
                "MedHouseVal",
                "California housing, 1990 census block groups: 8 features, median house value (100k USD)",
                "public data (Pace and Barry, 1997)",
            )?;
            ds.info.task = Task::Regression;
            Ok(ds)
        }
        "shuttle" => shuttle_odds(),
        "mnist" => mnist(),
        "synthetic" => Ok(SyntheticSpec::default().generate()),
        other => Err(DataError::Unknown(other.to_string())),
    }
}

/// Shuttle as ODDS publishes it for outlier detection: class High dropped, every class but
/// Rad.Flow an outlier (49,097 rows, 3,511 outliers), label column `outlier` (0 or 1).
fn shuttle_odds() -> Result<Dataset, DataError> {
    let statlog = csv_builtin("shuttle", "shuttle.csv.gz", "Class", "", UCI)?;
    let classes = statlog.info.classes.clone().unwrap_or_default();
    let index = |name: &str| classes.iter().position(|c| c == name).map(|i| i as f32);
    let (Some(high), Some(normal)) = (index("High"), index("Rad.Flow")) else {
        return Err(DataError::Unknown(
            "shuttle without classes High and Rad.Flow".into(),
        ));
    };
    let d = statlog.info.n_features;
    let kept: Vec<usize> = (0..statlog.table.len())
        .filter(|i| statlog.table.y[*i] != high)
        .collect();
    let mut table = statlog.table.select(&kept);
    for y in &mut table.y {
        *y = if *y == normal { 0.0 } else { 1.0 };
    }
    let info = DatasetInfo {
        description: "Statlog shuttle as ODDS publishes it: 9 sensor features; class High dropped, \
                      every flight state but Rad.Flow an outlier (label column 'outlier', 7.15% ones)"
            .into(),
        n_rows: table.len(),
        n_features: d,
        target_name: "outlier".into(),
        classes: Some(vec!["0".into(), "1".into()]),
        ..statlog.info
    };
    Ok(Dataset {
        info,
        table,
        test: None,
        text: None,
        texts: None,
        activations: None,
    })
}

/// A built-in text corpus.
fn text_builtin(name: &str, description: &str) -> Result<Dataset, DataError> {
    let text = crate::text::builtin_corpus(name)?;
    crate::text::corpus_dataset(name, text, description, "public domain")
}

fn mnist_split(images: &str, labels: &str) -> Result<Table, DataError> {
    let (dims, pixels) = read_idx_u8(images, &raw_builtin_bytes(images)?)?;
    let (_, digits) = read_idx_u8(labels, &raw_builtin_bytes(labels)?)?;
    if dims.len() != 3 || dims[0] != digits.len() {
        return Err(DataError::Idx {
            file: images.into(),
            message: format!("{dims:?} does not match {} labels", digits.len()),
        });
    }
    Ok(Table {
        x: pixels.into_iter().map(f32::from).collect(),
        y: digits.into_iter().map(f32::from).collect(),
        n_features: dims[1] * dims[2],
    })
}

fn mnist() -> Result<Dataset, DataError> {
    let table = mnist_split(
        "mnist-train-images-idx3-ubyte.gz",
        "mnist-train-labels-idx1-ubyte.gz",
    )?;
    let test = mnist_split(
        "mnist-t10k-images-idx3-ubyte.gz",
        "mnist-t10k-labels-idx1-ubyte.gz",
    )?;
    Ok(Dataset {
        info: mnist_info(table.len(), test.len()),
        table,
        test: Some(test),
        text: None,
        texts: None,
        activations: None,
    })
}

fn mnist_info(n_rows: usize, test_rows: usize) -> DatasetInfo {
    DatasetInfo {
        name: "mnist".into(),
        description:
            "MNIST handwritten digits, 28x28 grey pixels (0-255), its own 60k/10k train/test split"
                .into(),
        task: Task::Classification,
        n_rows,
        n_features: 784,
        feature_names: (0..784).map(|i| format!("pixel_{i}")).collect(),
        target_name: "digit".into(),
        classes: Some((0..10).map(|d| d.to_string()).collect()),
        image_shape: Some([1, 28, 28]),
        test_rows: Some(test_rows),
        license: "CC BY-SA 3.0 (LeCun, Cortes, Burges)".into(),
        extracted_from: None,
    }
}

fn cache() -> &'static Mutex<HashMap<String, Arc<Dataset>>> {
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<Dataset>>>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// Loads a built-in dataset, decoding it at most once per process.
pub fn load_builtin(name: &str) -> Result<Arc<Dataset>, DataError> {
    if let Some(ds) = cache().lock().unwrap().get(name) {
        return Ok(ds.clone());
    }
    // Decoded outside the lock: mnist takes a moment and other datasets should not wait.
    let ds = Arc::new(decode(name)?);
    cache()
        .lock()
        .unwrap()
        .entry(name.to_string())
        .or_insert(ds.clone());
    Ok(ds)
}

/// The description of a built-in dataset. Small ones are decoded; mnist's is static so that
/// listing datasets never decodes 60,000 images.
pub fn builtin_info(name: &str) -> Result<DatasetInfo, DataError> {
    match name {
        "mnist" => Ok(mnist_info(60_000, 10_000)),
        "synthetic" => Ok(SyntheticSpec::default().info()),
        _ => load_builtin(name).map(|ds| ds.info.clone()),
    }
}

#[cfg(test)]
mod tests;
