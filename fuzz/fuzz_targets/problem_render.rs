//! problem+json rendering of arbitrary domain errors (`Error::into_response`).
//!
//! Properties: nothing panics; every error becomes a 4xx/5xx
//! `application/problem+json` response whose body is a JSON object with
//! `type` = `urn:authgw:problem:<code>`, `title`, `status` (equal to the HTTP
//! status), `detail` and `code`, and `field` exactly when the error names one;
//! 401 for a bad access token always carries a `WWW-Authenticate: Bearer`
//! challenge; 429 and 503 always carry a whole-seconds `Retry-After` of at
//! least 1; internal and dependency details are never sent.
#![no_main]

use std::time::Duration;

use arbitrary::Arbitrary;
use axum::http::header;
use axum::response::IntoResponse;
use gateway::error::Error;
use libfuzzer_sys::fuzz_target;

/// `&'static str` codes the error type carries (the real ones, and odd ones).
const CODES: &[&str] = &[
    "login_taken",
    "role_exists",
    "malformed_json",
    "unknown_field",
    "malformed_request",
    "",
    "with space",
    "quote\"d",
    "ünï",
];

#[derive(Debug, Arbitrary)]
enum Kind {
    InvalidCredentials,
    InvalidToken(String),
    InvalidRefreshToken,
    RefreshTokenReused,
    RefreshTokenAlreadyRotated,
    Forbidden(String),
    NotFound(u8, String),
    Conflict(u8, String),
    BadRequest(u8, Option<String>, String),
    Invalid(String, String),
    PayloadTooLarge(usize),
    UnsupportedMediaType(String),
    RateLimited(u64, u32),
    Busy(u64, u32),
    Unavailable(String),
    Internal(String),
}

fn code(i: u8) -> &'static str {
    CODES[usize::from(i) % CODES.len()]
}

fn duration(secs: u64, nanos: u32) -> Duration {
    Duration::new(secs, nanos % 1_000_000_000)
}

fn build(kind: Kind) -> Error {
    match kind {
        Kind::InvalidCredentials => Error::InvalidCredentials,
        Kind::InvalidToken(why) => Error::InvalidToken(why),
        Kind::InvalidRefreshToken => Error::InvalidRefreshToken,
        Kind::RefreshTokenReused => Error::RefreshTokenReused,
        Kind::RefreshTokenAlreadyRotated => Error::RefreshTokenAlreadyRotated,
        Kind::Forbidden(d) => Error::Forbidden(d),
        Kind::NotFound(i, name) => Error::NotFound {
            what: code(i),
            name,
        },
        Kind::Conflict(i, detail) => Error::Conflict {
            code: code(i),
            detail,
        },
        Kind::BadRequest(i, field, detail) => Error::BadRequest {
            code: code(i),
            field,
            detail,
        },
        Kind::Invalid(field, detail) => Error::Invalid { field, detail },
        Kind::PayloadTooLarge(limit) => Error::PayloadTooLarge { limit },
        Kind::UnsupportedMediaType(d) => Error::UnsupportedMediaType(d),
        Kind::RateLimited(s, n) => Error::RateLimited {
            retry_after: duration(s, n),
        },
        Kind::Busy(s, n) => Error::Busy {
            retry_after: duration(s, n),
        },
        Kind::Unavailable(d) => Error::Unavailable(d),
        Kind::Internal(d) => Error::Internal(d),
    }
}

fuzz_target!(|kind: Kind| {
    let names_field = match &kind {
        Kind::Invalid(..) => true,
        Kind::BadRequest(_, field, _) => field.is_some(),
        _ => false,
    };
    let bearer = matches!(kind, Kind::InvalidToken(_));
    let retry = matches!(
        kind,
        Kind::RateLimited(..) | Kind::Busy(..) | Kind::Unavailable(_)
    );
    let hidden = matches!(kind, Kind::Internal(_) | Kind::Unavailable(_));

    let response = build(kind).into_response();
    let status = response.status();
    assert!(
        status.is_client_error() || status.is_server_error(),
        "{status}"
    );
    let headers = response.headers().clone();
    assert_eq!(
        headers.get(header::CONTENT_TYPE).map(|v| v.as_bytes()),
        Some(&b"application/problem+json"[..])
    );
    if bearer {
        let challenge = headers
            .get(header::WWW_AUTHENTICATE)
            .expect("401 invalid_token without WWW-Authenticate");
        assert!(
            challenge
                .as_bytes()
                .starts_with(b"Bearer error=\"invalid_token\"")
        );
    }
    if retry {
        let value = headers
            .get(header::RETRY_AFTER)
            .expect("429/503 without Retry-After");
        let secs: u64 = value
            .to_str()
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("Retry-After is not whole seconds: {value:?}"));
        assert!(secs >= 1);
    }

    let body = body_bytes(response);
    let json: serde_json::Value = serde_json::from_slice(&body).expect("body is JSON");
    let obj = json.as_object().expect("body is an object");
    let code = obj["code"].as_str().expect("code");
    assert_eq!(obj["type"], format!("urn:authgw:problem:{code}"));
    assert_eq!(obj["status"], status.as_u16());
    assert!(obj["title"].is_string() && obj["detail"].is_string());
    assert_eq!(obj.contains_key("field"), names_field, "{json}");
    if hidden {
        assert!(
            obj["detail"] == "internal server error"
                || obj["detail"] == "a dependency of the server is unavailable; retry shortly",
            "internal detail leaked: {json}"
        );
    }
});

/// The whole body of a response built in memory.
fn body_bytes(response: axum::response::Response) -> Vec<u8> {
    let rt = tokio_rt();
    rt.block_on(async {
        axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body")
            .to_vec()
    })
}

fn tokio_rt() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::LazyLock<tokio::runtime::Runtime> = std::sync::LazyLock::new(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
    });
    &RT
}
