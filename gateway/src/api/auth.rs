//! Handlers of `/api/v1/auth/*`, `/api/v1/users/me*` and the JWKS.

use axum::Json;
use axum::Router;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post};
use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::extract::{
    AcceptLanguage, Authenticated, Browser, Client, FormOrJson, JsonBody, OptionalJsonBody, Params,
};
use super::{AppState, list, page_of};
use crate::auth::{LoginOutcome, TokenPair};
use crate::error::{Error, Result};
use crate::mail::Locale;
use crate::store::sessions::ClientInfo;
use crate::store::users::User;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignupRequest {
    login: String,
    password: String,
    #[serde(default)]
    email: Option<String>,
    /// The language of the account's mail; else `Accept-Language`'s.
    #[serde(default)]
    locale: Option<LocaleField>,
}

/// `"en"` or `"ru"`.
#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub enum LocaleField {
    En,
    Ru,
}

impl From<LocaleField> for Locale {
    fn from(l: LocaleField) -> Self {
        match l {
            LocaleField::En => Locale::En,
            LocaleField::Ru => Locale::Ru,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    login: String,
    password: String,
    /// Cookie mode: the refresh token as an HttpOnly cookie, not in the JSON.
    #[serde(default)]
    cookie: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    refresh_token: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntrospectRequest {
    token: String,
    #[serde(default)]
    #[allow(dead_code)]
    token_type_hint: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordChangeRequest {
    old_password: String,
    new_password: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteMeRequest {
    password: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageParams {
    #[serde(default)]
    pub limit: Option<usize>,
    #[serde(default)]
    pub cursor: Option<String>,
}

/// A page size: `default` when absent, 1..=100 otherwise.
pub fn page_limit(limit: Option<usize>, default: usize) -> Result<usize> {
    match limit {
        None => Ok(default),
        Some(n) if (1..=100).contains(&n) => Ok(n),
        Some(_) => Err(Error::invalid("limit", "must be between 1 and 100")),
    }
}

/// `User` as the API shows it.
#[derive(Serialize)]
pub struct UserBody {
    id: Uuid,
    login: String,
    email: Option<String>,
    email_verified: bool,
    roles: Vec<String>,
    is_admin: bool,
    mfa_enabled: bool,
    created_at: DateTime<Utc>,
}

impl From<User> for UserBody {
    fn from(u: User) -> Self {
        Self {
            id: u.id,
            login: u.login,
            email: u.email,
            email_verified: u.email_verified,
            roles: u.roles,
            is_admin: u.is_admin,
            mfa_enabled: u.mfa_enabled,
            created_at: u.created_at,
        }
    }
}

/// A token pair as the API answers it; in cookie mode without the refresh
/// token, which travels only in its HttpOnly cookie.
#[derive(Serialize)]
pub struct TokenBody {
    access_token: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<String>,
    token_type: &'static str,
    expires_in: u64,
}

impl From<TokenPair> for TokenBody {
    fn from(p: TokenPair) -> Self {
        Self {
            access_token: p.access_token,
            refresh_token: Some(p.refresh_token),
            token_type: "Bearer",
            expires_in: p.expires_in,
        }
    }
}

/// A body-mode answer: both tokens in the JSON, never stored by a cache
/// (RFC 6749 §5.1).
fn body_session(pair: TokenPair) -> Response {
    with_cookies(Vec::new(), Json(TokenBody::from(pair)).into_response())
}

/// A cookie-mode answer: the access token in the JSON, the refresh token
/// (and the access token, with `auth.access_cookie`) in `Set-Cookie`.
fn cookie_session(s: &AppState, pair: TokenPair) -> Response {
    let config = &s.auth.config;
    let mut cookies = vec![crate::cookies::set(
        &config.auth,
        crate::cookies::refresh_name(&config.auth),
        &pair.refresh_token,
        crate::cookies::REFRESH_PATH,
        config.tokens.refresh_ttl.as_secs(),
    )];
    if config.auth.access_cookie
        && let Some(name) = s.proxy.runtime().token_cookie.as_deref()
    {
        cookies.push(crate::cookies::set(
            &config.auth,
            name,
            &pair.access_token,
            "/",
            pair.expires_in,
        ));
    }
    let body = TokenBody {
        refresh_token: None,
        ..TokenBody::from(pair)
    };
    with_cookies(cookies, Json(body).into_response())
}

/// `response` with `Set-Cookie` clearing the session cookies.
fn cleared(s: &AppState, response: Response) -> Response {
    let runtime = s.proxy.runtime();
    with_cookies(
        crate::cookies::clear(&s.auth.config, runtime.token_cookie.as_deref()),
        response,
    )
}

/// `response` with `cookies` set, and `Cache-Control: no-store`: an answer
/// that carries or clears tokens is never kept by a cache.
pub(super) fn with_cookies(
    cookies: Vec<axum::http::HeaderValue>,
    mut response: Response,
) -> Response {
    let headers = response.headers_mut();
    for c in cookies {
        headers.append(header::SET_COOKIE, c);
    }
    headers.insert(
        header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    response
}

pub async fn signup(
    State(s): State<AppState>,
    AcceptLanguage(requested): AcceptLanguage,
    JsonBody(req): JsonBody<SignupRequest>,
) -> Result<Response> {
    let locale = req.locale.map(Locale::from).or(requested);
    let user = s
        .auth
        .signup(req.login, req.password, req.email, locale)
        .await?;
    Ok((StatusCode::CREATED, Json(UserBody::from(user))).into_response())
}

/// Logs in; with `"cookie": true` (which owes the CSRF proof, checked
/// before the password) in cookie mode.
pub async fn login(
    State(s): State<AppState>,
    Client(info): Client,
    browser: Browser,
    JsonBody(req): JsonBody<LoginRequest>,
) -> Result<Response> {
    if req.cookie {
        browser.prove(&s)?;
    }
    let pair = match s.auth.login(req.login, req.password, info).await? {
        LoginOutcome::Tokens(pair) => pair,
        LoginOutcome::SecondFactor(challenge) => {
            return Ok(with_cookies(
                Vec::new(),
                Json(super::mfa::ChallengeBody::from(challenge)).into_response(),
            ));
        }
    };
    Ok(session(&s, req.cookie, pair))
}

/// The answer that starts a session: cookie mode or body mode.
pub(super) fn session(s: &AppState, cookie: bool, pair: TokenPair) -> Response {
    if cookie {
        cookie_session(s, pair)
    } else {
        body_session(pair)
    }
}

/// Rotates a refresh token: the body's (body mode), or with no body the
/// refresh cookie's (cookie mode, after the CSRF proof). A cookie that
/// cannot refresh any more is cleared with the 401.
pub async fn refresh(
    State(s): State<AppState>,
    Client(info): Client,
    browser: Browser,
    OptionalJsonBody(req): OptionalJsonBody<RefreshRequest>,
) -> Result<Response> {
    if let Some(req) = req {
        return Ok(body_session(s.auth.refresh(req.refresh_token, info).await?));
    }
    // A doubled cookie is refused without clearing: clearing would remove
    // only ours (host-only) and leave a tossed one (Domain=) to log the
    // browser into its planter's session.
    let token = browser
        .refresh_cookie(&s)?
        .ok_or(Error::InvalidRefreshToken)?;
    browser.prove(&s)?;
    match s.auth.refresh(token.to_string(), info).await {
        Ok(pair) => Ok(cookie_session(&s, pair)),
        Err(e @ (Error::InvalidRefreshToken | Error::RefreshTokenReused)) => {
            Ok(cleared(&s, e.into_response()))
        }
        Err(e) => Err(e),
    }
}

/// The (user, session) a logout ends: the bearer token's, or, with no
/// `Authorization` header, the refresh cookie's (after the CSRF proof).
async fn logging_out(s: &AppState, browser: &Browser) -> Result<(Uuid, Uuid)> {
    let cookie = if browser.has_authorization() {
        None
    } else {
        browser.refresh_cookie(s)?
    };
    match cookie {
        Some(token) => {
            browser.prove(s)?;
            s.auth.session_of_refresh(token).await
        }
        None => {
            let token = crate::proxy::headers::token(&browser.headers, None)
                .ok_or_else(|| Error::InvalidToken("missing bearer token".into()))?;
            let claims = s.auth.authenticate(token)?;
            Ok((claims.sub, claims.sid))
        }
    }
}

/// Ends the caller's session; the session cookies are cleared (also when
/// the refresh cookie could not refresh any more: 401).
pub async fn logout(State(s): State<AppState>, browser: Browser) -> Result<Response> {
    match logging_out(&s, &browser).await {
        Ok((user, sid)) => s.auth.logout_session(user, sid).await?,
        Err(e @ Error::InvalidRefreshToken) => return Ok(cleared_for(&s, &browser, e)),
        Err(e) => return Err(e),
    }
    Ok(cleared_for(&s, &browser, StatusCode::NO_CONTENT))
}

/// Ends every session of the caller; the session cookies are cleared (also
/// when the refresh cookie could not refresh any more: 401).
pub async fn logout_all(State(s): State<AppState>, browser: Browser) -> Result<Response> {
    match logging_out(&s, &browser).await {
        Ok((user, sid)) => s.auth.logout_all(user, sid, "logout-all").await?,
        Err(e @ Error::InvalidRefreshToken) => return Ok(cleared_for(&s, &browser, e)),
        Err(e) => return Err(e),
    }
    Ok(cleared_for(&s, &browser, StatusCode::NO_CONTENT))
}

/// `answer` with the session cookies cleared, unless the refresh cookie
/// came twice: clearing would remove only ours and leave a tossed one.
fn cleared_for(s: &AppState, browser: &Browser, answer: impl IntoResponse) -> Response {
    let response = answer.into_response();
    match browser.refresh_cookie(s) {
        Ok(_) => cleared(s, response),
        Err(_) => response,
    }
}

fn timestamp(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(secs, 0).single().unwrap_or_default()
}

#[derive(Serialize)]
pub struct CheckBody {
    user_id: Uuid,
    login: String,
    roles: Vec<String>,
    is_admin: bool,
    email_verified: bool,
    /// How the session authenticated (RFC 8176).
    amr: Vec<String>,
    /// When the session's login happened (absent in tokens older than MFA).
    auth_time: Option<DateTime<Utc>>,
    session_id: Uuid,
    expires_at: DateTime<Utc>,
}

/// Authenticates a user for an application service; no database involved.
pub async fn check(Authenticated(c): Authenticated) -> Json<CheckBody> {
    Json(CheckBody {
        user_id: c.sub,
        login: c.login,
        roles: c.roles,
        is_admin: c.adm,
        email_verified: c.email_verified,
        amr: c.amr,
        auth_time: (c.auth_time > 0).then(|| timestamp(c.auth_time)),
        session_id: c.sid,
        expires_at: timestamp(c.exp),
    })
}

/// A caller of introspection that authenticated as a configured client
/// (HTTP Basic); 401 `invalid_client` otherwise, before the body is read.
pub struct IntrospectionCaller;

impl FromRequestParts<AppState> for IntrospectionCaller {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, s: &AppState) -> Result<Self> {
        let authorization = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        crate::introspection::authenticate(&s.auth.config.introspection.clients, authorization)?;
        Ok(Self)
    }
}

/// RFC 7662 token introspection, for configured clients only (and
/// rate-limited per client address): `{active: false}` for any token that
/// would not pass `/check`.
pub async fn introspect(
    State(s): State<AppState>,
    _caller: IntrospectionCaller,
    FormOrJson(req): FormOrJson<IntrospectRequest>,
) -> Response {
    match s.auth.authenticate(&req.token) {
        Ok(c) => {
            let mut body = serde_json::json!({
            "active": true,
            "sub": c.sub,
            "username": c.login,
            "exp": c.exp,
            "iat": c.iat,
            "nbf": c.nbf,
            "iss": c.iss,
            "aud": c.aud,
            "jti": c.jti.to_string(),
            "token_type": "Bearer",
            "roles": c.roles,
            "is_admin": c.adm,
            "email_verified": c.email_verified,
            "amr": c.amr,
            "sid": c.sid.to_string(),
            });
            if c.auth_time > 0
                && let Some(obj) = body.as_object_mut()
            {
                obj.insert("auth_time".into(), c.auth_time.into());
            }
            Json(body).into_response()
        }
        Err(_) => Json(serde_json::json!({ "active": false })).into_response(),
    }
}

pub async fn jwks(State(s): State<AppState>) -> impl IntoResponse {
    (
        [(axum::http::header::CACHE_CONTROL, "public, max-age=300")],
        Json(s.auth.tokens.keyring().jwks().clone()),
    )
}

pub fn me_routes() -> Router<AppState> {
    Router::new()
        .route(
            "/api/v1/users/me",
            get(me).delete(delete_me).patch(super::recovery::update_me),
        )
        .route(
            "/api/v1/users/me/email/verify",
            post(super::recovery::resend_verification),
        )
        .route("/api/v1/users/me/password", patch(change_password))
        .route("/api/v1/users/me/history", get(history))
        .route("/api/v1/users/me/sessions", get(sessions))
        .route("/api/v1/users/me/sessions/{id}", delete(end_session))
}

/// The caller's account as `GET` and `PATCH /users/me` answer it: the
/// user and the address waiting for confirmation.
#[derive(Serialize)]
pub struct MeBody {
    #[serde(flatten)]
    user: UserBody,
    pending_email: Option<String>,
}

impl MeBody {
    pub fn new(user: User, pending_email: Option<String>) -> Self {
        Self {
            user: user.into(),
            pending_email,
        }
    }
}

async fn me(State(s): State<AppState>, Authenticated(c): Authenticated) -> Result<Json<MeBody>> {
    let (user, pending) = s.auth.me(c.sub).await?;
    Ok(Json(MeBody::new(user, pending)))
}

/// Checks of a current password take a token from the per-client bucket
/// like login does (and count failures like it: see `Auth::confirm_password`).
pub(super) fn password_check_budget(s: &AppState, info: &ClientInfo) -> Result<()> {
    match info.ip {
        Some(ip) => s.limiter.check(ip),
        None => Ok(()),
    }
}

async fn change_password(
    State(s): State<AppState>,
    Client(info): Client,
    Authenticated(c): Authenticated,
    JsonBody(req): JsonBody<PasswordChangeRequest>,
) -> Result<StatusCode> {
    password_check_budget(&s, &info)?;
    s.auth
        .change_password(&c, req.old_password, req.new_password, &info)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn delete_me(
    State(s): State<AppState>,
    Client(info): Client,
    Authenticated(c): Authenticated,
    JsonBody(req): JsonBody<DeleteMeRequest>,
) -> Result<StatusCode> {
    password_check_budget(&s, &info)?;
    s.auth.delete_self(&c, req.password, &info).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize)]
struct LoginEventBody {
    id: i64,
    occurred_at: DateTime<Utc>,
    ip: Option<String>,
    user_agent: Option<String>,
    outcome: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    amr: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    provider: Option<String>,
}

async fn history(
    State(s): State<AppState>,
    Authenticated(c): Authenticated,
    Params(p): Params<PageParams>,
) -> Result<Response> {
    let limit = page_limit(p.limit, 20)?;
    let page = s.auth.history(c.sub, p.cursor, limit).await?;
    let items: Vec<LoginEventBody> = page
        .items
        .into_iter()
        .map(|e| LoginEventBody {
            id: e.id,
            occurred_at: e.occurred_at,
            ip: e.ip.map(|ip| ip.to_string()),
            user_agent: e.user_agent,
            outcome: e.outcome,
            amr: e.amr,
            provider: e.provider,
        })
        .collect();
    Ok(page_of(items, page.next_cursor))
}

#[derive(Serialize)]
struct SessionBody {
    id: Uuid,
    created_at: DateTime<Utc>,
    last_used_at: DateTime<Utc>,
    ip: Option<String>,
    user_agent: Option<String>,
    current: bool,
}

async fn sessions(State(s): State<AppState>, Authenticated(c): Authenticated) -> Result<Response> {
    let items: Vec<SessionBody> = s
        .auth
        .sessions(c.sub)
        .await?
        .into_iter()
        .map(|x| SessionBody {
            current: x.id == c.sid,
            id: x.id,
            created_at: x.created_at,
            last_used_at: x.last_used_at,
            ip: x.ip.map(|ip| ip.to_string()),
            user_agent: x.user_agent,
        })
        .collect();
    Ok(list(items))
}

async fn end_session(
    State(s): State<AppState>,
    Authenticated(c): Authenticated,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    let not_found = || Error::NotFound {
        what: "session",
        name: id.clone(),
    };
    let sid = Uuid::parse_str(&id).map_err(|_| not_found())?;
    s.auth.end_session(c.sub, sid).await?;
    Ok(StatusCode::NO_CONTENT)
}
