//! Access tokens (JWT, RFC 9068 profile) and refresh tokens (UUIDs: random
//! at login, derived from their predecessor at each refresh).
//!
//! Keys live in `tokens.keys_dir` as PKCS#8 PEM files named
//! `<UTC timestamp>-<alg>.pem`. The newest signs; all verify and are published
//! in the JWKS. Verification pins the algorithm to the key the `kid` names,
//! never to the token's own header. The same directory holds the server
//! secrets ([`crate::secrets`]) that derive refresh successors.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use moka::Expiry;
use moka::sync::Cache;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair};
use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse, ThumbprintHash};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::config::{SigningAlgorithm, TokenConfig};
use crate::error::{Error, Result};
use crate::secrets::{self, Purpose, Secret, SecretRing};

/// The `typ` header of every access token (RFC 9068).
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";

/// Installs aws-lc-rs as jsonwebtoken's crypto provider. Idempotent; called
/// before any key is loaded.
pub fn install_crypto_provider() {
    // Err only means a provider is installed already.
    let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
}

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    pub sub: Uuid,
    pub login: String,
    pub roles: Vec<String>,
    pub adm: bool,
    /// The account's address is verified (OpenID Connect's claim); absent
    /// (false) in tokens issued before it existed.
    #[serde(default)]
    pub email_verified: bool,
    /// How the session's user authenticated (RFC 8176): `pwd`, then `otp`
    /// after a TOTP code or `rcode` after a recovery code. Kept by every
    /// refresh of the session. Empty in tokens issued before it existed.
    #[serde(default)]
    pub amr: Vec<String>,
    /// When the user authenticated: the login that started the session,
    /// seconds since the Unix epoch (OpenID Connect's claim). Kept by every
    /// refresh. 0 in tokens issued before it existed.
    #[serde(default)]
    pub auth_time: i64,
    pub sid: Uuid,
    pub jti: Uuid,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    /// The proxy's identity header values for these claims, made once per
    /// verified token (the verified-token cache shares one `Claims` among
    /// the token's requests): never part of the token.
    #[serde(skip)]
    pub header_values: HeaderValues,
}

/// `X-User-Id`, `-Login`, `-Roles` and `-Admin` for one token's claims,
/// made at its first proxied request ([`crate::proxy::headers::set_identity`]);
/// a value that cannot be a header is `None`. Ignored by equality.
#[derive(Clone, Default)]
pub struct HeaderValues(pub std::sync::OnceLock<[Option<axum::http::HeaderValue>; 4]>);

impl PartialEq for HeaderValues {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for HeaderValues {}

impl std::fmt::Debug for HeaderValues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HeaderValues")
    }
}

impl SigningAlgorithm {
    fn jwt(self) -> Algorithm {
        match self {
            SigningAlgorithm::EdDsa => Algorithm::EdDSA,
            SigningAlgorithm::Es256 => Algorithm::ES256,
            SigningAlgorithm::Rs256 => Algorithm::RS256,
        }
    }

    fn file_tag(self) -> &'static str {
        match self {
            SigningAlgorithm::EdDsa => "eddsa",
            SigningAlgorithm::Es256 => "es256",
            SigningAlgorithm::Rs256 => "rs256",
        }
    }

    fn from_file_tag(tag: &str) -> Option<Self> {
        [Self::EdDsa, Self::Es256, Self::Rs256]
            .into_iter()
            .find(|a| a.file_tag() == tag)
    }
}

/// Writes a new private key into `dir` (created if missing) with mode 0600 and
/// returns its path. The new key signs from the next start on. A directory
/// with no secret yet gets one too ([`secrets::generate`]): a keys directory
/// made by this function is complete.
pub fn generate_key(dir: &Path, alg: SigningAlgorithm) -> Result<PathBuf> {
    if !secrets::any_in(dir) {
        secrets::generate(dir)?;
    }
    let fail = |what: &str| Error::Internal(format!("key generation failed: {what}"));
    let der: Vec<u8> = match alg {
        SigningAlgorithm::EdDsa => Ed25519KeyPair::generate()
            .and_then(|k| k.to_pkcs8v1())
            .map_err(|_| fail("Ed25519"))?
            .as_ref()
            .to_vec(),
        SigningAlgorithm::Es256 => EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
            .and_then(|k| k.to_pkcs8v1())
            .map_err(|_| fail("P-256"))?
            .as_ref()
            .to_vec(),
        SigningAlgorithm::Rs256 => {
            let key = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                .map_err(|_| fail("RSA"))?;
            let der: aws_lc_rs::encoding::Pkcs8V1Der = key.as_der().map_err(|_| fail("RSA"))?;
            der.as_ref().to_vec()
        }
    };
    let pem = pem::encode(&pem::Pem::new("PRIVATE KEY", der));
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::Internal(format!("cannot create {}: {e}", dir.display())))?;
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%6fZ");
    let path = dir.join(format!("{stamp}-{}.pem", alg.file_tag()));
    write_private(&path, pem.as_bytes())?;
    Ok(path)
}

/// The files of the keys directory `dir` ending in `.ext`, sorted by name
/// (oldest first: names start with their UTC timestamp). A missing directory
/// has none.
pub(crate) fn files_with_extension(dir: &Path, ext: &str) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == ext))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            return Err(Error::Internal(format!(
                "cannot read keys directory {}: {e}",
                dir.display()
            )));
        }
    };
    files.sort();
    Ok(files)
}

/// Creates `path` (never overwrites) with mode 0600 and writes `bytes`.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
        .open(path)
        .and_then(|mut f| f.write_all(bytes))
        .map_err(|e| Error::Internal(format!("cannot write {}: {e}", path.display())))
}

/// One key of the keyring.
#[derive(Debug, Clone)]
pub struct KeyInfo {
    pub kid: String,
    pub alg: SigningAlgorithm,
    pub path: PathBuf,
}

struct VerifyingKey {
    alg: Algorithm,
    key: DecodingKey,
}

/// Every key in the keys directory: the newest signs, all verify; and the
/// server secrets.
pub struct Keyring {
    signing: (String, Algorithm, EncodingKey),
    verifying: HashMap<String, VerifyingKey>,
    jwks: JwkSet,
    keys: Vec<KeyInfo>,
    secrets: SecretRing,
}

impl Keyring {
    /// Loads `dir`. An empty or missing directory is an error that says how to fix it.
    pub fn load(dir: &Path) -> Result<Self> {
        install_crypto_provider();
        let files = files_with_extension(dir, "pem")?;
        let mut verifying = HashMap::new();
        let mut jwks = JwkSet { keys: Vec::new() };
        let mut keys = Vec::new();
        let mut signing = None;
        for path in files {
            let (kid, alg, encoding, jwk) = load_key(&path)?;
            verifying.insert(
                kid.clone(),
                VerifyingKey {
                    alg: alg.jwt(),
                    key: DecodingKey::from_jwk(&jwk).map_err(|e| bad_key(&path, e))?,
                },
            );
            jwks.keys.push(jwk);
            keys.push(KeyInfo {
                kid: kid.clone(),
                alg,
                path,
            });
            signing = Some((kid, alg.jwt(), encoding));
        }
        let signing = signing.ok_or_else(|| {
            Error::Internal(format!(
                "no signing key in {}; run `authgw keys generate`",
                dir.display()
            ))
        })?;
        jwks.keys.reverse(); // newest first
        let secrets = SecretRing::load(dir)?;
        Ok(Self {
            signing,
            verifying,
            jwks,
            keys,
            secrets,
        })
    }

    pub fn jwks(&self) -> &JwkSet {
        &self.jwks
    }

    /// Keys oldest first; the last one signs.
    pub fn keys(&self) -> &[KeyInfo] {
        &self.keys
    }

    pub fn signing_kid(&self) -> &str {
        &self.signing.0
    }

    /// The server secrets of the directory.
    pub fn secrets(&self) -> &SecretRing {
        &self.secrets
    }
}

fn bad_key(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Internal(format!("key file {}: {e}", path.display()))
}

fn load_key(path: &Path) -> Result<(String, SigningAlgorithm, EncodingKey, Jwk)> {
    let tag = path
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.rsplit_once('-'))
        .map(|(_, tag)| tag)
        .unwrap_or_default();
    let alg = SigningAlgorithm::from_file_tag(tag).ok_or_else(|| {
        bad_key(
            path,
            "name must end in -eddsa.pem, -es256.pem or -rs256.pem",
        )
    })?;
    let pem = std::fs::read(path).map_err(|e| bad_key(path, e))?;
    let encoding = match alg {
        SigningAlgorithm::EdDsa => EncodingKey::from_ed_pem(&pem),
        SigningAlgorithm::Es256 => EncodingKey::from_ec_pem(&pem),
        SigningAlgorithm::Rs256 => EncodingKey::from_rsa_pem(&pem),
    }
    .map_err(|e| bad_key(path, e))?;
    let mut jwk = Jwk::from_encoding_key(&encoding, alg.jwt()).map_err(|e| bad_key(path, e))?;
    let kid = jwk
        .thumbprint(ThumbprintHash::SHA256)
        .map_err(|e| bad_key(path, e))?;
    jwk.common.key_id = Some(kid.clone());
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    Ok((kid, alg, encoding, jwk))
}

/// Who an access token is for: the account as read at login or refresh,
/// and the session's authentication.
#[derive(Debug, Clone, Copy)]
pub struct Grant<'a> {
    pub sub: Uuid,
    pub login: &'a str,
    pub roles: &'a [String],
    pub adm: bool,
    pub sid: Uuid,
    pub email_verified: bool,
    pub amr: &'a [String],
    pub auth_time: i64,
}

impl Claims {
    /// Whether the session passed a second factor (`otp` or `rcode` in `amr`).
    pub fn has_second_factor(&self) -> bool {
        self.amr.iter().any(|m| m == "otp" || m == "rcode")
    }
}

/// Issues and verifies access tokens.
pub struct Tokens {
    /// Swapped whole by a reload; requests in flight keep the ring they loaded.
    keyring: ArcSwap<Keyring>,
    /// Verified tokens until their `exp`: a token seen again costs a lookup.
    cache: Cache<Arc<str>, Arc<Claims>, TokenHasher>,
    issuer: String,
    audience: String,
    access_ttl: Duration,
    leeway: u64,
}

/// Cache entries leave at the token's `exp`.
struct UntilExp;

impl Expiry<Arc<str>, Arc<Claims>> for UntilExp {
    fn expire_after_create(
        &self,
        _key: &Arc<str>,
        claims: &Arc<Claims>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        let left = claims.exp.saturating_sub(chrono::Utc::now().timestamp());
        Some(Duration::from_secs(u64::try_from(left).unwrap_or(0)))
    }
}

/// The verified-token cache's hasher: foldhash, seeded per cache, where
/// std's SipHash cost ~1,700 instructions a proxied request over a
/// ~600-byte token (issue 18). Foldhash is only "minimally DoS-resistant",
/// which is enough here: a collision attack needs many colliding *keys in
/// the cache*, and only tokens this gateway signed get in (after their
/// signature is checked), whose text no client chooses (`jti` is random).
/// A lookup of any other string probes once and leaves nothing behind.
type TokenHasher = foldhash::fast::RandomState;

/// Bytes a cache entry holds (token text, claims, bookkeeping), for the cache bound.
fn entry_weight(token: &str, claims: &Claims) -> u32 {
    let roles: usize = claims.roles.iter().map(|r| r.len() + 24).sum();
    let bytes = token.len() + claims.login.len() + roles + 256;
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

impl Tokens {
    /// Tokens with the default verified-token cache size (16 MiB).
    pub fn new(keyring: Keyring, config: &TokenConfig) -> Self {
        Self::with_cache(keyring, config, 16 * 1024 * 1024)
    }

    /// `cache_bytes` bounds the verified-token cache (0 turns it off).
    pub fn with_cache(keyring: Keyring, config: &TokenConfig, cache_bytes: u64) -> Self {
        let cache = Cache::builder()
            .max_capacity(cache_bytes)
            .weigher(|k: &Arc<str>, v: &Arc<Claims>| entry_weight(k, v))
            .expire_after(UntilExp)
            .build_with_hasher(TokenHasher::default());
        Self {
            keyring: ArcSwap::from_pointee(keyring),
            cache,
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            access_ttl: config.access_ttl,
            leeway: config.clock_skew.as_secs(),
        }
    }

    /// The current keyring.
    pub fn keyring(&self) -> Arc<Keyring> {
        self.keyring.load_full()
    }

    /// Swaps in a reloaded keyring and forgets every verified token, so a key
    /// removed from the directory stops verifying at once.
    pub fn replace_keyring(&self, keyring: Keyring) {
        self.keyring.store(Arc::new(keyring));
        self.cache.invalidate_all();
    }

    /// [`Tokens::verify`] through the verified-token cache. A hit still has
    /// its `exp` checked; revocation is the caller's second step, as always.
    pub fn verify_cached(&self, token: &str) -> Result<Arc<Claims>> {
        if let Some(claims) = self.cache.get(token) {
            if claims.exp >= chrono::Utc::now().timestamp() {
                return Ok(claims);
            }
            self.cache.invalidate(token);
        }
        let claims = Arc::new(self.verify(token)?);
        self.cache.insert(token.into(), claims.clone());
        Ok(claims)
    }

    pub fn access_ttl(&self) -> Duration {
        self.access_ttl
    }

    /// Signs an access token for `grant` with the newest key.
    pub fn issue(&self, grant: &Grant<'_>) -> Result<String> {
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: grant.sub,
            login: grant.login.to_string(),
            roles: grant.roles.to_vec(),
            adm: grant.adm,
            email_verified: grant.email_verified,
            amr: grant.amr.to_vec(),
            auth_time: grant.auth_time,
            sid: grant.sid,
            jti: Uuid::new_v4(),
            iat: now,
            nbf: now,
            exp: now + self.access_ttl.as_secs() as i64,
            header_values: HeaderValues::default(),
        };
        let keyring = self.keyring.load();
        let (kid, alg, key) = &keyring.signing;
        let mut header = Header::new(*alg);
        header.kid = Some(kid.clone());
        header.typ = Some(ACCESS_TOKEN_TYP.into());
        jsonwebtoken::encode(&header, &claims, key).map_err(Error::internal)
    }

    /// Checks signature, algorithm, `typ`, `iss`, `aud`, `exp`, `nbf` and `sub`.
    /// Revocation is the caller's second step.
    pub fn verify(&self, token: &str) -> Result<Claims> {
        let invalid = |why: &str| Error::InvalidToken(why.to_string());
        let header = jsonwebtoken::decode_header(token).map_err(|_| invalid("malformed token"))?;
        let typ_ok = header.typ.as_deref().is_some_and(|t| {
            t.eq_ignore_ascii_case(ACCESS_TOKEN_TYP) || t.eq_ignore_ascii_case("application/at+jwt")
        });
        if !typ_ok {
            return Err(invalid("not an access token (typ)"));
        }
        let kid = header
            .kid
            .as_deref()
            .ok_or_else(|| invalid("token has no kid"))?;
        let keyring = self.keyring.load();
        let key = keyring
            .verifying
            .get(kid)
            .ok_or_else(|| invalid("unknown signing key"))?;
        let mut validation = Validation::new(key.alg);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = self.leeway;
        jsonwebtoken::decode::<Claims>(token, &key.key, &validation)
            .map(|data| data.claims)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind as K;
                invalid(match e.kind() {
                    K::ExpiredSignature => "token expired",
                    K::ImmatureSignature => "token not yet valid",
                    K::InvalidIssuer => "wrong issuer",
                    K::InvalidAudience => "wrong audience",
                    K::InvalidAlgorithm => "algorithm not allowed for this key",
                    K::InvalidSignature => "bad signature",
                    _ => "invalid token",
                })
            })
    }
}

/// A refresh token as issued (hyphenated lower-case UUID) and the SHA-256
/// stored for it: the table never holds the token itself.
#[derive(Clone, PartialEq, Eq)]
pub struct RefreshToken {
    pub token: String,
    pub hash: Vec<u8>,
}

impl std::fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RefreshToken(..)")
    }
}

impl RefreshToken {
    fn of(id: Uuid) -> Self {
        let token = id.hyphenated().to_string();
        let hash = Sha256::digest(token.as_bytes()).to_vec();
        Self { token, hash }
    }

    /// A presented token, in its canonical form; `None` if it is not a UUID.
    pub fn parse(token: &str) -> Option<Self> {
        Uuid::parse_str(token).ok().map(Self::of)
    }

    /// The successor of this token under `secret`:
    /// `HMAC-SHA-256(secret, token)` as a UUID. Recomputed, never read back,
    /// when the same token comes back within `tokens.refresh_reuse_grace`,
    /// so racing tabs and retried requests get the same successor while the
    /// table still holds only hashes.
    pub fn successor(&self, secret: &Secret) -> Self {
        Self::of(secret.derive_uuid(Purpose::RefreshSuccessor, self.token.as_bytes()))
    }
}

/// A new refresh token that starts a session (a random UUID v4) and the
/// SHA-256 stored for it.
pub fn new_refresh_token() -> (String, Vec<u8>) {
    let RefreshToken { token, hash } = RefreshToken::of(Uuid::new_v4());
    (token, hash)
}

/// The stored hash of a presented refresh token; `None` if it is not a UUID.
pub fn refresh_token_hash(token: &str) -> Option<Vec<u8>> {
    RefreshToken::parse(token).map(|t| t.hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(alg: SigningAlgorithm) -> (tempfile::TempDir, Tokens) {
        let Ok(dir) = tempfile::tempdir() else {
            panic!("tempdir")
        };
        install_crypto_provider();
        assert!(generate_key(dir.path(), alg).is_ok());
        let Ok(keyring) = Keyring::load(dir.path()) else {
            panic!("keyring")
        };
        (dir, Tokens::new(keyring, &TokenConfig::default()))
    }

    /// Every supported algorithm signs a token that verifies to the same claims.
    #[test]
    fn round_trip_each_algorithm() {
        for alg in [
            SigningAlgorithm::EdDsa,
            SigningAlgorithm::Es256,
            SigningAlgorithm::Rs256,
        ] {
            let (_dir, t) = tokens(alg);
            let sub = Uuid::new_v4();
            let roles = ["adult".to_string()];
            let amr = ["pwd".to_string()];
            let token = t.issue(&Grant {
                sub,
                login: "alice",
                roles: &roles,
                adm: false,
                sid: Uuid::new_v4(),
                email_verified: true,
                amr: &amr,
                auth_time: 1,
            });
            let Ok(token) = token else {
                panic!("issue {alg:?}")
            };
            let claims = t.verify(&token);
            assert!(
                matches!(&claims, Ok(c) if c.sub == sub && c.roles == ["adult"] && c.amr == ["pwd"] && c.auth_time == 1),
                "{alg:?}: {claims:?}"
            );
        }
    }

    /// Key files are private (0600) and the newest key signs.
    #[test]
    fn key_files_are_private_and_newest_signs() {
        let (dir, _) = tokens(SigningAlgorithm::EdDsa);
        let Ok(second) = generate_key(dir.path(), SigningAlgorithm::Es256) else {
            panic!("gen")
        };
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&second).map(|m| m.permissions().mode() & 0o777);
            assert_eq!(mode.ok(), Some(0o600));
        }
        let Ok(ring) = Keyring::load(dir.path()) else {
            panic!("load")
        };
        assert_eq!(ring.keys().len(), 2);
        assert_eq!(ring.keys()[1].alg, SigningAlgorithm::Es256);
        assert_eq!(ring.signing_kid(), ring.keys()[1].kid);
    }

    /// An empty keys directory says how to fix it.
    #[test]
    fn empty_dir_is_explained() {
        let Ok(dir) = tempfile::tempdir() else {
            panic!("tempdir")
        };
        let err = Keyring::load(dir.path())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("authgw keys generate"), "{err}");
    }

    /// Refresh tokens are UUIDs; the stored hash is the SHA-256 of the token,
    /// and anything that is not a UUID has no hash.
    #[test]
    fn refresh_token_hashing() {
        let (token, hash) = new_refresh_token();
        assert_eq!(
            Uuid::parse_str(&token).map(|u| u.get_version_num()).ok(),
            Some(4)
        );
        assert_eq!(refresh_token_hash(&token), Some(hash));
        assert_eq!(refresh_token_hash("' OR 1=1 --"), None);
    }

    /// A successor is a function of the token and the secret: the same pair
    /// gives the same successor (in any spelling of the token), another
    /// secret or another token gives another; it looks like any v4 token and
    /// its hash is the one a presented copy of it gets.
    #[test]
    fn successors_are_derived_per_secret() {
        let secret = |byte: u8| Secret::from_bytes(&[byte; 32], PathBuf::new());
        let (a, b) = (secret(1), secret(2));
        let (t, _) = new_refresh_token();
        let Some(presented) = RefreshToken::parse(&t) else {
            panic!("parse")
        };
        let Some(upper) = RefreshToken::parse(&t.to_uppercase()) else {
            panic!("parse")
        };
        let s = presented.successor(&a);
        assert_eq!(s, upper.successor(&a));
        assert_ne!(s, presented.successor(&b));
        let (other, _) = new_refresh_token();
        assert_ne!(
            RefreshToken::parse(&other).map(|o| o.successor(&a)),
            Some(s.clone())
        );
        assert_eq!(
            Uuid::parse_str(&s.token).map(|u| u.get_version_num()).ok(),
            Some(4)
        );
        assert_eq!(refresh_token_hash(&s.token), Some(s.hash));
    }
}
