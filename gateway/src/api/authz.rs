//! The forward-auth endpoints (`/api/v1/authz/*`): the HTTP side of
//! [`crate::forward_auth`]. Any method: nginx's subrequest keeps the
//! original method, and Envoy sends it.

use axum::Router;
use axum::extract::{Request, State};
use axum::response::Response;
use axum::routing::any;

use super::AppState;
use crate::forward_auth::{self, EXT_AUTHZ_PREFIX, Endpoint};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/authz/auth-request", any(auth_request))
        .route("/api/v1/authz/forward-auth", any(forward_auth))
        .route(EXT_AUTHZ_PREFIX, any(ext_authz))
        .route(&format!("{EXT_AUTHZ_PREFIX}/{{*path}}"), any(ext_authz))
}

fn answer(state: &AppState, endpoint: Endpoint, req: Request) -> Response {
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
