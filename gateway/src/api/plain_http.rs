//! The plain-HTTP listener beside a TLS one (`server.tls.http_listen`):
//! `/healthz` and `/readyz` for load balancers, and for everything else a
//! 308 to the same path over HTTPS (or, with `http_redirect = false`, a 403
//! `https_required` problem). Nothing here authenticates, proxies or reads
//! a body: a token sent in clear goes nowhere.

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::AppState;

/// Where the redirect points and whether to redirect at all.
#[derive(Clone)]
struct Plain {
    state: AppState,
    /// The TLS listener's port (left out of the URL when 443).
    https_port: u16,
    redirect: bool,
}

/// The plain listener's routes.
pub fn router(state: AppState, https_port: u16, redirect: bool) -> Router {
    let plain = Plain {
        state: state.clone(),
        https_port,
        redirect,
    };
    Router::new()
        .route("/healthz", get(super::healthz))
        .route(
            "/readyz",
            get(|State(p): State<Plain>| async move { super::readiness::readyz(State(p.state)).await }),
        )
        .fallback(elsewhere)
        .with_state(plain)
}

async fn elsewhere(State(p): State<Plain>, req: Request) -> Response {
    if !p.redirect {
        return https_required();
    }
    // Only a plain host name or address goes into the Location: anything
    // else (user info, a path, spaces) in Host is refused, not echoed.
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
        .and_then(crate::proxy::path::canonical_host)
        .filter(|h| {
            h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'[' | b']' | b':'))
        });
    let Some(host) = host else {
        return https_required();
    };
    let port = if p.https_port == 443 {
        String::new()
    } else {
        format!(":{}", p.https_port)
    };
    let target = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let Ok(location) = HeaderValue::from_str(&format!("https://{host}{port}{target}")) else {
        return https_required();
    };
    // 308 keeps the method and body; the client re-sends over TLS.
    (
        StatusCode::PERMANENT_REDIRECT,
        [(header::LOCATION, location)],
    )
        .into_response()
}

fn https_required() -> Response {
    super::problem::respond(
        StatusCode::FORBIDDEN,
        "https_required",
        "this listener serves only /healthz and /readyz; use https://".into(),
    )
}
