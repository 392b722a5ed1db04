use std::sync::Arc;

use parquet::basic::Compression;
use parquet::data_type::{ByteArray, ByteArrayType, DoubleType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
use trainyard_core::Task;

use super::*;

/// Two row groups of (x DOUBLE, n INT64, label UTF8); `x` of the second group as given.
fn file(second_x: &[f64], compression: Compression) -> Vec<u8> {
    let schema = Arc::new(
        parse_message_type(
            "message m { REQUIRED DOUBLE x; REQUIRED INT64 n; REQUIRED BINARY label (UTF8); }",
        )
        .unwrap(),
    );
    let props = Arc::new(
        WriterProperties::builder()
            .set_compression(compression)
            .build(),
    );
    let mut bytes = Vec::new();
    let mut writer = SerializedFileWriter::new(&mut bytes, schema, props).unwrap();
    for x in [&[1.0, 2.0, 3.0][..], second_x] {
        let n: Vec<i64> = (0..x.len() as i64).collect();
        let labels: Vec<ByteArray> = (0..x.len())
            .map(|i| ByteArray::from(if i % 2 == 0 { "a" } else { "b" }))
            .collect();
        let mut group = writer.next_row_group().unwrap();
        let mut column = group.next_column().unwrap().unwrap();
        column
            .typed::<DoubleType>()
            .write_batch(x, None, None)
            .unwrap();
        column.close().unwrap();
        let mut column = group.next_column().unwrap().unwrap();
        column
            .typed::<Int64Type>()
            .write_batch(&n, None, None)
            .unwrap();
        column.close().unwrap();
        let mut column = group.next_column().unwrap().unwrap();
        column
            .typed::<ByteArrayType>()
            .write_batch(&labels, None, None)
            .unwrap();
        column.close().unwrap();
        group.close().unwrap();
    }
    writer.close().unwrap();
    bytes
}

fn options(target: Option<&str>) -> CsvOptions {
    CsvOptions {
        name: "p".into(),
        target: target.map(str::to_string),
        task: None,
        description: String::new(),
        license: String::new(),
    }
}

#[test]
fn reads_row_groups_with_a_target_like_csv() {
    let bytes = file(&[4.0, 5.0], Compression::SNAPPY);
    assert!(is_parquet(&bytes));
    let ds = parse_parquet(&bytes, &options(Some("label"))).unwrap();
    assert_eq!(ds.info.task, Task::Classification);
    assert_eq!(ds.info.feature_names, vec!["x", "n"]);
    assert_eq!(
        ds.info.classes,
        Some(vec!["a".to_string(), "b".to_string()])
    );
    assert_eq!(ds.table.len(), 5);
    assert_eq!(ds.table.row(3), &[4.0, 0.0]);
    assert_eq!(ds.table.y, vec![0.0, 1.0, 0.0, 0.0, 1.0]);
}

#[test]
fn without_a_target_a_text_column_is_an_error_naming_row_group_row_and_column() {
    let bytes = file(&[4.0], Compression::UNCOMPRESSED);
    let err = parse_parquet(&bytes, &options(None))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("row group 0, row 0, column 'label':"),
        "{err}"
    );
    let ds = parse_parquet(&bytes, &options(Some("n")))
        .unwrap_err()
        .to_string();
    assert!(ds.contains("column 'label'"), "{ds}");
}

#[test]
fn non_finite_values_name_their_place() {
    let bytes = file(&[4.0, f64::NAN], Compression::UNCOMPRESSED);
    let err = parse_parquet(&bytes, &options(Some("label")))
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "row group 1, row 1, column 'x': NaN is not allowed; values must be finite"
    );
}

#[test]
fn a_missing_target_and_a_broken_file_are_clear() {
    let bytes = file(&[4.0], Compression::UNCOMPRESSED);
    let err = parse_parquet(&bytes, &options(Some("y")))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("column 'y': target column not found; the file has: x, n, label"),
        "{err}"
    );
    let mut broken = bytes.clone();
    broken.truncate(bytes.len() / 2);
    broken.extend_from_slice(b"PAR1");
    let err = parse_parquet(&broken, &options(Some("label")))
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a readable Parquet file"), "{err}");
}
