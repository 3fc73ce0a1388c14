//! Phase 3 of the pipeline: the route's plugins. This module turns the HTTP
//! request and the verified claims into the plugin interface's records and
//! applies an allow's header changes; the plugins module knows no HTTP.

use axum::http::{HeaderMap, HeaderName, HeaderValue, Request};

use super::routes::Route;
use crate::error::{Error, Result};
use crate::plugins::{self, Decision, Header, Identity};
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
            if !name.starts_with("x-user-") {
                headers.remove(name.as_str());
            }
        }
        for (name, value) in self.set {
            if name.starts_with("x-user-") {
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

/// Runs the route's plugins; the first deny wins (its status and reason go
/// to the client), allows' header changes accumulate, and a plugin failure
/// fails closed with 503.
pub fn decide<B>(
    route: &Route,
    req: &Request<B>,
    host: Option<&str>,
    identity: Option<&Claims>,
) -> Result<HeaderChanges> {
    if route.plugins.is_empty() {
        return Ok(HeaderChanges::default());
    }
    let request = request_record(route.name(), req, host);
    let identity = identity.map(identity_record);
    match plugins::run_chain(&route.plugins, &request, identity.as_ref()) {
        Ok(Decision::Allow {
            set_headers,
            remove_headers,
        }) => Ok(HeaderChanges {
            set: set_headers,
            remove: remove_headers,
        }),
        Ok(Decision::Deny { status, reason }) => Err(Error::Denied { status, reason }),
        Err(failure) => Err(Error::PolicyFailed(failure.to_string())),
    }
}

/// The plugin's view of a request: method, raw path and query, host, route,
/// and the headers minus credentials and identity headers (the token never
/// reaches a plugin). Header values that are not UTF-8 are left out.
pub fn request_record<B>(route: &str, req: &Request<B>, host: Option<&str>) -> plugins::Request {
    let headers = req
        .headers()
        .iter()
        .filter(|(name, _)| {
            let n = name.as_str();
            n != "authorization" && n != "cookie" && !n.starts_with("x-user-")
        })
        .filter_map(|(name, value)| {
            Some(Header {
                name: name.as_str().to_string(),
                value: value.to_str().ok()?.to_string(),
            })
        })
        .collect();
    plugins::Request {
        method: req.method().as_str().to_string(),
        path: req.uri().path().to_string(),
        query: req.uri().query().map(str::to_string),
        host: host.map(str::to_string),
        headers,
        route: route.to_string(),
    }
}

/// The plugin's view of the verified caller.
pub fn identity_record(claims: &Claims) -> Identity {
    Identity {
        user_id: claims.sub.to_string(),
        login: claims.login.clone(),
        roles: claims.roles.clone(),
        is_admin: claims.adm,
        session_id: claims.sid.to_string(),
        expires_at: claims.exp,
    }
}
