//! A corpus's token ids, in memory or mapped from a file of little-endian `u32`s. A mapped
//! file's pages are read when a window touches them and are the kernel's to drop again under
//! memory pressure, so a corpus's tokens (four bytes each, four times a character corpus's
//! text) need not fit in memory, and a cached corpus is used without a copy.

use std::borrow::Cow;
use std::fmt;
use std::fs::File;
use std::io;
use std::ops::Deref;
use std::path::Path;

use memmap2::Mmap;

pub enum Tokens {
    Owned(Vec<u32>),
    Mapped(Mmap),
}

impl Tokens {
    /// Maps a file of little-endian `u32`s (as [`Tokens::le_bytes`] writes them).
    ///
    /// The file must not be changed in place while it is mapped: Trainyard's stores write a
    /// file whole and rename it over the old one, and a file deleted while mapped stays
    /// readable until it is unmapped, so neither a rewrite nor garbage collection disturbs a
    /// running job.
    pub fn map(path: &Path) -> io::Result<Tokens> {
        let file = File::open(path)?;
        if file.metadata()?.len() == 0 {
            return Ok(Tokens::Owned(Vec::new()));
        }
        // SAFETY: see above; the file is never truncated or rewritten in place.
        let map = unsafe { Mmap::map(&file)? };
        if map.len() % 4 != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} is {} bytes, not a whole number of 4-byte tokens",
                    path.display(),
                    map.len()
                ),
            ));
        }
        if cfg!(target_endian = "big") {
            return Ok(Tokens::Owned(from_le_bytes(&map)));
        }
        Ok(Tokens::Mapped(map))
    }

    /// Tokens from little-endian bytes, copied into memory.
    pub fn from_le_bytes(bytes: &[u8]) -> Tokens {
        Tokens::Owned(from_le_bytes(bytes))
    }

    pub fn is_mapped(&self) -> bool {
        matches!(self, Tokens::Mapped(_))
    }

    /// The tokens as little-endian bytes: borrowed on a little-endian machine.
    pub fn le_bytes(&self) -> Cow<'_, [u8]> {
        let tokens: &[u32] = self;
        if cfg!(target_endian = "little") {
            // SAFETY: u8 has no alignment requirement and every bit pattern is valid.
            let (head, bytes, tail) = unsafe { tokens.align_to::<u8>() };
            debug_assert!(head.is_empty() && tail.is_empty());
            Cow::Borrowed(bytes)
        } else {
            Cow::Owned(tokens.iter().flat_map(|t| t.to_le_bytes()).collect())
        }
    }
}

fn from_le_bytes(bytes: &[u8]) -> Vec<u32> {
    bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

impl Deref for Tokens {
    type Target = [u32];

    fn deref(&self) -> &[u32] {
        match self {
            Tokens::Owned(tokens) => tokens,
            Tokens::Mapped(map) => {
                // SAFETY: a map starts on a page boundary, its length is a multiple of 4
                // (checked in `map`), every bit pattern is a valid u32, and the bytes are
                // little-endian on this (little-endian) machine.
                let (head, tokens, tail) = unsafe { map.align_to::<u32>() };
                assert!(head.is_empty() && tail.is_empty(), "a map is page-aligned");
                tokens
            }
        }
    }
}

impl From<Vec<u32>> for Tokens {
    fn from(tokens: Vec<u32>) -> Self {
        Tokens::Owned(tokens)
    }
}

impl PartialEq for Tokens {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.is_mapped() { "mapped" } else { "owned" };
        write!(f, "Tokens({} {kind})", self.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_tokens_read_back_what_was_written() {
        let written = Tokens::from(vec![0, 1, 255, 256, 70_000, u32::MAX]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, written.le_bytes()).unwrap();
        let mapped = Tokens::map(&path).unwrap();
        assert!(mapped.is_mapped());
        assert_eq!(mapped, written);
        assert_eq!(Tokens::from_le_bytes(&written.le_bytes()), written);

        // Deleting the file (as garbage collection may) leaves a running job its tokens.
        std::fs::remove_file(&path).unwrap();
        assert_eq!(&mapped[..], &[0, 1, 255, 256, 70_000, u32::MAX]);
    }

    #[test]
    fn a_file_that_is_not_whole_tokens_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, [1u8, 2, 3, 4, 5]).unwrap();
        let err = Tokens::map(&path).unwrap_err();
        assert!(err.to_string().contains("not a whole number"), "{err}");
    }
}
