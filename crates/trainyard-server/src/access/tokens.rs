//! API key tokens: `ty_<12 hex id>_<64 hex secret>`. The id finds the row; the secret is 256
//! random bits from the OS. Only the SHA-256 of the whole token is stored: for a token this
//! random a slow password hash adds nothing, and SHA-256 keeps every request cheap.

use sha2::{Digest, Sha256};

pub const PREFIX: &str = "ty_";

/// A new key: (id, the token shown once).
pub fn generate() -> std::io::Result<(String, String)> {
    let mut id = [0u8; 6];
    let mut secret = [0u8; 32];
    getrandom::fill(&mut id).map_err(std::io::Error::other)?;
    getrandom::fill(&mut secret).map_err(std::io::Error::other)?;
    let id = hex::encode(id);
    let token = format!("{PREFIX}{id}_{}", hex::encode(secret));
    Ok((id, token))
}

/// The key id a token claims, when it has the shape of one of ours.
pub fn key_id(token: &str) -> Option<&str> {
    let rest = token.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hex(id, 12) && hex(secret, 64)).then_some(id)
}

pub fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Compares two hashes in time that does not depend on where they first differ.
pub fn same_hash(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |diff, (x, y)| diff | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_recognisable_random_and_hash_stably() {
        let (id, token) = generate().unwrap();
        assert_eq!(key_id(&token), Some(id.as_str()));
        assert_eq!(token.len(), 3 + 12 + 1 + 64);
        let (_, other) = generate().unwrap();
        assert_ne!(token, other);
        assert!(same_hash(&hash(&token), &hash(&token)));
        assert!(!same_hash(&hash(&token), &hash(&other)));
        for bad in [
            "",
            "ty_",
            "sk-abc",
            "ty_0123456789ab_short",
            "ty_0123456789ab_zz23456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert_eq!(key_id(bad), None, "{bad}");
        }
    }
}
