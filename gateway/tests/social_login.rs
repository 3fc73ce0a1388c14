//! Social login (issue 17) end to end: OpenID Connect and OAuth 2.0 sign-in
//! through a real provider (oidc-provider-mock from PyPI, tests/common/oidc.rs),
//! and the hostile cases a genuine provider cannot produce through a Rust
//! stand-in (tests/common/fake_idp.rs).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::fake_idp::{FakeIdp, Flaw, KeyAlg};
use common::oidc::OidcProvider;
use serde_json::{Value, json};
use sha2::Digest as _;

// ---------- the instruments ----------

/// The query of `url` as a map (panics on a repeated name).
fn query_of(url: &str) -> HashMap<String, String> {
    let parsed = url::Url::parse(url).unwrap_or_else(|e| panic!("{url:?}: {e}"));
    let mut out = HashMap::new();
    for (k, v) in parsed.query_pairs() {
        assert!(
            out.insert(k.to_string(), v.to_string()).is_none(),
            "{k} twice in {url}"
        );
    }
    out
}

/// Runs an authorization-code flow against a provider by hand (no
/// gateway): returns the token endpoint's JSON.
async fn code_flow_by_hand(
    authorize_url: &str,
    token_url: &str,
    authorize: impl AsyncFnOnce(String) -> String,
    verifier: &str,
    nonce: &str,
) -> (u16, Value) {
    let challenge = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()));
    let redirect = "http://127.0.0.1:9/cb";
    let mut url = url::Url::parse(authorize_url).unwrap();
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", "harness")
        .append_pair("redirect_uri", redirect)
        .append_pair("scope", "openid email profile")
        .append_pair("state", "st")
        .append_pair("nonce", nonce)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");
    let back = authorize(url.to_string()).await;
    let q = query_of(&back);
    assert_eq!(q["state"], "st", "{back}");
    let r = reqwest::Client::new()
        .post(token_url)
        .basic_auth("harness", Some("secret"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", q["code"].as_str()),
            ("redirect_uri", redirect),
            ("code_verifier", verifier),
        ])
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

/// Verifies `token` with jsonwebtoken (not the gateway's code) against the
/// JWKS `jwks`: Ok(claims) or the error.
fn verify_independently(token: &str, jwks: &Value, aud: &str) -> Result<Value, String> {
    let header = jsonwebtoken::decode_header(token).map_err(|e| e.to_string())?;
    let set: jsonwebtoken::jwk::JwkSet =
        serde_json::from_value(jwks.clone()).map_err(|e| e.to_string())?;
    let mut last = "no key".to_string();
    for jwk in &set.keys {
        if let Some(kid) = &header.kid
            && jwk.common.key_id.as_ref() != Some(kid)
        {
            continue;
        }
        let key = jsonwebtoken::DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
        let mut v = jsonwebtoken::Validation::new(header.alg);
        v.set_audience(&[aud]);
        match jsonwebtoken::decode::<Value>(token, &key, &v) {
            Ok(d) => return Ok(d.claims),
            Err(e) => last = e.to_string(),
        }
    }
    Err(last)
}

/// The instrument itself: oidc-provider-mock issues RS256 ID tokens with
/// the user's claims and the nonce, verifiable against its JWKS by an
/// independent implementation; it ignores PKCE (a wrong verifier still gets
/// tokens: the PKCE test needs the fake provider); its tokens carry no
/// `kid`; and a restart on the same port publishes a new key, so tokens of
/// the old process no longer verify (the "key rotation" the tests use).
#[tokio::test]
async fn harness_the_mock_provider_behaves_as_the_tests_assume() {
    let mut idp = OidcProvider::start().await;
    let issuer = idp.issuer();
    idp.set_user(
        "alice-sub",
        json!({"email": "alice@example.org", "email_verified": true, "preferred_username": "alice"}),
    )
    .await;
    let authorize_url = format!("{issuer}/oauth2/authorize");
    let token_url = format!("{issuer}/oauth2/token");
    let (status, tokens) = code_flow_by_hand(
        &authorize_url,
        &token_url,
        async |u| idp.authorize(&u, "alice-sub").await,
        "the-right-verifier-0123456789-0123456789-0123",
        "n-1",
    )
    .await;
    assert_eq!(status, 200, "{tokens}");
    let id_token = tokens["id_token"].as_str().unwrap().to_string();
    let jwks = idp.jwks().await;
    let claims = verify_independently(&id_token, &jwks, "harness").unwrap();
    assert_eq!(claims["sub"], "alice-sub");
    assert_eq!(claims["nonce"], "n-1");
    assert_eq!(claims["iss"], issuer);
    assert_eq!(claims["email_verified"], true);
    assert_eq!(claims["preferred_username"], "alice");
    assert!(
        jsonwebtoken::decode_header(&id_token)
            .unwrap()
            .kid
            .is_none()
    );

    // PKCE is not checked by the mock.
    let (status, _) = code_flow_by_hand(
        &authorize_url,
        &token_url,
        async |u| {
            let mut u = url::Url::parse(&u).unwrap();
            let q: Vec<(String, String)> = u
                .query_pairs()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .filter(|(k, _)| k != "code_challenge")
                .collect();
            u.query_pairs_mut().clear().extend_pairs(q).append_pair(
                "code_challenge",
                "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            );
            idp.authorize(u.as_str(), "alice-sub").await
        },
        "the-right-verifier-0123456789-0123456789-0123",
        "n-2",
    )
    .await;
    assert_eq!(
        status, 200,
        "the mock now checks PKCE: the tests could use it"
    );

    let port = idp.port;
    idp.restart().await;
    assert_eq!(idp.port, port);
    assert_eq!(idp.issuer(), issuer);
    let rotated = idp.jwks().await;
    assert_ne!(rotated["keys"][0]["kid"], jwks["keys"][0]["kid"]);
    assert!(verify_independently(&id_token, &rotated, "harness").is_err());
}

/// The instrument itself: the fake provider's honest tokens verify with an
/// independent implementation (RS256 and ES256), and each flaw it can
/// inject is really a flaw (refused by the same implementation, or visibly
/// wrong in the claims); it checks PKCE.
#[tokio::test]
async fn harness_the_fake_provider_injects_real_flaws() {
    for alg in [KeyAlg::Rs256, KeyAlg::Es256] {
        let idp = FakeIdp::start_with(alg).await;
        idp.set_claims(json!({"sub": "s-1", "email": "x@example.org"}));
        let issuer = idp.issuer();
        let run = async |flaw: Flaw| {
            idp.set_flaw(flaw);
            code_flow_by_hand(
                &format!("{issuer}/authorize"),
                &format!("{issuer}/token"),
                async |u| idp.authorize(&u).await,
                "verifier-0123456789-0123456789-0123456789-abc",
                "nonce-1",
            )
            .await
        };
        let jwks: Value = reqwest::get(format!("{issuer}/jwks"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let (status, ok) = run(Flaw::None).await;
        assert_eq!(status, 200, "{ok}");
        let claims =
            verify_independently(ok["id_token"].as_str().unwrap(), &jwks, "harness").unwrap();
        assert_eq!(claims["nonce"], "nonce-1");
        assert_eq!(claims["iss"], issuer);
        for flaw in [
            Flaw::ForeignKey,
            Flaw::ForeignKeyPublishedKid,
            Flaw::Expired,
            Flaw::WrongAudience,
            Flaw::AlgNone,
            Flaw::Hs256WithPublicKey,
        ] {
            let (status, body) = run(flaw).await;
            assert_eq!(status, 200, "{body}");
            let t = body["id_token"].as_str().unwrap();
            assert!(
                verify_independently(t, &jwks, "harness").is_err(),
                "{alg:?} {flaw:?} verifies"
            );
        }
        for (flaw, claim, bad) in [
            (Flaw::WrongIssuer, "iss", json!("https://evil.example")),
            (Flaw::WrongNonce, "nonce", json!("not-the-nonce-you-sent")),
            (Flaw::NoNonce, "nonce", Value::Null),
        ] {
            let (_, body) = run(flaw).await;
            let c =
                verify_independently(body["id_token"].as_str().unwrap(), &jwks, "harness").unwrap();
            assert_eq!(c[claim], bad, "{flaw:?}");
        }

        // PKCE: a verifier that does not match the challenge gets no token.
        idp.set_flaw(Flaw::None);
        let mut u = url::Url::parse(&format!("{issuer}/authorize")).unwrap();
        u.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", "harness")
            .append_pair("redirect_uri", "http://127.0.0.1:9/cb")
            .append_pair("state", "s")
            .append_pair(
                "code_challenge",
                "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            )
            .append_pair("code_challenge_method", "S256");
        let back = idp.authorize(u.as_str()).await;
        let r = reqwest::Client::new()
            .post(format!("{issuer}/token"))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", query_of(&back)["code"].as_str()),
                ("redirect_uri", "http://127.0.0.1:9/cb"),
                (
                    "code_verifier",
                    "verifier-0123456789-0123456789-0123456789-abc",
                ),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        assert_eq!(idp.token_requests().last().unwrap().status, 400);
    }
}
