//! Standard Webhooks signatures (<https://www.standardwebhooks.com>): endpoint
//! secrets (`whsec_<base64>`), the `webhook-signature` header of outbound
//! requests, and its verification. Only the signature itself lives here:
//! checking that `webhook-timestamp` is recent is the verifier's policy.

use base64::{
    alphabet,
    engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig},
    Engine as _,
};
use hmac::{digest::KeyInit, Hmac, Mac};
use rand::{rngs::OsRng, RngCore};
use sha2::Sha256;
use subtle::ConstantTimeEq;

const PREFIX: &str = "whsec_";
const MIN_KEY_LEN: usize = 16;
/// SHA-256's block size: longer keys would be hashed first, and a secret
/// that long is a paste error rather than extra strength.
const MAX_KEY_LEN: usize = 64;
const GENERATED_KEY_LEN: usize = 32;

/// Standard base64 that accepts input with or without `=` padding, since
/// secrets and signatures come from other implementations.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

type HmacSha256 = Hmac<Sha256>;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error("the secret is missing (expected whsec_<base64>)")]
    Missing,
    #[error("the secret is not valid base64 after the whsec_ prefix")]
    NotBase64,
    #[error("the secret is too short: {0} bytes, at least {MIN_KEY_LEN} are needed")]
    TooShort(usize),
    #[error("the secret is too long: {0} bytes, at most {MAX_KEY_LEN} are allowed")]
    TooLong(usize),
}

/// A parsed endpoint secret, ready to sign with. Debug output hides the key.
#[derive(Clone)]
pub struct SigningSecret {
    mac: HmacSha256,
}

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningSecret(<redacted>)")
    }
}

impl SigningSecret {
    /// Parses `whsec_<base64>`; the prefix is optional, as in the spec's
    /// reference libraries.
    pub fn parse(secret: &str) -> Result<Self, SecretError> {
        let encoded = secret.strip_prefix(PREFIX).unwrap_or(secret);
        if encoded.is_empty() {
            return Err(SecretError::Missing);
        }
        let key = BASE64.decode(encoded).map_err(|_| SecretError::NotBase64)?;
        Self::from_key(&key)
    }

    /// A new random secret: its `whsec_` form (to store and show once) and
    /// the parsed value.
    pub fn generate() -> (String, SigningSecret) {
        let mut key = [0u8; GENERATED_KEY_LEN];
        OsRng.fill_bytes(&mut key);
        let text = format!("{PREFIX}{}", BASE64.encode(key));
        (text, Self::from_checked_key(&key))
    }

    fn from_key(key: &[u8]) -> Result<Self, SecretError> {
        match key.len() {
            n if n < MIN_KEY_LEN => Err(SecretError::TooShort(n)),
            n if n > MAX_KEY_LEN => Err(SecretError::TooLong(n)),
            _ => Ok(Self::from_checked_key(key)),
        }
    }

    /// `key` is at most one block long. HMAC zero-pads such keys (RFC 2104),
    /// so the padded block gives the same MAC through the infallible `new`.
    fn from_checked_key(key: &[u8]) -> Self {
        let mut block = hmac::digest::Key::<HmacSha256>::default();
        block[..key.len()].copy_from_slice(key);
        SigningSecret {
            mac: <HmacSha256 as KeyInit>::new(&block),
        }
    }

    fn mac(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> Vec<u8> {
        let mut mac = self.mac.clone();
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac.finalize().into_bytes().to_vec()
    }
}

/// `whsec_…abcd`: enough to tell secrets apart in the Admin API without
/// revealing them. Short strings (never valid secrets) show no characters.
pub fn hint(secret: &str) -> String {
    if secret.is_empty() {
        return String::new();
    }
    let chars: Vec<char> = secret.chars().collect();
    if chars.len() < 12 {
        return format!("{PREFIX}…");
    }
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{PREFIX}…{tail}")
}

/// `v1,<base64 HMAC-SHA256 of "{msg_id}.{timestamp}.{body}">`.
pub fn sign(secret: &SigningSecret, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    format!("v1,{}", BASE64.encode(secret.mac(msg_id, timestamp, body)))
}

/// One signature per secret, space-separated, so receivers keep verifying
/// while a secret is being rotated.
pub fn signature_header(
    secrets: &[SigningSecret],
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    secrets
        .iter()
        .map(|secret| sign(secret, msg_id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether any `v1,` signature in `header` matches. Other versions and
/// malformed entries are skipped, never an error.
pub fn verify(
    secret: &SigningSecret,
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
    header: &str,
) -> bool {
    let expected = secret.mac(msg_id, timestamp, body);
    header
        .split_whitespace()
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .filter_map(|encoded| BASE64.decode(encoded).ok())
        // Evaluate every entry so timing does not reveal which one matched.
        .fold(false, |found, given| {
            found | bool::from(expected.ct_eq(&given))
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const MSG_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TIMESTAMP: i64 = 1614265330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const EXPECTED: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn secret() -> SigningSecret {
        SigningSecret::parse(SECRET).unwrap()
    }

    #[test]
    fn matches_the_spec_test_vector() {
        assert_eq!(sign(&secret(), MSG_ID, TIMESTAMP, BODY), EXPECTED);
        assert!(verify(&secret(), MSG_ID, TIMESTAMP, BODY, EXPECTED));
    }

    #[test]
    fn prefix_is_optional() {
        let bare = SigningSecret::parse(&SECRET[PREFIX.len()..]).unwrap();
        assert_eq!(sign(&bare, MSG_ID, TIMESTAMP, BODY), EXPECTED);
    }

    #[test]
    fn rejects_tampering_and_wrong_secret() {
        assert!(!verify(
            &secret(),
            MSG_ID,
            TIMESTAMP,
            br#"{"test": 2432232315}"#,
            EXPECTED
        ));
        assert!(!verify(&secret(), "msg_other", TIMESTAMP, BODY, EXPECTED));
        assert!(!verify(&secret(), MSG_ID, TIMESTAMP + 1, BODY, EXPECTED));
        let (_, other) = SigningSecret::generate();
        assert!(!verify(&other, MSG_ID, TIMESTAMP, BODY, EXPECTED));
    }

    #[test]
    fn garbage_headers_are_false_not_panics() {
        let truncated = &EXPECTED[..20];
        for header in [
            "", " ", "v1,", "v1", "v2,abc", "v1,!!!", truncated, "v1,g0hM", "\u{0}",
        ] {
            assert!(
                !verify(&secret(), MSG_ID, TIMESTAMP, BODY, header),
                "{header:?}"
            );
        }
    }

    #[test]
    fn any_signature_in_a_rotation_header_verifies() {
        let (_, old) = SigningSecret::generate();
        let header = signature_header(&[old.clone(), secret()], MSG_ID, TIMESTAMP, BODY);
        assert_eq!(header.split(' ').count(), 2);
        assert!(header.ends_with(EXPECTED));
        assert!(verify(&old, MSG_ID, TIMESTAMP, BODY, &header));
        assert!(verify(
            &secret(),
            MSG_ID,
            TIMESTAMP,
            BODY,
            &format!("v2,xyz {header}")
        ));
    }

    #[test]
    fn parse_errors_name_the_problem() {
        assert_eq!(SigningSecret::parse("").unwrap_err(), SecretError::Missing);
        assert_eq!(
            SigningSecret::parse("whsec_").unwrap_err(),
            SecretError::Missing
        );
        assert_eq!(
            SigningSecret::parse("whsec_not base64!").unwrap_err(),
            SecretError::NotBase64
        );
        let short = format!("whsec_{}", BASE64.encode([7u8; 15]));
        assert_eq!(
            SigningSecret::parse(&short).unwrap_err(),
            SecretError::TooShort(15)
        );
        let long = format!("whsec_{}", BASE64.encode([7u8; 65]));
        assert_eq!(
            SigningSecret::parse(&long).unwrap_err(),
            SecretError::TooLong(65)
        );
        let edge = format!("whsec_{}", BASE64.encode([7u8; 64]));
        assert!(SigningSecret::parse(&edge).is_ok());
    }

    #[test]
    fn generated_secrets_round_trip_and_differ() {
        let (text, parsed) = SigningSecret::generate();
        let (other, _) = SigningSecret::generate();
        assert!(text.starts_with(PREFIX));
        assert_ne!(text, other);
        let reparsed = SigningSecret::parse(&text).unwrap();
        let signature = sign(&parsed, MSG_ID, TIMESTAMP, BODY);
        assert!(verify(&reparsed, MSG_ID, TIMESTAMP, BODY, &signature));
    }

    #[test]
    fn hint_shows_only_the_tail() {
        assert_eq!(hint(SECRET), "whsec_…LaSw");
        assert_eq!(hint(""), "");
        assert_eq!(hint("whsec_abc"), "whsec_…");
        assert!(!format!("{:?}", secret()).contains("MfKQ"));
    }
}
