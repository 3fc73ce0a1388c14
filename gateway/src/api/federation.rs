//! Handlers of social login: `/api/v1/auth/oauth/*` (start, callback,
//! exchange) and the caller's linked identities (`/api/v1/users/me/identities*`).
//! The flows themselves are `crate::federation`.

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::auth::{session, with_cookies};
use super::extract::{Authenticated, Browser, Client, JsonBody, Params};
use crate::auth::LoginOutcome;
use crate::error::{Error, Result};
use crate::federation::{BINDING_COOKIE, BINDING_PATH, CallbackParams, FLOW_TTL, Started};
use crate::store::identities::Identity;

/// The routes behind an access token.
pub fn me_routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/users/me/identities", get(list))
        .route("/api/v1/users/me/identities/{provider}", delete(unlink))
        .route(
            "/api/v1/users/me/identities/{provider}/start",
            post(start_link),
        )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartParams {
    redirect_uri: String,
    /// The frontend's own state, echoed back to `redirect_uri`.
    #[serde(default)]
    state: Option<String>,
}

/// What a provider's answer may carry (others, like Google's `authuser`
/// or `session_state`, are ignored; a parameter given twice is refused).
#[derive(Deserialize)]
pub struct CallbackQuery {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    iss: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExchangeRequest {
    code: String,
    /// Cookie mode, as in login.
    #[serde(default)]
    cookie: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LinkRequest {
    redirect_uri: String,
    #[serde(default)]
    state: Option<String>,
}

#[derive(Serialize)]
pub struct IdentityBody {
    provider: String,
    subject: String,
    email: Option<String>,
    created_at: DateTime<Utc>,
    last_login_at: Option<DateTime<Utc>>,
}

impl From<Identity> for IdentityBody {
    fn from(i: Identity) -> Self {
        Self {
            provider: i.provider,
            subject: i.subject,
            email: i.email,
            created_at: i.created_at,
            last_login_at: i.last_login_at,
        }
    }
}

/// The base URL of the callback: `auth.public_url`, else the origin the
/// client addressed (as the CSRF check sees it: this listener's scheme,
/// `Host` or HTTP/2's `:authority`, or what a trusted proxy forwarded).
fn request_base(s: &AppState, browser: &Browser) -> Result<String> {
    let config = &s.auth.config;
    if let Some(public) = &config.auth.public_url {
        return Ok(public.trim_end_matches('/').to_string());
    }
    let mut headers = browser.headers.clone();
    if !headers.contains_key(header::HOST)
        && let Some(v) = browser
            .authority
            .as_deref()
            .and_then(|a| HeaderValue::from_str(a).ok())
    {
        headers.insert(header::HOST, v);
    }
    crate::csrf::own_origin(config, &headers, browser.peer, browser.tls).ok_or_else(|| {
        Error::BadRequest {
            code: "malformed_request",
            field: None,
            detail: "the request names no host of this gateway (set auth.public_url)".into(),
        }
    })
}

/// The binding cookie: `SameSite=Lax` whatever `auth.cookie_same_site`
/// says, since the provider's redirect back is a cross-site navigation.
fn binding_cookie(s: &AppState, value: &str, max_age: u64) -> HeaderValue {
    let secure = if s.auth.config.auth.cookie_secure {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{BINDING_COOKIE}={value}; Path={BINDING_PATH}; Max-Age={max_age}; HttpOnly{secure}; SameSite=Lax"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("authgw_oauth=; Max-Age=0"))
}

/// The binding cookie's value; None when absent or sent twice.
fn binding_of(browser: &Browser) -> Option<&str> {
    match crate::cookies::find(&browser.headers, BINDING_COOKIE) {
        crate::cookies::Found::Once(v) => Some(v),
        _ => None,
    }
}

fn redirect(location: &str, cookie: HeaderValue) -> Response {
    let mut response = with_cookies(vec![cookie], StatusCode::FOUND.into_response());
    if let Ok(v) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response
}

/// `GET /api/v1/auth/oauth/{provider}/start`: 302 to the provider.
pub async fn start(
    State(s): State<AppState>,
    Path(provider): Path<String>,
    browser: Browser,
    Params(p): Params<StartParams>,
) -> Result<Response> {
    let base = request_base(&s, &browser)?;
    let Started { location, binding } = s
        .federation
        .start(&s.auth, &provider, &p.redirect_uri, p.state, None, &base)
        .await?;
    Ok(redirect(
        &location,
        binding_cookie(&s, &binding, FLOW_TTL.as_secs()),
    ))
}

/// `GET /api/v1/auth/oauth/{provider}/callback`: 302 to the frontend.
pub async fn callback(
    State(s): State<AppState>,
    Path(provider): Path<String>,
    Client(info): Client,
    browser: Browser,
    Params(q): Params<CallbackQuery>,
) -> Result<Response> {
    let base = request_base(&s, &browser)?;
    let params = CallbackParams {
        code: q.code,
        state: q.state,
        error: q.error,
        iss: q.iss,
    };
    let location = s
        .federation
        .callback(
            &s.auth,
            &provider,
            params,
            binding_of(&browser),
            info,
            &base,
        )
        .await?;
    // The flow is over: its cookie goes.
    Ok(redirect(&location, binding_cookie(&s, "", 0)))
}

/// `POST /api/v1/auth/oauth/exchange`: the callback's code for a session.
pub async fn exchange(
    State(s): State<AppState>,
    Client(info): Client,
    browser: Browser,
    JsonBody(req): JsonBody<ExchangeRequest>,
) -> Result<Response> {
    if req.cookie {
        browser.prove(&s)?;
    }
    match s.auth.oauth_exchange(&req.code, info).await? {
        LoginOutcome::Tokens(pair) => Ok(session(&s, req.cookie, pair)),
        LoginOutcome::SecondFactor(challenge) => Ok(with_cookies(
            Vec::new(),
            Json(super::mfa::ChallengeBody::from(challenge)).into_response(),
        )),
    }
}

async fn list(State(s): State<AppState>, Authenticated(c): Authenticated) -> Result<Response> {
    let items: Vec<IdentityBody> = s
        .auth
        .identities(c.sub)
        .await?
        .into_iter()
        .map(IdentityBody::from)
        .collect();
    Ok(super::list(items))
}

/// Starts linking another provider to the caller's account: the URL to
/// send the browser to (a bearer token cannot ride a navigation), and the
/// binding cookie.
async fn start_link(
    State(s): State<AppState>,
    Path(provider): Path<String>,
    Authenticated(c): Authenticated,
    browser: Browser,
    JsonBody(req): JsonBody<LinkRequest>,
) -> Result<Response> {
    crate::federation::require_recent_login(&c)?;
    let base = request_base(&s, &browser)?;
    let Started { location, binding } = s
        .federation
        .start(
            &s.auth,
            &provider,
            &req.redirect_uri,
            req.state,
            Some(c.sub),
            &base,
        )
        .await?;
    Ok(with_cookies(
        vec![binding_cookie(&s, &binding, FLOW_TTL.as_secs())],
        Json(serde_json::json!({ "authorize_url": location })).into_response(),
    ))
}

async fn unlink(
    State(s): State<AppState>,
    Path(provider): Path<String>,
    Authenticated(c): Authenticated,
) -> Result<StatusCode> {
    s.auth.unlink_identity(c.sub, provider).await?;
    Ok(StatusCode::NO_CONTENT)
}
