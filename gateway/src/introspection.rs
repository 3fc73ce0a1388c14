//! Who may call token introspection (RFC 7662 §2.1: the endpoint must
//! authenticate its callers, or it is a token-validity oracle for anyone):
//! the clients listed in `[[introspection.clients]]`, by HTTP Basic with
//! their id and secret.
//!
//! A secret is stored as its SHA-256, hex. Not argon2: the secrets are 256
//! random bits made by `authgw introspection new-secret`, which no amount
//! of guessing finds from the digest, so a slow hash would protect nothing
//! and would hand anyone who can reach the endpoint a CPU cost per request.
//! (A human-chosen secret would need argon2; these are never human-chosen.)

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};

use crate::config::IntrospectionClient;
use crate::error::{Error, Result};

/// The stored form of `secret`: its SHA-256, lowercase hex (64 characters).
pub fn hash_secret(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A fresh secret: 32 random bytes, base64url (43 characters).
pub fn new_secret() -> Result<String> {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| Error::Internal("no randomness".into()))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// Whether `hex` is a stored secret: 64 hex digits.
pub fn is_secret_hash(hex: &str) -> bool {
    hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The id of the client an `Authorization: Basic` header value names, if
/// its secret is right; `InvalidClient` otherwise.
pub fn authenticate<'a>(
    clients: &'a [IntrospectionClient],
    authorization: Option<&str>,
) -> Result<&'a str> {
    let refuse = |why: &str| Error::InvalidClient(why.to_string());
    let value = authorization.ok_or_else(|| refuse("client authentication required"))?;
    let (scheme, encoded) = value
        .split_once(' ')
        .ok_or_else(|| refuse("malformed Authorization header"))?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(refuse("use HTTP Basic with a client id and secret"));
    }
    let decoded = STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| refuse("malformed Basic credentials"))?;
    let (id, secret) = decoded
        .split_once(':')
        .ok_or_else(|| refuse("malformed Basic credentials"))?;
    let presented = hash_secret(secret);
    // Every configured secret is compared, in constant time, so neither the
    // id nor the secret shows in the response time.
    let mut found = None;
    for client in clients {
        let same = aws_lc_rs::constant_time::verify_slices_are_equal(
            presented.as_bytes(),
            client.secret_sha256.to_ascii_lowercase().as_bytes(),
        )
        .is_ok();
        if same && client.id == id {
            found = Some(client.id.as_str());
        }
    }
    found.ok_or_else(|| refuse("unknown client or wrong secret"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(id: &str, secret: &str) -> String {
        format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")))
    }

    /// The right id and secret pass; a wrong secret, another client's
    /// secret, no header or another scheme do not.
    #[test]
    fn basic_credentials_are_checked_against_the_stored_digest() {
        let clients = vec![
            IntrospectionClient {
                id: "orders".into(),
                secret_sha256: hash_secret("s3cret-orders"),
            },
            IntrospectionClient {
                id: "billing".into(),
                secret_sha256: hash_secret("s3cret-billing"),
            },
        ];
        let ok = authenticate(&clients, Some(&basic("orders", "s3cret-orders")));
        assert_eq!(ok.ok(), Some("orders"));
        for bad in [
            Some(basic("orders", "wrong")),
            Some(basic("orders", "s3cret-billing")),
            Some(basic("nobody", "s3cret-orders")),
            Some("Bearer abc".to_string()),
            Some("Basic !!!".to_string()),
            None,
        ] {
            let r = authenticate(&clients, bad.as_deref());
            assert!(matches!(r, Err(Error::InvalidClient(_))), "{bad:?}: {r:?}");
        }
        assert!(is_secret_hash(&hash_secret("x")));
        assert_eq!(new_secret().map(|s| s.len()).ok(), Some(43));
    }
}
