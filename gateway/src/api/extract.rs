//! Request extractors that fail with problems, not axum's plain-text
//! rejections: JSON bodies, form-or-JSON bodies, query strings, the bearer
//! token (authenticated and admin) and the client's address.

use std::net::{IpAddr, SocketAddr};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::{StatusCode, header, request::Parts};
use serde::de::DeserializeOwned;

use super::AppState;
use crate::config::ServerConfig;
use crate::error::Error;
use crate::store::sessions::ClientInfo;
use crate::tokens::Claims;

/// A JSON body: 415 if not `application/json`, 413 over the size limit, 400
/// when malformed or carrying an unknown field, 422 when a field is missing or
/// has the wrong type (naming it).
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Error> {
        if !is_json(req.headers().get(header::CONTENT_TYPE)) {
            return Err(Error::UnsupportedMediaType(
                "expected a body with Content-Type: application/json".into(),
            ));
        }
        let bytes = read_body(req, state).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// A body that may be JSON or `application/x-www-form-urlencoded` (RFC 7662).
pub struct FormOrJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for FormOrJson<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Error> {
        let content_type = req.headers().get(header::CONTENT_TYPE).cloned();
        let is_form = content_type
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        if is_form {
            let bytes = read_body(req, state).await?;
            refuse_nul_in_pairs(&bytes)?;
            let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(&bytes));
            return serde_path_to_error::deserialize(de)
                .map(FormOrJson)
                .map_err(|e| classify_message(&e.path().to_string(), &e.inner().to_string()));
        }
        if !is_json(content_type.as_ref()) {
            return Err(Error::UnsupportedMediaType(
                "expected application/json or application/x-www-form-urlencoded".into(),
            ));
        }
        let bytes = read_body(req, state).await?;
        parse_json(&bytes).map(FormOrJson)
    }
}

/// A JSON body, or none at all: `None` for an empty body (a cookie-mode
/// refresh), else what [`JsonBody`] makes of it.
pub struct OptionalJsonBody<T>(pub Option<T>);

impl<T: DeserializeOwned> FromRequest<AppState> for OptionalJsonBody<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Error> {
        let json = is_json(req.headers().get(header::CONTENT_TYPE));
        let bytes = read_body(req, state).await?;
        if bytes.is_empty() {
            return Ok(Self(None));
        }
        if !json {
            return Err(Error::UnsupportedMediaType(
                "expected no body, or one with Content-Type: application/json".into(),
            ));
        }
        parse_json(&bytes).map(|v| Self(Some(v)))
    }
}

fn is_json(value: Option<&axum::http::HeaderValue>) -> bool {
    value
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .is_some_and(|v| {
            v == "application/json" || (v.starts_with("application/") && v.ends_with("+json"))
        })
}

async fn read_body(req: Request, state: &AppState) -> Result<Bytes, Error> {
    // A declared length over the limit is refused at once: reading first
    // would wait for a body the client may never send.
    let limit = state.auth.config.server.max_body_bytes;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(Error::PayloadTooLarge { limit });
    }
    // A body that trickles in holds a connection and a task: it has
    // `server.body_read_timeout` to arrive in full.
    let timeout = state.auth.config.server.body_read_timeout;
    let read = tokio::time::timeout(timeout, Bytes::from_request(req, state))
        .await
        .map_err(|_| Error::RequestTimeout { limit: timeout })?;
    read.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Error::PayloadTooLarge {
                limit: state.auth.config.server.max_body_bytes,
            }
        } else {
            Error::BadRequest {
                code: "malformed_request",
                field: None,
                detail: "could not read the request body".into(),
            }
        }
    })
}

/// PostgreSQL text cannot hold NUL, and refuses it with an error: a NUL in
/// a request string is a 422 naming the field, before it gets that far.
const NUL_DETAIL: &str = "must not contain NUL characters";

/// Fields that never reach the database as text (passwords are hashed,
/// tokens parsed or verified), so they may hold any character.
const OPAQUE_FIELDS: &[&str] = &[
    "password",
    "old_password",
    "new_password",
    "refresh_token",
    "token",
    "token_type_hint",
];

/// The JSON path of the first string (key or value) holding a NUL.
fn nul_in_json(value: &serde_json::Value, path: &str) -> Option<String> {
    let join = |key: &str| {
        if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        }
    };
    match value {
        // A bare string body is refused as "not an object" further on.
        serde_json::Value::String(s) if s.contains('\0') && !path.is_empty() => Some(path.into()),
        serde_json::Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| nul_in_json(v, &join(&i.to_string()))),
        serde_json::Value::Object(map) => map.iter().find_map(|(k, v)| {
            if k.contains('\0') {
                Some(join(k))
            } else if path.is_empty() && OPAQUE_FIELDS.contains(&k.as_str()) {
                None
            } else {
                nul_in_json(v, &join(k))
            }
        }),
        _ => None,
    }
}

/// 422 when a form or query string carries a NUL in a name or a value.
fn refuse_nul_in_pairs(raw: &[u8]) -> Result<(), Error> {
    let nul = |(k, v): &(std::borrow::Cow<str>, std::borrow::Cow<str>)| {
        k.contains('\0') || (v.contains('\0') && !OPAQUE_FIELDS.contains(&k.as_ref()))
    };
    match form_urlencoded::parse(raw).find(nul) {
        Some((k, _)) => Err(Error::invalid(k.replace('\0', ""), NUL_DETAIL)),
        None => Ok(()),
    }
}

fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    // Every body of the API is an object. serde would also read a struct
    // from an array, by position: `["alice", "pw"]` as a signup, `[null]` as
    // an empty profile change.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return Err(classify_message(
            ".",
            "invalid type: sequence, expected an object",
        ));
    }
    // JSON can only spell NUL as the escape \u0000, so most bodies skip this.
    if bytes.windows(6).any(|w| w.eq_ignore_ascii_case(b"\\u0000"))
        && let Ok(value) = serde_json::from_slice::<serde_json::Value>(bytes)
        && let Some(field) = nul_in_json(&value, "")
    {
        return Err(Error::invalid(field, NUL_DETAIL));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data => classify_message(&path, &inner.to_string()),
            _ => Error::BadRequest {
                code: "malformed_json",
                field: None,
                detail: format!("malformed JSON: {inner}"),
            },
        }
    })?;
    de.end().map_err(|e| Error::BadRequest {
        code: "malformed_json",
        field: None,
        detail: format!("malformed JSON: {e}"),
    })?;
    Ok(value)
}

/// Turns a serde data error into 400 (unknown field, not an object) or 422.
fn classify_message(path: &str, message: &str) -> Error {
    let quoted = |m: &str| m.split('`').nth(1).map(str::to_string);
    let join = |name: String| {
        if path == "." || path.is_empty() {
            name
        } else {
            format!("{path}.{name}")
        }
    };
    let message = message
        .split(" at line ")
        .next()
        .unwrap_or(message)
        .to_string();
    if message.starts_with("unknown field") {
        // serde_path_to_error's path already ends with the unknown field.
        let field = if path == "." || path.is_empty() {
            quoted(&message)
        } else {
            Some(path.to_string())
        };
        return Error::BadRequest {
            code: "unknown_field",
            detail: format!("unknown field '{}'", field.clone().unwrap_or_default()),
            field,
        };
    }
    if message.starts_with("missing field") {
        let field = quoted(&message).map(join).unwrap_or_default();
        return Error::invalid(field, "is required");
    }
    if path == "." || path.is_empty() {
        let detail = if message.starts_with("duplicate field") {
            message
        } else {
            format!("the body must be a JSON object: {message}")
        };
        return Error::BadRequest {
            code: "malformed_request",
            field: None,
            detail,
        };
    }
    Error::invalid(path, message)
}

/// Query parameters; a bad value is a 422 naming the parameter.
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Error> {
        let query = parts.uri.query().unwrap_or("");
        refuse_nul_in_pairs(query.as_bytes())?;
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(Params)
            .map_err(|e| {
                let field = e.path().to_string();
                let message = e.inner().to_string();
                if message.starts_with("unknown field") {
                    classify_message(".", &message)
                } else {
                    Error::invalid(field, message)
                }
            })
    }
}

/// The verified claims of the request's bearer token (not revoked).
pub struct Authenticated(pub Claims);

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let token = bearer_token(parts)
            .ok_or_else(|| Error::InvalidToken("missing bearer token".into()))?;
        state.auth.authenticate(token).map(Authenticated)
    }
}

/// An administrator's verified claims: 401 without a valid token, 403 for
/// a non-admin, and with `auth.require_mfa_for_admins` 401 `mfa_required`
/// for a session that did not pass a second factor.
pub struct Admin(pub Claims);

impl FromRequestParts<AppState> for Admin {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let Authenticated(claims) = Authenticated::from_request_parts(parts, state).await?;
        if !claims.adm {
            return Err(Error::Forbidden("administrator role required".into()));
        }
        if state.auth.config.auth.require_mfa_for_admins && !claims.has_second_factor() {
            return Err(Error::MfaRequired(
                "administrators must sign in with a second factor (auth.require_mfa_for_admins)"
                    .into(),
            ));
        }
        Ok(Admin(claims))
    }
}

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer_token(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The client's IP ([`crate::client_ip::client_ip`]) and user agent.
pub struct Client(pub ClientInfo);

impl FromRequestParts<AppState> for Client {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().take(512).collect());
        Ok(Client(ClientInfo {
            ip: client_ip(parts, &state.auth.config.server),
            user_agent,
        }))
    }
}

/// The client's IP for an API request: the peer, or the right-most
/// untrusted `X-Forwarded-For` entry when the peer is a trusted proxy (see
/// [`crate::client_ip`]). None only without a peer address (never when
/// served).
pub fn client_ip(parts: &Parts, server: &ServerConfig) -> Option<IpAddr> {
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())?;
    Some(crate::client_ip::client_ip(
        peer,
        &parts.headers,
        server.trusted(),
    ))
}

/// What a cookie-mode request is judged by: its headers (the cookies,
/// `Origin`, `X-Requested-With`) and its peer (is it a trusted proxy).
pub struct Browser {
    pub headers: axum::http::HeaderMap,
    pub peer: Option<IpAddr>,
    /// The request came over this gateway's TLS (its own origin is https).
    pub tls: bool,
    /// The request target's authority (HTTP/2's `:authority`, which has no
    /// `Host` header).
    pub authority: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for Browser {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Error> {
        Ok(Self {
            headers: parts.headers.clone(),
            peer: parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(addr)| addr.ip()),
            tls: crate::tls::server::is_tls(&parts.extensions),
            authority: parts.uri.authority().map(|a| a.as_str().to_string()),
        })
    }
}

impl Browser {
    /// The CSRF proof ([`crate::csrf`]), or 403 `csrf_rejected`.
    pub fn prove(&self, state: &AppState) -> Result<(), Error> {
        crate::csrf::verify(
            &state.auth.config,
            &self.headers,
            self.peer,
            self.tls,
            crate::csrf::Proof::Full,
        )
    }

    /// The refresh cookie's value. Sent twice (one tossed by a sibling
    /// subdomain): 401, since which one is ours cannot be told.
    pub fn refresh_cookie(&self, state: &AppState) -> Result<Option<&str>, Error> {
        let name = crate::cookies::refresh_name(&state.auth.config.auth);
        match crate::cookies::find(&self.headers, name) {
            crate::cookies::Found::Absent => Ok(None),
            crate::cookies::Found::Once(v) => Ok(Some(v)),
            crate::cookies::Found::Several => Err(Error::InvalidRefreshToken),
        }
    }

    /// Whether the request has an `Authorization` header (then the cookie
    /// is not what authenticates it).
    pub fn has_authorization(&self) -> bool {
        self.headers.contains_key(header::AUTHORIZATION)
    }
}

/// The locale `Accept-Language` asks for (en or ru), if any: the language
/// of mail to an account that has none of its own.
pub struct AcceptLanguage(pub Option<crate::mail::Locale>);

impl FromRequestParts<AppState> for AcceptLanguage {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, Error> {
        Ok(AcceptLanguage(
            parts
                .headers
                .get(header::ACCEPT_LANGUAGE)
                .and_then(|v| v.to_str().ok())
                .and_then(crate::mail::Locale::from_accept_language),
        ))
    }
}
