//! Server secrets: 32-byte HMAC keys in `tokens.keys_dir`, beside the signing
//! keys, as files named `<UTC timestamp>.secret` (64 hex digits, mode 0600).
//!
//! The newest secret derives; every secret in the directory can re-derive what
//! it derived before, so a secret rotates like a signing key: generate a new
//! one, and delete the old one once nothing it derived is still in use (for
//! refresh successors: `tokens.refresh_reuse_grace` after the rotation).
//!
//! A secret's id is a digest of the secret, not the secret: `keys list` and
//! the logs may show it. Every use names a purpose ([`Purpose`]), so one
//! secret never yields the same bytes for two uses.

use std::path::{Path, PathBuf};

use aws_lc_rs::hmac;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use uuid::Uuid;

use crate::error::{Error, Result};

/// The file extension of a secret in the keys directory.
pub const EXTENSION: &str = "secret";

const LEN: usize = 32;

/// What a derivation is for: the label keeps the uses apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// The successor of a refresh token (docs/sd-refresh.md).
    RefreshSuccessor,
    /// The AES-256-GCM key that seals TOTP secrets at rest (`mfa::seal`).
    MfaSeal,
    /// A social-login flow's PKCE verifier, from its state (`federation`).
    OauthVerifier,
    /// A social-login flow's OpenID Connect nonce, from its state.
    OauthNonce,
}

impl Purpose {
    fn label(self) -> &'static [u8] {
        match self {
            Purpose::RefreshSuccessor => b"authgw.refresh-successor.v1\0",
            Purpose::MfaSeal => b"authgw.mfa-seal.v1\0",
            Purpose::OauthVerifier => b"authgw.oauth-verifier.v1\0",
            Purpose::OauthNonce => b"authgw.oauth-nonce.v1\0",
        }
    }
}

/// One secret of the ring.
pub struct Secret {
    kid: String,
    key: hmac::Key,
    path: PathBuf,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secret")
            .field("kid", &self.kid)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Secret {
    /// A secret from its 32 bytes (`path` only names it in listings).
    pub fn from_bytes(bytes: &[u8; LEN], path: PathBuf) -> Self {
        let key = hmac::Key::new(hmac::HMAC_SHA256, bytes);
        let id = hmac::sign(&key, b"authgw.secret-id.v1\0");
        let kid = id.as_ref()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Self { kid, key, path }
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// HMAC-SHA-256 of `input` under this secret, for `purpose`.
    pub fn derive(&self, purpose: Purpose, input: &[u8]) -> [u8; 32] {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(purpose.label());
        ctx.update(input);
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.sign().as_ref());
        out
    }

    /// [`Secret::derive`] formatted as a random (version 4) UUID: 122 bits of
    /// the HMAC, indistinguishable in form from `Uuid::new_v4`.
    pub fn derive_uuid(&self, purpose: Purpose, input: &[u8]) -> Uuid {
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&self.derive(purpose, input)[..16]);
        uuid::Builder::from_random_bytes(bytes).into_uuid()
    }
}

/// Every secret in the keys directory, oldest first; the newest derives.
#[derive(Debug)]
pub struct SecretRing {
    secrets: Vec<Secret>,
}

impl SecretRing {
    /// Loads the secrets of `dir`. None at all is an error that says how to
    /// make one; so is a file that is not 64 hex digits (naming the file).
    pub fn load(dir: &Path) -> Result<Self> {
        let files = crate::tokens::files_with_extension(dir, EXTENSION)?;
        let secrets = files
            .into_iter()
            .map(|path| read_secret(&path).map(|bytes| Secret::from_bytes(&bytes, path)))
            .collect::<Result<Vec<_>>>()?;
        if secrets.is_empty() {
            return Err(Error::Internal(format!(
                "no secret in {}; run `authgw keys generate --kind secret`",
                dir.display()
            )));
        }
        Ok(Self { secrets })
    }

    /// The secret that derives.
    pub fn current(&self) -> &Secret {
        // `load` refuses an empty ring.
        &self.secrets[self.secrets.len() - 1]
    }

    /// Every secret, oldest first.
    pub fn all(&self) -> &[Secret] {
        &self.secrets
    }

    /// The secret whose id is `kid`, if it is still in the directory.
    pub fn find(&self, kid: &str) -> Option<&Secret> {
        self.secrets.iter().find(|s| s.kid == kid)
    }
}

fn read_secret(path: &Path) -> Result<[u8; LEN]> {
    let bad = |why: &str| Error::Internal(format!("secret file {}: {why}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| bad(&e.to_string()))?;
    let hex = text.trim();
    if hex.len() != 2 * LEN || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad("must hold 64 hex digits (32 bytes)"));
    }
    let mut out = [0u8; LEN];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|e| bad(&e.to_string()))?;
    }
    Ok(out)
}

/// True when `dir` holds at least one secret file.
pub fn any_in(dir: &Path) -> bool {
    crate::tokens::files_with_extension(dir, EXTENSION).is_ok_and(|f| !f.is_empty())
}

/// Writes a new random secret into `dir` (created if missing) with mode 0600
/// and returns its path. It derives from the next start or reload on.
pub fn generate(dir: &Path) -> Result<PathBuf> {
    let mut bytes = [0u8; LEN];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| Error::Internal("secret generation failed: no randomness".into()))?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::Internal(format!("cannot create {}: {e}", dir.display())))?;
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%6fZ");
    let path = dir.join(format!("{stamp}.{EXTENSION}"));
    crate::tokens::write_private(&path, format!("{hex}\n").as_bytes())?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(dir: &Path) -> SecretRing {
        match SecretRing::load(dir) {
            Ok(r) => r,
            Err(e) => panic!("load: {e}"),
        }
    }

    /// A generated secret loads, is private to its owner, and derives the
    /// same bytes every time; another secret derives others.
    #[test]
    fn generate_load_derive() {
        let Ok(dir) = tempfile::tempdir() else {
            panic!("tempdir")
        };
        let Ok(path) = generate(dir.path()) else {
            panic!("generate")
        };
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).map(|m| m.permissions().mode() & 0o777);
            assert_eq!(mode.ok(), Some(0o600));
        }
        let first = ring(dir.path());
        let a = first.current().derive_uuid(Purpose::RefreshSuccessor, b"t");
        assert_eq!(
            a,
            ring(dir.path())
                .current()
                .derive_uuid(Purpose::RefreshSuccessor, b"t")
        );
        assert_eq!(a.get_version_num(), 4);
        assert!(generate(dir.path()).is_ok());
        let second = ring(dir.path());
        assert_eq!(second.all().len(), 2);
        assert_ne!(second.current().kid(), first.current().kid());
        assert_ne!(
            a,
            second
                .current()
                .derive_uuid(Purpose::RefreshSuccessor, b"t")
        );
        // The old secret still re-derives what it derived.
        assert_eq!(
            a,
            second.all()[0].derive_uuid(Purpose::RefreshSuccessor, b"t")
        );
    }

    /// No secret, or a damaged one, is refused with the fix or the file named.
    #[test]
    fn missing_or_bad_secret_is_refused() {
        let Ok(dir) = tempfile::tempdir() else {
            panic!("tempdir")
        };
        let err = SecretRing::load(dir.path())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("authgw keys generate --kind secret"), "{err}");
        let bad = dir.path().join("x.secret");
        assert!(std::fs::write(&bad, "not hex").is_ok());
        let err = SecretRing::load(dir.path())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("x.secret") && err.contains("64 hex digits"),
            "{err}"
        );
    }
}
