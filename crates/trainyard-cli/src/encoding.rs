//! Turning user input into requests: CSV rows of numbers, URL path segments and query strings.

use anyhow::{Context, bail};

/// Rows of numbers from CSV text (quoted cells allowed); a first row that is not numeric is a
/// header and skipped.
pub fn parse_csv_rows(text: &str) -> anyhow::Result<Vec<Vec<f64>>> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let mut rows = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let record = record.with_context(|| format!("record {}", i + 1))?;
        if record.iter().all(str::is_empty) {
            continue;
        }
        let parsed: Result<Vec<f64>, _> = record.iter().map(str::parse::<f64>).collect();
        match parsed {
            Ok(row) => rows.push(row),
            Err(_) if i == 0 => continue,
            Err(_) => {
                let line = record.position().map_or(i as u64 + 1, |p| p.line());
                bail!("line {line}: every cell must be a number")
            }
        }
    }
    Ok(rows)
}

/// One URL path segment, percent-encoded (a name may hold spaces, slashes or `?`).
pub fn segment(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// A query string, each name and value form-encoded.
pub fn query(pairs: &[(&str, &str)]) -> String {
    let mut out = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        out.append_pair(k, v);
    }
    out.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_csv_cells_and_headers_parse() {
        let rows = parse_csv_rows("\"a,b\",c\n\"1.5\", 2\n\n3,\"4\"\n").unwrap();
        assert_eq!(rows, vec![vec![1.5, 2.0], vec![3.0, 4.0]]);
        let err = parse_csv_rows("1,2\n3,x\n").unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
    }

    #[test]
    fn names_and_query_values_are_encoded() {
        assert_eq!(segment("a b/c?"), "a%20b%2Fc%3F");
        assert_eq!(
            query(&[("name", "my data"), ("target", "a&b=c")]),
            "name=my+data&target=a%26b%3Dc"
        );
    }
}
