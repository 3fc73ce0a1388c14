//! TOTP secrets at rest: AES-256-GCM (aws-lc-rs) under a key derived from a
//! server secret of the keys directory (`authgw keys generate --kind
//! secret`). The secret's id is stored beside the ciphertext, so the newest
//! secret seals while every secret still in the directory opens what it
//! sealed; a factor sealed under an older secret is sealed again under the
//! newest the next time it is used. The user's id is the associated data: a
//! ciphertext copied to another user's row does not open. The database alone
//! never reveals a secret.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::secrets::{Purpose, Secret, SecretRing};

/// A sealed secret: the server secret's id, and `nonce || ciphertext || tag`.
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed {
    pub key_id: String,
    pub bytes: Vec<u8>,
}

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealed")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

fn key(secret: &Secret) -> Result<LessSafeKey> {
    let bytes = secret.derive(Purpose::MfaSeal, b"");
    UnboundKey::new(&AES_256_GCM, &bytes)
        .map(LessSafeKey::new)
        .map_err(|_| Error::Internal("AES-256-GCM key".into()))
}

fn aad(user: Uuid) -> [u8; 31] {
    let mut out = [0u8; 31];
    out[..15].copy_from_slice(b"authgw.totp.v1\0");
    out[15..].copy_from_slice(user.as_bytes());
    out
}

/// Seals `plaintext` for `user` under the ring's newest secret.
pub fn seal(ring: &SecretRing, user: Uuid, plaintext: &[u8]) -> Result<Sealed> {
    let secret = ring.current();
    let mut nonce = [0u8; NONCE_LEN];
    aws_lc_rs::rand::fill(&mut nonce).map_err(|_| Error::Internal("no randomness".into()))?;
    let mut body = plaintext.to_vec();
    key(secret)?
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad(user)),
            &mut body,
        )
        .map_err(|_| Error::Internal("AES-256-GCM seal failed".into()))?;
    let mut bytes = nonce.to_vec();
    bytes.extend_from_slice(&body);
    Ok(Sealed {
        key_id: secret.kid().to_string(),
        bytes,
    })
}

/// Opens what [`seal`] sealed for `user`. A secret no longer in the
/// directory, or a ciphertext that does not authenticate (tampered, or
/// another user's), is an internal error naming the key id only.
pub fn open(ring: &SecretRing, user: Uuid, sealed: &Sealed) -> Result<Vec<u8>> {
    let secret = ring.find(&sealed.key_id).ok_or_else(|| {
        Error::Internal(format!(
            "a TOTP secret is sealed under server secret {}, which is no longer in the keys directory",
            sealed.key_id
        ))
    })?;
    if sealed.bytes.len() < NONCE_LEN {
        return Err(Error::Internal("a sealed TOTP secret is truncated".into()));
    }
    let (nonce, body) = sealed.bytes.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce)
        .map_err(|_| Error::Internal("a sealed TOTP secret is truncated".into()))?;
    let mut body = body.to_vec();
    let plain = key(secret)?
        .open_in_place(nonce, Aad::from(aad(user)), &mut body)
        .map_err(|_| {
            Error::Internal(format!(
                "a sealed TOTP secret (server secret {}) does not authenticate",
                sealed.key_id
            ))
        })?;
    Ok(plain.to_vec())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ring(dir: &std::path::Path) -> SecretRing {
        SecretRing::load(dir).unwrap()
    }

    /// A sealed secret opens for its user only, under the secret that
    /// sealed it even after a newer one is generated; the bytes stored do
    /// not contain the plaintext; tampering is detected.
    #[test]
    fn seal_open_rotate_tamper() {
        let dir = tempfile::tempdir().unwrap();
        crate::secrets::generate(dir.path()).unwrap();
        let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
        let plain = b"12345678901234567890";
        let sealed = seal(&ring(dir.path()), alice, plain).unwrap();
        assert!(!sealed.bytes.windows(plain.len()).any(|w| w == plain));
        assert_eq!(sealed.bytes.len(), NONCE_LEN + plain.len() + 16);
        assert_eq!(open(&ring(dir.path()), alice, &sealed).unwrap(), plain);
        assert!(
            open(&ring(dir.path()), bob, &sealed).is_err(),
            "another user's row"
        );
        // Two seals of the same secret differ (fresh nonce).
        assert_ne!(
            seal(&ring(dir.path()), alice, plain).unwrap().bytes,
            sealed.bytes
        );
        crate::secrets::generate(dir.path()).unwrap();
        let rotated = ring(dir.path());
        assert_eq!(open(&rotated, alice, &sealed).unwrap(), plain);
        assert_ne!(seal(&rotated, alice, plain).unwrap().key_id, sealed.key_id);
        let mut tampered = sealed.clone();
        let last = tampered.bytes.len() - 1;
        tampered.bytes[last] ^= 1;
        assert!(open(&rotated, alice, &tampered).is_err());
        let short = Sealed {
            key_id: sealed.key_id.clone(),
            bytes: vec![0; 5],
        };
        assert!(open(&rotated, alice, &short).is_err());
        let gone = Sealed {
            key_id: "0000000000000000".into(),
            ..sealed
        };
        let err = open(&rotated, alice, &gone).unwrap_err().to_string();
        assert!(
            err.contains("0000000000000000") && err.contains("no longer"),
            "{err}"
        );
    }
}
