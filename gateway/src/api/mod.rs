//! The HTTP layer of the Auth API: routes, request/response shapes and the
//! mapping of domain errors to problems. Use cases live in `auth` and `admin`.

mod admin;
mod auth;
pub mod authz;
pub mod extract;
mod federation;
mod mfa;
pub mod plain_http;
pub mod problem;
mod ratelimit;
mod readiness;
mod recovery;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

use crate::auth::Auth;
use crate::metrics::Metrics;
use crate::proxy::Proxy;

pub use ratelimit::{PURGE_EVERY, RateLimiter, purge_every};

/// The OpenAPI document, served at `/api/openapi.yaml`.
pub const OPENAPI_YAML: &str = include_str!("../../../docs/auth-openapi.yaml");

#[derive(Clone)]
pub struct AppState {
    pub auth: Arc<Auth>,
    pub limiter: Arc<RateLimiter>,
    pub proxy: Arc<Proxy>,
    pub metrics: Arc<Metrics>,
    /// Password-reset requests pending after their 202, worked through one
    /// at a time (`email.max_pending_resets`).
    pub resets: crate::recovery::ResetQueue,
    /// The `[cors]` layer, None when no origin is allowed ([`crate::cors`]).
    pub cors: Option<Arc<tower_http::cors::CorsLayer>>,
    /// Social login's providers ([`crate::federation`]).
    pub federation: Arc<crate::federation::Federation>,
}

impl AppState {
    pub fn new(
        auth: Arc<Auth>,
        proxy: Arc<Proxy>,
        metrics: Arc<Metrics>,
        federation: Arc<crate::federation::Federation>,
    ) -> Self {
        let limiter = Arc::new(RateLimiter::new(&auth.config.limits));
        let cors = crate::cors::layer(&auth.config.cors).map(Arc::new);
        let resets =
            crate::recovery::ResetQueue::start(auth.clone(), auth.config.email.max_pending_resets);
        Self {
            resets,
            auth,
            limiter,
            proxy,
            metrics,
            cors,
            federation,
        }
    }
}

/// Every route of the server, behind the canonical request target: the path
/// is made canonical (or refused with 400) before the Auth API and the proxy
/// are told apart, so `/films/../api/v1/...` is an API request and
/// `/api/../films/...` a proxied one, each judged on the path it resolves to.
pub fn router(state: AppState) -> Router {
    Router::new()
        .fallback_service(routes(state))
        .layer(axum::middleware::from_fn(canonical_target))
}

/// Phase 0 of every request ([`crate::proxy::path::rewrite`]).
async fn canonical_target(
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    // An Envoy ext_authz call carries the original path after a literal
    // prefix; that path is made canonical on its own (forward_auth), so a
    // `..` in it cannot climb into the prefix and reach another endpoint.
    if crate::forward_auth::ext_authz_target(req.uri().path()).is_some() {
        return next.run(req).await;
    }
    match crate::proxy::path::rewrite(&mut req) {
        Ok(_) => next.run(req).await,
        Err(e) => crate::error::Error::from(e).into_response(),
    }
}

/// Whether a canonical path may be one of the API's own endpoints (under
/// `/api/` or `/.well-known/`, or `/healthz`, `/readyz`): a superset, since
/// such a path that no endpoint matches still goes to the router's fallback,
/// the proxy. Any other path only the proxy can take.
pub fn may_be_api(path: &str) -> bool {
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    matches!(first, "api" | ".well-known" | "healthz" | "readyz")
}

/// `/check`'s path: the shortcut may answer it ([`Direct::Check`]).
const CHECK_PATH: &str = "/api/v1/auth/check";

/// What the proxy's shortcut serves past the router ([`proxy_shortcut`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direct {
    /// A request no API endpoint can match: the proxy's.
    Proxy,
    /// A forward-auth call, answered as its route's handler would.
    Decision(crate::forward_auth::Endpoint),
    /// `GET /api/v1/auth/check`, answered by its handler ([`check`]).
    Check,
    /// A CORS preflight or request for a `cors = true` route: the proxy
    /// under the `[cors]` layer ([`crate::cors::proxied`]), as the
    /// router's fallback would serve it once it had asked the same.
    Cors,
}

/// The proxy's way past the router (issue 18): a request whose canonical
/// path no API endpoint can match goes to `direct` as [`Direct::Proxy`]
/// (the proxy, behind the same span and panic layers as the router), made
/// canonical here as the router's front layer would have made it, which is
/// all the router would have done before its fallback. So do, as
/// [`Direct::Decision`], the forward-auth calls: nginx's and
/// Traefik's/Caddy's on their canonical paths, Envoy's ext_authz on its
/// raw one (whose original path forward_auth makes canonical on its own,
/// as the router's front layer leaves it), each for the methods its route
/// takes, HEAD aside (the router strips a HEAD answer's body); without a
/// `[cors]` layer, `GET /check` as [`Direct::Check`]; and a CORS preflight
/// or request for a `cors = true` route as [`Direct::Cors`]. What is
/// decided here is what serves: `direct` is told, not left to find out
/// again (the CORS question is asked once). A path that is not
/// canonicalizable (the router answers the 400), and any other API path or
/// method go to the router as before.
// The request handed back for the router is moved by value, as hyper
// handed it in: boxing it would allocate on every request.
#[allow(clippy::result_large_err)]
pub fn proxy_shortcut(
    state: &AppState,
    direct: impl Fn(Direct, axum::extract::Request) -> crate::listener::ShortcutFuture
    + Send
    + Sync
    + 'static,
) -> crate::listener::Shortcut {
    // With a [cors] layer, the proxy tells which requests are CORS ones.
    let cors = state.cors.is_some().then(|| state.proxy.clone());
    let serve =
        move |mut req: axum::extract::Request| match shortcut_target(&mut req, cors.as_deref()) {
            Some(what) => Ok(direct(what, req)),
            None => Err(req),
        };
    crate::listener::Shortcut {
        serve: Arc::new(serve),
    }
}

/// What the shortcut serves `req` as, if anything (see [`proxy_shortcut`]);
/// the path made canonical unless it is an ext_authz call's. `cors`: the
/// proxy, when there is a `[cors]` layer.
fn shortcut_target(req: &mut axum::extract::Request, cors: Option<&Proxy>) -> Option<Direct> {
    if crate::forward_auth::ext_authz_target(req.uri().path()).is_some() {
        return authz::STANDARD
            .contains(req.method())
            .then_some(Direct::Decision(crate::forward_auth::Endpoint::ExtAuthz));
    }
    let method = req.method().clone();
    let mut endpoint = None;
    let taken = crate::proxy::path::rewrite_if(req, |path| {
        endpoint = match authz::shortcut_endpoint(path, &method) {
            Some(e) => Some(Direct::Decision(e)),
            None => (path == CHECK_PATH && method == axum::http::Method::GET && cors.is_none())
                .then_some(Direct::Check),
        };
        endpoint.is_some() || !may_be_api(path)
    });
    match taken {
        Ok(Some(_)) => Some(match (endpoint, cors) {
            (Some(endpoint), _) => endpoint,
            (None, Some(proxy)) if proxy.wants_cors(req) => Direct::Cors,
            (None, _) => Direct::Proxy,
        }),
        Ok(None) | Err(_) => None,
    }
}

/// `GET /api/v1/auth/check` past the router: its handler, its extractor's
/// answers (the router adds nothing else to it without a `[cors]` layer).
pub async fn check(state: AppState, req: axum::extract::Request) -> Response {
    axum::handler::Handler::call(auth::check, req, state).await
}

fn routes(state: AppState) -> Router {
    let limited = Router::new()
        .route("/api/v1/auth/signup", post(auth::signup))
        .route("/api/v1/auth/login", post(auth::login))
        .route("/api/v1/auth/login/mfa", post(mfa::login))
        .route(
            "/api/v1/auth/oauth/{provider}/start",
            get(federation::start),
        )
        .route(
            "/api/v1/auth/oauth/{provider}/callback",
            get(federation::callback),
        )
        .route("/api/v1/auth/oauth/exchange", post(federation::exchange))
        .route("/api/v1/auth/refresh", post(auth::refresh))
        .route("/api/v1/auth/introspect", post(auth::introspect))
        .route("/api/v1/auth/verify-email", post(recovery::verify_email))
        .route(
            "/api/v1/auth/password-reset",
            post(recovery::password_reset),
        )
        .route(
            "/api/v1/auth/password-reset/confirm",
            post(recovery::password_reset_confirm),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            ratelimit::limit,
        ));
    // The 405 fallback is set before the CORS layer, so that the layer
    // wraps it too and answers a preflight on a POST-only route.
    let api = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readiness::readyz))
        .route("/api/openapi.yaml", get(openapi))
        .route("/.well-known/jwks.json", get(auth::jwks))
        .merge(limited)
        .route("/api/v1/auth/logout", post(auth::logout))
        .route("/api/v1/auth/logout-all", post(auth::logout_all))
        .route(CHECK_PATH, get(auth::check))
        .merge(auth::me_routes())
        .merge(mfa::me_routes())
        .merge(federation::me_routes())
        .merge(admin::routes())
        .method_not_allowed_fallback(method_not_allowed);
    let api = match &state.cors {
        Some(cors) => api
            .layer((**cors).clone())
            .layer(axum::middleware::map_response(only_for_allowed)),
        None => api,
    };
    // The forward-auth endpoints stay outside CORS: an OPTIONS there is an
    // original request to decide, not a preflight to answer.
    Router::new()
        .merge(api)
        .merge(authz::routes())
        .fallback(proxy)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(
            state.auth.config.server.max_body_bytes,
        ))
        .with_state(state)
}

/// [`crate::cors::only_for_allowed`] as a response map.
async fn only_for_allowed(response: Response) -> Response {
    crate::cors::only_for_allowed(response)
}

/// A list body: `{"items": [...]}`.
fn list<T: serde::Serialize>(items: Vec<T>) -> Response {
    axum::Json(json!({ "items": items })).into_response()
}

/// A keyset-paginated body: `{"items": [...], "next_cursor": "..." | null}`.
fn page_of<T: serde::Serialize>(items: Vec<T>, next_cursor: Option<String>) -> Response {
    axum::Json(json!({ "items": items, "next_cursor": next_cursor })).into_response()
}

/// Every path the Auth API does not serve goes to the edge proxy (which
/// answers 404 when no route matches either).
async fn proxy(State(state): State<AppState>, req: axum::extract::Request) -> Response {
    if let Some(cors) = &state.cors
        && state.proxy.wants_cors(&req)
    {
        return crate::cors::proxied(cors, state.proxy.clone(), req).await;
    }
    state.proxy.handle(req).await
}

async fn method_not_allowed() -> Response {
    problem::respond(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this route".into(),
    )
}

/// The process is up.
async fn healthz() -> impl IntoResponse {
    axum::Json(json!({ "status": "ok" }))
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/yaml")], OPENAPI_YAML)
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;

    /// Every endpoint the OpenAPI document lists is one the proxy's
    /// shortcut leaves to the router (but the forward-auth calls it answers
    /// itself, below): an endpoint added outside the API's roots fails here
    /// instead of being proxied.
    #[test]
    fn every_documented_endpoint_stays_with_the_router() {
        let paths: Vec<&str> = OPENAPI_YAML
            .lines()
            .skip_while(|l| *l != "paths:")
            .filter_map(|l| {
                l.strip_prefix("  /")
                    .map(|_| l.trim().trim_end_matches(':'))
            })
            .collect();
        assert!(paths.len() > 40, "{paths:?}");
        for path in paths {
            assert!(may_be_api(path), "{path}");
        }
        for path in ["/films/1", "/", "/apix", "/healthzz/1", "/well-known"] {
            assert!(!may_be_api(path), "{path}");
        }
    }

    /// The shortcut answers nginx's and Traefik's/Caddy's forward-auth
    /// calls for exactly the methods their routes take, HEAD aside; Envoy's
    /// calls, other methods, other cases and near misses go to the router.
    #[test]
    fn forward_auth_calls_the_shortcut_answers() {
        use crate::forward_auth::Endpoint;
        use axum::http::Method;
        let auth_request = "/api/v1/authz/auth-request";
        let forward_auth = "/api/v1/authz/forward-auth";
        for m in authz::STANDARD {
            assert_eq!(
                authz::shortcut_endpoint(auth_request, &m),
                Some(Endpoint::AuthRequest),
                "{m}"
            );
        }
        let purge = Method::from_bytes(b"PURGE").expect("method");
        for m in [Method::HEAD, Method::CONNECT, purge] {
            assert_eq!(authz::shortcut_endpoint(auth_request, &m), None, "{m}");
        }
        assert_eq!(
            authz::shortcut_endpoint(forward_auth, &Method::GET),
            Some(Endpoint::ForwardAuth)
        );
        for m in [Method::HEAD, Method::POST, Method::OPTIONS] {
            assert_eq!(authz::shortcut_endpoint(forward_auth, &m), None, "{m}");
        }
        for path in [
            "/api/v1/authz/auth-request/",
            "/api/v1/authz/forward-auth/x",
            "/API/v1/authz/auth-request",
            "/api/v1/authz/ext-authz/films",
            "/api/v1/authz",
        ] {
            assert_eq!(authz::shortcut_endpoint(path, &Method::GET), None, "{path}");
        }
    }

    /// What the shortcut serves past the router, without a `[cors]` layer:
    /// a proxied path (made canonical), the forward-auth calls on their
    /// routes' methods (Envoy's on its raw path, left as it came: its
    /// original path is made canonical on its own), and `GET /check`
    /// (canonical); HEAD, other methods, other API paths and paths that
    /// cannot be made canonical go to the router.
    #[test]
    fn what_the_shortcut_serves() {
        use crate::forward_auth::Endpoint;
        use axum::http::Method;
        let target = |method: Method, path: &str| {
            let mut req = axum::extract::Request::builder()
                .method(method)
                .uri(path)
                .body(axum::body::Body::empty())
                .expect("request");
            let what = shortcut_target(&mut req, None);
            (what, req.uri().path().to_string())
        };
        let ext_authz = Some(Direct::Decision(Endpoint::ExtAuthz));
        for (method, path, what, seen) in [
            (Method::GET, "/films/./1", Some(Direct::Proxy), "/films/1"),
            (Method::DELETE, "/films//1", Some(Direct::Proxy), "/films/1"),
            (Method::GET, CHECK_PATH, Some(Direct::Check), CHECK_PATH),
            (
                Method::GET,
                "/api/v1/auth/x/../check",
                Some(Direct::Check),
                CHECK_PATH,
            ),
            (
                Method::GET,
                "/api//v1/auth/check",
                Some(Direct::Check),
                CHECK_PATH,
            ),
            (Method::HEAD, CHECK_PATH, None, CHECK_PATH),
            (Method::POST, CHECK_PATH, None, CHECK_PATH),
            (
                Method::GET,
                "/api/v1/auth/check/",
                None,
                "/api/v1/auth/check/",
            ),
            (Method::GET, "/api/v1/auth/me", None, "/api/v1/auth/me"),
            (
                Method::GET,
                "/api/v1/authz/forward-auth",
                Some(Direct::Decision(Endpoint::ForwardAuth)),
                "/api/v1/authz/forward-auth",
            ),
            (
                Method::POST,
                "/api/v1/authz/./auth-request",
                Some(Direct::Decision(Endpoint::AuthRequest)),
                "/api/v1/authz/auth-request",
            ),
            (
                Method::GET,
                "/api/v1/authz/ext-authz",
                ext_authz,
                "/api/v1/authz/ext-authz",
            ),
            (
                Method::DELETE,
                "/api/v1/authz/ext-authz/films/../x",
                ext_authz,
                "/api/v1/authz/ext-authz/films/../x",
            ),
            (
                Method::GET,
                "/api/v1/authz/ext-authz/../../auth/check",
                ext_authz,
                "/api/v1/authz/ext-authz/../../auth/check",
            ),
            (
                Method::HEAD,
                "/api/v1/authz/ext-authz/films",
                None,
                "/api/v1/authz/ext-authz/films",
            ),
            (
                Method::CONNECT,
                "/api/v1/authz/ext-authz/films",
                None,
                "/api/v1/authz/ext-authz/films",
            ),
            // Not under the prefix as it came: the router's (whose front
            // layer makes it canonical; a request left alone is untouched).
            (
                Method::GET,
                "/api/v1/authz/x/../ext-authz/films",
                None,
                "/api/v1/authz/x/../ext-authz/films",
            ),
            (
                Method::GET,
                "/api/v1/authz/ext-authzx",
                None,
                "/api/v1/authz/ext-authzx",
            ),
            (Method::GET, "/../films", None, "/../films"),
        ] {
            assert_eq!(
                target(method.clone(), path),
                (what, seen.to_string()),
                "{method} {path}"
            );
        }
    }
}
