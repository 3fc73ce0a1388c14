//! Handlers of the second factor: `/api/v1/users/me/mfa*` (enrolment,
//! recovery codes, disabling) and the second step of a login,
//! `POST /api/v1/auth/login/mfa`. The use cases are in `crate::mfa`.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::auth::{password_check_budget, session, with_cookies};
use super::extract::{Authenticated, Browser, Client, JsonBody};
use crate::error::{Error, Result};
use crate::mfa::{Challenge, Proof};

/// The routes behind an access token.
pub fn me_routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/users/me/mfa", get(status))
        .route("/api/v1/users/me/mfa/totp", post(enrol).delete(disable))
        .route("/api/v1/users/me/mfa/totp/confirm", post(confirm))
        .route("/api/v1/users/me/mfa/recovery-codes", post(regenerate))
}

/// Login's answer for a user with a second factor.
#[derive(Serialize)]
pub struct ChallengeBody {
    mfa_required: bool,
    challenge: String,
    methods: Vec<&'static str>,
    expires_in: u64,
}

impl From<Challenge> for ChallengeBody {
    fn from(c: Challenge) -> Self {
        Self {
            mfa_required: true,
            challenge: c.token,
            methods: c.methods,
            expires_in: c.expires_in,
        }
    }
}

/// A TOTP `code` or a `recovery_code`: exactly one.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProofFields {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    recovery_code: Option<String>,
}

impl ProofFields {
    fn proof(self) -> Result<Proof> {
        match (self.code, self.recovery_code) {
            (Some(code), None) => Ok(Proof::Totp(code)),
            (None, Some(code)) => Ok(Proof::RecoveryCode(code)),
            _ => Err(Error::invalid(
                "code",
                "give exactly one of code (from the authenticator app) and recovery_code",
            )),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginMfaRequest {
    challenge: String,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    recovery_code: Option<String>,
    /// Cookie mode, as in login.
    #[serde(default)]
    cookie: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordRequest {
    password: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CodeRequest {
    code: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DisableRequest {
    password: String,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    recovery_code: Option<String>,
}

/// Counts a code check in the metrics: a success, or a wrong code.
fn counted<T>(s: &AppState, method: &'static str, result: Result<T>) -> Result<T> {
    match &result {
        Ok(_) => s.metrics.mfa(method, true),
        Err(Error::InvalidMfaCode) => s.metrics.mfa(method, false),
        Err(_) => {}
    }
    result
}

/// An answer carrying a secret (the TOTP secret, recovery codes): never cached.
fn secret_answer(body: serde_json::Value) -> Response {
    with_cookies(Vec::new(), Json(body).into_response())
}

/// The second step of a login: the challenge and a code give the usual
/// token pair (in cookie mode after the CSRF proof).
pub async fn login(
    State(s): State<AppState>,
    Client(info): Client,
    browser: Browser,
    JsonBody(req): JsonBody<LoginMfaRequest>,
) -> Result<Response> {
    if req.cookie {
        browser.prove(&s)?;
    }
    let proof = ProofFields {
        code: req.code,
        recovery_code: req.recovery_code,
    }
    .proof()?;
    let method = proof.method();
    let pair = counted(
        &s,
        method,
        s.auth.login_mfa(&req.challenge, proof, info).await,
    )?;
    Ok(session(&s, req.cookie, pair))
}

async fn status(
    State(s): State<AppState>,
    Authenticated(c): Authenticated,
) -> Result<Json<serde_json::Value>> {
    let st = s.auth.mfa_status(c.sub).await?;
    Ok(Json(serde_json::json!({
        "enabled": st.enabled,
        "pending": st.pending,
        "recovery_codes_left": st.recovery_codes_left,
        "session_amr": c.amr,
    })))
}

async fn enrol(
    State(s): State<AppState>,
    Client(info): Client,
    Authenticated(c): Authenticated,
    JsonBody(req): JsonBody<PasswordRequest>,
) -> Result<Response> {
    password_check_budget(&s, &info)?;
    let e = s.auth.mfa_enrol(&c, req.password, &info).await?;
    let body = serde_json::json!({
        "secret": e.secret,
        "otpauth_uri": e.otpauth_uri,
        "qr_svg": e.qr_svg,
        "algorithm": "SHA1",
        "digits": crate::mfa::totp::DIGITS,
        "period": crate::mfa::totp::PERIOD,
    });
    let mut response = secret_answer(body);
    *response.status_mut() = StatusCode::CREATED;
    Ok(response)
}

async fn confirm(
    State(s): State<AppState>,
    Client(info): Client,
    Authenticated(c): Authenticated,
    JsonBody(req): JsonBody<CodeRequest>,
) -> Result<Response> {
    password_check_budget(&s, &info)?;
    let codes = counted(&s, "totp", s.auth.mfa_confirm(&c, req.code).await)?;
    Ok(secret_answer(
        serde_json::json!({ "recovery_codes": codes }),
    ))
}

async fn regenerate(
    State(s): State<AppState>,
    Client(info): Client,
    Authenticated(c): Authenticated,
    JsonBody(req): JsonBody<CodeRequest>,
) -> Result<Response> {
    password_check_budget(&s, &info)?;
    let codes = counted(&s, "totp", s.auth.mfa_regenerate(&c, req.code, &info).await)?;
    Ok(secret_answer(
        serde_json::json!({ "recovery_codes": codes }),
    ))
}

async fn disable(
    State(s): State<AppState>,
    Client(info): Client,
    Authenticated(c): Authenticated,
    JsonBody(req): JsonBody<DisableRequest>,
) -> Result<StatusCode> {
    password_check_budget(&s, &info)?;
    let proof = ProofFields {
        code: req.code,
        recovery_code: req.recovery_code,
    }
    .proof()?;
    let method = proof.method();
    counted(
        &s,
        method,
        s.auth.mfa_disable(&c, req.password, proof, &info).await,
    )?;
    Ok(StatusCode::NO_CONTENT)
}
