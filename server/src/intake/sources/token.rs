//! Source tokens: the secret part of a source's URL. Generated tokens carry
//! 256 random bits in URL-safe base64; tokens given in the config file must be
//! at least as long as 128 random bits would be. Only the SHA-256 of a token
//! is stored: tokens are high-entropy, so a plain hash cannot be brute-forced,
//! and a database dump does not let anyone post as a source.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use rand::{rngs::OsRng, RngCore};
use sha2::{Digest, Sha256};

const GENERATED_BYTES: usize = 32;
/// 22 base64url characters hold 132 bits.
pub const MIN_LEN: usize = 22;
pub const MAX_LEN: usize = 128;

/// A new random token.
pub fn generate() -> String {
    let mut bytes = [0u8; GENERATED_BYTES];
    OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Why a token given by an admin cannot be used, if it cannot.
pub fn check(token: &str) -> Result<(), String> {
    if token.len() < MIN_LEN || token.len() > MAX_LEN {
        return Err(format!(
            "must be {MIN_LEN}-{MAX_LEN} characters (at least 128 random bits)"
        ));
    }
    if !token
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err("must use only URL-safe characters [A-Za-z0-9_-]".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_long_url_safe_and_differ() {
        let (a, b) = (generate(), generate());
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert_eq!(check(&a), Ok(()));
    }

    #[test]
    fn short_or_unsafe_tokens_are_refused() {
        assert!(check("short").is_err());
        assert!(check("abcdefghijklmnopqrstuvwx/").is_err());
        assert!(check(&"a".repeat(129)).is_err());
    }
}
