//! One identity provider: its endpoints (discovered for OpenID Connect,
//! configured for OAuth 2.0), its signing keys (the JWKS, cached and
//! fetched again when a token names an unknown key, at most every
//! [`JWKS_REFETCH`]), and the three calls of the authorization-code flow:
//! the authorization URL, the code exchange, and the user's claims (a
//! verified ID token, or the userinfo answer).

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use super::FlowError;
use super::http::Http;
use crate::config::{IdentityProviderConfig, ProviderKind, TokenAuth, is_safe_endpoint};

/// The least time between two fetches of a provider's JWKS for unknown keys.
pub const JWKS_REFETCH: Duration = Duration::from_secs(2);
/// The least time between two discovery attempts after one failed.
const DISCOVERY_RETRY: Duration = Duration::from_secs(5);

/// Where the provider is reached.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// The issuer ID tokens must name (OIDC).
    pub issuer: Option<String>,
    pub authorize: String,
    pub token: String,
    pub userinfo: Option<String>,
    pub jwks_uri: Option<String>,
    /// RFC 9207: the provider names itself (`iss`) in every answer.
    pub iss_parameter: bool,
}

/// What the token endpoint answered.
#[derive(Debug, Clone)]
pub struct Granted {
    pub access_token: String,
    pub id_token: Option<String>,
}

/// The user as the provider describes them.
#[derive(Debug, Clone, Default)]
pub struct Subject {
    pub subject: String,
    pub email: Option<String>,
    pub email_verified: bool,
    /// A name to make a new account's login from.
    pub login_hint: Option<String>,
    /// The provider's `amr` (RFC 8176), when its ID token has one.
    pub amr: Option<Vec<String>>,
}

pub struct Provider {
    pub config: IdentityProviderConfig,
    secret: String,
    endpoints: ArcSwapOption<Endpoints>,
    jwks: ArcSwapOption<JwkSet>,
    jwks_fetched: std::sync::Mutex<Option<Instant>>,
    discovery_failed: std::sync::Mutex<Option<Instant>>,
    /// One discovery at a time.
    discovering: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("name", &self.config.name)
            .finish_non_exhaustive()
    }
}

/// A mutex's value even after a panic while it was held (an instant).
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn unavailable(why: String) -> FlowError {
    FlowError::Unavailable(why)
}

fn bad_token(why: impl Into<String>) -> FlowError {
    FlowError::InvalidIdToken(why.into())
}

/// The algorithm a key signs with: its `alg`, else the one its type and
/// curve allow. Symmetric keys (`oct`) never verify an ID token: with them
/// anyone who knows the client secret could forge one.
fn algorithm_of(jwk: &Jwk) -> Option<Algorithm> {
    if matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)) {
        return None;
    }
    if let Some(ka) = jwk.common.key_algorithm {
        let alg = Algorithm::try_from(ka).ok()?;
        return (!matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512))
            .then_some(alg);
    }
    match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Some(Algorithm::RS256),
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => Some(Algorithm::ES256),
            EllipticCurve::P384 => Some(Algorithm::ES384),
            _ => None,
        },
        AlgorithmParameters::OctetKeyPair(p) => {
            (p.curve == EllipticCurve::Ed25519).then_some(Algorithm::EdDSA)
        }
        _ => None,
    }
}

impl Provider {
    pub fn new(config: IdentityProviderConfig, secret: String) -> Self {
        let provider = Self {
            config,
            secret,
            endpoints: ArcSwapOption::empty(),
            jwks: ArcSwapOption::empty(),
            jwks_fetched: std::sync::Mutex::new(None),
            discovery_failed: std::sync::Mutex::new(None),
            discovering: tokio::sync::Mutex::new(()),
        };
        if provider.config.kind == ProviderKind::Oauth2 {
            provider.endpoints.store(Some(Arc::new(Endpoints {
                issuer: None,
                authorize: provider.config.authorize_url.clone().unwrap_or_default(),
                token: provider.config.token_url.clone().unwrap_or_default(),
                userinfo: provider.config.userinfo_url.clone(),
                jwks_uri: None,
                iss_parameter: false,
            })));
        }
        provider
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The endpoints, discovering them first if needed (OIDC). A failed
    /// discovery is tried again at most every few seconds.
    pub async fn endpoints(&self, http: &Http) -> Result<Arc<Endpoints>, FlowError> {
        if let Some(e) = self.endpoints.load_full() {
            return Ok(e);
        }
        let failed_at = *lock(&self.discovery_failed);
        if let Some(at) = failed_at
            && at.elapsed() < DISCOVERY_RETRY
        {
            return Err(unavailable("discovery failed moments ago".into()));
        }
        self.discover(http).await
    }

    /// Reads `{issuer}/.well-known/openid-configuration` (again) and the
    /// JWKS. Nothing changes when it fails: the endpoints known stay.
    pub async fn discover(&self, http: &Http) -> Result<Arc<Endpoints>, FlowError> {
        let _one = self.discovering.lock().await;
        let result = self.fetch_discovery(http).await;
        match &result {
            Ok(endpoints) => {
                *lock(&self.discovery_failed) = None;
                self.endpoints.store(Some(endpoints.clone()));
                if let Err(e) = self.fetch_jwks(http, endpoints).await {
                    tracing::warn!(provider = %self.config.name, error = %e, "JWKS fetch failed");
                }
                tracing::info!(provider = %self.config.name, "identity provider discovered");
            }
            Err(e) => {
                *lock(&self.discovery_failed) = Some(Instant::now());
                tracing::warn!(provider = %self.config.name, error = %e, "identity provider discovery failed");
            }
        }
        result
    }

    async fn fetch_discovery(&self, http: &Http) -> Result<Arc<Endpoints>, FlowError> {
        if self.config.kind == ProviderKind::Oauth2 {
            return self
                .endpoints
                .load_full()
                .ok_or_else(|| unavailable("no endpoints".into()));
        }
        let issuer = self.config.issuer.clone().unwrap_or_default();
        let url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let doc = http.json(http.client().get(&url), unavailable).await?;
        // OpenID Connect Discovery 4.3: the issuer must be the one asked.
        if doc["issuer"].as_str() != Some(issuer.as_str()) {
            return Err(unavailable(format!(
                "the discovery document names issuer {:?}, not {issuer:?}",
                doc["issuer"]
            )));
        }
        let endpoint =
            |field: &str, configured: &Option<String>| -> Result<Option<String>, FlowError> {
                let url = configured
                    .clone()
                    .or_else(|| doc[field].as_str().map(str::to_string));
                match url {
                    Some(u) if !is_safe_endpoint(&u) => Err(unavailable(format!(
                        "{field} {u:?} is not https (or loopback http)"
                    ))),
                    other => Ok(other),
                }
            };
        let authorize = endpoint("authorization_endpoint", &self.config.authorize_url)?
            .ok_or_else(|| unavailable("no authorization_endpoint".into()))?;
        let token = endpoint("token_endpoint", &self.config.token_url)?
            .ok_or_else(|| unavailable("no token_endpoint".into()))?;
        let jwks_uri =
            endpoint("jwks_uri", &None)?.ok_or_else(|| unavailable("no jwks_uri".into()))?;
        Ok(Arc::new(Endpoints {
            issuer: Some(issuer),
            authorize,
            token,
            userinfo: endpoint("userinfo_endpoint", &self.config.userinfo_url)?,
            jwks_uri: Some(jwks_uri),
            iss_parameter: doc["authorization_response_iss_parameter_supported"] == true,
        }))
    }

    async fn fetch_jwks(&self, http: &Http, endpoints: &Endpoints) -> Result<(), FlowError> {
        let Some(uri) = &endpoints.jwks_uri else {
            return Ok(());
        };
        *lock(&self.jwks_fetched) = Some(Instant::now());
        let value = http.json(http.client().get(uri), bad_token).await?;
        let set: JwkSet = serde_json::from_value(value)
            .map_err(|e| bad_token(format!("the provider's JWKS does not parse: {e}")))?;
        self.jwks.store(Some(Arc::new(set)));
        Ok(())
    }

    /// The key `kid` names: from the cached JWKS, else (a rotated key) from
    /// the JWKS fetched again, at most every [`JWKS_REFETCH`].
    async fn key(
        &self,
        http: &Http,
        endpoints: &Endpoints,
        kid: Option<&str>,
    ) -> Result<(DecodingKey, Algorithm), FlowError> {
        let find = |set: &JwkSet| -> Option<Jwk> {
            match kid {
                Some(kid) => set.find(kid).cloned(),
                // No kid: only a JWKS of one key says which key it is.
                None if set.keys.len() == 1 => set.keys.first().cloned(),
                None => None,
            }
        };
        let mut jwk = self.jwks.load_full().and_then(|set| find(&set));
        if jwk.is_none() && self.refetch_due() {
            self.fetch_jwks(http, endpoints).await?;
            jwk = self.jwks.load_full().and_then(|set| find(&set));
        }
        let jwk =
            jwk.ok_or_else(|| bad_token("signed with a key the provider does not publish"))?;
        let alg = algorithm_of(&jwk)
            .ok_or_else(|| bad_token("the provider's key has no usable algorithm"))?;
        let key = DecodingKey::from_jwk(&jwk)
            .map_err(|e| bad_token(format!("the provider's key: {e}")))?;
        Ok((key, alg))
    }

    /// The URL the browser is sent to.
    pub fn authorize_url(
        &self,
        endpoints: &Endpoints,
        callback: &str,
        state: &str,
        nonce: &str,
        challenge: &str,
    ) -> String {
        let mut url = match url::Url::parse(&endpoints.authorize) {
            Ok(u) => u,
            Err(_) => return endpoints.authorize.clone(),
        };
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("response_type", "code")
                .append_pair("client_id", &self.config.client_id)
                .append_pair("redirect_uri", callback)
                .append_pair("scope", &self.config.scopes.join(" "))
                .append_pair("state", state)
                .append_pair("code_challenge", challenge)
                .append_pair("code_challenge_method", "S256");
            if self.config.kind == ProviderKind::Oidc {
                q.append_pair("nonce", nonce);
            }
        }
        url.into()
    }

    /// Exchanges the authorization code (with the PKCE verifier).
    pub async fn exchange(
        &self,
        http: &Http,
        endpoints: &Endpoints,
        code: &str,
        callback: &str,
        verifier: &str,
    ) -> Result<Granted, FlowError> {
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", callback),
            ("code_verifier", verifier),
        ];
        let mut req = http.client().post(&endpoints.token);
        match self.config.token_auth {
            TokenAuth::ClientSecretBasic => {
                // RFC 6749 2.3.1: both form-urlencoded before Basic.
                let enc =
                    |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
                req = req.basic_auth(enc(&self.config.client_id), Some(enc(&self.secret)));
            }
            TokenAuth::ClientSecretPost => {
                form.push(("client_id", &self.config.client_id));
                form.push(("client_secret", &self.secret));
            }
        }
        let answer = http.json(req.form(&form), FlowError::TokenExchange).await?;
        let access_token = answer["access_token"]
            .as_str()
            .ok_or_else(|| FlowError::TokenExchange("no access_token in the answer".into()))?
            .to_string();
        Ok(Granted {
            access_token,
            id_token: answer["id_token"].as_str().map(str::to_string),
        })
    }

    /// Verifies an ID token: the signature against the provider's key named
    /// by `kid`, with that key's algorithm (never the token's say-so, never
    /// `none` or a shared secret), then `iss`, `aud` (and `azp`), `exp`,
    /// `iat`, and the flow's `nonce`.
    pub async fn verify_id_token(
        &self,
        http: &Http,
        endpoints: &Endpoints,
        token: &str,
        nonce: &str,
        leeway: u64,
    ) -> Result<Value, FlowError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| bad_token("malformed"))?;
        let kid = header.kid.as_deref();
        let (key, alg) = self.key(http, endpoints, kid).await?;
        let claims = match self.decode(token, &header, &key, alg, endpoints, leeway) {
            // A key the cache still has under the token's kid (or the one
            // key of a kid-less JWKS) that does not verify it: the provider
            // may have rotated to a new key under the same kid, or without
            // kids. Fetch the JWKS again (within its bound) and retry once.
            Err(jsonwebtoken::errors::ErrorKind::InvalidSignature) if self.refetch_due() => {
                self.fetch_jwks(http, endpoints).await?;
                let (key, alg) = self.key(http, endpoints, kid).await?;
                self.decode(token, &header, &key, alg, endpoints, leeway)
            }
            other => other,
        }
        .map_err(|kind| {
            use jsonwebtoken::errors::ErrorKind as K;
            bad_token(match kind {
                K::ExpiredSignature => "expired",
                K::InvalidIssuer => "wrong issuer",
                K::InvalidAudience => "not for this client (aud)",
                K::InvalidSignature => "bad signature",
                K::InvalidAlgorithm => "algorithm not allowed for the key",
                K::MissingRequiredClaim(_) => "a required claim is missing",
                _ => "invalid",
            })
        })?;
        // OIDC Core 3.1.3.7: with several audiences, azp must be us.
        if claims["aud"].as_array().is_some_and(|a| a.len() > 1)
            && claims["azp"].as_str() != Some(self.config.client_id.as_str())
        {
            return Err(bad_token("several audiences and azp is not this client"));
        }
        let presented = claims["nonce"].as_str().unwrap_or_default();
        let same = aws_lc_rs::constant_time::verify_slices_are_equal(
            presented.as_bytes(),
            nonce.as_bytes(),
        )
        .is_ok();
        if !same {
            return Err(bad_token("the nonce is not this flow's"));
        }
        Ok(claims)
    }

    /// Whether the JWKS may be fetched again now ([`JWKS_REFETCH`]).
    fn refetch_due(&self) -> bool {
        lock(&self.jwks_fetched).is_none_or(|at| at.elapsed() >= JWKS_REFETCH)
    }

    /// Checks `token` against `key`: the header's algorithm must be the
    /// key's, then the signature and the registered claims.
    fn decode(
        &self,
        token: &str,
        header: &jsonwebtoken::Header,
        key: &DecodingKey,
        alg: Algorithm,
        endpoints: &Endpoints,
        leeway: u64,
    ) -> Result<Value, jsonwebtoken::errors::ErrorKind> {
        if header.alg != alg {
            return Err(jsonwebtoken::errors::ErrorKind::InvalidAlgorithm);
        }
        let mut validation = Validation::new(alg);
        validation.set_audience(&[&self.config.client_id]);
        if let Some(issuer) = &endpoints.issuer {
            validation.set_issuer(&[issuer]);
        }
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        validation.leeway = leeway;
        jsonwebtoken::decode::<Value>(token, key, &validation)
            .map(|data| data.claims)
            .map_err(|e| e.into_kind())
    }

    /// The userinfo answer for `access_token`.
    pub async fn userinfo(
        &self,
        http: &Http,
        endpoints: &Endpoints,
        access_token: &str,
    ) -> Result<Value, FlowError> {
        let url = endpoints.userinfo.as_deref().ok_or_else(|| {
            FlowError::TokenExchange("the provider has no userinfo endpoint".into())
        })?;
        http.json(
            http.client().get(url).bearer_auth(access_token),
            FlowError::TokenExchange,
        )
        .await
    }

    /// The user from `claims` (an ID token's, or a userinfo answer) through
    /// the claim mapping. A subject may be a string or a number (GitHub's
    /// ids are numbers).
    pub fn subject(&self, claims: &Value) -> Result<Subject, FlowError> {
        let m = &self.config.claims;
        let text = |field: &str| -> Option<String> {
            match &claims[field] {
                Value::String(s) if !s.is_empty() => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            }
        };
        let subject = text(&m.subject)
            .filter(|s| s.len() <= 255)
            .ok_or_else(|| bad_token(format!("no usable subject ({})", m.subject)))?;
        let email = text(&m.email).filter(|e| e.len() <= 254 && crate::mail::is_deliverable(e));
        let email_verified = match &claims[&m.email_verified] {
            Value::Bool(b) => *b,
            Value::String(s) => s == "true",
            _ => false,
        };
        let amr = claims["amr"].as_array().map(|a| {
            a.iter()
                .filter_map(|v| v.as_str())
                .filter(|s| {
                    (1..=16).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric())
                })
                .take(8)
                .map(str::to_string)
                .collect::<Vec<_>>()
        });
        Ok(Subject {
            subject,
            email_verified: email_verified && email.is_some(),
            email,
            login_hint: text(&m.login),
            amr: amr.filter(|a| !a.is_empty()),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn jwk(v: Value) -> Jwk {
        serde_json::from_value(v).unwrap()
    }

    /// A symmetric key, or a key that says HS256, never verifies an ID
    /// token; other keys give the algorithm of their type and curve.
    #[test]
    fn algorithms_come_from_the_key() {
        assert_eq!(
            algorithm_of(&jwk(json!({"kty": "oct", "k": "c2VjcmV0"}))),
            None
        );
        assert_eq!(
            algorithm_of(&jwk(
                json!({"kty": "RSA", "alg": "HS256", "n": "AQAB", "e": "AQAB"})
            )),
            None
        );
        assert_eq!(
            algorithm_of(&jwk(json!({"kty": "RSA", "n": "AQAB", "e": "AQAB"}))),
            Some(Algorithm::RS256)
        );
        assert_eq!(
            algorithm_of(&jwk(
                json!({"kty": "RSA", "alg": "PS256", "n": "AQAB", "e": "AQAB"})
            )),
            Some(Algorithm::PS256)
        );
        assert_eq!(
            algorithm_of(&jwk(
                json!({"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"})
            )),
            Some(Algorithm::ES256)
        );
        assert_eq!(
            algorithm_of(&jwk(json!({"kty": "OKP", "crv": "Ed25519", "x": "AA"}))),
            Some(Algorithm::EdDSA)
        );
    }

    fn provider(claims: ClaimMappingJson) -> Provider {
        let mut config: IdentityProviderConfig = serde_json::from_value(json!({
            "name": "p", "kind": "oauth2", "client_id": "c", "client_secret_env": "X",
            "authorize_url": "https://p.example/a", "token_url": "https://p.example/t",
            "userinfo_url": "https://p.example/u"
        }))
        .unwrap();
        if let Some(c) = claims {
            config.claims = serde_json::from_value(c).unwrap();
        }
        Provider::new(config, "s".into())
    }

    type ClaimMappingJson = Option<Value>;

    /// Numeric subjects (GitHub) become text; an address is verified only
    /// when the provider says so and it is deliverable; the provider's amr
    /// keeps only short alphanumeric values.
    #[test]
    fn subjects_through_the_mapping() {
        let p = provider(Some(json!({"subject": "id", "login": "login"})));
        let s = p
            .subject(&json!({"id": 42, "login": "octo", "email": "o@example.com"}))
            .unwrap();
        assert_eq!((s.subject.as_str(), s.email_verified), ("42", false));
        assert_eq!(s.login_hint.as_deref(), Some("octo"));
        let p = provider(None);
        let s = p
            .subject(
                &json!({"sub": "a", "email": "a@example.com", "email_verified": "true",
                             "amr": ["pwd", "mfa", "<script>", "x".repeat(40)]}),
            )
            .unwrap();
        assert!(s.email_verified);
        assert_eq!(s.amr, Some(vec!["pwd".to_string(), "mfa".to_string()]));
        let s = p
            .subject(&json!({"sub": "a", "email": "not an address", "email_verified": true}))
            .unwrap();
        assert_eq!((s.email, s.email_verified), (None, false));
        assert!(p.subject(&json!({"sub": ""})).is_err());
        assert!(p.subject(&json!({"sub": "x".repeat(300)})).is_err());
        assert!(p.subject(&json!({})).is_err());
    }
}
