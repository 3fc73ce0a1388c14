//! The one place where a domain [`Error`] becomes an HTTP response: an
//! `application/problem+json` body (RFC 9457) with the right status and
//! headers. Internal details are logged here and never sent.

use std::borrow::Cow;

use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::error::Error;

pub const PROBLEM_JSON: &str = "application/problem+json";

struct Problem {
    status: StatusCode,
    code: Cow<'static, str>,
    detail: String,
    field: Option<String>,
    headers: Vec<(HeaderName, String)>,
}

/// `Retry-After` in whole seconds, rounded up, at least 1. Integer
/// arithmetic: through f64, a long wait came out as a different number.
fn retry_after(d: std::time::Duration) -> (HeaderName, String) {
    let secs = d
        .as_secs()
        .saturating_add(u64::from(d.subsec_nanos() > 0))
        .max(1);
    (header::RETRY_AFTER, secs.to_string())
}

/// RFC 9470's step-up challenge, with a 401 `mfa_required`.
fn step_up(detail: &str) -> (HeaderName, String) {
    (
        header::WWW_AUTHENTICATE,
        format!(
            "Bearer error=\"insufficient_user_authentication\", error_description=\"{}\"",
            challenge_text(detail)
        ),
    )
}

/// A plugin's own problem code (interface 0.4.0), as the plugin chain
/// checks it ([`crate::plugins::is_problem_code`]); anything else is
/// `policy_denied`.
fn plugin_code(code: Option<String>) -> Cow<'static, str> {
    match code {
        Some(c) if crate::plugins::is_problem_code(&c) => Cow::Owned(c),
        _ => Cow::Borrowed("policy_denied"),
    }
}

fn problem(e: Error) -> Problem {
    let p = |status, code: &'static str, detail: String| Problem {
        status,
        code: Cow::Borrowed(code),
        detail,
        field: None,
        headers: Vec::new(),
    };
    match e {
        Error::InvalidCredentials => p(
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
            e.to_string(),
        ),
        Error::InvalidToken(ref why) => {
            let challenge = format!(
                "Bearer error=\"invalid_token\", error_description=\"{}\"",
                challenge_text(why)
            );
            let mut out = p(StatusCode::UNAUTHORIZED, "invalid_token", why.clone());
            out.headers.push((header::WWW_AUTHENTICATE, challenge));
            out
        }
        Error::InvalidRefreshToken => p(
            StatusCode::UNAUTHORIZED,
            "invalid_refresh_token",
            e.to_string(),
        ),
        Error::RefreshTokenReused => p(
            StatusCode::UNAUTHORIZED,
            "refresh_token_reused",
            e.to_string(),
        ),
        Error::RefreshTokenAlreadyRotated => p(
            StatusCode::CONFLICT,
            "refresh_token_already_rotated",
            e.to_string(),
        ),
        Error::EmailNotVerified => p(StatusCode::FORBIDDEN, "email_not_verified", e.to_string()),
        Error::InvalidEmailToken => p(
            StatusCode::BAD_REQUEST,
            "invalid_email_token",
            e.to_string(),
        ),
        Error::InvalidResetToken => p(
            StatusCode::BAD_REQUEST,
            "invalid_reset_token",
            e.to_string(),
        ),
        Error::InvalidClient(detail) => {
            let mut out = p(StatusCode::UNAUTHORIZED, "invalid_client", detail);
            out.headers.push((
                header::WWW_AUTHENTICATE,
                "Basic realm=\"authgw introspection\"".into(),
            ));
            out
        }
        Error::Forbidden(detail) => p(StatusCode::FORBIDDEN, "forbidden", detail),
        Error::CsrfRejected(detail) => p(StatusCode::FORBIDDEN, "csrf_rejected", detail),
        Error::NotFound { .. } => p(StatusCode::NOT_FOUND, "not_found", e.to_string()),
        Error::MethodNotAllowed(detail) => {
            p(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", detail)
        }
        Error::Conflict { code, detail } => p(StatusCode::CONFLICT, code, detail),
        Error::BadRequest {
            code,
            field,
            detail,
        } => Problem {
            field,
            ..p(StatusCode::BAD_REQUEST, code, detail)
        },
        Error::Invalid { ref field, .. } => Problem {
            field: Some(field.clone()),
            ..p(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_field",
                e.to_string(),
            )
        },
        Error::PayloadTooLarge { .. } => p(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            e.to_string(),
        ),
        Error::UnsupportedMediaType(detail) => p(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            detail,
        ),
        Error::RateLimited { retry_after: d } => {
            let mut out = p(StatusCode::TOO_MANY_REQUESTS, "rate_limited", e.to_string());
            out.headers.push(retry_after(d));
            out
        }
        Error::TooManyAttempts { retry_after: d } => {
            let mut out = p(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_attempts",
                e.to_string(),
            );
            out.headers.push(retry_after(d));
            out
        }
        Error::RequestTimeout { .. } => p(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            e.to_string(),
        ),
        Error::Busy { retry_after: d } => {
            let mut out = p(StatusCode::SERVICE_UNAVAILABLE, "busy", e.to_string());
            out.headers.push(retry_after(d));
            out
        }
        Error::Unavailable(detail) => {
            tracing::warn!(%detail, "dependency unavailable");
            let mut out = p(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "a dependency of the server is unavailable; retry shortly".into(),
            );
            out.headers
                .push(retry_after(std::time::Duration::from_secs(1)));
            out
        }
        Error::BadGateway(detail) => {
            tracing::warn!(%detail, "upstream failed");
            p(StatusCode::BAD_GATEWAY, "bad_gateway", detail)
        }
        Error::GatewayTimeout(detail) => {
            tracing::warn!(%detail, "upstream timed out");
            p(StatusCode::GATEWAY_TIMEOUT, "gateway_timeout", detail)
        }
        Error::Denied {
            status,
            reason,
            code,
        } => {
            // A plugin may only pick an error status; anything else is a 403.
            let status = StatusCode::from_u16(status)
                .ok()
                .filter(|s| s.is_client_error() || s.is_server_error())
                .unwrap_or(StatusCode::FORBIDDEN);
            let code = plugin_code(code);
            let mut out = p(status, "policy_denied", reason);
            if status == StatusCode::UNAUTHORIZED && code == "mfa_required" {
                out.headers.push(step_up(&out.detail));
            }
            Problem { code, ..out }
        }
        Error::MfaRequired(detail) => {
            let mut out = p(StatusCode::UNAUTHORIZED, "mfa_required", detail);
            out.headers.push(step_up(&out.detail));
            out
        }
        Error::InvalidMfaCode => p(StatusCode::BAD_REQUEST, "invalid_mfa_code", e.to_string()),
        Error::InvalidOauthState => p(
            StatusCode::BAD_REQUEST,
            "invalid_oauth_state",
            e.to_string(),
        ),
        Error::InvalidExchangeCode => p(
            StatusCode::BAD_REQUEST,
            "invalid_exchange_code",
            e.to_string(),
        ),
        Error::ReauthenticationRequired(detail) => {
            p(StatusCode::FORBIDDEN, "reauthentication_required", detail)
        }
        Error::ProviderUnavailable(detail) => {
            tracing::warn!(%detail, "identity provider unavailable");
            let mut out = p(
                StatusCode::SERVICE_UNAVAILABLE,
                "provider_unavailable",
                "the identity provider cannot be reached; retry shortly".into(),
            );
            out.headers
                .push(retry_after(std::time::Duration::from_secs(5)));
            out
        }
        Error::InvalidMfaChallenge => p(
            StatusCode::UNAUTHORIZED,
            "invalid_mfa_challenge",
            e.to_string(),
        ),
        Error::PolicyFailed(detail) => {
            tracing::error!(%detail, "policy plugin failed; request refused");
            let mut out = p(
                StatusCode::SERVICE_UNAVAILABLE,
                "policy_failed",
                "the access policy could not be evaluated; retry shortly".into(),
            );
            out.headers
                .push(retry_after(std::time::Duration::from_secs(1)));
            out
        }
        Error::Internal(detail) => {
            tracing::error!(%detail, "internal error");
            p(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal server error".into(),
            )
        }
    }
}

/// `text` as the content of an RFC 6750 `error_description`: printable ASCII
/// without `"` and `\\` (RFC 6750 section 3). Anything else would make the
/// header value invalid, and the 401 would go out without its challenge.
fn challenge_text(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '"' => '\'',
            '\\' => '/',
            ' '..='~' => c,
            _ => '?',
        })
        .collect()
}

/// A problem response with an arbitrary status and code (fallbacks, readiness).
pub fn respond(status: StatusCode, code: &'static str, detail: String) -> Response {
    render(Problem {
        status,
        code: Cow::Borrowed(code),
        detail,
        field: None,
        headers: Vec::new(),
    })
}

fn render(p: Problem) -> Response {
    let mut body = json!({
        "type": format!("urn:authgw:problem:{}", p.code),
        "title": p.status.canonical_reason().unwrap_or("Error"),
        "status": p.status.as_u16(),
        "detail": p.detail,
        "code": p.code,
    });
    if let (Some(field), Some(obj)) = (p.field, body.as_object_mut()) {
        obj.insert("field".into(), field.into());
    }
    let mut response = (p.status, body.to_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    for (name, value) in p.headers {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    }
    response
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        render(problem(self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found while writing the `problem_render` fuzz target, whose property
    /// (every `invalid_token` 401 carries its challenge) a reason with a
    /// control character or non-ASCII text broke: the challenge was an
    /// invalid header value, and the 401 went out without `WWW-Authenticate`.
    /// Found by the `problem_render` fuzz target (soak): `Retry-After` went
    /// through f64, so a wait of 2^64 - 63 s came out as
    /// "18446744073709552000". Whole seconds, rounded up, at least 1.
    #[test]
    fn retry_after_is_exact_whole_seconds() {
        use std::time::Duration;
        for (d, want) in [
            (Duration::ZERO, "1"),
            (Duration::from_millis(1), "1"),
            (Duration::from_millis(1500), "2"),
            (Duration::from_secs(60), "60"),
            (
                Duration::new(18_446_744_073_709_551_553, 999_999_999),
                "18446744073709551554",
            ),
            (Duration::MAX, "18446744073709551615"),
        ] {
            let response = Error::RateLimited { retry_after: d }.into_response();
            let got = response
                .headers()
                .get(header::RETRY_AFTER)
                .map(|v| v.as_bytes().to_vec());
            assert_eq!(got.as_deref(), Some(want.as_bytes()), "{d:?}");
        }
    }

    #[test]
    fn challenge_survives_any_reason() {
        for why in [
            "line\nbreak",
            "tab\there",
            "ünïcode",
            "quote\" and \\ slash",
            "\u{7f}",
            "",
        ] {
            let response = Error::InvalidToken(why.into()).into_response();
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
            let challenge = response
                .headers()
                .get(header::WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            assert!(
                challenge
                    .as_deref()
                    .is_some_and(|c| c.starts_with("Bearer error=\"invalid_token\"")),
                "{why:?}: {challenge:?}"
            );
        }
    }
}
