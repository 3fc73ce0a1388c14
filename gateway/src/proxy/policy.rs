//! Phase 3 of the pipeline: the route's plugins. This module turns the HTTP
//! request and the verified claims into the plugin interface's records and
//! applies an allow's header changes; the plugins module knows no HTTP.

use axum::http::{HeaderMap, HeaderName, HeaderValue, Request};

use super::headers::is_identity_header;
use super::routes::Route;
use crate::error::{Error, Result};
use crate::plugins::{self, CallerParts, Decision, Identity, Needs, RequestParts};
use crate::tls::PeerCertificate;
use crate::tokens::Claims;

/// Header changes an allow asks for on the upstream request.
#[derive(Debug, Default)]
pub struct HeaderChanges {
    set: Vec<(String, String)>,
    remove: Vec<String>,
}

impl HeaderChanges {
    /// Removes, then sets. Identity headers are authgw's alone: a plugin
    /// cannot set or remove `X-User-*`.
    pub fn apply(self, headers: &mut HeaderMap) {
        for name in self.remove {
            if !is_identity_header(&name) {
                headers.remove(name.as_str());
            }
        }
        for (name, value) in self.set {
            if is_identity_header(&name) {
                continue;
            }
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(&value),
            ) {
                headers.insert(n, v);
            }
        }
    }
}

/// Runs the route's plugins; the first deny wins (its status, reason and
/// code go to the client), allows' header changes accumulate, and a plugin
/// failure fails closed with 503.
pub fn decide<B>(
    route: &Route,
    req: &Request<B>,
    host: Option<&str>,
    identity: Option<&Claims>,
) -> Result<HeaderChanges> {
    if route.plugins.is_empty() {
        return Ok(HeaderChanges::default());
    }
    // Borrowed from the request and the claims: no string is copied
    // before the plugin's own memory.
    let decided = route.needs.with_records(
        request_parts(route.name(), req, host),
        request_headers(req),
        identity.map(caller_parts),
        |request, identity| plugins::run_chain_params(&route.plugins, request, identity),
    );
    match decided {
        Ok(Decision::Allow {
            set_headers,
            remove_headers,
        }) => Ok(HeaderChanges {
            set: set_headers,
            remove: remove_headers,
        }),
        Ok(Decision::Deny {
            status,
            reason,
            code,
        }) => Err(Error::Denied {
            status,
            reason,
            code,
        }),
        Err(failure) => Err(Error::PolicyFailed(failure.to_string())),
    }
}

/// The plugins' view of a request: what the route's chain reads of the
/// method, raw path and query, host, route, headers and the subject of the
/// TLS client certificate the listener verified (a [`PeerCertificate`] in
/// the request's extensions; the forward-auth endpoints remove theirs, as
/// it is the calling proxy's). Credentials and identity headers never reach
/// a plugin, nor do header values that are not UTF-8.
pub fn request_record<B>(
    needs: &Needs,
    route: &str,
    req: &Request<B>,
    host: Option<&str>,
) -> plugins::Request {
    needs.request(request_parts(route, req, host), request_headers(req))
}

fn request_parts<'a, B>(
    route: &'a str,
    req: &'a Request<B>,
    host: Option<&'a str>,
) -> RequestParts<'a> {
    RequestParts {
        method: req.method().as_str(),
        path: req.uri().path(),
        query: req.uri().query(),
        host,
        route,
        client_cert: req
            .extensions()
            .get::<PeerCertificate>()
            .map(|cert| &*cert.subject),
    }
}

/// The request's headers as text; a value that is not UTF-8 is left out.
fn request_headers<B>(req: &Request<B>) -> impl Iterator<Item = (&str, &str)> {
    req.headers()
        .iter()
        .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?)))
}

/// The plugins' view of the verified caller: what the route's chain reads
/// of the claims. `amr` and `auth_time` (interface 0.4.0, `needs.amr`) as
/// the token has them; an `auth_time` of 0 (a token issued before it
/// existed) is not passed.
pub fn identity_record(needs: &Needs, claims: &Claims) -> Identity {
    needs.identity(caller_parts(claims))
}

fn caller_parts(claims: &Claims) -> CallerParts<'_> {
    CallerParts {
        user_id: &claims.sub,
        login: &claims.login,
        session_id: &claims.sid,
        roles: &claims.roles,
        is_admin: claims.adm,
        expires_at: claims.exp,
        amr: &claims.amr,
        auth_time: (claims.auth_time > 0).then_some(claims.auth_time),
    }
}
