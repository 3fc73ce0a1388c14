//! The forward-auth endpoints (`/api/v1/authz/*`): the HTTP side of
//! [`crate::forward_auth`]. Traefik and Caddy ask with GET; nginx's
//! subrequest keeps the original method (docs/forward-auth/nginx.conf sets
//! `proxy_method GET`) and Envoy asks with it, so those two take every
//! standard method. Any other method is a 405, as the OpenAPI says.

use axum::Router;
use axum::extract::{Request, State};
use axum::handler::Handler;
use axum::http::Method;
use axum::response::Response;
use axum::routing::{MethodFilter, MethodRouter, get, on};

use super::AppState;
use crate::forward_auth::{self, EXT_AUTHZ_PREFIX, Endpoint};

/// nginx `auth_request`'s endpoint.
const AUTH_REQUEST_PATH: &str = "/api/v1/authz/auth-request";
/// Traefik's and Caddy's endpoint.
const FORWARD_AUTH_PATH: &str = "/api/v1/authz/forward-auth";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(AUTH_REQUEST_PATH, standard(auth_request))
        .route(FORWARD_AUTH_PATH, get(forward_auth))
        .route(EXT_AUTHZ_PREFIX, standard(ext_authz))
        // The original site's root with a slash: the catch-all below takes
        // no empty path.
        .route(&format!("{EXT_AUTHZ_PREFIX}/"), standard(ext_authz))
        .route(
            &format!("{EXT_AUTHZ_PREFIX}/{{*path}}"),
            standard(ext_authz),
        )
}

/// The methods [`standard`] routes (and HEAD, which GET brings): one list
/// for the routes and the shortcut ([`shortcut_endpoint`]).
pub const STANDARD: [Method; 7] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
    Method::OPTIONS,
    Method::TRACE,
];

/// `handler` for the [`STANDARD`] methods (GET, and HEAD with it, POST,
/// PUT, PATCH, DELETE, OPTIONS and TRACE: each has a filter).
fn standard<H, T>(handler: H) -> MethodRouter<AppState>
where
    H: Handler<T, AppState>,
    T: 'static,
{
    let filter = STANDARD
        .iter()
        .filter_map(|m| MethodFilter::try_from(m.clone()).ok())
        .fold(MethodFilter::GET, MethodFilter::or);
    on(filter, handler)
}

/// The endpoint the proxy's shortcut answers past the router (issue 18),
/// for a request with this canonical path and method: nginx's and
/// Traefik's/Caddy's, for the methods their routes above take, HEAD aside
/// (the router strips a HEAD answer's body). Anything else stays with the
/// router: another method (its 405) and HEAD. Envoy's `ext_authz`, whose
/// path is its original request's, the shortcut takes on the raw path
/// ([`crate::api::proxy_shortcut`]).
pub fn shortcut_endpoint(path: &str, method: &Method) -> Option<Endpoint> {
    match path {
        AUTH_REQUEST_PATH => STANDARD.contains(method).then_some(Endpoint::AuthRequest),
        FORWARD_AUTH_PATH => (method == Method::GET).then_some(Endpoint::ForwardAuth),
        _ => None,
    }
}

/// One forward-auth decision, from the router or the shortcut.
pub fn answer(state: &AppState, endpoint: Endpoint, req: Request) -> Response {
    forward_auth::answer(
        &state.proxy,
        &state.auth.config,
        &state.metrics,
        endpoint,
        req,
    )
}

/// nginx `auth_request`.
async fn auth_request(State(state): State<AppState>, req: Request) -> Response {
    answer(&state, Endpoint::AuthRequest, req)
}

/// Traefik `forwardAuth`, Caddy `forward_auth`.
async fn forward_auth(State(state): State<AppState>, req: Request) -> Response {
    answer(&state, Endpoint::ForwardAuth, req)
}

/// Envoy `ext_authz` (HTTP service with `path_prefix`).
async fn ext_authz(State(state): State<AppState>, req: Request) -> Response {
    answer(&state, Endpoint::ExtAuthz, req)
}
