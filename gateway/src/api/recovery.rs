//! HTTP of account recovery (`crate::recovery`): verification links,
//! the address change, and password reset.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::auth::{LocaleField, MeBody};
use super::extract::{AcceptLanguage, Authenticated, Client, JsonBody};
use crate::error::{Error, Result};
use crate::mail::Locale;
use crate::recovery::{ProfileChange, ResetFor};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    token: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateMeRequest {
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    locale: Option<LocaleField>,
    /// The current password: required with `email`.
    #[serde(default)]
    password: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResetRequest {
    #[serde(default)]
    login: Option<String>,
    #[serde(default)]
    email: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResetConfirmRequest {
    token: String,
    new_password: String,
}

/// `POST /api/v1/auth/verify-email`: follows a verification link.
pub async fn verify_email(
    State(s): State<AppState>,
    JsonBody(req): JsonBody<TokenRequest>,
) -> Result<Response> {
    let email = s.auth.verify_email(&req.token).await?;
    Ok(Json(json!({ "email": email, "email_verified": true })).into_response())
}

/// `POST /api/v1/users/me/email/verify`: mails a new verification link.
pub async fn resend_verification(
    State(s): State<AppState>,
    AcceptLanguage(requested): AcceptLanguage,
    Authenticated(c): Authenticated,
) -> Result<Response> {
    let to = s.auth.resend_verification(c.sub, requested).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "email": to }))).into_response())
}

/// `PATCH /api/v1/users/me`: the locale, or a new address (with the
/// current password; pending until confirmed).
pub async fn update_me(
    State(s): State<AppState>,
    Client(info): Client,
    AcceptLanguage(requested): AcceptLanguage,
    Authenticated(c): Authenticated,
    JsonBody(req): JsonBody<UpdateMeRequest>,
) -> Result<Response> {
    if req.email.is_some() {
        super::auth::password_check_budget(&s, &info)?;
    }
    let change = ProfileChange {
        email: req.email,
        locale: req.locale.map(Locale::from),
        password: req.password,
    };
    let (user, pending) = s.auth.update_profile(&c, change, requested, &info).await?;
    Ok(Json(MeBody::new(user, pending)).into_response())
}

/// `POST /api/v1/auth/password-reset`: always 202 with the same body. The
/// lookup and the mail happen after the answer, in a task of their own, so
/// neither the body nor the time tells whether the account exists.
pub async fn password_reset(
    State(s): State<AppState>,
    AcceptLanguage(requested): AcceptLanguage,
    JsonBody(req): JsonBody<ResetRequest>,
) -> Result<Response> {
    let who = match (req.login, req.email) {
        (Some(login), None) => ResetFor::Login(login),
        (None, Some(email)) => ResetFor::Email(email),
        _ => {
            return Err(Error::invalid(
                "login",
                "give exactly one of login and email",
            ));
        }
    };
    // Shapes that can name no account are accepted (and dropped) like any
    // other: refusing them would be the same answer for every account.
    let plausible = match &who {
        ResetFor::Login(l) => crate::auth::validate_login(l).is_ok(),
        ResetFor::Email(e) => crate::auth::validate_email(Some(e)).is_ok(),
    };
    if plausible {
        // A flood: the work is bounded, the answer the same.
        if !s.resets.submit(who, requested) {
            s.metrics.reset_dropped();
        }
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "status": "accepted",
            "detail": "if the account exists and has an address, a reset link is on its way"
        })),
    )
        .into_response())
}

/// `POST /api/v1/auth/password-reset/confirm`: sets the new password and
/// ends every session.
pub async fn password_reset_confirm(
    State(s): State<AppState>,
    Client(info): Client,
    JsonBody(req): JsonBody<ResetConfirmRequest>,
) -> Result<StatusCode> {
    s.auth
        .confirm_password_reset(&req.token, req.new_password, &info)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
