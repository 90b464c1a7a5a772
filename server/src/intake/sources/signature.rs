//! Inbound signature checks, one per scheme a source can choose. Every
//! presented signature is decoded and compared in constant time against the
//! expected MAC; an empty, truncated, badly encoded or wrong-length signature
//! simply does not match. Timestamped schemes (Standard Webhooks, Stripe)
//! refuse requests more than five minutes away from now, so a captured
//! request cannot be replayed later.

use axum::http::{HeaderMap, HeaderName};
use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::{Encoding, Signature};
use crate::delivery::signing::{self, SigningSecret};

/// How far a signed timestamp may be from now, either way.
pub const TOLERANCE_SECS: i64 = 300;

type HmacSha256 = Hmac<Sha256>;

/// A source's signature scheme, with its secret parsed once.
pub enum Verifier {
    None,
    StandardWebhooks(SigningSecret),
    Github(Vec<u8>),
    Stripe(Vec<u8>),
    Hmac {
        key: Vec<u8>,
        header: HeaderName,
        encoding: Encoding,
    },
}

impl Verifier {
    /// Parses the secret and header; the error names what is wrong.
    pub fn compile(signature: &Signature) -> Result<Verifier, String> {
        let raw = |secret: &str| -> Result<Vec<u8>, String> {
            if secret.len() < 16 {
                return Err("the secret must be at least 16 characters".into());
            }
            Ok(secret.as_bytes().to_vec())
        };
        Ok(match signature {
            Signature::None => Verifier::None,
            Signature::StandardWebhooks { secret } => {
                Verifier::StandardWebhooks(SigningSecret::parse(secret).map_err(|e| e.to_string())?)
            }
            Signature::Github { secret } => Verifier::Github(raw(secret)?),
            Signature::Stripe { secret } => Verifier::Stripe(raw(secret)?),
            Signature::HmacSha256 {
                secret,
                header,
                encoding,
            } => Verifier::Hmac {
                key: raw(secret)?,
                header: HeaderName::from_bytes(header.as_bytes())
                    .map_err(|_| format!("`{header}` is not a valid header name"))?,
                encoding: *encoding,
            },
        })
    }

    /// Checks the request's signature at `now` (unix seconds).
    pub fn verify(&self, headers: &HeaderMap, body: &[u8], now: i64) -> Result<(), String> {
        match self {
            Verifier::None => Ok(()),
            Verifier::StandardWebhooks(secret) => standard_webhooks(secret, headers, body, now),
            Verifier::Github(key) => github(key, headers, body),
            Verifier::Stripe(key) => stripe(key, headers, body, now),
            Verifier::Hmac {
                key,
                header,
                encoding,
            } => generic(key, header, *encoding, headers, body),
        }
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<&'a str, String> {
    headers
        .get(name)
        .ok_or_else(|| format!("the `{name}` header is missing"))?
        .to_str()
        .map_err(|_| format!("the `{name}` header is not visible ASCII"))
}

fn check_time(timestamp: &str, now: i64, name: &str) -> Result<i64, String> {
    let ts: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| format!("`{name}` must be unix seconds"))?;
    if ts.abs_diff(now) > TOLERANCE_SECS as u64 {
        return Err(format!(
            "`{name}` is more than {TOLERANCE_SECS} seconds away from now; sign the request when you send it"
        ));
    }
    Ok(ts)
}

fn standard_webhooks(
    secret: &SigningSecret,
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
) -> Result<(), String> {
    let id = header(headers, "webhook-id")?;
    let timestamp = check_time(
        header(headers, "webhook-timestamp")?,
        now,
        "webhook-timestamp",
    )?;
    let signatures = header(headers, "webhook-signature")?;
    if signing::verify(secret, id, timestamp, body, signatures) {
        Ok(())
    } else {
        Err("no signature in `webhook-signature` matches".into())
    }
}

fn github(key: &[u8], headers: &HeaderMap, body: &[u8]) -> Result<(), String> {
    let value = header(headers, "x-hub-signature-256")?;
    let given = value
        .strip_prefix("sha256=")
        .ok_or("`x-hub-signature-256` must be `sha256=<hex>`")?;
    if matches(&mac(key, &[body]), &hex::decode(given).unwrap_or_default()) {
        Ok(())
    } else {
        Err("the `x-hub-signature-256` signature does not match".into())
    }
}

fn stripe(key: &[u8], headers: &HeaderMap, body: &[u8], now: i64) -> Result<(), String> {
    let value = header(headers, "stripe-signature")?;
    let mut timestamp = None;
    let mut candidates = Vec::new();
    for part in value.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = Some(t),
            Some(("v1", sig)) => candidates.push(hex::decode(sig).unwrap_or_default()),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or("`stripe-signature` has no `t=` timestamp")?;
    check_time(timestamp, now, "stripe-signature t")?;
    let expected = mac(key, &[timestamp.as_bytes(), b".", body]);
    // Evaluate every candidate so timing does not reveal which one matched.
    let found = candidates
        .iter()
        .fold(false, |found, given| found | matches(&expected, given));
    if found {
        Ok(())
    } else {
        Err("no `v1` signature in `stripe-signature` matches".into())
    }
}

fn generic(
    key: &[u8],
    name: &HeaderName,
    encoding: Encoding,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), String> {
    let value = header(headers, name.as_str())?;
    let value = value.strip_prefix("sha256=").unwrap_or(value).trim();
    let given = match encoding {
        Encoding::Hex => hex::decode(value).unwrap_or_default(),
        Encoding::Base64 => BASE64.decode(value).unwrap_or_default(),
    };
    if matches(&mac(key, &[body]), &given) {
        Ok(())
    } else {
        Err(format!("the `{name}` signature does not match"))
    }
}

fn mac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    // HMAC accepts keys of any length, so this cannot fail.
    let Ok(mut mac) = HmacSha256::new_from_slice(key) else {
        return Vec::new();
    };
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

/// Constant time; slices of different lengths (an empty or truncated
/// signature) never match.
fn matches(expected: &[u8], given: &[u8]) -> bool {
    !expected.is_empty() && bool::from(expected.ct_eq(given))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        map
    }

    const GITHUB_SECRET: &str = "It's a Secret to Everybody";
    const GITHUB_SIG: &str =
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    fn github_verifier() -> Verifier {
        Verifier::compile(&Signature::Github {
            secret: GITHUB_SECRET.into(),
        })
        .unwrap()
    }

    #[test]
    fn githubs_documented_example_verifies() {
        let h = headers(&[("x-hub-signature-256", GITHUB_SIG)]);
        assert_eq!(github_verifier().verify(&h, b"Hello, World!", 0), Ok(()));
        assert!(github_verifier().verify(&h, b"Hello, World?", 0).is_err());
    }

    #[test]
    fn standard_webhooks_test_vector_verifies_at_its_time() {
        let v = Verifier::compile(&Signature::StandardWebhooks {
            secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
        })
        .unwrap();
        let h = headers(&[
            ("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek"),
            ("webhook-timestamp", "1614265330"),
            (
                "webhook-signature",
                "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
            ),
        ]);
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(v.verify(&h, body, 1614265330 + 299), Ok(()));
        assert!(v.verify(&h, body, 1614265330 + 301).is_err());
        assert!(v
            .verify(&h, br#"{"test": 2432232315}"#, 1614265330)
            .is_err());
    }

    #[test]
    fn broken_signatures_never_pass_and_never_panic() {
        let truncated = &GITHUB_SIG[..30];
        for value in ["", "sha256=", "sha256", "sha256=zz", truncated, "sha256=00"] {
            let h = headers(&[("x-hub-signature-256", value)]);
            assert!(github_verifier().verify(&h, b"Hello, World!", 0).is_err());
        }
        let stripe = Verifier::compile(&Signature::Stripe {
            secret: "whsec_stripe_test_secret".into(),
        })
        .unwrap();
        for value in [
            "",
            "t=",
            "t=1,v1=",
            "v1=abc",
            "t=x,v1=00",
            ",,,",
            "t=1,v1=zz",
        ] {
            let h = headers(&[("stripe-signature", value)]);
            assert!(stripe.verify(&h, b"{}", 1).is_err(), "{value:?}");
        }
        assert!(github_verifier().verify(&HeaderMap::new(), b"", 0).is_err());
    }

    #[test]
    fn generic_hmac_in_hex_and_base64() {
        let key = b"a-generic-secret-of-some-length";
        let sig = mac(key, &[b"body"]);
        for (encoding, text) in [
            (Encoding::Hex, hex::encode(&sig)),
            (Encoding::Base64, BASE64.encode(&sig)),
        ] {
            let v = Verifier::compile(&Signature::HmacSha256 {
                secret: String::from_utf8(key.to_vec()).unwrap(),
                header: "x-signature".into(),
                encoding,
            })
            .unwrap();
            let h = headers(&[("x-signature", &text)]);
            assert_eq!(v.verify(&h, b"body", 0), Ok(()));
            assert!(v.verify(&h, b"bodY", 0).is_err());
        }
    }
}
