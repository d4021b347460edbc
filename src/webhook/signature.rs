//! `X-Hub-Signature-256`: HMAC-SHA256 of the raw body, hex, prefixed `sha256=`; and the digest
//! check that the other forges' signatures (`forge`) share.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::config::Secret;

type HmacSha256 = Hmac<Sha256>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing X-Hub-Signature-256 header")]
    Missing,
    #[error("X-Hub-Signature-256 is not of the form sha256=<64 hex digits>")]
    Malformed,
    #[error("X-Hub-Signature-256 does not match the body")]
    Mismatch,
}

/// Checks `header` against the body, in constant time.
pub fn verify(secret: &Secret, header: Option<&[u8]>, body: &[u8]) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let hex_digest = header
        .strip_prefix(b"sha256=")
        .ok_or(SignatureError::Malformed)?;
    let expected = digest(hex_digest).ok_or(SignatureError::Malformed)?;
    if matches(secret, &expected, body) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// The header value GitHub would send for `body`; for tests and for clients that sign.
pub fn sign(secret: &Secret, body: &[u8]) -> String {
    format!("sha256={}", hex_mac(secret, body))
}

/// The HMAC-SHA256 of `body` under `secret`, in lowercase hex.
pub(super) fn hex_mac(secret: &Secret, body: &[u8]) -> String {
    hex::encode(mac(secret, body).finalize().into_bytes())
}

/// The 32 bytes that `hex_digest` spells, if it is 64 hex digits (either case).
pub(super) fn digest(hex_digest: &[u8]) -> Option<Vec<u8>> {
    hex::decode(hex_digest)
        .ok()
        .filter(|digest| digest.len() == 32)
}

/// Whether `expected` is the HMAC-SHA256 of `body` under `secret`, compared in constant time.
pub(super) fn matches(secret: &Secret, expected: &[u8], body: &[u8]) -> bool {
    mac(secret, body).verify_slice(expected).is_ok()
}

fn mac(secret: &Secret, body: &[u8]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(secret.expose().as_bytes())
        .expect("HMAC takes keys of any size");
    mac.update(body);
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    // GitHub's documented test vector ("Validating webhook deliveries").
    const SECRET: &str = "It's a Secret to Everybody";
    const BODY: &[u8] = b"Hello, World!";
    const SIGNATURE: &str =
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    fn check(header: Option<&str>, expected: Result<(), SignatureError>) {
        let secret = Secret::new(SECRET);
        assert_eq!(verify(&secret, header.map(str::as_bytes), BODY), expected);
    }

    #[test]
    fn github_test_vector() {
        assert_eq!(sign(&Secret::new(SECRET), BODY), SIGNATURE);
        check(Some(SIGNATURE), Ok(()));
    }

    #[test]
    fn refusals() {
        check(None, Err(SignatureError::Missing));
        check(Some("sha1=abc"), Err(SignatureError::Malformed));
        check(Some("sha256=zz"), Err(SignatureError::Malformed));
        check(Some("sha256=abcd"), Err(SignatureError::Malformed));
        let wrong = SIGNATURE.replace("757", "758");
        check(Some(&wrong), Err(SignatureError::Mismatch));
        let other_secret = sign(&Secret::new("another"), BODY);
        check(Some(&other_secret), Err(SignatureError::Mismatch));
    }
}
