//! A hostile stand-in OpenID Connect provider, for what a genuine provider
//! never does: ID tokens signed with a key it does not publish, expired,
//! for another audience or issuer, with another nonce, `alg: none`, or HS256
//! keyed with its own public key. Real crypto (aws-lc-rs: RS256 or ES256),
//! real HTTP (axum on 127.0.0.1:0). It also checks PKCE (S256) at its token
//! endpoint, which oidc-provider-mock does not, and records what the
//! gateway sent it.
//!
//! Endpoints: `/.well-known/openid-configuration`, `/jwks` (counted),
//! `/authorize` (answers at once: 302 back to `redirect_uri` with a code and
//! the state, remembering the nonce and the PKCE challenge), `/token` (the
//! code once, PKCE checked; an ID token with the chosen [`Flaw`]) and
//! `/userinfo`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair as _, RsaKeyPair};
use axum::Router;
use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};
use sha2::Digest as _;
use tokio::sync::oneshot;

/// What is wrong with the ID tokens the provider issues.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flaw {
    /// Nothing: a valid token.
    None,
    /// Signed with a key of the same kind that is not in the JWKS (with its
    /// own `kid`).
    ForeignKey,
    /// Signed with a key not in the JWKS, under the `kid` of the published
    /// one.
    ForeignKeyPublishedKid,
    /// `exp` an hour ago (and `iat` before it).
    Expired,
    /// `aud` another client.
    WrongAudience,
    /// `iss` another issuer.
    WrongIssuer,
    /// `nonce` not the one of the authorization request.
    WrongNonce,
    /// No `nonce` at all.
    NoNonce,
    /// `alg: none`, no signature.
    AlgNone,
    /// HS256 with the published key's public PEM as the HMAC secret (the
    /// classic algorithm confusion).
    Hs256WithPublicKey,
}

/// The kind of signing key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyAlg {
    Rs256,
    Es256,
}

/// A signing key and its public JWK.
struct SigningKey {
    kid: String,
    alg: KeyAlg,
    rsa: Option<RsaKeyPair>,
    ec: Option<EcdsaKeyPair>,
    /// The public key as a JWK (with kid, alg, use).
    jwk: Value,
    /// The public key as SubjectPublicKeyInfo PEM.
    public_pem: String,
}

impl SigningKey {
    fn generate(alg: KeyAlg) -> Self {
        let kid = format!("fake-{}", uuid::Uuid::new_v4().simple());
        match alg {
            KeyAlg::Rs256 => {
                let pair = RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
                let public = pair.public_key();
                let n = public.modulus().big_endian_without_leading_zero().to_vec();
                let e = public.exponent().big_endian_without_leading_zero().to_vec();
                let spki = {
                    use aws_lc_rs::encoding::AsDer as _;
                    public.as_der().unwrap().as_ref().to_vec()
                };
                let jwk = json!({
                    "kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig",
                    "n": URL_SAFE_NO_PAD.encode(n), "e": URL_SAFE_NO_PAD.encode(e),
                });
                Self {
                    kid,
                    alg,
                    rsa: Some(pair),
                    ec: None,
                    jwk,
                    public_pem: pem("PUBLIC KEY", &spki),
                }
            }
            KeyAlg::Es256 => {
                let pair =
                    EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
                // Uncompressed point: 0x04 || X || Y.
                let point = pair.public_key().as_ref().to_vec();
                assert_eq!(point.len(), 65);
                let mut spki = hex_bytes("3059301306072a8648ce3d020106082a8648ce3d030107034200");
                spki.extend_from_slice(&point);
                let jwk = json!({
                    "kty": "EC", "kid": kid, "alg": "ES256", "use": "sig", "crv": "P-256",
                    "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
                    "y": URL_SAFE_NO_PAD.encode(&point[33..]),
                });
                Self {
                    kid,
                    alg,
                    rsa: None,
                    ec: Some(pair),
                    jwk,
                    public_pem: pem("PUBLIC KEY", &spki),
                }
            }
        }
    }

    fn alg_name(&self) -> &'static str {
        match self.alg {
            KeyAlg::Rs256 => "RS256",
            KeyAlg::Es256 => "ES256",
        }
    }

    fn sign(&self, input: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        if let Some(rsa) = &self.rsa {
            let mut sig = vec![0u8; rsa.public_modulus_len()];
            rsa.sign(&signature::RSA_PKCS1_SHA256, &rng, input, &mut sig)
                .unwrap();
            sig
        } else {
            let ec = self.ec.as_ref().unwrap();
            ec.sign(&rng, input).unwrap().as_ref().to_vec()
        }
    }
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A signed compact JWS of `header` and `payload` (`signer` None: no
/// signature, for `alg: none`).
fn jws(header: &Value, payload: &Value, signer: impl FnOnce(&[u8]) -> Vec<u8>) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(payload.to_string())
    );
    let sig = signer(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

/// An authorization request the provider answered, until its code is used.
#[derive(Clone, Debug)]
struct Grant {
    client_id: String,
    redirect_uri: String,
    nonce: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
    claims: Value,
}

/// A request the gateway made to `/token`.
#[derive(Clone, Debug)]
pub struct TokenRequest {
    /// The form fields.
    pub form: HashMap<String, String>,
    /// The Authorization header, if any.
    pub authorization: Option<String>,
    /// What the provider answered (status).
    pub status: u16,
}

impl TokenRequest {
    /// The client credentials sent with HTTP Basic, decoded.
    pub fn basic(&self) -> Option<(String, String)> {
        let b64 = self.authorization.as_deref()?.strip_prefix("Basic ")?;
        let raw = String::from_utf8(STANDARD.decode(b64).ok()?).ok()?;
        let (id, secret) = raw.split_once(':')?;
        Some((form_decode(id), form_decode(secret)))
    }
}

/// RFC 6749 2.3.1: the Basic credentials are form-urlencoded first.
fn form_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

struct Inner {
    issuer: String,
    key: SigningKey,
    /// Keys the provider used before and still publishes.
    old_keys: Vec<SigningKey>,
    foreign: SigningKey,
    flaw: Flaw,
    claims: Value,
    codes: HashMap<String, Grant>,
    access_tokens: HashMap<String, Value>,
    authorize_requests: Vec<HashMap<String, String>>,
    token_requests: Vec<TokenRequest>,
    jwks_fetches: usize,
    extra_id_claims: Value,
    /// Answer authorization requests with this `error` (and the state).
    deny: Option<String>,
    /// RFC 9207: advertise `authorization_response_iss_parameter_supported`.
    advertise_iss: bool,
    /// RFC 9207: put `iss` in the authorization response.
    send_iss: bool,
}

type Shared = Arc<Mutex<Inner>>;

/// The fake provider, serving.
pub struct FakeIdp {
    pub addr: SocketAddr,
    inner: Shared,
    http: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
}

impl FakeIdp {
    /// Starts a provider with an RS256 key, issuing valid tokens for the
    /// user `{"sub": "fake-user"}` until told otherwise.
    pub async fn start() -> Self {
        Self::start_with(KeyAlg::Rs256).await
    }

    /// Starts a provider whose keys are of kind `alg`.
    pub async fn start_with(alg: KeyAlg) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let inner = Arc::new(Mutex::new(Inner {
            issuer: format!("http://{addr}"),
            key: SigningKey::generate(alg),
            old_keys: Vec::new(),
            foreign: SigningKey::generate(alg),
            flaw: Flaw::None,
            claims: json!({"sub": "fake-user"}),
            codes: HashMap::new(),
            access_tokens: HashMap::new(),
            authorize_requests: Vec::new(),
            token_requests: Vec::new(),
            jwks_fetches: 0,
            extra_id_claims: json!({}),
            deny: None,
            advertise_iss: false,
            send_iss: false,
        }));
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/authorize", get(authorize))
            .route("/token", post(token))
            .route("/userinfo", get(userinfo))
            .with_state(inner.clone());
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await;
        });
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Self {
            addr,
            inner,
            http,
            shutdown: Some(tx),
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn issuer(&self) -> String {
        self.lock().issuer.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap()
    }

    /// The flaw of the ID tokens issued from now on.
    pub fn set_flaw(&self, flaw: Flaw) {
        self.lock().flaw = flaw;
    }

    /// The user who logs in at `/authorize` from now on (`sub` and the
    /// other claims, in ID tokens and userinfo).
    pub fn set_claims(&self, claims: Value) {
        assert!(claims["sub"].is_string(), "claims need a sub: {claims}");
        self.lock().claims = claims;
    }

    /// Extra claims (e.g. `amr`) for the ID tokens only.
    pub fn set_id_token_claims(&self, extra: Value) {
        self.lock().extra_id_claims = extra;
    }

    /// Authorization requests are answered with `error` (e.g.
    /// `access_denied`) and the state, as RFC 6749 4.1.2.1 says; None: the
    /// user is logged in.
    pub fn set_deny(&self, error: Option<&str>) {
        self.lock().deny = error.map(str::to_string);
    }

    /// RFC 9207: whether discovery advertises the `iss` parameter
    /// (`advertise`), and whether the authorization response carries it
    /// (`send`).
    pub fn set_iss_parameter(&self, advertise: bool, send: bool) {
        let mut inner = self.lock();
        inner.advertise_iss = advertise;
        inner.send_iss = send;
    }

    /// A new signing key with a new `kid`; the JWKS publishes only the new
    /// one (`keep_old`: both).
    pub fn rotate_key(&self, keep_old: bool) {
        let mut inner = self.lock();
        let alg = inner.key.alg;
        let old = std::mem::replace(&mut inner.key, SigningKey::generate(alg));
        if keep_old {
            inner.old_keys.push(old);
        } else {
            inner.old_keys.clear();
        }
    }

    /// The `kid` of the current signing key.
    pub fn kid(&self) -> String {
        self.lock().key.kid.clone()
    }

    /// How many times `/jwks` was fetched.
    pub fn jwks_fetches(&self) -> usize {
        self.lock().jwks_fetches
    }

    /// Every request to `/token` so far.
    pub fn token_requests(&self) -> Vec<TokenRequest> {
        self.lock().token_requests.clone()
    }

    /// Every request to `/authorize` so far (its query).
    pub fn authorize_requests(&self) -> Vec<HashMap<String, String>> {
        self.lock().authorize_requests.clone()
    }

    /// Follows `location` (the gateway's redirect to `/authorize`): the
    /// provider logs the current user in at once and answers with the
    /// redirect back; returns it.
    pub async fn authorize(&self, location: &str) -> String {
        assert!(
            location.starts_with(&self.issuer()),
            "{location} is not at the fake provider {}",
            self.issuer()
        );
        let r = self.http.get(location).send().await.unwrap();
        let status = r.status();
        let to = r
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = r.text().await.unwrap_or_default();
        match to {
            Some(to) if status == 302 => to,
            _ => panic!("fake /authorize answered {status}: {body}"),
        }
    }
}

impl Drop for FakeIdp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

async fn discovery(State(s): State<Shared>) -> Response {
    let (issuer, advertise_iss) = {
        let inner = s.lock().unwrap();
        (inner.issuer.clone(), inner.advertise_iss)
    };
    axum::Json(json!({
        "authorization_response_iss_parameter_supported": advertise_iss,
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
        "userinfo_endpoint": format!("{issuer}/userinfo"),
        "jwks_uri": format!("{issuer}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256", "ES256"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
    }))
    .into_response()
}

async fn jwks(State(s): State<Shared>) -> Response {
    let mut inner = s.lock().unwrap();
    inner.jwks_fetches += 1;
    let mut keys = vec![inner.key.jwk.clone()];
    keys.extend(inner.old_keys.iter().map(|k| k.jwk.clone()));
    axum::Json(json!({ "keys": keys })).into_response()
}

async fn authorize(State(s): State<Shared>, Query(q): Query<HashMap<String, String>>) -> Response {
    let mut inner = s.lock().unwrap();
    inner.authorize_requests.push(q.clone());
    let Some(redirect_uri) = q.get("redirect_uri") else {
        return (StatusCode::BAD_REQUEST, "no redirect_uri").into_response();
    };
    let Ok(mut back) = url::Url::parse(redirect_uri) else {
        return (StatusCode::BAD_REQUEST, "bad redirect_uri").into_response();
    };
    if let Some(error) = inner.deny.clone() {
        back.query_pairs_mut().append_pair("error", &error);
    } else if q.get("response_type").map(String::as_str) != Some("code") {
        back.query_pairs_mut()
            .append_pair("error", "unsupported_response_type");
    } else {
        let code = uuid::Uuid::new_v4().simple().to_string();
        let claims = inner.claims.clone();
        inner.codes.insert(
            code.clone(),
            Grant {
                client_id: q.get("client_id").cloned().unwrap_or_default(),
                redirect_uri: redirect_uri.clone(),
                nonce: q.get("nonce").cloned(),
                code_challenge: q.get("code_challenge").cloned(),
                code_challenge_method: q.get("code_challenge_method").cloned(),
                claims,
            },
        );
        back.query_pairs_mut().append_pair("code", &code);
    }
    if let Some(state) = q.get("state") {
        back.query_pairs_mut().append_pair("state", state);
    }
    if inner.send_iss {
        let issuer = inner.issuer.clone();
        back.query_pairs_mut().append_pair("iss", &issuer);
    }
    (StatusCode::FOUND, [(header::LOCATION, back.to_string())]).into_response()
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

async fn token(
    State(s): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let mut inner = s.lock().unwrap();
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let (status, response) = issue(&mut inner, &form);
    inner.token_requests.push(TokenRequest {
        form,
        authorization,
        status: status.as_u16(),
    });
    response
}

fn issue(inner: &mut Inner, form: &HashMap<String, String>) -> (StatusCode, Response) {
    let bad = |e: &str, d: &str| {
        (
            StatusCode::BAD_REQUEST,
            oauth_error(StatusCode::BAD_REQUEST, e, d),
        )
    };
    if form.get("grant_type").map(String::as_str) != Some("authorization_code") {
        return bad("unsupported_grant_type", "authorization_code only");
    }
    let Some(grant) = form.get("code").and_then(|c| inner.codes.remove(c)) else {
        return bad("invalid_grant", "unknown or used code");
    };
    if form.get("redirect_uri") != Some(&grant.redirect_uri) {
        return bad("invalid_grant", "redirect_uri differs");
    }
    if let Some(challenge) = &grant.code_challenge {
        if grant.code_challenge_method.as_deref() != Some("S256") {
            return bad("invalid_request", "S256 only");
        }
        let Some(verifier) = form.get("code_verifier") else {
            return bad("invalid_grant", "code_verifier missing");
        };
        let computed = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()));
        if &computed != challenge {
            return bad("invalid_grant", "PKCE verification failed");
        }
    }
    let now = now();
    let mut claims = grant.claims.clone();
    let obj = claims.as_object_mut().unwrap();
    obj.insert("iss".into(), json!(inner.issuer));
    obj.insert("aud".into(), json!(grant.client_id));
    obj.insert("iat".into(), json!(now));
    obj.insert("exp".into(), json!(now + 300));
    if let Some(nonce) = &grant.nonce {
        obj.insert("nonce".into(), json!(nonce));
    }
    if let Some(extra) = inner.extra_id_claims.as_object() {
        for (k, v) in extra {
            obj.insert(k.clone(), v.clone());
        }
    }
    match inner.flaw {
        Flaw::Expired => {
            obj.insert("iat".into(), json!(now - 7200));
            obj.insert("exp".into(), json!(now - 3600));
        }
        Flaw::WrongAudience => {
            obj.insert("aud".into(), json!("some-other-client"));
        }
        Flaw::WrongIssuer => {
            obj.insert("iss".into(), json!("https://evil.example"));
        }
        Flaw::WrongNonce => {
            obj.insert("nonce".into(), json!("not-the-nonce-you-sent"));
        }
        Flaw::NoNonce => {
            obj.remove("nonce");
        }
        _ => {}
    }
    let key = &inner.key;
    let id_token = match inner.flaw {
        Flaw::ForeignKey => {
            let f = &inner.foreign;
            let h = json!({"alg": f.alg_name(), "typ": "JWT", "kid": f.kid});
            jws(&h, &claims, |i| f.sign(i))
        }
        Flaw::ForeignKeyPublishedKid => {
            let f = &inner.foreign;
            let h = json!({"alg": f.alg_name(), "typ": "JWT", "kid": key.kid});
            jws(&h, &claims, |i| f.sign(i))
        }
        Flaw::AlgNone => {
            let h = json!({"alg": "none", "typ": "JWT", "kid": key.kid});
            jws(&h, &claims, |_| Vec::new())
        }
        Flaw::Hs256WithPublicKey => {
            let h = json!({"alg": "HS256", "typ": "JWT", "kid": key.kid});
            let secret = key.public_pem.clone();
            jws(&h, &claims, move |i| {
                let k = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes());
                aws_lc_rs::hmac::sign(&k, i).as_ref().to_vec()
            })
        }
        _ => {
            let h = json!({"alg": key.alg_name(), "typ": "JWT", "kid": key.kid});
            jws(&h, &claims, |i| key.sign(i))
        }
    };
    let access_token = uuid::Uuid::new_v4().simple().to_string();
    inner
        .access_tokens
        .insert(access_token.clone(), grant.claims.clone());
    (
        StatusCode::OK,
        axum::Json(json!({
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": 300,
            "id_token": id_token,
        }))
        .into_response(),
    )
}

async fn userinfo(State(s): State<Shared>, headers: HeaderMap) -> Response {
    let inner = s.lock().unwrap();
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match token.and_then(|t| inner.access_tokens.get(t)) {
        Some(claims) => axum::Json(claims.clone()).into_response(),
        None => oauth_error(StatusCode::UNAUTHORIZED, "invalid_token", "unknown token"),
    }
}
