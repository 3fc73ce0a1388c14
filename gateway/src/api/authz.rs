//! The forward-auth endpoints (`/api/v1/authz/*`): the HTTP side of
//! [`crate::forward_auth`]. Traefik and Caddy ask with GET; nginx's
//! subrequest keeps the original method (docs/forward-auth/nginx.conf sets
//! `proxy_method GET`) and Envoy asks with it, so those two take every
//! standard method. Any other method is a 405, as the OpenAPI says.

use axum::Router;
use axum::extract::{Request, State};
use axum::handler::Handler;
use axum::response::Response;
use axum::routing::{MethodRouter, get};

use super::AppState;
use crate::forward_auth::{self, EXT_AUTHZ_PREFIX, Endpoint};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/authz/auth-request", standard(auth_request))
        .route("/api/v1/authz/forward-auth", get(forward_auth))
        .route(EXT_AUTHZ_PREFIX, standard(ext_authz))
        .route(
            &format!("{EXT_AUTHZ_PREFIX}/{{*path}}"),
            standard(ext_authz),
        )
}

/// `handler` for GET (and HEAD), POST, PUT, PATCH, DELETE, OPTIONS and TRACE.
fn standard<H, T>(handler: H) -> MethodRouter<AppState>
where
    H: Handler<T, AppState>,
    T: 'static,
{
    get(handler.clone())
        .post(handler.clone())
        .put(handler.clone())
        .patch(handler.clone())
        .delete(handler.clone())
        .options(handler.clone())
        .trace(handler)
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
