use super::*;

fn options(target: &str) -> CsvOptions {
    CsvOptions {
        name: "test".into(),
        target: Some(target.into()),
        task: None,
        description: String::new(),
        license: String::new(),
    }
}

fn error(csv: &str) -> String {
    parse_csv(csv.as_bytes(), &options("y"))
        .unwrap_err()
        .to_string()
}

#[test]
fn reads_features_and_infers_classification() {
    let ds = parse_csv(b"a,b,y\n1,2,0\n3,4,1\n5,6,1\n", &options("y")).unwrap();
    assert_eq!(ds.info.task, Task::Classification);
    assert_eq!(ds.info.feature_names, vec!["a", "b"]);
    assert_eq!(ds.table.x, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    assert_eq!(ds.table.y, vec![0.0, 1.0, 1.0]);
    assert_eq!(
        ds.info.classes,
        Some(vec!["0".to_string(), "1".to_string()])
    );
}

#[test]
fn target_may_sit_in_any_column_and_be_a_label() {
    let ds = parse_csv(b"kind,a\ncat,1.5\ndog,2\ncat,3\n", &options("kind")).unwrap();
    assert_eq!(ds.table.y, vec![0.0, 1.0, 0.0]);
    assert_eq!(ds.table.x, vec![1.5, 2.0, 3.0]);
}

#[test]
fn fractional_targets_are_regression() {
    let ds = parse_csv(b"a,y\n1,0.5\n2,1.25\n", &options("y")).unwrap();
    assert_eq!(ds.info.task, Task::Regression);
    assert_eq!(ds.table.y, vec![0.5, 1.25]);
}

#[test]
fn empty_file() {
    assert_eq!(
        error(""),
        "the file is empty; expected a header row and data rows"
    );
    assert_eq!(
        error("  \n"),
        "the file is empty; expected a header row and data rows"
    );
}

#[test]
fn missing_target_column() {
    assert_eq!(
        error("a,b\n1,2\n3,4\n"),
        "line 1, column 'y': target column not found; the header has: a, b"
    );
}

#[test]
fn non_numeric_cell() {
    assert_eq!(
        error("a,b,y\n1,2,0\n3,x,1\n"),
        "line 3, column 'b': 'x' is not a number; features must be numeric"
    );
    assert_eq!(
        error("a,b,y\n1,,0\n3,4,1\n"),
        "line 2, column 'b': an empty cell is not a number; features must be numeric"
    );
}

#[test]
fn ragged_row() {
    assert_eq!(
        error("a,b,y\n1,2,0\n3,4\n"),
        "line 3: has 2 fields but the header has 3"
    );
}

#[test]
fn nan_and_inf_cells() {
    assert_eq!(
        error("a,b,y\n1,NaN,0\n3,4,1\n"),
        "line 2, column 'b': NaN is not allowed; values must be finite"
    );
    assert_eq!(
        error("a,b,y\n1,2,0\ninf,4,1\n"),
        "line 3, column 'a': inf is not allowed; values must be finite"
    );
}

#[test]
fn fewer_than_two_rows() {
    assert_eq!(error("a,y\n1,0\n"), "need at least 2 data rows, got 1");
    assert_eq!(error("a,y\n"), "need at least 2 data rows, got 0");
}

#[test]
fn single_class_target() {
    assert_eq!(
        error("a,y\n1,1\n2,1\n3,1\n"),
        "column 'y': every row has the class '1'; classification needs at least 2 classes"
    );
}

#[test]
fn non_numeric_regression_target_names_the_line() {
    let mut opts = options("y");
    opts.task = Some(Task::Regression);
    let err = parse_csv(b"a,y\n1,2.5\n2,high\n", &opts)
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "line 3, column 'y': 'high' is not a number; a regression target must be numeric"
    );
}

#[test]
fn a_target_with_too_many_classes_names_the_limit() {
    let mut csv = String::from("a,y\n");
    for i in 0..=MAX_CLASSES {
        csv.push_str(&format!("{i},c{i}\n"));
    }
    let err = error(&csv);
    assert!(
        err.contains("1001 distinct classes") && err.contains("limit of 1000"),
        "{err}"
    );
}

#[test]
fn without_a_target_every_column_is_a_feature() {
    let mut opts = options("y");
    opts.target = None;
    let ds = parse_csv(b"a,b\n1,2\n3,4\n5,6\n", &opts).unwrap();
    assert_eq!(ds.info.task, Task::Unlabeled);
    assert_eq!(ds.info.feature_names, vec!["a", "b"]);
    assert_eq!((ds.table.len(), ds.table.x.len()), (3, 6));
    assert!(ds.table.y.is_empty());
}
