//! The one place where a domain [`Error`] becomes an HTTP response: an
//! `application/problem+json` body (RFC 9457) with the right status and
//! headers. Internal details are logged here and never sent.

use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::error::Error;

pub const PROBLEM_JSON: &str = "application/problem+json";

struct Problem {
    status: StatusCode,
    code: &'static str,
    detail: String,
    field: Option<String>,
    headers: Vec<(HeaderName, String)>,
}

fn retry_after(d: std::time::Duration) -> (HeaderName, String) {
    (
        header::RETRY_AFTER,
        d.as_secs_f64().ceil().max(1.0).to_string(),
    )
}

fn problem(e: Error) -> Problem {
    let p = |status, code, detail: String| Problem {
        status,
        code,
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
                why.replace('"', "'")
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
        Error::Forbidden(detail) => p(StatusCode::FORBIDDEN, "forbidden", detail),
        Error::NotFound { .. } => p(StatusCode::NOT_FOUND, "not_found", e.to_string()),
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

/// A problem response with an arbitrary status and code (fallbacks, readiness).
pub fn respond(status: StatusCode, code: &'static str, detail: String) -> Response {
    render(Problem {
        status,
        code,
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
