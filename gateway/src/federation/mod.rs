//! Social login (docs/social-login.md): sign-in with any OpenID Connect or
//! OAuth 2.0 provider of `[[identity_providers]]`, through the
//! authorization-code flow with PKCE (S256), `state` and `nonce`.
//!
//! - `start` checks the frontend's `redirect_uri` against
//!   `auth.allowed_redirects` (exact match), stores the flow (the hashes of
//!   its state and of a browser-binding cookie; the PKCE verifier and the
//!   nonce are derived from the state under a server secret, so they are
//!   stored nowhere) and sends the browser to the provider.
//! - `callback` takes the flow once (the state is single-use, and only the
//!   browser holding the binding cookie can finish it), exchanges the code,
//!   verifies the ID token (or reads userinfo), finds or creates the
//!   account by (provider, subject), never by email alone, and sends the
//!   browser back to the frontend with a one-time code: tokens never travel
//!   in a URL.
//! - `Auth::oauth_exchange` turns that code into the usual session (or the
//!   MFA challenge of an account with a second factor).
//!
//! No HTTP framework here (`api::federation`), no SQL (`store::identities`).

pub mod http;
pub mod provider;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::auth::{Auth, LoginOutcome};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::recovery::{new_token, presented_hash};
use crate::secrets::Purpose;
use crate::store::history::{self, Outcome};
use crate::store::identities::{self, Flow};
use crate::store::sessions::{self, ClientInfo, Start};
use crate::store::{mfa, users};
use provider::{Provider, Subject};

/// How long a flow may take between start and callback.
pub const FLOW_TTL: Duration = Duration::from_secs(600);
/// How long the frontend has to exchange the callback's code.
pub const CODE_TTL: Duration = Duration::from_secs(60);
/// The cookie that binds a flow to the browser that started it.
pub const BINDING_COOKIE: &str = "authgw_oauth";
/// Its path: the callbacks.
pub const BINDING_PATH: &str = "/api/v1/auth/oauth";
/// `amr` of a login through an identity provider (RFC 8176 `fed`).
pub const AMR_FEDERATED: &str = "fed";
/// How recent a session's login must be to link another sign-in method: a
/// stolen access token alone cannot add its thief as a way in.
pub const LINK_FRESHNESS: Duration = Duration::from_secs(15 * 60);
/// The longest `state` a frontend may have echoed back.
const MAX_CLIENT_STATE: usize = 512;

/// Why a flow failed after its state was found: the frontend gets
/// `?error=<code>&error_description=...`.
#[derive(Debug, Clone)]
pub enum FlowError {
    /// Discovery failed: `provider_unavailable`.
    Unavailable(String),
    /// The provider refused the code (or its answer was unusable):
    /// `token_exchange_failed`.
    TokenExchange(String),
    /// The ID token did not verify: `invalid_id_token`.
    InvalidIdToken(String),
    /// Anything else, with its code.
    Refused {
        code: &'static str,
        description: String,
    },
}

impl std::fmt::Display for FlowError {
    /// The code and the whole reason, for the log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FlowError::Unavailable(why)
            | FlowError::TokenExchange(why)
            | FlowError::InvalidIdToken(why) => write!(f, "{}: {why}", self.code()),
            FlowError::Refused { code, description } => write!(f, "{code}: {description}"),
        }
    }
}

impl FlowError {
    pub fn code(&self) -> &'static str {
        match self {
            FlowError::Unavailable(_) => "provider_unavailable",
            FlowError::TokenExchange(_) => "token_exchange_failed",
            FlowError::InvalidIdToken(_) => "invalid_id_token",
            FlowError::Refused { code, .. } => code,
        }
    }

    /// What the frontend is told (the reason in full goes to the log).
    pub fn description(&self) -> String {
        match self {
            FlowError::Unavailable(_) => "the identity provider cannot be reached".into(),
            FlowError::TokenExchange(_) => "the identity provider refused the sign-in".into(),
            FlowError::InvalidIdToken(why) => {
                format!("the identity provider's ID token is invalid: {why}")
            }
            FlowError::Refused { description, .. } => description.clone(),
        }
    }

    fn from_error(e: Error) -> Self {
        match e {
            Error::Conflict { code, detail } => FlowError::Refused {
                code,
                description: detail,
            },
            other => {
                tracing::error!(error = %other, "social login failed");
                FlowError::Refused {
                    code: "server_error",
                    description: "the sign-in could not be completed; try again".into(),
                }
            }
        }
    }
}

/// What `start` answers: where to send the browser, and the binding
/// cookie's value to set.
#[derive(Debug, Clone)]
pub struct Started {
    pub location: String,
    pub binding: String,
}

/// The callback's query.
#[derive(Debug, Clone, Default)]
pub struct CallbackParams {
    pub code: Option<String>,
    pub state: Option<String>,
    pub error: Option<String>,
    /// RFC 9207: the issuer of the authorization response.
    pub iss: Option<String>,
}

/// Every configured provider, and the client that talks to them.
pub struct Federation {
    providers: HashMap<String, Arc<Provider>>,
    http: http::Http,
    allowed_redirects: Vec<String>,
    public_url: Option<String>,
    leeway: u64,
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn sha256(s: &str) -> Vec<u8> {
    Sha256::digest(s.as_bytes()).to_vec()
}

/// A login for a new account from the provider's name for the user: the
/// characters a login may have, 3-48 of them.
fn login_base(subject: &Subject) -> String {
    let hint = subject
        .login_hint
        .clone()
        .or_else(|| {
            subject
                .email
                .as_deref()
                .and_then(|e| e.split('@').next())
                .map(str::to_string)
        })
        .unwrap_or_default();
    let cleaned: String = hint
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .take(48)
        .collect();
    if cleaned.len() >= 3 {
        cleaned
    } else {
        "user".into()
    }
}

/// `base` with the query parameters `pairs` added.
fn with_query(base: &str, pairs: &[(&str, &str)]) -> String {
    match url::Url::parse(base) {
        Ok(mut url) => {
            {
                let mut q = url.query_pairs_mut();
                for (k, v) in pairs {
                    q.append_pair(k, v);
                }
            }
            url.into()
        }
        Err(_) => base.to_string(),
    }
}

/// Refuses (403 `reauthentication_required`) a session whose login is older
/// than [`LINK_FRESHNESS`] (or unknown: a token from before `auth_time`).
pub fn require_recent_login(claims: &crate::tokens::Claims) -> Result<()> {
    let age = chrono::Utc::now()
        .timestamp()
        .saturating_sub(claims.auth_time);
    if claims.auth_time > 0 && age <= LINK_FRESHNESS.as_secs() as i64 {
        Ok(())
    } else {
        Err(Error::ReauthenticationRequired(format!(
            "linking a sign-in method needs a login within the last {} minutes: log in again",
            LINK_FRESHNESS.as_secs() / 60
        )))
    }
}

impl Federation {
    /// The providers of `config` (their secrets read now; discovery later).
    pub fn new(config: &Config) -> Result<Self> {
        let base_dir = config.base_dir();
        let mut providers = HashMap::new();
        for p in &config.identity_providers {
            let secret = p.client_secret(&base_dir).map_err(|(key, why)| {
                Error::Internal(format!("identity provider {}: {key}: {why}", p.name))
            })?;
            providers.insert(p.name.clone(), Arc::new(Provider::new(p.clone(), secret)));
        }
        Ok(Self {
            providers,
            http: http::Http::new().map_err(Error::Internal)?,
            allowed_redirects: config.auth.allowed_redirects.clone(),
            public_url: config
                .auth
                .public_url
                .as_deref()
                .map(|u| u.trim_end_matches('/').to_string()),
            leeway: config.tokens.clock_skew.as_secs(),
        })
    }

    /// Discovers every OpenID Connect provider in the background (at start,
    /// and again at each reload). Outside a runtime nothing happens: the
    /// first flow discovers.
    pub fn spawn_discovery(&self) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        for p in self.providers.values() {
            if p.config.kind == crate::config::ProviderKind::Oidc {
                let (p, http) = (p.clone(), self.http.clone());
                handle.spawn(async move {
                    let _ = p.discover(&http).await;
                });
            }
        }
    }

    fn provider(&self, name: &str) -> Result<&Arc<Provider>> {
        self.providers.get(name).ok_or_else(|| Error::NotFound {
            what: "identity provider",
            name: name.to_string(),
        })
    }

    /// Where `name`'s provider sends the browser back: under
    /// `auth.public_url`, else under `request_base` (the request's own
    /// scheme and host).
    pub fn callback_url(&self, name: &str, request_base: &str) -> String {
        let base = self.public_url.as_deref().unwrap_or(request_base);
        format!("{base}/api/v1/auth/oauth/{name}/callback")
    }

    /// Starts a flow at provider `name` that returns to `redirect_uri`: a
    /// login, or with `link_user` a link to that account.
    pub async fn start(
        &self,
        auth: &Auth,
        name: &str,
        redirect_uri: &str,
        client_state: Option<String>,
        link_user: Option<Uuid>,
        request_base: &str,
    ) -> Result<Started> {
        let provider = self.provider(name)?.clone();
        if !self.allowed_redirects.iter().any(|r| r == redirect_uri) {
            return Err(Error::BadRequest {
                code: "redirect_not_allowed",
                field: Some("redirect_uri".into()),
                detail: "redirect_uri is not one of auth.allowed_redirects".into(),
            });
        }
        if client_state
            .as_ref()
            .is_some_and(|s| s.len() > MAX_CLIENT_STATE)
        {
            return Err(Error::invalid(
                "state",
                format!("must be at most {MAX_CLIENT_STATE} bytes"),
            ));
        }
        let endpoints = provider
            .endpoints(&self.http)
            .await
            .map_err(|e| Error::ProviderUnavailable(format!("{name}: {e}")))?;
        let (state, state_hash) = new_token()?;
        let (binding, binding_hash) = new_token()?;
        let ring = auth.tokens.keyring();
        let secret = ring.secrets().current();
        let verifier = b64(&secret.derive(Purpose::OauthVerifier, state.as_bytes()));
        let nonce = b64(&secret.derive(Purpose::OauthNonce, state.as_bytes()));
        let challenge = b64(&sha256(&verifier));
        let flow = Flow {
            binding_hash,
            provider: name.to_string(),
            redirect_uri: redirect_uri.to_string(),
            client_state,
            link_user_id: link_user,
            key_id: secret.kid().to_string(),
        };
        auth.db
            .run(move |c| identities::start_flow(c, &state_hash, &flow, FLOW_TTL))
            .await?;
        let callback = self.callback_url(name, request_base);
        Ok(Started {
            location: provider.authorize_url(&endpoints, &callback, &state, &nonce, &challenge),
            binding,
        })
    }

    /// The provider's answer. A callback without a live flow of this
    /// browser is an error (400 `invalid_oauth_state`); after that, every
    /// outcome is a redirect to the flow's frontend URL.
    pub async fn callback(
        &self,
        auth: &Auth,
        name: &str,
        params: CallbackParams,
        binding: Option<&str>,
        info: ClientInfo,
        request_base: &str,
    ) -> Result<String> {
        let provider = self.provider(name)?.clone();
        let state = params.state.clone().ok_or(Error::InvalidOauthState)?;
        let state_hash = presented_hash(&state).ok_or(Error::InvalidOauthState)?;
        let binding_hash = binding
            .and_then(presented_hash)
            .ok_or(Error::InvalidOauthState)?;
        let provider_name = name.to_string();
        let flow = auth
            .db
            .run(move |c| identities::take_flow(c, &state_hash, &provider_name, &binding_hash))
            .await?
            .ok_or(Error::InvalidOauthState)?;
        let outcome = self
            .finish(auth, &provider, &flow, &state, params, info, request_base)
            .await;
        Ok(match outcome {
            Ok(Finished::Code(code)) => {
                let mut pairs = vec![("code", code.as_str())];
                if let Some(s) = flow.client_state.as_deref() {
                    pairs.push(("state", s));
                }
                with_query(&flow.redirect_uri, &pairs)
            }
            Ok(Finished::Linked) => {
                let mut pairs = vec![("linked", name)];
                if let Some(s) = flow.client_state.as_deref() {
                    pairs.push(("state", s));
                }
                with_query(&flow.redirect_uri, &pairs)
            }
            Err(e) => {
                tracing::warn!(provider = name, error = %e, "social login refused");
                let mut pairs = vec![("error", e.code())];
                let description = e.description();
                pairs.push(("error_description", &description));
                if let Some(s) = flow.client_state.as_deref() {
                    pairs.push(("state", s));
                }
                with_query(&flow.redirect_uri, &pairs)
            }
        })
    }

    #[allow(clippy::too_many_arguments)]
    async fn finish(
        &self,
        auth: &Auth,
        provider: &Provider,
        flow: &Flow,
        state: &str,
        params: CallbackParams,
        info: ClientInfo,
        request_base: &str,
    ) -> std::result::Result<Finished, FlowError> {
        if let Some(error) = params.error {
            let code = if error == "access_denied" {
                "access_denied"
            } else {
                "provider_error"
            };
            return Err(FlowError::Refused {
                code,
                description: format!("the identity provider answered {error:?}"),
            });
        }
        let endpoints = provider.endpoints(&self.http).await?;
        // RFC 9207: an answer naming another issuer is a mix-up; a provider
        // that says it names itself must do so.
        let mixed_up = match (&params.iss, &endpoints.issuer) {
            (Some(iss), Some(expected)) => iss != expected,
            (None, Some(_)) => endpoints.iss_parameter,
            _ => false,
        };
        if mixed_up {
            return Err(FlowError::Refused {
                code: "provider_error",
                description: "the answer came from another issuer".into(),
            });
        }
        let code = params
            .code
            .ok_or_else(|| FlowError::TokenExchange("no code".into()))?;
        let ring = auth.tokens.keyring();
        let secret = ring
            .secrets()
            .find(&flow.key_id)
            .ok_or_else(|| FlowError::Refused {
                code: "server_error",
                description: "the server secret of this flow is gone; start again".into(),
            })?;
        let verifier = b64(&secret.derive(Purpose::OauthVerifier, state.as_bytes()));
        let nonce = b64(&secret.derive(Purpose::OauthNonce, state.as_bytes()));
        let callback = self.callback_url(provider.name(), request_base);
        let granted = provider
            .exchange(&self.http, &endpoints, &code, &callback, &verifier)
            .await?;
        let subject = match provider.config.kind {
            crate::config::ProviderKind::Oidc => {
                let id_token = granted
                    .id_token
                    .as_deref()
                    .ok_or_else(|| FlowError::InvalidIdToken("the provider sent none".into()))?;
                let claims = provider
                    .verify_id_token(&self.http, &endpoints, id_token, &nonce, self.leeway)
                    .await?;
                provider.subject(&claims)?
            }
            crate::config::ProviderKind::Oauth2 => {
                let claims = provider
                    .userinfo(&self.http, &endpoints, &granted.access_token)
                    .await?;
                provider.subject(&claims)?
            }
        };
        let (name, link_by_email) = (
            provider.name().to_string(),
            provider.config.link_by_verified_email,
        );
        let link_user = flow.link_user_id;
        let mail = auth.mail.clone();
        let (code, code_hash) = new_token().map_err(FlowError::from_error)?;
        let amr = federated_amr(subject.amr.as_deref());
        let resolved = auth
            .db
            .run(move |c| {
                let mut tx = c.transaction()?;
                let outcome = match link_user {
                    Some(user_id) => {
                        // The subject's lock first, then the user's, as
                        // everywhere (no deadlock with a first login).
                        identities::lock_subject(&mut tx, &name, &subject.subject)?;
                        sessions::lock_user(&mut tx, user_id)?;
                        identities::link(
                            &mut tx,
                            user_id,
                            &name,
                            &subject.subject,
                            subject.email.as_deref(),
                        )?;
                        if let Some(user) = users::get(&mut tx, user_id)? {
                            crate::recovery::queue_notice(
                                &mail,
                                &mut tx,
                                &user,
                                crate::mail::Kind::IdentityLinked,
                                &[("provider", &name)],
                            )?;
                        }
                        Finished::Linked
                    }
                    None => {
                        let user_id = resolve(&mut tx, &name, &subject, link_by_email)?;
                        identities::touch(
                            &mut tx,
                            &name,
                            &subject.subject,
                            subject.email.as_deref(),
                        )?;
                        identities::issue_code(
                            &mut tx, &code_hash, user_id, &name, &amr, &info, CODE_TTL,
                        )?;
                        Finished::Code(code)
                    }
                };
                tx.commit()?;
                Ok(outcome)
            })
            .await
            .map_err(FlowError::from_error)?;
        if matches!(resolved, Finished::Linked) {
            auth.mail.wake();
        }
        Ok(resolved)
    }
}

enum Finished {
    Code(String),
    Linked,
}

/// `amr` of a federated login: `fed`, then what the provider says of its
/// own authentication (`mfa`, `hwk`...), except the methods authgw asserts
/// of itself (`pwd`, `otp`, `rcode`): a provider cannot make a session look
/// like it passed authgw's own second factor (`auth.require_mfa_for_admins`,
/// role-rules' `mfa`).
fn federated_amr(provider: Option<&[String]>) -> Vec<String> {
    let mut amr = vec![AMR_FEDERATED.to_string()];
    for m in provider.unwrap_or_default() {
        let own = matches!(m.as_str(), "pwd" | "otp" | "rcode" | "fed");
        if !own && !amr.contains(m) {
            amr.push(m.clone());
        }
    }
    amr
}

/// The account `(provider, subject)` signs in to: the linked one; else the
/// account whose verified address is the provider's, when the provider
/// vouches for it, `link_by_email` is on and the account is no
/// administrator, else 409 `account_exists_link_required` for it; else a
/// new ordinary account without a password (an unverified account with the
/// same address does not block it).
fn resolve(
    tx: &mut impl postgres::GenericClient,
    provider: &str,
    subject: &Subject,
    link_by_email: bool,
) -> Result<Uuid> {
    identities::lock_subject(tx, provider, &subject.subject)?;
    if let Some(user_id) = identities::owner(tx, provider, &subject.subject)? {
        return Ok(user_id);
    }
    // Only an account whose owner proved the address counts: someone who
    // signed up with another's address (unverified) blocks nothing.
    if let Some(email) = subject.email.as_deref()
        && let Some((user_id, is_admin)) = identities::verified_account_with_email(tx, email)?
    {
        // An administrator is never linked by address: its way in stays
        // what the operator set up.
        if link_by_email && subject.email_verified && !is_admin {
            sessions::lock_user(tx, user_id)?;
            identities::link(tx, user_id, provider, &subject.subject, Some(email))?;
            return Ok(user_id);
        }
        return Err(Error::Conflict {
            code: "account_exists_link_required",
            detail: "an account with this email address exists: log in to it and link this provider from your profile".into(),
        });
    }
    let base = login_base(subject);
    identities::lock_new_login(tx, &base)?;
    let mut login = base.clone();
    for _ in 0..8 {
        if users::find_credentials(tx, &login)?.is_none() {
            break;
        }
        let mut suffix = [0u8; 3];
        aws_lc_rs::rand::fill(&mut suffix).map_err(|_| Error::Internal("no randomness".into()))?;
        login = format!(
            "{base}-{}",
            suffix
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
    }
    let user = users::create(
        tx,
        users::NewUser {
            login: &login,
            email: subject.email.as_deref(),
            email_verified: subject.email_verified,
            locale: None,
            password_hash: None,
            is_admin: false,
        },
    )?;
    identities::link(
        tx,
        user.id,
        provider,
        &subject.subject,
        subject.email.as_deref(),
    )?;
    Ok(user.id)
}

impl Auth {
    /// Redeems a social login's one-time code: the session (amr `fed`, or
    /// the provider's), or for an account with a second factor its
    /// challenge, exactly as a password login answers.
    pub async fn oauth_exchange(&self, code: &str, info: ClientInfo) -> Result<LoginOutcome> {
        let hash = presented_hash(code).ok_or(Error::InvalidExchangeCode)?;
        let lifetime = self.session_lifetime();
        let (refresh_token, refresh_hash) = crate::tokens::new_refresh_token();
        let session_id = Uuid::new_v4();
        let (challenge, challenge_hash) = new_token()?;
        let challenge_ttl = self.config.mfa.challenge_ttl;
        let require_verified = self.config.auth.require_verified_email;
        enum Redeemed {
            Session(Box<users::User>, sessions::Origin),
            SecondFactor { recovery_codes: bool },
        }
        let redeemed = self
            .db
            .run(move |c| {
                let mut tx = c.transaction()?;
                let code =
                    identities::redeem_code(&mut tx, &hash)?.ok_or(Error::InvalidExchangeCode)?;
                sessions::lock_user(&mut tx, code.user_id)?;
                let user = users::get(&mut tx, code.user_id)?.ok_or(Error::InvalidExchangeCode)?;
                if require_verified && !user.is_admin && !user.email_verified {
                    history::record(
                        &mut tx,
                        Some(user.id),
                        &user.login,
                        &info,
                        Outcome::EmailNotVerified,
                    )?;
                    tx.commit()?;
                    return Err(Error::EmailNotVerified);
                }
                if user.mfa_enabled {
                    let recovery_codes = crate::mfa::open_challenge(
                        &mut tx,
                        &challenge_hash,
                        user.id,
                        &user.login,
                        &info,
                        challenge_ttl,
                        mfa::FirstStep {
                            amr: &code.amr,
                            provider: Some(&code.provider),
                        },
                    )?;
                    tx.commit()?;
                    return Ok(Redeemed::SecondFactor { recovery_codes });
                }
                let origin = sessions::issue(
                    &mut tx,
                    user.id,
                    session_id,
                    &refresh_hash,
                    lifetime,
                    Start::New { amr: &code.amr },
                    &info,
                )?;
                history::record_success(
                    &mut tx,
                    user.id,
                    &user.login,
                    &info,
                    &code.amr,
                    Some(&code.provider),
                )?;
                tx.commit()?;
                Ok(Redeemed::Session(Box::new(user), origin))
            })
            .await?;
        match redeemed {
            Redeemed::Session(user, origin) => self
                .pair(&user, session_id, refresh_token, &origin)
                .map(LoginOutcome::Tokens),
            Redeemed::SecondFactor { recovery_codes } => Ok(LoginOutcome::SecondFactor(
                crate::mfa::Challenge::new(challenge, recovery_codes, challenge_ttl),
            )),
        }
    }

    /// The caller's linked identities.
    pub async fn identities(&self, user_id: Uuid) -> Result<Vec<identities::Identity>> {
        self.db.run(move |c| identities::list(c, user_id)).await
    }

    /// Unlinks the caller's identity at `provider`, unless it is the
    /// account's last way in.
    pub async fn unlink_identity(&self, user_id: Uuid, provider: String) -> Result<()> {
        self.db
            .run(move |c| {
                let mut tx = c.transaction()?;
                sessions::lock_user(&mut tx, user_id)?;
                identities::unlink(&mut tx, user_id, &provider)?;
                tx.commit()?;
                Ok(())
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new account's login keeps only the characters a login may have,
    /// falls back to the address's local part, then to "user".
    #[test]
    fn logins_from_provider_names() {
        let s = |hint: Option<&str>, email: Option<&str>| Subject {
            login_hint: hint.map(str::to_string),
            email: email.map(str::to_string),
            ..Subject::default()
        };
        assert_eq!(login_base(&s(Some("Ann Lee <x>"), None)), "AnnLeex");
        assert_eq!(login_base(&s(None, Some("bob.k@example.com"))), "bob.k");
        assert_eq!(login_base(&s(Some("é"), None)), "user");
        assert_eq!(login_base(&s(Some(&"a".repeat(100)), None)).len(), 48);
    }

    /// A provider's amr follows `fed`, without the methods authgw asserts
    /// of itself.
    #[test]
    fn a_provider_cannot_claim_authgws_own_methods() {
        let given: Vec<String> = ["pwd", "otp", "mfa", "rcode", "hwk", "mfa"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(federated_amr(Some(&given)), ["fed", "mfa", "hwk"]);
        assert_eq!(federated_amr(None), ["fed"]);
    }

    /// Query parameters are added to a frontend URL that has its own.
    #[test]
    fn redirects_keep_their_query() {
        assert_eq!(
            with_query("https://app.example/cb?x=1", &[("code", "a b&c")]),
            "https://app.example/cb?x=1&code=a+b%26c"
        );
    }
}
