use super::*;

#[test]
fn every_embedded_file_matches_its_checksum() {
    for file in &FILES {
        raw_builtin_bytes(file.name).unwrap_or_else(|e| panic!("{}: {e}", file.name));
    }
}

#[test]
fn a_tampered_file_is_refused() {
    let mut bytes = FILES[0].bytes.to_vec();
    bytes[10] ^= 0xff;
    let err = decompress_verified("iris.csv.gz", FILES[0].sha256, &bytes).unwrap_err();
    assert!(matches!(err, DataError::Checksum { .. }), "{err}");
    assert!(err.to_string().contains("corrupt"));
}

fn check(name: &str, task: Task, rows: usize, features: usize, classes: usize) -> Arc<Dataset> {
    let ds = load_builtin(name).unwrap();
    assert_eq!(ds.info.task, task, "{name}");
    assert_eq!(ds.table.len(), rows, "{name}");
    assert_eq!(ds.info.n_rows, rows, "{name}");
    assert_eq!(ds.table.n_features, features, "{name}");
    assert_eq!(ds.table.x.len(), rows * features, "{name}");
    assert_eq!(ds.info.feature_names.len(), features, "{name}");
    assert_eq!(ds.info.n_classes(), classes, "{name}");
    assert_eq!(
        builtin_info(name).unwrap(),
        ds.info,
        "{name}: static info matches loaded data"
    );
    ds
}

#[test]
fn tabular_shapes() {
    let iris = check("iris", Task::Classification, 150, 4, 3);
    assert_eq!(iris.info.target_name, "species");
    let wine = check("wine_quality", Task::Classification, 1599, 11, 6);
    assert_eq!(wine.info.classes.as_ref().unwrap().first().unwrap(), "3");
    let housing = check("california_housing", Task::Regression, 20640, 8, 0);
    assert_eq!(housing.info.target_name, "MedHouseVal");
    let shuttle = check("shuttle", Task::Classification, 49_097, 9, 2);
    let outliers = shuttle.table.y.iter().filter(|y| **y == 1.0).count();
    assert_eq!(
        (shuttle.info.target_name.as_str(), outliers),
        ("outlier", 3_511)
    );
    check("synthetic", Task::Classification, 2000, 10, 3);
}

#[test]
fn mnist_shape_and_split() {
    let ds = check("mnist", Task::Classification, 60_000, 784, 10);
    let test = ds.test.as_ref().unwrap();
    assert_eq!(test.len(), 10_000);
    assert_eq!(ds.info.image_shape, Some([1, 28, 28]));
    assert!(ds.table.x.iter().all(|p| (0.0..=255.0).contains(p)));
    assert!(ds.table.y.iter().all(|d| (0.0..10.0).contains(d)));
}

#[test]
fn shakespeare_is_vendored() {
    let text = raw_builtin_bytes("shakespeare.txt.gz").unwrap();
    assert!(text.len() > 5_000_000);
}

#[test]
fn unknown_dataset_lists_the_built_ins() {
    let err = load_builtin("imagenet").unwrap_err().to_string();
    assert!(err.contains("iris, wine_quality"), "{err}");
}
