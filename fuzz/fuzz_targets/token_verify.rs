//! Token parsing and verification: `Tokens::verify`, the bearer-header
//! parser and refresh-token hashing, on arbitrary input and on tokens the
//! fuzzer builds around a real key.
//!
//! Properties: nothing panics; a token that verifies was signed by the
//! gateway's key (its signed part is the genuine token's, or claims this
//! target signed itself), and its claims carry the configured issuer and
//! audience and are inside their validity window; a refresh token hashes only
//! when it is a UUID, to the hash of its canonical form.
#![no_main]

use std::sync::LazyLock;

use arbitrary::Arbitrary;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use gateway::config::{SigningAlgorithm, TokenConfig};
use gateway::tokens::{self, Keyring, Tokens};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use libfuzzer_sys::fuzz_target;

struct Fixture {
    _dir: tempfile::TempDir,
    tokens: Tokens,
    config: TokenConfig,
    key: EncodingKey,
    kid: String,
    genuine: String,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    tokens::install_crypto_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = tokens::generate_key(dir.path(), SigningAlgorithm::EdDsa).expect("key");
    let key = EncodingKey::from_ed_pem(&std::fs::read(path).expect("read key")).expect("pem");
    let config = TokenConfig::default();
    let tokens = Tokens::new(Keyring::load(dir.path()).expect("keyring"), &config);
    let kid = tokens.keyring().signing_kid().to_string();
    let genuine = tokens
        .issue(
            uuid::Uuid::new_v4(),
            "alice",
            &["subscriber".into()],
            false,
            uuid::Uuid::new_v4(),
        )
        .expect("issue");
    Fixture {
        _dir: dir,
        tokens,
        config,
        key,
        kid,
        genuine,
    }
});

#[derive(Debug, Arbitrary)]
enum Input {
    /// Any string as a token.
    Raw(String),
    /// The genuine token with one of its three segments replaced.
    Segment {
        which: u8,
        bytes: Vec<u8>,
        encode: bool,
    },
    /// A header and claims of the fuzzer's choosing, base64url-encoded,
    /// with the genuine token's signature.
    Forged { header: String, claims: String },
    /// Claims of the fuzzer's choosing (JSON text), properly signed with the
    /// gateway's key, with a `typ` and `kid` of its choosing.
    Signed {
        claims: String,
        typ: Option<String>,
        genuine_kid: bool,
    },
    /// An Authorization header value.
    Bearer(Vec<u8>),
    /// A refresh token.
    Refresh(String),
}

fn signed_part(token: &str) -> &str {
    token.rsplit_once('.').map_or("", |(signed, _)| signed)
}

/// What must hold of any token `verify` accepts.
fn check(token: &str, self_signed: Option<&str>) {
    let f = &*FIXTURE;
    let Ok(claims) = f.tokens.verify(token) else {
        return;
    };
    let part = signed_part(token);
    assert!(
        part == signed_part(&f.genuine) || Some(part) == self_signed,
        "verify accepted a token the gateway never signed: {token}"
    );
    assert_eq!(claims.iss, f.config.issuer);
    assert_eq!(claims.aud, f.config.audience);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let skew = f.config.clock_skew.as_secs() as i64;
    assert!(
        claims.exp >= now - skew,
        "expired token accepted: {claims:?}"
    );
    assert!(
        claims.nbf <= now + skew,
        "immature token accepted: {claims:?}"
    );
}

fuzz_target!(|input: Input| {
    let f = &*FIXTURE;
    match input {
        Input::Raw(s) => check(&s, None),
        Input::Segment {
            which,
            bytes,
            encode,
        } => {
            let mut parts: Vec<String> = f.genuine.split('.').map(str::to_string).collect();
            let replacement = if encode {
                B64.encode(&bytes)
            } else {
                String::from_utf8_lossy(&bytes).into_owned()
            };
            parts[usize::from(which % 3)] = replacement;
            check(&parts.join("."), None);
        }
        Input::Forged { header, claims } => {
            let signature = f.genuine.rsplit('.').next().unwrap_or_default();
            let token = format!("{}.{}.{signature}", B64.encode(header), B64.encode(claims));
            check(&token, None);
        }
        Input::Signed {
            claims,
            typ,
            genuine_kid,
        } => {
            let Ok(value) = serde_json::from_str::<serde_json::Value>(&claims) else {
                return;
            };
            let mut header = Header::new(Algorithm::EdDSA);
            header.typ = typ;
            header.kid = Some(if genuine_kid {
                f.kid.clone()
            } else {
                "other".into()
            });
            let Ok(token) = jsonwebtoken::encode(&header, &value, &f.key) else {
                return;
            };
            check(&token, Some(signed_part(&token)));
        }
        Input::Bearer(bytes) => {
            let Ok(value) = axum::http::HeaderValue::from_bytes(&bytes) else {
                return;
            };
            let (mut parts, ()) = axum::http::Request::new(()).into_parts();
            parts
                .headers
                .insert(axum::http::header::AUTHORIZATION, value);
            if let Some(token) = gateway::api::extract::bearer_token(&parts) {
                assert!(!token.is_empty() && token.trim() == token);
                check(token, None);
            }
        }
        Input::Refresh(s) => {
            let hash = tokens::refresh_token_hash(&s);
            match uuid::Uuid::parse_str(&s) {
                Ok(u) => {
                    let canonical = tokens::refresh_token_hash(&u.hyphenated().to_string());
                    assert!(hash.is_some() && hash == canonical, "{s:?}");
                    assert_eq!(hash.map(|h| h.len()), Some(32));
                }
                Err(_) => assert!(hash.is_none(), "{s:?} is not a UUID but hashed"),
            }
        }
    }
});
