//! Access-token verification against forged and broken tokens, verification
//! from the published JWKS alone, every signing algorithm, key rotation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use base64::Engine;
use common::*;
use gateway::config::SigningAlgorithm;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Value, json};

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The (only) private key in a keys directory; the directory also holds a secret.
fn key_in(dir: &std::path::Path) -> EncodingKey {
    let path = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "pem"))
        .unwrap();
    EncodingKey::from_ed_pem(&std::fs::read(path).unwrap()).unwrap()
}

/// The private key the server signs with, read from its keys directory.
fn server_key(app: &TestApp) -> EncodingKey {
    key_in(app.keys.path())
}

/// Claims like the server's, for a real user and session, with `patch` applied.
fn forged_claims(valid: &str, patch: Value) -> Value {
    let mut c = claims(valid);
    for (k, v) in patch.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

fn sign(key: &EncodingKey, kid: &str, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(kid.to_string());
    header.typ = Some("at+jwt".into());
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

async fn assert_refused(app: &TestApp, token: &str, why: &str) {
    let r = app.get("/api/v1/auth/check", Some(token)).await;
    assert_eq!(r.status, 401, "{why}: {}", r.body);
    r.assert_problem(401, "invalid_token");
    let intro = app.introspect(json!({"token": token})).await;
    assert_eq!(intro.body, json!({"active": false}), "{why}");
}

/// A re-signed copy of a valid token is accepted (the forging harness works),
/// and each tampering below is refused with 401.
#[tokio::test]
async fn forged_tokens_are_refused() {
    let app = spawn_app().await;
    let (_, access, _) = app.user("alice").await;
    let key = server_key(&app);
    let kid = jsonwebtoken::decode_header(&access).unwrap().kid.unwrap();
    let now = chrono::Utc::now().timestamp();

    // Control: the harness can produce a token the server accepts.
    let control = sign(&key, &kid, &claims(&access));
    assert_eq!(
        app.get("/api/v1/auth/check", Some(&control)).await.status,
        200
    );

    // Tampered payload under the original signature (role escalation).
    let parts: Vec<&str> = access.split('.').collect();
    let escalated = forged_claims(&access, json!({"adm": true, "roles": ["adult"]}));
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64(escalated.to_string().as_bytes()),
        parts[2]
    );
    assert_refused(&app, &tampered, "tampered payload").await;

    // Tampered signature.
    let mut sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(parts[2])
        .unwrap();
    sig[0] ^= 1;
    assert_refused(
        &app,
        &format!("{}.{}.{}", parts[0], parts[1], b64(&sig)),
        "bad signature",
    )
    .await;

    // alg: none, no signature.
    let none_header = json!({"alg": "none", "typ": "at+jwt", "kid": kid});
    let none = format!("{}.{}.", b64(none_header.to_string().as_bytes()), parts[1]);
    assert_refused(&app, &none, "alg none").await;

    // HS256 with the public key as the HMAC secret (algorithm confusion).
    let jwks: JwkSet =
        serde_json::from_value(app.get("/.well-known/jwks.json", None).await.body).unwrap();
    let x = match &jwks.keys[0].algorithm {
        jsonwebtoken::jwk::AlgorithmParameters::OctetKeyPair(p) => p.x.clone(),
        other => panic!("unexpected key {other:?}"),
    };
    let public = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(&x)
        .unwrap();
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some(kid.clone());
    hs.typ = Some("at+jwt".into());
    for secret in [public.clone(), x.as_bytes().to_vec()] {
        let confused =
            jsonwebtoken::encode(&hs, &claims(&access), &EncodingKey::from_secret(&secret))
                .unwrap();
        assert_refused(&app, &confused, "HS256 with the public key").await;
    }

    // Wrong issuer, wrong audience, expired, not yet valid, no sub.
    let cases = [
        (json!({"iss": "evil"}), "wrong iss"),
        (json!({"aud": "other-service"}), "wrong aud"),
        (
            json!({"exp": now - 3600, "iat": now - 4500, "nbf": now - 4500}),
            "expired",
        ),
        (json!({"nbf": now + 3600}), "nbf in the future"),
    ];
    for (patch, why) in cases {
        assert_refused(&app, &sign(&key, &kid, &forged_claims(&access, patch)), why).await;
    }
    let mut no_sub = claims(&access);
    no_sub.as_object_mut().unwrap().remove("sub");
    assert_refused(&app, &sign(&key, &kid, &no_sub), "no sub").await;

    // Unknown kid, and no kid at all.
    assert_refused(
        &app,
        &sign(&key, "not-a-known-kid", &claims(&access)),
        "unknown kid",
    )
    .await;
    let mut no_kid = Header::new(Algorithm::EdDSA);
    no_kid.typ = Some("at+jwt".into());
    assert_refused(
        &app,
        &jsonwebtoken::encode(&no_kid, &claims(&access), &key).unwrap(),
        "no kid",
    )
    .await;

    // A key the server does not know, claiming the server's kid.
    let stranger_dir = keys_dir();
    let stranger = key_in(stranger_dir.path());
    assert_refused(
        &app,
        &sign(&stranger, &kid, &claims(&access)),
        "foreign key",
    )
    .await;

    // Not an access token (typ JWT instead of at+jwt).
    let mut id_like = Header::new(Algorithm::EdDSA);
    id_like.kid = Some(kid.clone());
    id_like.typ = Some("JWT".into());
    assert_refused(
        &app,
        &jsonwebtoken::encode(&id_like, &claims(&access), &key).unwrap(),
        "typ JWT",
    )
    .await;
}

/// An application service can verify an access token from the served JWKS
/// JSON alone, through jsonwebtoken's Jwk decoding path.
#[tokio::test]
async fn token_verifies_from_jwks_alone() {
    for alg in [
        SigningAlgorithm::EdDsa,
        SigningAlgorithm::Es256,
        SigningAlgorithm::Rs256,
    ] {
        let db = Arc::new(TestDb::migrated());
        let keys = Arc::new(tempfile::tempdir().unwrap());
        gateway::tokens::install_crypto_provider();
        gateway::tokens::generate_key(keys.path(), alg).unwrap();
        let config = test_config(&db.url, keys.path());
        let app = start(db, keys, config).await;
        let (id, access, _) = app.user("alice").await;
        let raw = app
            .http
            .get(app.url("/.well-known/jwks.json"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let jwks: JwkSet = serde_json::from_str(&raw).unwrap();
        let kid = jsonwebtoken::decode_header(&access).unwrap().kid.unwrap();
        let jwk = jwks.find(&kid).expect("kid in JWKS");
        let key = DecodingKey::from_jwk(jwk).unwrap();
        let pinned = match alg {
            SigningAlgorithm::EdDsa => Algorithm::EdDSA,
            SigningAlgorithm::Es256 => Algorithm::ES256,
            SigningAlgorithm::Rs256 => Algorithm::RS256,
        };
        let mut validation = Validation::new(pinned);
        validation.set_audience(&["cinema"]);
        validation.set_issuer(&["authgw"]);
        let data = jsonwebtoken::decode::<Value>(&access, &key, &validation).unwrap();
        assert_eq!(data.claims["sub"], id, "{alg:?}");
        assert_eq!(data.header.alg, pinned);
        assert_eq!(
            app.get("/api/v1/auth/check", Some(&access)).await.status,
            200
        );
    }
}

/// Key rotation: a new key signs after restart, the old key keeps verifying
/// (nobody is logged out), and the JWKS publishes both, newest first.
#[tokio::test]
async fn key_rotation_keeps_old_tokens_valid() {
    let mut first = spawn_app().await;
    let (_, old_token, _) = first.user("alice").await;
    let old_kid = jsonwebtoken::decode_header(&old_token)
        .unwrap()
        .kid
        .unwrap();
    first.stop().await.unwrap();
    gateway::tokens::generate_key(first.keys.path(), SigningAlgorithm::Es256).unwrap();
    let second = start(first.db.clone(), first.keys.clone(), first.config.clone()).await;
    assert_eq!(
        second
            .get("/api/v1/auth/check", Some(&old_token))
            .await
            .status,
        200
    );
    let (new_token, _) = second.tokens("alice").await;
    let header = jsonwebtoken::decode_header(&new_token).unwrap();
    assert_eq!(header.alg, Algorithm::ES256);
    assert_ne!(header.kid.as_deref(), Some(old_kid.as_str()));
    let jwks = second.get("/.well-known/jwks.json", None).await.body;
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids, [header.kid.as_deref().unwrap(), old_kid.as_str()]);
}
