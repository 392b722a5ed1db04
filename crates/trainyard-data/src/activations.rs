//! Activation matrices uploaded for sparse autoencoders: a `.npy` file (2-D, C order,
//! little-endian float32 or float16) or a `.safetensors` file holding one 2-D F32 or F16
//! tensor. They are stored as an unlabeled CSV (columns `a0..a{d-1}`, each float written in
//! its shortest form, which reads back to the same float32), so every path that reads a table
//! reads them.

use crate::DataError;

/// Rows x columns of float32, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    pub rows: usize,
    pub cols: usize,
    pub values: Vec<f32>,
}

fn invalid(message: impl Into<String>) -> DataError {
    DataError::Option {
        field: "file".into(),
        message: message.into(),
    }
}

/// Reads a `.npy` or `.safetensors` activation matrix, checking its shape and dtype.
pub fn parse_activation_matrix(bytes: &[u8]) -> Result<Matrix, DataError> {
    let matrix = if bytes.starts_with(b"\x93NUMPY") {
        parse_npy(bytes)?
    } else if bytes.len() > 8 {
        parse_safetensors(bytes)?
    } else {
        return Err(invalid(
            "not an activation matrix: expected a .npy or .safetensors file",
        ));
    };
    if matrix.rows == 0 || matrix.cols == 0 {
        return Err(invalid(format!(
            "the matrix is {} x {}; it needs at least one row and one column",
            matrix.rows, matrix.cols
        )));
    }
    if let Some(i) = matrix.values.iter().position(|v| !v.is_finite()) {
        return Err(invalid(format!(
            "row {}, column {}: {} is not finite",
            i / matrix.cols,
            i % matrix.cols,
            matrix.values[i]
        )));
    }
    Ok(matrix)
}

#[derive(Clone, Copy)]
enum Dtype {
    F32,
    F16,
}

fn decode(data: &[u8], dtype: Dtype, count: usize) -> Result<Vec<f32>, DataError> {
    let width = match dtype {
        Dtype::F32 => 4,
        Dtype::F16 => 2,
    };
    if data.len() != count * width {
        return Err(invalid(format!(
            "the data holds {} bytes where its shape needs {}",
            data.len(),
            count * width
        )));
    }
    Ok(match dtype {
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => data
            .chunks_exact(2)
            .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
            .collect(),
    })
}

/// IEEE half precision to single (subnormals, infinities and NaN included).
fn f16_to_f32(h: u16) -> f32 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exponent = (h >> 10) & 0x1f;
    let mantissa = f32::from(h & 0x3ff);
    match exponent {
        0 => sign * mantissa * 2f32.powi(-24),
        31 if mantissa == 0.0 => sign * f32::INFINITY,
        31 => f32::NAN,
        e => sign * (1.0 + mantissa / 1024.0) * 2f32.powi(i32::from(e) - 15),
    }
}

fn parse_npy(bytes: &[u8]) -> Result<Matrix, DataError> {
    let (header_len, start) = match bytes.get(6) {
        Some(1) => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        Some(2 | 3) if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        _ => return Err(invalid("unsupported .npy version")),
    };
    let header = bytes
        .get(start..start + header_len)
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or_else(|| invalid("the .npy header is cut short"))?;
    let dtype = match value_of(header, "descr") {
        Some("'<f4'") => Dtype::F32,
        Some("'<f2'") => Dtype::F16,
        other => {
            return Err(invalid(format!(
                "dtype {} is not supported; save float32 ('<f4') or float16 ('<f2')",
                other.unwrap_or("(missing)")
            )));
        }
    };
    if value_of(header, "fortran_order") != Some("False") {
        return Err(invalid("the array is in Fortran order; save it in C order"));
    }
    let shape = header
        .split("'shape':")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .map(|s| s.trim().trim_start_matches('('))
        .ok_or_else(|| invalid("the .npy header has no shape"))?;
    let dims: Vec<usize> = shape
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse()
                .map_err(|_| invalid(format!("bad shape ({shape})")))
        })
        .collect::<Result<_, _>>()?;
    let [rows, cols] = dims[..] else {
        return Err(invalid(format!(
            "the array has shape ({shape}); an activation matrix is 2-D: tokens x width"
        )));
    };
    let values = decode(&bytes[start + header_len..], dtype, rows * cols)?;
    Ok(Matrix { rows, cols, values })
}

/// The text after `'key':` in a `.npy` header dictionary, up to the next comma.
fn value_of<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let rest = header.split(&format!("'{key}':")).nth(1)?;
    Some(rest.split(',').next()?.trim())
}

fn parse_safetensors(bytes: &[u8]) -> Result<Matrix, DataError> {
    let header_len = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let header: serde_json::Value = bytes
        .get(8..8usize.saturating_add(header_len))
        .and_then(|h| serde_json::from_slice(h).ok())
        .ok_or_else(|| invalid("not an activation matrix: expected a .npy or .safetensors file"))?;
    let tensors: Vec<(&String, &serde_json::Value)> = header
        .as_object()
        .map(|o| o.iter().filter(|(k, _)| *k != "__metadata__").collect())
        .unwrap_or_default();
    let [(name, tensor)] = tensors[..] else {
        return Err(invalid(format!(
            "the safetensors file holds {} tensors; upload one 2-D activation matrix",
            tensors.len()
        )));
    };
    let dtype = match tensor["dtype"].as_str() {
        Some("F32") => Dtype::F32,
        Some("F16") => Dtype::F16,
        other => {
            return Err(invalid(format!(
                "tensor '{name}' is {}; save F32 or F16",
                other.unwrap_or("of no dtype")
            )));
        }
    };
    let numbers = |key: &str| -> Vec<usize> {
        tensor[key]
            .as_array()
            .map(|s| {
                s.iter()
                    .filter_map(|v| v.as_u64().map(|v| v as usize))
                    .collect()
            })
            .unwrap_or_default()
    };
    let shape = numbers("shape");
    let [rows, cols] = shape[..] else {
        return Err(invalid(format!(
            "tensor '{name}' has shape {shape:?}; an activation matrix is 2-D: tokens x width"
        )));
    };
    let data = match numbers("data_offsets")[..] {
        [begin, end] => bytes.get(8 + header_len + begin..8 + header_len + end),
        _ => None,
    }
    .ok_or_else(|| {
        invalid(format!(
            "tensor '{name}': its data offsets are out of the file"
        ))
    })?;
    Ok(Matrix {
        rows,
        cols,
        values: decode(data, dtype, rows * cols)?,
    })
}

/// The matrix as CSV text with a header `a0,...,a{d-1}`.
pub fn to_csv(matrix: &Matrix) -> Vec<u8> {
    use std::fmt::Write;
    let mut out = String::with_capacity(matrix.values.len() * 12);
    let names: Vec<String> = (0..matrix.cols).map(|j| format!("a{j}")).collect();
    out.push_str(&names.join(","));
    out.push('\n');
    for row in matrix.values.chunks(matrix.cols) {
        for (j, v) in row.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            write!(out, "{v}").expect("writing to a string");
        }
        out.push('\n');
    }
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
        let mut header =
            format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend((header.len() as u16).to_le_bytes());
        out.extend(header.as_bytes());
        out.extend(data);
        out
    }

    #[test]
    fn reads_float32_and_float16_npy_and_checks_the_shape() {
        let values = [1.5f32, -2.0, 0.25, 3.0, 0.1, 7.0];
        let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let m = parse_activation_matrix(&npy("<f4", "(2, 3)", &data)).unwrap();
        assert_eq!((m.rows, m.cols), (2, 3));
        assert_eq!(m.values, values);
        // 1.0, -2.0 and 0.5 in half precision.
        let half: Vec<u8> = [0x3c00u16, 0xc000, 0x3800, 0x0000]
            .iter()
            .flat_map(|h| h.to_le_bytes())
            .collect();
        let m = parse_activation_matrix(&npy("<f2", "(2, 2)", &half)).unwrap();
        assert_eq!(m.values, [1.0, -2.0, 0.5, 0.0]);
        let error = parse_activation_matrix(&npy("<f4", "(6,)", &data)).unwrap_err();
        assert!(error.to_string().contains("2-D"), "{error}");
        let error = parse_activation_matrix(&npy("<f8", "(2, 3)", &data)).unwrap_err();
        assert!(error.to_string().contains("float32"), "{error}");
        let error = parse_activation_matrix(&npy("<f4", "(2, 4)", &data)).unwrap_err();
        assert!(error.to_string().contains("bytes"), "{error}");
    }

    #[test]
    fn the_csv_form_reads_back_to_the_same_floats() {
        let m = Matrix {
            rows: 2,
            cols: 2,
            values: vec![0.1, 1.0 / 3.0, -1e-7, 12345.678],
        };
        let csv = String::from_utf8(to_csv(&m)).unwrap();
        let back: Vec<f32> = csv
            .lines()
            .skip(1)
            .flat_map(|l| {
                l.split(',')
                    .map(|v| v.parse::<f64>().unwrap() as f32)
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(back, m.values);
        assert!(csv.starts_with("a0,a1\n"));
    }
}
