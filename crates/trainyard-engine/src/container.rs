//! A small binary container: a magic tag, length-prefixed sections, and a trailing sha256 of
//! everything before it. Checkpoints and model artifacts use it so that a truncated or
//! bit-flipped file is detected when read instead of loading garbage weights.

use sha2::{Digest, Sha256};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ContainerError {
    #[error("not a {expected} file (wrong magic bytes)")]
    WrongKind { expected: &'static str },
    #[error("{kind} file is truncated: {detail}")]
    Truncated { kind: &'static str, detail: String },
    #[error("{kind} file is corrupt: its sha256 does not match its content")]
    HashMismatch { kind: &'static str },
}

pub fn write_sections(magic: &[u8; 8], sections: &[&[u8]]) -> Vec<u8> {
    let total: usize = sections.iter().map(|s| s.len() + 8).sum();
    let mut out = Vec::with_capacity(8 + 4 + total + 32);
    out.extend_from_slice(magic);
    out.extend_from_slice(&(sections.len() as u32).to_le_bytes());
    for section in sections {
        out.extend_from_slice(&(section.len() as u64).to_le_bytes());
        out.extend_from_slice(section);
    }
    let digest = Sha256::digest(&out);
    out.extend_from_slice(&digest);
    out
}

pub fn read_sections<'a>(
    magic: &[u8; 8],
    kind: &'static str,
    bytes: &'a [u8],
) -> Result<Vec<&'a [u8]>, ContainerError> {
    let truncated = |detail: &str| ContainerError::Truncated {
        kind,
        detail: detail.to_string(),
    };
    if bytes.len() < 8 + 4 + 32 {
        return Err(truncated(&format!("{} bytes", bytes.len())));
    }
    if &bytes[..8] != magic {
        return Err(ContainerError::WrongKind { expected: kind });
    }
    let (body, digest) = bytes.split_at(bytes.len() - 32);
    if Sha256::digest(body).as_slice() != digest {
        return Err(ContainerError::HashMismatch { kind });
    }
    let count = u32::from_le_bytes(body[8..12].try_into().unwrap()) as usize;
    let mut at = 12;
    let mut sections = Vec::with_capacity(count);
    for i in 0..count {
        let len_end = at + 8;
        if len_end > body.len() {
            return Err(truncated(&format!("section {i} header")));
        }
        let len = u64::from_le_bytes(body[at..len_end].try_into().unwrap()) as usize;
        let end = len_end
            .checked_add(len)
            .filter(|e| *e <= body.len())
            .ok_or_else(|| truncated(&format!("section {i}")))?;
        sections.push(&body[len_end..end]);
        at = end;
    }
    Ok(sections)
}

/// Little-endian raw numbers, the sections' usual content.
pub fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// The values' little-endian bytes: borrowed where the machine is little-endian (no copy of a
/// gigabyte of activations), copied elsewhere.
pub fn f32_le_view(values: &[f32]) -> std::borrow::Cow<'_, [u8]> {
    if cfg!(target_endian = "little") {
        // SAFETY: the bytes of initialised `f32`s are initialised `u8`s, `u8` has alignment 1,
        // and the length covers exactly the slice's memory.
        let bytes = unsafe {
            std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), std::mem::size_of_val(values))
        };
        std::borrow::Cow::Borrowed(bytes)
    } else {
        std::borrow::Cow::Owned(f32_bytes(values))
    }
}

pub fn read_f32s(bytes: &[u8], expected: usize, what: &str) -> Result<Vec<f32>, String> {
    if bytes.len() != expected * 4 {
        return Err(format!(
            "{what}: {} bytes where {expected} floats were expected",
            bytes.len()
        ));
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

pub fn u32_bytes(values: &[u32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

pub fn read_u32s(bytes: &[u8]) -> Vec<u32> {
    bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAGIC: &[u8; 8] = b"TESTTEST";

    #[test]
    fn round_trips_and_detects_damage() {
        let bytes = write_sections(MAGIC, &[b"hello", b"", b"world"]);
        let sections = read_sections(MAGIC, "test", &bytes).unwrap();
        assert_eq!(sections, vec![&b"hello"[..], b"", b"world"]);

        let mut flipped = bytes.clone();
        flipped[14] ^= 1;
        assert_eq!(
            read_sections(MAGIC, "test", &flipped),
            Err(ContainerError::HashMismatch { kind: "test" })
        );
        assert!(matches!(
            read_sections(MAGIC, "test", &bytes[..bytes.len() - 5]),
            Err(ContainerError::HashMismatch { .. })
        ));
        assert!(matches!(
            read_sections(MAGIC, "test", &bytes[..20]),
            Err(ContainerError::Truncated { .. })
        ));
        assert!(matches!(
            read_sections(b"OTHERMAG", "test", &bytes),
            Err(ContainerError::WrongKind { .. })
        ));
    }
}
