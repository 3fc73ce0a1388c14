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
use common::*;
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

// ---------- the gateway's side: harness ----------

/// The frontend URL the flows return to (on `auth.allowed_redirects`).
const FRONTEND: &str = "http://localhost:3000/auth/done";
/// Another allowed frontend URL (the profile page, for link flows).
const PROFILE: &str = "https://app.example.com/profile/identities";
/// The client id the gateway presents to the providers.
const CLIENT_ID: &str = "authgw-tests";
/// The client secret (from a file: `client_secret_file`).
const CLIENT_SECRET: &str = "s3cret: with spaces & symbols";

/// A gateway with social login, and the secret file its providers read.
struct App {
    app: TestApp,
    /// A browser that does not follow redirects (and has no cookie store:
    /// the tests carry the binding cookie themselves).
    browser: reqwest::Client,
    _secret: tempfile::TempDir,
}

impl std::ops::Deref for App {
    type Target = TestApp;

    fn deref(&self) -> &TestApp {
        &self.app
    }
}

/// A provider entry of `[[identity_providers]]`, as the TOML would give it
/// (serde defaults for everything not in `extra`).
fn provider(name: &str, issuer: &str, extra: Value) -> Value {
    let mut p = json!({
        "name": name,
        "kind": "oidc",
        "issuer": issuer,
        "client_id": CLIENT_ID,
    });
    for (k, v) in extra.as_object().unwrap() {
        p[k] = v.clone();
    }
    p
}

/// Starts a gateway with `providers` (see [`provider`]) and `tweak`.
async fn social_app_with(
    providers: Vec<Value>,
    tweak: impl FnOnce(&mut gateway::config::Config),
) -> App {
    let secret = tempfile::tempdir().unwrap();
    let secret_file = secret.path().join("client-secret");
    std::fs::write(&secret_file, format!("{CLIENT_SECRET}\n")).unwrap();
    let app = spawn_app_with(|c| {
        c.auth.allowed_redirects = vec![FRONTEND.into(), PROFILE.into()];
        for mut p in providers {
            if p.get("client_secret_env").is_none() {
                p["client_secret_file"] = json!(secret_file);
            }
            c.identity_providers
                .push(serde_json::from_value(p.clone()).unwrap_or_else(|e| panic!("{p}: {e}")));
        }
        tweak(c);
    })
    .await;
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent("authgw-tests/1")
        .build()
        .unwrap();
    App {
        app,
        browser,
        _secret: secret,
    }
}

async fn social_app(providers: Vec<Value>) -> App {
    social_app_with(providers, |_| {}).await
}

/// A flow the gateway started: where it sent the browser, and the binding
/// cookie (`authgw_oauth=...`) to send back.
#[derive(Clone, Debug)]
struct Started {
    location: String,
    cookie: String,
}

impl Started {
    fn param(&self, name: &str) -> String {
        query_of(&self.location)
            .remove(name)
            .unwrap_or_else(|| panic!("no {name} in {}", self.location))
    }
}

/// The binding cookie of a response (`name=value`), its attributes checked.
fn binding_cookie(r: &Reply) -> String {
    let set: Vec<&str> = r
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter(|v| v.starts_with("authgw_oauth="))
        .collect();
    assert_eq!(set.len(), 1, "one binding cookie: {:?}", r.headers);
    let attrs: Vec<String> = set[0].split(';').map(|a| a.trim().to_string()).collect();
    for want in ["HttpOnly", "SameSite=Lax", "Path=/api/v1/auth/oauth"] {
        assert!(
            attrs.iter().any(|a| a.eq_ignore_ascii_case(want)),
            "binding cookie without {want}: {}",
            set[0]
        );
    }
    assert!(attrs[0].len() > "authgw_oauth=".len() + 20, "{}", set[0]);
    attrs[0].clone()
}

impl App {
    /// `GET /api/v1/auth/oauth/{provider}/start?{query}` as the browser.
    async fn start_raw(&self, provider: &str, query: &[(&str, &str)]) -> Reply {
        let r = self
            .browser
            .get(
                url::Url::parse_with_params(
                    &self.url(&format!("/api/v1/auth/oauth/{provider}/start")),
                    query,
                )
                .unwrap(),
            )
            .send()
            .await
            .unwrap();
        reply(r).await
    }

    /// Starts a login at `provider` returning to `redirect` (302 expected).
    async fn start(&self, provider: &str, redirect: &str, state: Option<&str>) -> Started {
        let mut q = vec![("redirect_uri", redirect)];
        if let Some(s) = state {
            q.push(("state", s));
        }
        let r = self.start_raw(provider, &q).await;
        assert_eq!(r.status, 302, "{}", r.body);
        Started {
            location: r.header("location").unwrap().to_string(),
            cookie: binding_cookie(&r),
        }
    }

    /// Starts linking `provider` to the account of `token`, returning to
    /// `redirect`.
    async fn start_link(&self, token: &str, provider: &str, redirect: &str) -> Started {
        let r = self.link_raw(token, provider, redirect).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_schema(&r.body, "AuthorizeUrl");
        Started {
            location: r.body["authorize_url"].as_str().unwrap().to_string(),
            cookie: binding_cookie(&r),
        }
    }

    async fn link_raw(&self, token: &str, provider: &str, redirect: &str) -> Reply {
        let r = self
            .browser
            .post(self.url(&format!("/api/v1/users/me/identities/{provider}/start")))
            .bearer_auth(token)
            .json(&json!({ "redirect_uri": redirect }))
            .send()
            .await
            .unwrap();
        reply(r).await
    }

    /// Follows the provider's redirect back (`url`, the gateway's
    /// callback) as the browser, with `cookie` if given.
    async fn callback(&self, url: &str, cookie: Option<&str>) -> Reply {
        assert!(
            url.starts_with(&self.url("/api/v1/auth/oauth/")),
            "not the gateway's callback: {url}"
        );
        let mut req = self.browser.get(url);
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        reply(req.send().await.unwrap()).await
    }

    /// The callback answered a redirect to `frontend`: its query.
    async fn back_to(&self, url: &str, cookie: &str, frontend: &str) -> HashMap<String, String> {
        let r = self.callback(url, Some(cookie)).await;
        assert_eq!(r.status, 302, "{}", r.body);
        let to = r.header("location").unwrap();
        assert!(
            to.starts_with(&format!("{frontend}?")),
            "redirected to {to}, not {frontend}"
        );
        query_of(to)
    }

    /// The one-time code of a successful callback.
    async fn code_from(&self, url: &str, cookie: &str) -> String {
        let q = self.back_to(url, cookie, FRONTEND).await;
        assert!(
            !q.contains_key("error"),
            "the flow failed: {:?} {:?}",
            q.get("error"),
            q.get("error_description")
        );
        q.get("code").unwrap().clone()
    }

    /// The error code (and description) of a failed callback.
    async fn error_from(&self, url: &str, cookie: &str, frontend: &str) -> (String, String) {
        let q = self.back_to(url, cookie, frontend).await;
        assert!(!q.contains_key("code"), "{q:?}");
        (
            q.get("error")
                .cloned()
                .unwrap_or_else(|| panic!("no error in {q:?}")),
            q.get("error_description").cloned().unwrap_or_default(),
        )
    }

    /// `POST /api/v1/auth/oauth/exchange {code}`.
    async fn exchange(&self, code: &str) -> Reply {
        self.post("/api/v1/auth/oauth/exchange", None, json!({ "code": code }))
            .await
    }

    /// A whole login through the mock as `sub`: the token pair.
    async fn login_via(&self, idp: &OidcProvider, provider: &str, sub: &str) -> Value {
        let started = self.start(provider, FRONTEND, None).await;
        let back = idp.authorize(&started.location, sub).await;
        let code = self.code_from(&back, &started.cookie).await;
        let r = self.exchange(&code).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_schema(&r.body, "TokenPair");
        r.body
    }

    /// A login through the mock as `sub` that fails: the error code.
    async fn login_error(&self, idp: &OidcProvider, provider: &str, sub: &str) -> String {
        let started = self.start(provider, FRONTEND, None).await;
        let back = idp.authorize(&started.location, sub).await;
        self.error_from(&back, &started.cookie, FRONTEND).await.0
    }

    /// A whole login through the fake provider (its current user and flaw):
    /// the frontend's query.
    async fn fake_login(&self, idp: &FakeIdp, provider: &str) -> HashMap<String, String> {
        let started = self.start(provider, FRONTEND, None).await;
        let back = idp.authorize(&started.location).await;
        self.back_to(&back, &started.cookie, FRONTEND).await
    }

    /// Links `provider` (the mock, as `sub`) to the account of `token`:
    /// the frontend's query.
    async fn link_via(
        &self,
        idp: &OidcProvider,
        token: &str,
        provider: &str,
        sub: &str,
    ) -> HashMap<String, String> {
        let started = self.start_link(token, provider, PROFILE).await;
        let back = idp.authorize(&started.location, sub).await;
        self.back_to(&back, &started.cookie, PROFILE).await
    }

    /// The caller's identities.
    async fn identities(&self, token: &str) -> Vec<Value> {
        let r = self.get("/api/v1/users/me/identities", Some(token)).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_schema(&r.body, "IdentityList");
        r.body["items"].as_array().unwrap().clone()
    }

    async fn me(&self, token: &str) -> Value {
        let r = self.get("/api/v1/users/me", Some(token)).await;
        assert_eq!(r.status, 200, "{}", r.body);
        r.body
    }

    fn users(&self) -> i64 {
        self.db.count("SELECT count(*) FROM users")
    }

    fn identity_rows(&self) -> i64 {
        self.db.count("SELECT count(*) FROM user_identities")
    }
}

fn access(tokens: &Value) -> String {
    tokens["access_token"].as_str().unwrap().to_string()
}

/// `url` with its query parameter `name` set to `value`.
fn with_param(url: &str, name: &str, value: &str) -> String {
    let mut u = url::Url::parse(url).unwrap();
    let pairs: Vec<(String, String)> = u
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .map(|(k, v)| {
            if k == name {
                (k, value.to_string())
            } else {
                (k, v)
            }
        })
        .collect();
    u.query_pairs_mut().clear().extend_pairs(pairs);
    u.to_string()
}

/// A mock provider with a user `sub` who has `claims`, and a gateway whose
/// provider "mock" (with `extra` settings) is that mock.
async fn mock_app(sub: &str, claims: Value, extra: Value) -> (App, OidcProvider) {
    let idp = OidcProvider::start().await;
    idp.set_user(sub, claims).await;
    let app = social_app(vec![provider("mock", &idp.issuer(), extra)]).await;
    (app, idp)
}

fn alice_claims() -> Value {
    json!({
        "email": "alice@example.org",
        "email_verified": true,
        "preferred_username": "alice",
        "name": "Alice Liddell",
    })
}

// ---------- login ----------

/// The first login through a real OpenID Connect provider creates an
/// ordinary account and links it: /start sends the browser to the
/// provider's authorization endpoint with a code flow, PKCE S256, state and
/// nonce, and sets the HttpOnly SameSite=Lax binding cookie; the callback
/// returns to the frontend with a one-time code (no token in any URL); the
/// exchange gives a token pair with `amr` ["fed"]. The account has the
/// provider's login, address (verified, as the provider says), no password
/// hash, no admin flag and no roles; user_identities has (mock, subject).
#[tokio::test]
async fn first_login_creates_and_links_a_user() {
    let (app, idp) = mock_app("alice-sub", alice_claims(), json!({})).await;
    assert_eq!(app.users(), 0);

    let started = app.start("mock", FRONTEND, None).await;
    let auth_url = url::Url::parse(&started.location).unwrap();
    assert_eq!(
        format!("{}{}", idp.issuer(), auth_url.path()),
        format!("{}/oauth2/authorize", idp.issuer())
    );
    let q = query_of(&started.location);
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["client_id"], CLIENT_ID);
    assert_eq!(
        q["redirect_uri"],
        app.url("/api/v1/auth/oauth/mock/callback")
    );
    let scopes: Vec<&str> = q["scope"].split(' ').collect();
    assert_eq!(scopes, ["openid", "email", "profile"]);
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["code_challenge"].len(), 43, "a SHA-256, base64url");
    assert!(q["state"].len() >= 22 && q["nonce"].len() >= 22, "{q:?}");
    assert_ne!(q["state"], q["nonce"]);

    let back = idp.authorize(&started.location, "alice-sub").await;
    assert!(!back.contains("access_token") && !back.contains("id_token"));
    let cb = app.callback(&back, Some(&started.cookie)).await;
    assert_eq!(cb.status, 302, "{}", cb.body);
    let to = cb.header("location").unwrap().to_string();
    assert!(!to.contains("token"), "{to}");
    let code = query_of(&to)["code"].clone();
    assert!(to.starts_with(&format!("{FRONTEND}?code=")), "{to}");

    let r = app.exchange(&code).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_schema(&r.body, "TokenPair");
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let token = access(&r.body);
    let c = claims(&token);
    assert_eq!(c["amr"], json!(["fed"]));

    let me = app.me(&token).await;
    assert_eq!(me["login"], "alice");
    assert_eq!(me["email"], "alice@example.org");
    assert_eq!(me["email_verified"], true);
    assert_eq!(c["sub"], me["id"]);
    assert!(c.get("roles").is_none_or(|r| r == &json!([])), "{c}");

    let row = &app.db.query(
        "SELECT u.id::text, u.password_hash IS NULL, u.is_admin, i.provider, i.subject, i.email
         FROM user_identities i JOIN users u ON u.id = i.user_id",
    );
    assert_eq!(row.len(), 1);
    assert_eq!(row[0].get::<_, String>(0), me["id"].as_str().unwrap());
    assert!(
        row[0].get::<_, bool>(1),
        "a federated account has no password hash"
    );
    assert!(!row[0].get::<_, bool>(2), "never an administrator");
    assert_eq!(row[0].get::<_, String>(3), "mock");
    assert_eq!(row[0].get::<_, String>(4), "alice-sub");
    assert_eq!(
        row[0].get::<_, Option<String>>(5).as_deref(),
        Some("alice@example.org")
    );
    assert_eq!(app.users(), 1);

    let ids = app.identities(&token).await;
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(ids[0]["provider"], "mock");
    assert_eq!(ids[0]["subject"], "alice-sub");
    assert_eq!(ids[0]["email"], "alice@example.org");
    assert!(ids[0]["created_at"].is_string());
}

/// A second login with the same subject finds the same account (no new
/// user, no new identity), even when the provider now reports another
/// address and username: the link is (provider, subject), never the email.
#[tokio::test]
async fn second_login_finds_the_same_user() {
    let (app, idp) = mock_app("alice-sub", alice_claims(), json!({})).await;
    let first = app.login_via(&idp, "mock", "alice-sub").await;
    let id = claims(&access(&first))["sub"].clone();

    idp.set_user(
        "alice-sub",
        json!({"email": "alice@new.example", "email_verified": true, "preferred_username": "al"}),
    )
    .await;
    let second = app.login_via(&idp, "mock", "alice-sub").await;
    assert_eq!(claims(&access(&second))["sub"], id);
    assert_eq!(app.users(), 1);
    assert_eq!(app.identity_rows(), 1);
    assert_eq!(app.me(&access(&second)).await["login"], "alice");
    let ids = app.identities(&access(&second)).await;
    assert!(ids[0]["last_login_at"].is_string(), "{ids:?}");
}

/// Login history: a federated login is recorded with outcome "success",
/// amr ["fed"] and the provider's name.
#[tokio::test]
async fn login_history_records_the_provider() {
    let (app, idp) = mock_app("alice-sub", alice_claims(), json!({})).await;
    let tokens = app.login_via(&idp, "mock", "alice-sub").await;
    let h = app
        .get("/api/v1/users/me/history", Some(&access(&tokens)))
        .await;
    assert_eq!(h.status, 200, "{}", h.body);
    assert_schema(&h.body, "HistoryPage");
    let items = h.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{}", h.body);
    assert_eq!(items[0]["outcome"], "success");
    assert_eq!(items[0]["amr"], json!(["fed"]));
    assert_eq!(items[0]["provider"], "mock");
}

/// The frontend's own `state` comes back with the code, as given.
#[tokio::test]
async fn the_frontends_state_comes_back() {
    let (app, idp) = mock_app("alice-sub", alice_claims(), json!({})).await;
    let started = app.start("mock", FRONTEND, Some("page=/films&x=1 2")).await;
    let back = idp.authorize(&started.location, "alice-sub").await;
    let q = app.back_to(&back, &started.cookie, FRONTEND).await;
    assert_eq!(q["state"], "page=/films&x=1 2");
    assert!(q.contains_key("code"));
    // The provider saw the gateway's state, not the frontend's.
    assert_ne!(started.param("state"), "page=/films&x=1 2");
}

/// New accounts get a login made from the provider's username (only
/// [A-Za-z0-9._-] kept), made unique when it is taken, else from the
/// address's local part; never an administrator, never with roles.
#[tokio::test]
async fn new_accounts_get_a_clean_unique_login() {
    let idp = OidcProvider::start().await;
    let app = social_app(vec![provider("mock", &idp.issuer(), json!({}))]).await;
    app.user("alice").await;
    idp.set_user(
        "s1",
        json!({"email": "a1@example.org", "email_verified": true, "preferred_username": "alice"}),
    )
    .await;
    idp.set_user(
        "s2",
        json!({"email": "a2@example.org", "preferred_username": "J\u{f6}hn D\u{153}!!<script>"}),
    )
    .await;
    idp.set_user("s3", json!({"email": "carol.x@example.org"}))
        .await;
    idp.set_user(
        "s4",
        json!({"email": "dave@example.org", "preferred_username": "J\u{f6}hn D\u{153}!!<script>"}),
    )
    .await;

    let one = app
        .me(&access(&app.login_via(&idp, "mock", "s1").await))
        .await;
    let login = one["login"].as_str().unwrap();
    assert!(login.starts_with("alice") && login != "alice", "{login}");
    let two = app
        .me(&access(&app.login_via(&idp, "mock", "s2").await))
        .await;
    assert_eq!(two["login"], "JhnDscript");
    let three = app
        .me(&access(&app.login_via(&idp, "mock", "s3").await))
        .await;
    assert_eq!(three["login"], "carol.x");
    let four = app
        .me(&access(&app.login_via(&idp, "mock", "s4").await))
        .await;
    let login = four["login"].as_str().unwrap();
    assert!(
        login.starts_with("JhnDscript") && login != "JhnDscript",
        "{login}"
    );
    for l in [&one, &two, &three, &four] {
        let login = l["login"].as_str().unwrap();
        assert!(
            (3..=64).contains(&login.len())
                && login
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)),
            "{login}"
        );
    }
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM users WHERE is_admin OR password_hash IS NOT NULL"),
        1,
        "only the password user has a password; nobody is an administrator"
    );
    assert_eq!(app.db.count("SELECT count(*) FROM user_roles"), 0);
}

// ---------- the flow's defences ----------

/// The state is single-use: replaying the callback (same URL, same cookie)
/// after it succeeded is 400 invalid_oauth_state, and so is a callback for
/// an expired flow, a callback at another provider's URL, and a callback
/// without state.
#[tokio::test]
async fn a_replayed_or_expired_state_is_refused() {
    let idp = OidcProvider::start().await;
    idp.set_user("alice-sub", alice_claims()).await;
    let app = social_app(vec![
        provider("mock", &idp.issuer(), json!({})),
        provider("other", &idp.issuer(), json!({})),
    ])
    .await;
    let started = app.start("mock", FRONTEND, None).await;
    let back = idp.authorize(&started.location, "alice-sub").await;
    let code = app.code_from(&back, &started.cookie).await;
    app.callback(&back, Some(&started.cookie))
        .await
        .assert_problem(400, "invalid_oauth_state");
    assert_eq!(app.exchange(&code).await.status, 200);

    // Expired: the flow's row says it ended a second ago.
    let started = app.start("mock", FRONTEND, None).await;
    let back = idp.authorize(&started.location, "alice-sub").await;
    app.db
        .query("UPDATE oauth_flows SET expires_at = now() - interval '1 second'");
    app.callback(&back, Some(&started.cookie))
        .await
        .assert_problem(400, "invalid_oauth_state");

    // A flow of "mock" answered at "other"'s callback.
    let started = app.start("mock", FRONTEND, None).await;
    let back = idp.authorize(&started.location, "alice-sub").await;
    let elsewhere = back.replace("/oauth/mock/callback", "/oauth/other/callback");
    app.callback(&elsewhere, Some(&started.cookie))
        .await
        .assert_problem(400, "invalid_oauth_state");

    // No state at all.
    let no_state = app.url("/api/v1/auth/oauth/mock/callback?code=abc");
    app.callback(&no_state, Some(&started.cookie))
        .await
        .assert_problem(400, "invalid_oauth_state");
    assert_eq!(app.users(), 1);
}

/// The callback needs the binding cookie of the browser that started the
/// flow: without it, or with another flow's, it is 400
/// invalid_oauth_state and nobody is logged in (a stolen callback URL is
/// useless in another browser), and the flow is left to its own browser,
/// which still finishes it.
#[tokio::test]
async fn a_callback_without_the_binding_cookie_is_refused() {
    let (app, idp) = mock_app("alice-sub", alice_claims(), json!({})).await;
    let victim = app.start("mock", FRONTEND, None).await;
    let back = idp.authorize(&victim.location, "alice-sub").await;
    app.callback(&back, None)
        .await
        .assert_problem(400, "invalid_oauth_state");
    let attacker = app.start("mock", FRONTEND, None).await;
    app.callback(&back, Some(&attacker.cookie))
        .await
        .assert_problem(400, "invalid_oauth_state");
    app.callback(
        &back,
        Some("authgw_oauth=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
    )
    .await
    .assert_problem(400, "invalid_oauth_state");
    assert_eq!(app.users(), 0);
    assert_eq!(app.db.count("SELECT count(*) FROM oauth_exchange_codes"), 0);
    let done = app.back_to(&back, &victim.cookie, FRONTEND).await;
    assert!(done.contains_key("code"), "{done:?}");
}

/// PKCE: the gateway sends the verifier of the flow's S256 challenge, so
/// an authorization code obtained in one flow (the attacker's) and
/// injected into another flow (the victim's state and cookie) fails at
/// the provider's token endpoint: error=token_exchange_failed, no code,
/// no account. (The fake provider checks PKCE; oidc-provider-mock does not.)
#[tokio::test]
async fn a_code_injected_into_another_flow_fails_pkce() {
    let idp = FakeIdp::start().await;
    idp.set_claims(json!({"sub": "mallory", "email": "m@example.org"}));
    let app = social_app(vec![provider("fake", &idp.issuer(), json!({}))]).await;

    // The attacker's own flow: its code, never redeemed by them.
    let attacker = app.start("fake", FRONTEND, None).await;
    let attacker_back = idp.authorize(&attacker.location).await;
    let stolen_code = query_of(&attacker_back)["code"].clone();

    // The victim's flow, answered with the attacker's code.
    let victim = app.start("fake", FRONTEND, None).await;
    let victim_back = idp.authorize(&victim.location).await;
    let injected = with_param(&victim_back, "code", &stolen_code);
    let (error, _) = app.error_from(&injected, &victim.cookie, FRONTEND).await;
    assert_eq!(error, "token_exchange_failed");
    let requests = idp.token_requests();
    let last = requests.last().unwrap();
    assert_eq!(last.status, 400);
    assert!(last.form.contains_key("code_verifier"));
    assert_eq!(app.users(), 0);
    assert_eq!(app.db.count("SELECT count(*) FROM oauth_exchange_codes"), 0);
}

/// An honest login through the fake provider (the control for every
/// flawed-token test below): the authorization request carries an S256
/// challenge; the token request carries its verifier (SHA-256 of it is
/// the challenge), the callback URL, and the client's credentials by HTTP
/// Basic (form-encoded as RFC 6749 says), read from client_secret_file.
#[tokio::test]
async fn an_honest_provider_logs_in_with_pkce_and_basic_auth() {
    let idp = FakeIdp::start().await;
    idp.set_claims(json!({"sub": "u-1", "email": "u1@example.org", "email_verified": true}));
    let app = social_app(vec![provider("fake", &idp.issuer(), json!({}))]).await;
    let q = app.fake_login(&idp, "fake").await;
    let r = app.exchange(&q["code"]).await;
    assert_eq!(r.status, 200, "{}", r.body);

    let authz = &idp.authorize_requests()[0];
    let token = &idp.token_requests()[0];
    assert_eq!(token.status, 200);
    let verifier = &token.form["code_verifier"];
    assert!((43..=128).contains(&verifier.len()), "{verifier}");
    assert_eq!(
        URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes())),
        authz["code_challenge"]
    );
    assert_eq!(token.form["redirect_uri"], authz["redirect_uri"]);
    assert_eq!(token.form["grant_type"], "authorization_code");
    assert_eq!(
        token.basic(),
        Some((CLIENT_ID.to_string(), CLIENT_SECRET.to_string()))
    );
    assert!(!token.form.contains_key("client_secret"));
}

/// `token_auth = "client_secret_post"` sends the credentials in the form
/// instead, and an ES256 provider key works as well as RS256 (the
/// algorithm comes from the key).
#[tokio::test]
async fn client_secret_post_and_an_es256_key() {
    let idp = FakeIdp::start_with(KeyAlg::Es256).await;
    idp.set_claims(json!({"sub": "u-2"}));
    let app = social_app(vec![provider(
        "fake",
        &idp.issuer(),
        json!({"token_auth": "client_secret_post"}),
    )])
    .await;
    let q = app.fake_login(&idp, "fake").await;
    assert_eq!(app.exchange(&q["code"]).await.status, 200, "{q:?}");
    let token = &idp.token_requests()[0];
    assert_eq!(token.form["client_id"], CLIENT_ID);
    assert_eq!(token.form["client_secret"], CLIENT_SECRET);
    assert!(token.authorization.is_none());
}

/// A wrong nonce: the authorization request's nonce rewritten before it
/// reaches the real provider, which puts the rewritten one in the ID
/// token; the gateway refuses it: error=invalid_id_token, no account.
#[tokio::test]
async fn a_wrong_nonce_is_refused() {
    let (app, idp) = mock_app("alice-sub", alice_claims(), json!({})).await;
    let started = app.start("mock", FRONTEND, None).await;
    let tampered = with_param(&started.location, "nonce", "an-attackers-nonce-0123456789");
    let back = idp.authorize(&tampered, "alice-sub").await;
    let (error, _) = app.error_from(&back, &started.cookie, FRONTEND).await;
    assert_eq!(error, "invalid_id_token");
    assert_eq!(app.users(), 0);
}

/// One login through the fake provider issuing ID tokens with `flaw`:
/// the frontend's error (and that nothing was created).
async fn flawed_login(flaw: Flaw) -> (String, String) {
    let idp = FakeIdp::start().await;
    idp.set_claims(json!({"sub": "victim", "email": "v@example.org", "email_verified": true}));
    idp.set_flaw(flaw);
    let app = social_app(vec![provider("fake", &idp.issuer(), json!({}))]).await;
    let q = app.fake_login(&idp, "fake").await;
    assert!(!q.contains_key("code"), "{flaw:?} accepted: {q:?}");
    assert_eq!(app.users(), 0, "{flaw:?}");
    (
        q["error"].clone(),
        q.get("error_description").cloned().unwrap_or_default(),
    )
}

/// A forged ID token (signed with a key the provider does not publish,
/// under its own kid or under the published key's kid) is
/// error=invalid_id_token.
#[tokio::test]
async fn a_forged_id_token_is_refused() {
    assert_eq!(flawed_login(Flaw::ForeignKey).await.0, "invalid_id_token");
    assert_eq!(
        flawed_login(Flaw::ForeignKeyPublishedKid).await.0,
        "invalid_id_token"
    );
}

/// An expired ID token (exp an hour ago) is error=invalid_id_token.
#[tokio::test]
async fn an_expired_id_token_is_refused() {
    let (error, description) = flawed_login(Flaw::Expired).await;
    assert_eq!(error, "invalid_id_token", "{description}");
}

/// An ID token for another client (aud) is error=invalid_id_token.
#[tokio::test]
async fn an_id_token_for_another_audience_is_refused() {
    assert_eq!(
        flawed_login(Flaw::WrongAudience).await.0,
        "invalid_id_token"
    );
}

/// An ID token from another issuer is error=invalid_id_token.
#[tokio::test]
async fn an_id_token_from_another_issuer_is_refused() {
    assert_eq!(flawed_login(Flaw::WrongIssuer).await.0, "invalid_id_token");
}

/// An ID token whose nonce is another, or missing, is
/// error=invalid_id_token (the provider-side counterpart of
/// [`a_wrong_nonce_is_refused`]).
#[tokio::test]
async fn an_id_token_without_the_flows_nonce_is_refused() {
    assert_eq!(flawed_login(Flaw::WrongNonce).await.0, "invalid_id_token");
    assert_eq!(flawed_login(Flaw::NoNonce).await.0, "invalid_id_token");
}

/// `alg: none`, and HS256 keyed with the provider's public key (algorithm
/// confusion), are error=invalid_id_token: the algorithm comes from the key.
#[tokio::test]
async fn unsigned_and_algorithm_confused_id_tokens_are_refused() {
    assert_eq!(flawed_login(Flaw::AlgNone).await.0, "invalid_id_token");
    assert_eq!(
        flawed_login(Flaw::Hs256WithPublicKey).await.0,
        "invalid_id_token"
    );
}

/// The provider's answer `error=access_denied` with the flow's state
/// (the user refused consent) returns to the frontend with
/// error=access_denied (and the frontend's state); any other error from
/// the provider is error=provider_error. Nothing is created, no token is
/// requested.
#[tokio::test]
async fn a_denied_consent_returns_access_denied() {
    let idp = FakeIdp::start().await;
    let app = social_app(vec![provider("fake", &idp.issuer(), json!({}))]).await;
    for (error, expected) in [
        ("access_denied", "access_denied"),
        ("temporarily_unavailable", "provider_error"),
    ] {
        idp.set_deny(Some(error));
        let started = app.start("fake", FRONTEND, Some("s-1")).await;
        let back = idp.authorize(&started.location).await;
        let q = app.back_to(&back, &started.cookie, FRONTEND).await;
        assert_eq!(q["error"], expected, "{q:?}");
        assert_eq!(q["state"], "s-1");
        assert!(!q.contains_key("code"));
    }
    assert!(idp.token_requests().is_empty());
    assert_eq!(app.users(), 0);
}

/// oidc-provider-mock's "Deny" answers without the state (against RFC 6749
/// 4.1.2.1): such an answer cannot be tied to a flow, so it is 400
/// invalid_oauth_state, not a redirect anywhere.
#[tokio::test]
async fn a_denial_without_state_is_invalid_oauth_state() {
    let (app, idp) = mock_app("alice-sub", alice_claims(), json!({})).await;
    let started = app.start("mock", FRONTEND, Some("s-1")).await;
    let back = idp.deny(&started.location).await;
    assert!(
        back.contains("error=access_denied") && !back.contains("state="),
        "{back}"
    );
    app.callback(&back, Some(&started.cookie))
        .await
        .assert_problem(400, "invalid_oauth_state");
}

/// /start: an unknown provider is 404 not_found; a provider whose
/// discovery fails (nothing listens at its issuer) is 503
/// provider_unavailable; a missing redirect_uri is 422 invalid_field.
#[tokio::test]
async fn unknown_and_unreachable_providers() {
    let dead = format!("http://127.0.0.1:{}", free_port());
    let app = social_app(vec![provider("dead", &dead, json!({}))]).await;
    app.start_raw("nope", &[("redirect_uri", FRONTEND)])
        .await
        .assert_problem(404, "not_found");
    app.start_raw("dead", &[("redirect_uri", FRONTEND)])
        .await
        .assert_problem(503, "provider_unavailable");
    app.start_raw("dead", &[])
        .await
        .assert_problem(422, "invalid_field");
}

/// The redirect target must be exactly on auth.allowed_redirects: every
/// near miss (prefix, suffix, another path, query or fragment added, case,
/// scheme, port, userinfo, percent-encoding, dot segments, another host
/// that contains or ends like the allowed one, scheme-relative, spaces) is
/// 400 redirect_not_allowed (a NUL: 422 invalid_field) with no flow stored
/// and no cookie set; the exact URL is accepted.
#[tokio::test]
async fn a_redirect_not_on_the_list_is_refused() {
    let (app, _idp) = mock_app("alice-sub", alice_claims(), json!({})).await;
    let allowed = PROFILE; // https://app.example.com/profile/identities
    let near_misses = [
        "https://app.example.com/profile/identitie",
        "https://app.example.com/profile/identities/",
        "https://app.example.com/profile/identitiesx",
        "https://app.example.com/profile/identities?next=https://evil.example",
        "https://app.example.com/profile/identities#x",
        "https://app.example.com/profile/identities/../identities",
        "https://app.example.com/profile/./identities",
        "https://app.example.com/profile/identities%2F",
        "https://app.example.com/profile%2Fidentities",
        "https://app.example.com/profile/%69dentities",
        "https://APP.example.com/profile/identities",
        "https://app.example.com/Profile/identities",
        "HTTPS://app.example.com/profile/identities",
        "http://app.example.com/profile/identities",
        "https://app.example.com:443/profile/identities",
        "https://app.example.com:8443/profile/identities",
        "https://user@app.example.com/profile/identities",
        "https://app.example.com@evil.example/profile/identities",
        "https://app.example.com.evil.example/profile/identities",
        "https://evil.example/https://app.example.com/profile/identities",
        "//app.example.com/profile/identities",
        "https://app.example.com/profile/identities ",
        " https://app.example.com/profile/identities",
        "https://app.example.com\\@evil.example/profile/identities",
        "",
    ];
    let mut wrong = Vec::new();
    for bad in near_misses {
        let r = app.start_raw("mock", &[("redirect_uri", bad)]).await;
        let code = r.body["code"].as_str().unwrap_or_default().to_string();
        if (r.status.as_u16(), code.as_str()) != (400, "redirect_not_allowed")
            || r.header("location").is_some()
            || r.header("set-cookie").is_some()
        {
            wrong.push(format!("{bad:?}: {} {}", r.status, r.body));
        }
    }
    assert!(
        wrong.is_empty(),
        "not refused as redirect_not_allowed:\n{}",
        wrong.join("\n")
    );
    // A NUL is refused earlier, by the parameters' own check.
    let r = app
        .start_raw("mock", &[("redirect_uri", &format!("{allowed}\0"))])
        .await;
    r.assert_problem(422, "invalid_field");
    assert!(r.header("set-cookie").is_none());
    assert_eq!(app.db.count("SELECT count(*) FROM oauth_flows"), 0);
    let ok = app.start("mock", allowed, None).await;
    assert!(ok.location.starts_with("http://127.0.0.1:"));
    // The profile's link flow checks its target the same way.
    let (_, token, _) = app.user("bob").await;
    app.link_raw(
        &token,
        "mock",
        "https://app.example.com/profile/identities/",
    )
    .await
    .assert_problem(400, "redirect_not_allowed");
}

// ---------- the exchange code ----------

/// The one-time code works once: a second exchange is 400
/// invalid_exchange_code, and so is a code that was never issued.
#[tokio::test]
async fn the_exchange_code_works_once() {
    let (app, idp) = mock_app("alice-sub", alice_claims(), json!({})).await;
    let started = app.start("mock", FRONTEND, None).await;
    let back = idp.authorize(&started.location, "alice-sub").await;
    let code = app.code_from(&back, &started.cookie).await;
    assert_eq!(app.exchange(&code).await.status, 200);
    app.exchange(&code)
        .await
        .assert_problem(400, "invalid_exchange_code");
    app.exchange("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
        .await
        .assert_problem(400, "invalid_exchange_code");
    assert_eq!(app.db.count("SELECT count(*) FROM refresh_tokens"), 1);
}

/// The code expires (60 s; the row's expiry is moved into the past rather
/// than waiting): 400 invalid_exchange_code, no session.
#[tokio::test]
async fn the_exchange_code_expires() {
    let (app, idp) = mock_app("alice-sub", alice_claims(), json!({})).await;
    let started = app.start("mock", FRONTEND, None).await;
    let back = idp.authorize(&started.location, "alice-sub").await;
    let code = app.code_from(&back, &started.cookie).await;
    let ttl: f64 = app.db.query(
        "SELECT extract(epoch FROM expires_at - created_at)::float8 FROM oauth_exchange_codes",
    )[0]
    .get(0);
    assert!((59.0..=61.0).contains(&ttl), "{ttl}");
    app.db
        .query("UPDATE oauth_exchange_codes SET expires_at = now() - interval '1 second'");
    app.exchange(&code)
        .await
        .assert_problem(400, "invalid_exchange_code");
    assert_eq!(app.db.count("SELECT count(*) FROM refresh_tokens"), 0);
}

/// Cookie mode: `{code, cookie: true}` from the app's origin with the
/// CSRF proof answers the access token in JSON and the refresh token only
/// in the HttpOnly cookie; without the proof it is refused and the code is
/// not spent.
#[tokio::test]
async fn the_exchange_in_cookie_mode() {
    let idp = OidcProvider::start().await;
    idp.set_user("alice-sub", alice_claims()).await;
    let app = social_app_with(vec![provider("mock", &idp.issuer(), json!({}))], |c| {
        c.cors.allowed_origins = vec!["https://cinema.example".into()];
    })
    .await;
    let started = app.start("mock", FRONTEND, None).await;
    let back = idp.authorize(&started.location, "alice-sub").await;
    let code = app.code_from(&back, &started.cookie).await;
    let body = json!({"code": code, "cookie": true});
    let url = app.url("/api/v1/auth/oauth/exchange");
    let r = reply(app.http.post(&url).json(&body).send().await.unwrap()).await;
    assert!(r.status.is_client_error(), "{} {}", r.status, r.body);
    assert!(r.header("set-cookie").is_none());
    let r = app
        .http
        .post(&url)
        .header("origin", "https://cinema.example")
        .header("x-requested-with", "authgw")
        .json(&body)
        .send()
        .await
        .unwrap();
    let r = reply(r).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body["access_token"].is_string());
    assert!(r.body.get("refresh_token").is_none(), "{}", r.body);
    let refresh: Vec<&str> = r
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter(|v| v.starts_with("__Secure-authgw_refresh="))
        .collect();
    assert_eq!(refresh.len(), 1, "{:?}", r.headers);
    assert!(refresh[0].contains("HttpOnly"), "{}", refresh[0]);
}

/// RFC 9207: an authorization response whose `iss` names another issuer
/// (a mix-up) is refused, error=provider_error, with no token request;
/// the provider's own issuer is accepted.
#[tokio::test]
async fn an_answer_naming_another_issuer_is_refused() {
    let (app, idp) = mock_app("alice-sub", alice_claims(), json!({})).await;
    let started = app.start("mock", FRONTEND, None).await;
    let back = idp.authorize(&started.location, "alice-sub").await;
    let mixed = format!("{back}&iss=https%3A%2F%2Fevil.example");
    let (error, _) = app.error_from(&mixed, &started.cookie, FRONTEND).await;
    assert_eq!(error, "provider_error");
    assert!(!idp.log().contains("POST /oauth2/token"), "{}", idp.log());

    let started = app.start("mock", FRONTEND, None).await;
    let back = idp.authorize(&started.location, "alice-sub").await;
    let own = with_param(&format!("{back}&iss=x"), "iss", &idp.issuer());
    let code = app.code_from(&own, &started.cookie).await;
    assert_eq!(app.exchange(&code).await.status, 200);
}

/// Single use under races: the same callback sent eight times at once
/// finishes once (one redirect with a code, the rest 400
/// invalid_oauth_state), and that code exchanged eight times at once gives
/// one session.
#[tokio::test]
async fn parallel_replays_give_one_session() {
    let (app, idp) = mock_app("alice-sub", alice_claims(), json!({})).await;
    let started = app.start("mock", FRONTEND, None).await;
    let back = idp.authorize(&started.location, "alice-sub").await;
    let callbacks =
        futures::future::join_all((0..8).map(|_| app.callback(&back, Some(&started.cookie)))).await;
    let finished: Vec<&Reply> = callbacks.iter().filter(|r| r.status == 302).collect();
    assert_eq!(finished.len(), 1, "{callbacks:?}");
    for r in callbacks.iter().filter(|r| r.status != 302) {
        r.assert_problem(400, "invalid_oauth_state");
    }
    let code = query_of(finished[0].header("location").unwrap())["code"].clone();
    let exchanges = futures::future::join_all((0..8).map(|_| app.exchange(&code))).await;
    let ok = exchanges.iter().filter(|r| r.status == 200).count();
    assert_eq!(ok, 1, "{exchanges:?}");
    for r in exchanges.iter().filter(|r| r.status != 200) {
        r.assert_problem(400, "invalid_exchange_code");
    }
    assert_eq!(app.db.count("SELECT count(*) FROM refresh_tokens"), 1);
    assert_eq!(app.users(), 1);
}

/// Runs `requests` (`n` first logins' callbacks) while another transaction
/// holds the users table against inserts, and lets go once `n` database
/// sessions of the test's database wait for a lock (or after 5 s): every
/// login has then read before any has written, so the race of first
/// logins happens every time rather than by chance.
async fn with_users_held<T>(
    app: &App,
    n: i64,
    requests: impl std::future::Future<Output = T>,
) -> T {
    let url = app.db.url.clone();
    let (locked_tx, locked_rx) = tokio::sync::oneshot::channel::<()>();
    let holder = std::thread::spawn(move || {
        let mut watcher = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        let mut tx = c.transaction().unwrap();
        tx.batch_execute("LOCK TABLE users IN SHARE ROW EXCLUSIVE MODE")
            .unwrap();
        locked_tx.send(()).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let waiting: i64 = watcher
                .query_one(
                    "SELECT count(DISTINCT l.pid) FROM pg_locks l
                     JOIN pg_stat_activity a ON a.pid = l.pid
                     WHERE NOT l.granted AND a.datname = current_database()",
                    &[],
                )
                .unwrap()
                .get(0);
            if waiting >= n || std::time::Instant::now() > deadline {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        tx.rollback().unwrap();
    });
    locked_rx.await.unwrap();
    let out = requests.await;
    tokio::task::spawn_blocking(move || holder.join().unwrap())
        .await
        .unwrap();
    out
}

/// A gateway with a pool large enough for four waiting logins and more.
async fn racing_app(idp: &OidcProvider) -> App {
    social_app_with(vec![provider("mock", &idp.issuer(), json!({}))], |c| {
        c.database.pool_size = 8;
    })
    .await
}

/// Four first logins of the same new subject at once (four tabs), their
/// reads all before any write: one account with one identity, and every
/// tab ends with a code for it.
#[tokio::test]
async fn parallel_first_logins_make_one_account() {
    let idp = OidcProvider::start().await;
    idp.set_user("alice-sub", alice_claims()).await;
    let app = racing_app(&idp).await;
    let mut flows = Vec::new();
    for _ in 0..4 {
        let started = app.start("mock", FRONTEND, None).await;
        let back = idp.authorize(&started.location, "alice-sub").await;
        flows.push((started, back));
    }
    let callbacks = futures::future::join_all(
        flows
            .iter()
            .map(|(started, back)| app.back_to(back, &started.cookie, FRONTEND)),
    );
    let answers = with_users_held(&app, 4, callbacks).await;
    assert_eq!(app.users(), 1, "{answers:?}");
    assert_eq!(app.identity_rows(), 1);
    let mut ids = Vec::new();
    for q in &answers {
        let code = q
            .get("code")
            .unwrap_or_else(|| panic!("a parallel first login failed: {answers:?}"));
        let r = app.exchange(code).await;
        assert_eq!(r.status, 200, "{}", r.body);
        ids.push(claims(&access(&r.body))["sub"].clone());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "{ids:?}");
}

/// Four different people whose provider calls them all "sam" log in for
/// the first time at once, their reads all before any write: four
/// accounts with four different logins, none refused.
#[tokio::test]
async fn parallel_first_logins_with_one_name_get_distinct_logins() {
    let idp = OidcProvider::start().await;
    let app = racing_app(&idp).await;
    let mut flows = Vec::new();
    for i in 0..4 {
        let sub = format!("sam-{i}");
        idp.set_user(
            &sub,
            json!({"email": format!("sam{i}@example.org"), "preferred_username": "sam"}),
        )
        .await;
        let started = app.start("mock", FRONTEND, None).await;
        let back = idp.authorize(&started.location, &sub).await;
        flows.push((started, back));
    }
    let callbacks = futures::future::join_all(
        flows
            .iter()
            .map(|(started, back)| app.back_to(back, &started.cookie, FRONTEND)),
    );
    let answers = with_users_held(&app, 4, callbacks).await;
    assert!(
        answers.iter().all(|q| q.contains_key("code")),
        "refused: {answers:?}"
    );
    assert_eq!(app.users(), 4);
    assert_eq!(
        app.db
            .count("SELECT count(DISTINCT login) FROM users WHERE login LIKE 'sam%'"),
        4
    );
}

// ---------- linking by email ----------

/// An existing account `carol` with carol@example.org (verified or not),
/// and a mock provider whose user "carol-sub" has that address.
async fn existing_carol(
    account_verified: bool,
    provider_verified: bool,
    link_by_verified_email: bool,
) -> (App, OidcProvider, String) {
    let (app, idp) = mock_app(
        "carol-sub",
        json!({"email": "carol@example.org", "email_verified": provider_verified, "preferred_username": "carol-at-idp"}),
        json!({ "link_by_verified_email": link_by_verified_email }),
    )
    .await;
    let r = app
        .post(
            "/api/v1/auth/signup",
            None,
            json!({"login": "carol", "password": PASSWORD, "email": "carol@example.org"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.body["id"].as_str().unwrap().to_string();
    if account_verified {
        app.db
            .query("UPDATE users SET email_verified = true WHERE login = 'carol'");
    }
    (app, idp, id)
}

/// The refusal: account_exists_link_required, nothing created or linked.
async fn assert_link_required(app: &App, idp: &OidcProvider) {
    assert_eq!(
        app.login_error(idp, "mock", "carol-sub").await,
        "account_exists_link_required"
    );
    assert_eq!(app.users(), 1);
    assert_eq!(app.identity_rows(), 0);
}

/// Auto-link needs the provider to say the address is verified.
#[tokio::test]
async fn auto_link_needs_the_provider_to_vouch_for_the_email() {
    let (app, idp, _) = existing_carol(true, false, true).await;
    assert_link_required(&app, &idp).await;
}

/// An existing account whose address is NOT verified neither gets
/// auto-linked nor blocks: anyone can sign up with another's address, so
/// the provider's user gets a new account of their own (the unverified
/// account keeps its password and gets no identity).
#[tokio::test]
async fn an_unverified_account_with_the_address_neither_links_nor_blocks() {
    let (app, idp, carol) = existing_carol(false, true, true).await;
    let tokens = app.login_via(&idp, "mock", "carol-sub").await;
    let id = claims(&access(&tokens))["sub"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(id, carol);
    assert_eq!(app.users(), 2);
    let owner: String = app
        .db
        .query("SELECT user_id::text FROM user_identities WHERE subject = 'carol-sub'")[0]
        .get(0);
    assert_eq!(owner, id);
    assert_eq!(app.login("carol", PASSWORD).await.status, 200);
}

/// Without any of the conditions on the provider's side (it does not vouch
/// for the address, or `link_by_verified_email` is off), a verified
/// account with the address blocks: account_exists_link_required.
/// Auto-link needs `link_by_verified_email = true` on the provider (the
/// default is false): account_exists_link_required.
#[tokio::test]
async fn auto_link_needs_link_by_verified_email() {
    let (app, idp, _) = existing_carol(true, true, false).await;
    assert_link_required(&app, &idp).await;
}

/// With all three, the first login links the existing account and logs
/// in to it (its password still works; the identity is listed).
#[tokio::test]
async fn auto_link_when_all_three_conditions_hold() {
    let (app, idp, id) = existing_carol(true, true, true).await;
    let tokens = app.login_via(&idp, "mock", "carol-sub").await;
    assert_eq!(claims(&access(&tokens))["sub"], id);
    assert_eq!(app.users(), 1);
    let ids = app.identities(&access(&tokens)).await;
    assert_eq!(ids.len(), 1);
    assert_eq!(ids[0]["subject"], "carol-sub");
    assert_eq!(app.login("carol", PASSWORD).await.status, 200);
}

/// An administrator is never auto-linked by address, whatever the
/// provider says: account_exists_link_required, nothing linked.
#[tokio::test]
async fn an_administrator_is_never_auto_linked() {
    let (app, idp) = mock_app(
        "root-sub",
        json!({"email": "root@example.org", "email_verified": true}),
        json!({"link_by_verified_email": true}),
    )
    .await;
    app.admin("root").await;
    app.db.query(
        "UPDATE users SET email = 'root@example.org', email_verified = true WHERE login = 'root'",
    );
    assert_eq!(
        app.login_error(&idp, "mock", "root-sub").await,
        "account_exists_link_required"
    );
    assert_eq!(app.identity_rows(), 0);
    assert_eq!(app.users(), 1);
}

// ---------- the profile: link, unlink ----------

/// A federated account's only way in is its identity: unlinking it is 409
/// last_login_method (still linked, still logs in); unlinking a provider
/// that is not linked is 404 not_found.
#[tokio::test]
async fn unlinking_the_last_way_in_is_refused() {
    let (app, idp) = mock_app("alice-sub", alice_claims(), json!({})).await;
    let tokens = app.login_via(&idp, "mock", "alice-sub").await;
    let token = access(&tokens);
    app.send(
        reqwest::Method::DELETE,
        "/api/v1/users/me/identities/mock",
        Some(&token),
        None,
    )
    .await
    .assert_problem(409, "last_login_method");
    assert_eq!(app.identity_rows(), 1);
    app.send(
        reqwest::Method::DELETE,
        "/api/v1/users/me/identities/nope",
        Some(&token),
        None,
    )
    .await
    .assert_problem(404, "not_found");
    app.login_via(&idp, "mock", "alice-sub").await;
}

/// From the profile: a federated user links a second provider (the link
/// flow ends at the frontend with linked=<provider>, no code), then
/// unlinks the first (204): the second now logs in to the same account,
/// the unlinked one no longer does (its address belongs to an account, so
/// account_exists_link_required), and the last one left cannot go.
#[tokio::test]
async fn link_a_second_provider_then_unlink_the_first() {
    let idp = OidcProvider::start().await;
    idp.set_user("alice-sub", alice_claims()).await;
    let app = social_app(vec![
        provider("first", &idp.issuer(), json!({})),
        provider("second", &idp.issuer(), json!({})),
    ])
    .await;
    let tokens = app.login_via(&idp, "first", "alice-sub").await;
    let token = access(&tokens);
    let id = claims(&token)["sub"].clone();

    let q = app.link_via(&idp, &token, "second", "alice-sub").await;
    assert_eq!(q.get("linked").map(String::as_str), Some("second"), "{q:?}");
    assert!(!q.contains_key("code"));
    let mut providers: Vec<String> = app
        .identities(&token)
        .await
        .iter()
        .map(|i| i["provider"].as_str().unwrap().to_string())
        .collect();
    providers.sort();
    assert_eq!(providers, ["first", "second"]);

    let r = app
        .send(
            reqwest::Method::DELETE,
            "/api/v1/users/me/identities/first",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    let again = app.login_via(&idp, "second", "alice-sub").await;
    assert_eq!(claims(&access(&again))["sub"], id);
    assert_eq!(
        app.login_error(&idp, "first", "alice-sub").await,
        "account_exists_link_required"
    );
    app.send(
        reqwest::Method::DELETE,
        "/api/v1/users/me/identities/second",
        Some(&token),
        None,
    )
    .await
    .assert_problem(409, "last_login_method");
    assert_eq!(app.users(), 1);
}

/// Linking needs a recent login: a session whose login is older than
/// LINK_FRESHNESS (15 min; the session's start moved back, then a refresh)
/// is 403 reauthentication_required at the link start, so a stolen access
/// token alone cannot add a way in. A fresh one links, and the link
/// redirect carries the frontend's state.
#[tokio::test]
async fn linking_needs_a_recent_login() {
    let (app, idp) = mock_app("bob-sub", json!({"email": "bob@example.org"}), json!({})).await;
    let (_, fresh, refresh) = app.user("bob").await;
    let r = app
        .browser
        .post(app.url("/api/v1/users/me/identities/mock/start"))
        .bearer_auth(&fresh)
        .json(&json!({"redirect_uri": PROFILE, "state": "tab-7"}))
        .send()
        .await
        .unwrap();
    let r = reply(r).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let started = Started {
        location: r.body["authorize_url"].as_str().unwrap().to_string(),
        cookie: binding_cookie(&r),
    };
    let back = idp.authorize(&started.location, "bob-sub").await;
    let q = app.back_to(&back, &started.cookie, PROFILE).await;
    assert_eq!(q.get("linked").map(String::as_str), Some("mock"), "{q:?}");
    assert_eq!(q.get("state").map(String::as_str), Some("tab-7"), "{q:?}");

    let minutes = gateway::federation::LINK_FRESHNESS.as_secs() / 60 + 1;
    app.db.query(&format!(
        "UPDATE refresh_tokens SET session_started_at = now() - interval '{minutes} minutes'"
    ));
    let r = app.refresh(&refresh).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let stale = access(&r.body);
    app.link_raw(&stale, "mock", PROFILE)
        .await
        .assert_problem(403, "reauthentication_required");
}

/// Linking an identity that already belongs to another account ends with
/// error=identity_already_linked; it stays with its owner.
#[tokio::test]
async fn linking_an_identity_of_another_account_is_refused() {
    let (app, idp) = mock_app("alice-sub", alice_claims(), json!({})).await;
    let alice = app.login_via(&idp, "mock", "alice-sub").await;
    let (_, bob, _) = app.user("bob").await;
    let started = app.start_link(&bob, "mock", PROFILE).await;
    let back = idp.authorize(&started.location, "alice-sub").await;
    let (error, _) = app.error_from(&back, &started.cookie, PROFILE).await;
    assert_eq!(error, "identity_already_linked");
    assert!(app.identities(&bob).await.is_empty());
    assert_eq!(app.identities(&access(&alice)).await.len(), 1);
    // The link endpoint needs a session.
    let r = app.link_raw("not-a-token", "mock", PROFILE).await;
    assert_eq!(r.status, 401, "{}", r.body);
}

/// A password-less account: password login is 401 invalid_credentials
/// (whatever is tried); the password-reset flow by mail (a real SMTP
/// server) sets a password, which then works, and the identity may then
/// be unlinked.
#[tokio::test]
async fn a_passwordless_account_sets_a_password_by_reset() {
    let mut smtp = common::smtp::SmtpServer::start(common::smtp::SmtpOptions::default()).await;
    let idp = OidcProvider::start().await;
    idp.set_user("alice-sub", alice_claims()).await;
    let smtp_url = smtp.url();
    let app = social_app_with(vec![provider("mock", &idp.issuer(), json!({}))], |c| {
        c.email.smtp_url = smtp_url;
        c.email.poll_interval = std::time::Duration::from_millis(200);
    })
    .await;
    app.login_via(&idp, "mock", "alice-sub").await;
    for guess in ["", "x", PASSWORD] {
        app.login("alice", guess)
            .await
            .assert_problem(401, "invalid_credentials");
    }
    let r = app
        .post(
            "/api/v1/auth/password-reset",
            None,
            json!({"login": "alice"}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    let mail = smtp.next().await;
    assert_eq!(mail.recipient(), "alice@example.org");
    let token = common::smtp::token_from(&mail.text, "http://localhost:3000/reset-password?token=");
    let r = app
        .post(
            "/api/v1/auth/password-reset/confirm",
            None,
            json!({"token": token, "new_password": "a brand new passphrase"}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    let l = app.login("alice", "a brand new passphrase").await;
    assert_eq!(l.status, 200, "{}", l.body);
    let token = access(&l.body);
    let r = app
        .send(
            reqwest::Method::DELETE,
            "/api/v1/users/me/identities/mock",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(app.identity_rows(), 0);
}

// ---------- the provider's keys ----------

/// The real provider rotates its key mid-test (a restart: a new process, a
/// new RSA key; its ID tokens carry no kid, and its JWKS has one key): the
/// user, logged in before, still logs in after it, to the same account.
/// The test lets the gateway's JWKS refetch bound (JWKS_REFETCH) pass
/// first, as it would in life, so only the rotation is tested.
#[tokio::test]
async fn the_providers_key_rotates_and_users_still_log_in() {
    let (app, mut idp) = mock_app("alice-sub", alice_claims(), json!({})).await;
    let first = app.login_via(&idp, "mock", "alice-sub").await;
    let before = idp.jwks().await;
    tokio::time::sleep(gateway::federation::provider::JWKS_REFETCH).await;
    idp.restart().await;
    assert_ne!(
        idp.jwks().await,
        before,
        "the restart did not change the key"
    );
    idp.set_user("alice-sub", alice_claims()).await;
    let second = app.login_via(&idp, "mock", "alice-sub").await;
    assert_eq!(
        claims(&access(&second))["sub"],
        claims(&access(&first))["sub"]
    );
}

/// A provider that rotates to a key with a new kid (and stops publishing
/// the old one): the next login fetches the JWKS again, once, and
/// succeeds; the login after it uses the cached key. (The rotation comes
/// after the refetch bound, JWKS_REFETCH, has passed since the gateway's
/// last fetch; within it, see the report of issue 17's tests.)
#[tokio::test]
async fn a_new_kid_is_fetched_again() {
    let idp = FakeIdp::start().await;
    idp.set_claims(json!({"sub": "u-1"}));
    let app = social_app(vec![provider("fake", &idp.issuer(), json!({}))]).await;
    let q = app.fake_login(&idp, "fake").await;
    assert!(q.contains_key("code"), "{q:?}");
    let fetched = idp.jwks_fetches();
    tokio::time::sleep(gateway::federation::provider::JWKS_REFETCH).await;
    idp.rotate_key(false);
    let q = app.fake_login(&idp, "fake").await;
    assert!(
        q.contains_key("code"),
        "locked out after a key rotation: {q:?}"
    );
    assert_eq!(idp.jwks_fetches(), fetched + 1);
    let q = app.fake_login(&idp, "fake").await;
    assert!(q.contains_key("code"), "{q:?}");
    assert_eq!(idp.jwks_fetches(), fetched + 1);
}

/// Discovery happens again at a reload: a provider that was down when the
/// gateway started (503 provider_unavailable) is usable after it comes up
/// and the configuration is reloaded; and a reload fetches the keys again,
/// so a provider restarted with a new key (no kid) is trusted again.
#[tokio::test]
async fn a_reload_discovers_the_provider_again() {
    let port = free_port();
    let issuer = format!("http://127.0.0.1:{port}");
    let app = social_app(vec![provider("mock", &issuer, json!({}))]).await;
    app.start_raw("mock", &[("redirect_uri", FRONTEND)])
        .await
        .assert_problem(503, "provider_unavailable");

    let mut idp = OidcProvider::start_on(port).await;
    idp.set_user("alice-sub", alice_claims()).await;
    app.reloader.apply(&app.config).unwrap();
    let first = usable_after_reload(&app, &idp).await;

    idp.restart().await;
    idp.set_user("alice-sub", alice_claims()).await;
    app.reloader.apply(&app.config).unwrap();
    let second = usable_after_reload(&app, &idp).await;
    assert_eq!(
        claims(&access(&second))["sub"],
        claims(&access(&first))["sub"]
    );
}

/// Logs in through `idp` once the gateway's background discovery (started
/// by a reload) has caught up: polls, for at most 5 s, until a login
/// succeeds; the token pair.
async fn usable_after_reload(app: &App, idp: &OidcProvider) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let r = app.start_raw("mock", &[("redirect_uri", FRONTEND)]).await;
        if r.status == 302 {
            let started = Started {
                location: r.header("location").unwrap().to_string(),
                cookie: binding_cookie(&r),
            };
            let back = idp.authorize(&started.location, "alice-sub").await;
            let q = app.back_to(&back, &started.cookie, FRONTEND).await;
            if let Some(code) = q.get("code") {
                let t = app.exchange(code).await;
                assert_eq!(t.status, 200, "{}", t.body);
                return t.body;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "still refused after the reload: {q:?}"
            );
        } else {
            assert!(
                std::time::Instant::now() < deadline,
                "still unavailable after the reload: {}",
                r.body
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Tokens naming unknown kids (forged) do not make the gateway fetch the
/// JWKS each time: ten of them cost at most one extra fetch.
#[tokio::test]
async fn unknown_kids_do_not_hammer_the_jwks() {
    let idp = FakeIdp::start().await;
    idp.set_claims(json!({"sub": "u-1"}));
    let app = social_app(vec![provider("fake", &idp.issuer(), json!({}))]).await;
    assert!(app.fake_login(&idp, "fake").await.contains_key("code"));
    let fetched = idp.jwks_fetches();
    idp.set_flaw(Flaw::ForeignKey);
    for _ in 0..10 {
        let q = app.fake_login(&idp, "fake").await;
        assert_eq!(q["error"], "invalid_id_token");
    }
    assert!(
        idp.jwks_fetches() <= fetched + 1,
        "{} fetches",
        idp.jwks_fetches()
    );
}

// ---------- kind = "oauth2" ----------

/// An `oauth2`-kind provider with explicit endpoints (the same mock
/// server's authorize, token and userinfo) and a claim mapping in the
/// style of GitHub (subject "id", a number; email "mail"; verified
/// "verified"; login "handle"): the user comes from userinfo and logs in.
#[tokio::test]
async fn an_oauth2_provider_with_explicit_endpoints_logs_in() {
    let idp = OidcProvider::start().await;
    let issuer = idp.issuer();
    // Non-standard claims: in userinfo whatever the scope.
    idp.set_user(
        "gh-user",
        json!({"id": 583231, "mail": "octo@example.org", "verified": true, "handle": "octocat"}),
    )
    .await;
    let app = social_app(vec![json!({
        "name": "hub",
        "kind": "oauth2",
        "client_id": CLIENT_ID,
        "authorize_url": format!("{issuer}/oauth2/authorize"),
        "token_url": format!("{issuer}/oauth2/token"),
        "userinfo_url": format!("{issuer}/userinfo"),
        "scopes": ["email", "profile"],
        "claims": {"subject": "id", "email": "mail", "email_verified": "verified", "login": "handle"},
    })])
    .await;
    let started = app.start("hub", FRONTEND, None).await;
    assert!(
        started
            .location
            .starts_with(&format!("{issuer}/oauth2/authorize?"))
    );
    assert_eq!(started.param("scope"), "email profile");
    let tokens = app.login_via(&idp, "hub", "gh-user").await;
    let me = app.me(&access(&tokens)).await;
    assert_eq!(me["login"], "octocat");
    assert_eq!(me["email"], "octo@example.org");
    assert_eq!(me["email_verified"], true);
    let ids = app.identities(&access(&tokens)).await;
    assert_eq!(ids[0]["provider"], "hub");
    assert_eq!(ids[0]["subject"], "583231");
    assert_eq!(claims(&access(&tokens))["amr"], json!(["fed"]));
}

/// A provider's own `amr` follows "fed", except the methods authgw
/// asserts of itself (pwd, otp, rcode): a provider cannot make a session
/// look as if it passed authgw's own second factor.
#[tokio::test]
async fn the_providers_amr_follows_fed() {
    let idp = FakeIdp::start().await;
    idp.set_claims(json!({"sub": "u-1"}));
    let app = social_app(vec![provider("fake", &idp.issuer(), json!({}))]).await;
    for (given, expected) in [
        (json!(["pwd", "mfa"]), json!(["fed", "mfa"])),
        (json!(["otp", "rcode", "pwd"]), json!(["fed"])),
        (json!(["hwk", "fed", "mfa"]), json!(["fed", "hwk", "mfa"])),
    ] {
        idp.set_id_token_claims(json!({ "amr": given }));
        let q = app.fake_login(&idp, "fake").await;
        let r = app.exchange(&q["code"]).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(claims(&access(&r.body))["amr"], expected, "{given}");
    }
}

/// RFC 9207: a provider that advertises the `iss` parameter must send it;
/// an answer without it is error=provider_error; with its own issuer the
/// login goes on.
#[tokio::test]
async fn a_provider_that_advertises_iss_must_send_it() {
    let idp = FakeIdp::start().await;
    idp.set_claims(json!({"sub": "u-1"}));
    idp.set_iss_parameter(true, false);
    let app = social_app(vec![provider("fake", &idp.issuer(), json!({}))]).await;
    let q = app.fake_login(&idp, "fake").await;
    assert_eq!(
        q.get("error").map(String::as_str),
        Some("provider_error"),
        "{q:?}"
    );
    assert!(idp.token_requests().is_empty());
    idp.set_iss_parameter(true, true);
    let q = app.fake_login(&idp, "fake").await;
    assert!(q.contains_key("code"), "{q:?}");
}

// ---------- a second factor ----------

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Waits out the last five seconds of a 30-second step.
async fn settle() {
    let into = unix_now() % 30.0;
    if into >= 25.0 {
        tokio::time::sleep(std::time::Duration::from_secs_f64(30.0 - into + 0.1)).await;
    }
}

/// A user with a password and TOTP who linked the provider: the exchange
/// answers the MFA challenge (no tokens), and the second step with a code
/// (computed by totp-rs) gives tokens with amr ["fed","otp"].
#[tokio::test]
async fn a_federated_user_with_totp_gets_the_challenge() {
    let (app, idp) = mock_app("dan-sub", json!({"email": "dan@example.org"}), json!({})).await;
    let (id, token, _) = app.user("dan").await;
    let q = app.link_via(&idp, &token, "mock", "dan-sub").await;
    assert_eq!(q["linked"], "mock");

    let r = app
        .post(
            "/api/v1/users/me/mfa/totp",
            Some(&token),
            json!({"password": PASSWORD}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let totp = totp_rs::Totp::from_url(r.body["otpauth_uri"].as_str().unwrap()).unwrap();
    settle().await;
    let step = unix_now() as u64 / 30;
    let r = app
        .post(
            "/api/v1/users/me/mfa/totp/confirm",
            Some(&token),
            json!({"code": totp.generate(step * 30).to_string()}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);

    let started = app.start("mock", FRONTEND, None).await;
    let back = idp.authorize(&started.location, "dan-sub").await;
    let code = app.code_from(&back, &started.cookie).await;
    let r = app.exchange(&code).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["mfa_required"], true, "{}", r.body);
    assert!(r.body.get("access_token").is_none());
    assert_schema(&r.body, "MfaChallenge");
    // The next step's code: the confirmation used this one.
    let r = app
        .post(
            "/api/v1/auth/login/mfa",
            None,
            json!({
                "challenge": r.body["challenge"],
                "code": totp.generate((step + 1) * 30).to_string(),
            }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let c = claims(&access(&r.body));
    assert_eq!(c["amr"], json!(["fed", "otp"]));
    assert_eq!(c["sub"], id);
}

// ---------- administrators ----------

/// Administrators list a user's identities and unlink one (204, audited
/// as user.identity_unlink with the provider and subject); the last way in
/// of a password-less account is 409 for them too; an unknown user is 404;
/// a non-administrator is 403.
#[tokio::test]
async fn administrators_list_and_unlink_identities() {
    let (app, idp) = mock_app("erin-sub", json!({"email": "erin@example.org"}), json!({})).await;
    idp.set_user(
        "fed-sub",
        json!({"email": "fed@example.org", "preferred_username": "fed"}),
    )
    .await;
    let admin = app.admin("root").await;
    let (erin, erin_token, _) = app.user("erin").await;
    assert_eq!(
        app.link_via(&idp, &erin_token, "mock", "erin-sub").await["linked"],
        "mock"
    );
    let fed = claims(&access(&app.login_via(&idp, "mock", "fed-sub").await))["sub"]
        .as_str()
        .unwrap()
        .to_string();

    let r = app
        .get(&format!("/api/v1/users/{erin}/identities"), Some(&admin))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_schema(&r.body, "IdentityList");
    let items = r.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["provider"], "mock");
    assert_eq!(items[0]["subject"], "erin-sub");
    app.get(
        &format!("/api/v1/users/{erin}/identities"),
        Some(&erin_token),
    )
    .await
    .assert_problem(403, "forbidden");
    app.get(
        "/api/v1/users/00000000-0000-0000-0000-000000000000/identities",
        Some(&admin),
    )
    .await
    .assert_problem(404, "not_found");

    let r = app
        .send(
            reqwest::Method::DELETE,
            &format!("/api/v1/users/{erin}/identities/mock"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    assert!(app.identities(&erin_token).await.is_empty());
    let audit = app.db.query(
        "SELECT actor, target, details::text FROM audit_log WHERE action = 'user.identity_unlink'",
    );
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].get::<_, String>(0), "root");
    assert_eq!(audit[0].get::<_, String>(1), erin);
    let details: Value = serde_json::from_str(&audit[0].get::<_, String>(2)).unwrap();
    assert_eq!(details["provider"], "mock");
    assert_eq!(details["subject"], "erin-sub");

    app.send(
        reqwest::Method::DELETE,
        &format!("/api/v1/users/{fed}/identities/mock"),
        Some(&admin),
        None,
    )
    .await
    .assert_problem(409, "last_login_method");
    app.send(
        reqwest::Method::DELETE,
        &format!("/api/v1/users/{erin}/identities/mock"),
        Some(&admin),
        None,
    )
    .await
    .assert_problem(404, "not_found");
}

/// The CLI: `authgw users identities --login L` prints provider, subject
/// and email tab-separated; `authgw users unlink --login L --provider P`
/// unlinks (audited, actor cli:<user>), and refuses the last way in.
#[tokio::test]
async fn the_cli_lists_and_unlinks_identities() {
    let (app, idp) = mock_app("erin-sub", json!({"email": "erin@example.org"}), json!({})).await;
    idp.set_user(
        "fed-sub",
        json!({"email": "fed@example.org", "preferred_username": "fed"}),
    )
    .await;
    let (_, erin_token, _) = app.user("erin").await;
    app.link_via(&idp, &erin_token, "mock", "erin-sub").await;
    app.login_via(&idp, "mock", "fed-sub").await;

    let url = app.db.url.clone();
    let out = blocking(|| authgw(&url, &["users", "identities", "--login", "erin"], None));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "mock\terin-sub\terin@example.org\n");

    let out = blocking(|| {
        authgw(
            &url,
            &["users", "unlink", "--login", "fed", "--provider", "mock"],
            None,
        )
    });
    assert!(!out.status.success(), "the last way in went");
    assert!(
        stderr(&out).contains("only way to log in"),
        "{}",
        stderr(&out)
    );

    let out = blocking(|| {
        authgw(
            &url,
            &["users", "unlink", "--login", "erin", "--provider", "mock"],
            None,
        )
    });
    assert!(out.status.success(), "{}", stderr(&out));
    let out = blocking(|| authgw(&url, &["users", "identities", "--login", "erin"], None));
    assert_eq!(stdout(&out), "");
    let actor: String = app
        .db
        .query("SELECT actor FROM audit_log WHERE action = 'user.identity_unlink'")[0]
        .get(0);
    assert_eq!(actor, "cli:tester");
}

/// Linking a provider tells the account's address, through a real SMTP
/// server, which provider is now a way in: a thief with a fresh session
/// cannot add one unseen.
#[tokio::test]
async fn a_linked_provider_is_mailed_to_the_account() {
    let mut smtp = common::smtp::SmtpServer::start(common::smtp::SmtpOptions::default()).await;
    let idp = OidcProvider::start().await;
    idp.set_user("other-sub", json!({"email": "other@example.org"}))
        .await;
    let smtp_url = smtp.url();
    let app = social_app_with(vec![provider("mock", &idp.issuer(), json!({}))], |c| {
        c.email.smtp_url = smtp_url;
        c.email.poll_interval = std::time::Duration::from_millis(200);
    })
    .await;
    let signed = app
        .post(
            "/api/v1/auth/signup",
            None,
            json!({"login": "carl", "password": PASSWORD, "email": "carl@example.org"}),
        )
        .await;
    assert_eq!(signed.status, 201, "{}", signed.body);
    assert_eq!(smtp.next().await.recipient(), "carl@example.org");
    let (token, _) = app.tokens("carl").await;
    let q = app.link_via(&idp, &token, "mock", "other-sub").await;
    assert_eq!(q.get("linked").map(String::as_str), Some("mock"), "{q:?}");
    let notice = smtp.next().await;
    assert_eq!(notice.recipient(), "carl@example.org");
    assert_eq!(
        notice.subject,
        "A new way to sign in to your authgw account"
    );
    assert!(
        notice.text.contains("carl") && notice.text.contains("mock") && !notice.text.contains('{'),
        "{}",
        notice.text
    );
}
