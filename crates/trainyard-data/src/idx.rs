//! The IDX format MNIST ships in: a magic number giving the element type and rank, the
//! dimensions as big-endian u32, then the raw bytes.

use crate::DataError;

/// Returns the dimensions and the raw u8 payload of an IDX file of unsigned bytes.
pub fn read_idx_u8(file: &str, bytes: &[u8]) -> Result<(Vec<usize>, Vec<u8>), DataError> {
    let err = |message: String| DataError::Idx {
        file: file.to_string(),
        message,
    };
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        return Err(err("missing IDX magic number".into()));
    }
    if bytes[2] != 0x08 {
        return Err(err(format!(
            "element type 0x{:02x} is not unsigned byte (0x08)",
            bytes[2]
        )));
    }
    let rank = bytes[3] as usize;
    let header = 4 + 4 * rank;
    if bytes.len() < header {
        return Err(err(format!("truncated header for rank {rank}")));
    }
    let dims: Vec<usize> = (0..rank)
        .map(|i| {
            let at = 4 + 4 * i;
            u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize
        })
        .collect();
    let expected: usize = dims.iter().product();
    let payload = &bytes[header..];
    if payload.len() != expected {
        return Err(err(format!(
            "{} data bytes for dimensions {dims:?}, expected {expected}",
            payload.len()
        )));
    }
    Ok((dims, payload.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_small_file_and_rejects_truncation() {
        let mut file = vec![0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 3];
        file.extend([1, 2, 3, 4, 5, 6]);
        let (dims, data) = read_idx_u8("t", &file).unwrap();
        assert_eq!(dims, vec![2, 3]);
        assert_eq!(data, vec![1, 2, 3, 4, 5, 6]);
        file.pop();
        assert!(
            read_idx_u8("t", &file)
                .unwrap_err()
                .to_string()
                .contains("expected 6")
        );
        assert!(read_idx_u8("t", &[1, 2]).is_err());
    }
}
