//! The plugins' records as owned values, for what builds a record once and
//! keeps it: tests, benchmarks and `authgw plugin test`. The proxy builds
//! borrowed ones instead ([`super::Needs::with_records`]), from the request
//! and the verified claims, without copying a string on the host; both
//! reach a plugin the same way, through [`super::chain::decide`].

use super::bindings::{ClientCertParam, HeaderParam, IdentityParam, RequestParam};

/// One request header. Names are lower-case.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    pub value: String,
}

/// A TLS client certificate the listener verified.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientCert {
    pub subject: String,
}

/// The request, as plugins/wit/policy.wit's `request` record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub host: Option<String>,
    pub headers: Vec<Header>,
    pub route: Option<String>,
    pub client_cert: Option<ClientCert>,
}

/// The verified caller, as plugins/wit/policy.wit's `identity` record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    pub user_id: Option<String>,
    pub login: Option<String>,
    pub roles: Vec<String>,
    pub is_admin: bool,
    pub session_id: Option<String>,
    pub expires_at: i64,
    pub amr: Option<Vec<String>>,
    pub auth_time: Option<i64>,
}

impl Request {
    /// A copy of a borrowed record, header names lower-cased.
    pub(crate) fn from_param(r: &RequestParam<'_>) -> Request {
        Request {
            method: r.method.to_string(),
            path: r.path.to_string(),
            query: r.query.map(str::to_string),
            host: r.host.map(str::to_string),
            headers: r
                .headers
                .iter()
                .map(|h| Header {
                    name: h.name.to_ascii_lowercase(),
                    value: h.value.to_string(),
                })
                .collect(),
            route: r.route.map(str::to_string),
            client_cert: r.client_cert.as_ref().map(|c| ClientCert {
                subject: c.subject.to_string(),
            }),
        }
    }

    /// Calls `f` with this record borrowed, as `decide` takes it.
    pub(crate) fn with_param<T>(&self, f: impl FnOnce(&RequestParam<'_>) -> T) -> T {
        let headers: Vec<HeaderParam<'_>> = self
            .headers
            .iter()
            .map(|h| HeaderParam {
                name: &h.name,
                value: &h.value,
            })
            .collect();
        f(&RequestParam {
            method: &self.method,
            path: &self.path,
            query: self.query.as_deref(),
            host: self.host.as_deref(),
            headers: &headers,
            route: self.route.as_deref(),
            client_cert: self.client_cert.as_ref().map(|c| ClientCertParam {
                subject: &c.subject,
            }),
        })
    }
}

impl Identity {
    /// A copy of a borrowed record.
    pub(crate) fn from_param(id: &IdentityParam<'_>) -> Identity {
        Identity {
            user_id: id.user_id.map(str::to_string),
            login: id.login.map(str::to_string),
            roles: id.roles.iter().map(|r| r.to_string()).collect(),
            is_admin: id.is_admin,
            session_id: id.session_id.map(str::to_string),
            expires_at: id.expires_at,
            amr: id
                .amr
                .map(|amr| amr.iter().map(|m| m.to_string()).collect()),
            auth_time: id.auth_time,
        }
    }

    /// Calls `f` with this record borrowed, as `decide` takes it.
    pub(crate) fn with_param<T>(&self, f: impl FnOnce(&IdentityParam<'_>) -> T) -> T {
        let roles = strs(&self.roles);
        let amr = self.amr.as_deref().map(strs);
        f(&IdentityParam {
            user_id: self.user_id.as_deref(),
            login: self.login.as_deref(),
            roles: &roles,
            is_admin: self.is_admin,
            session_id: self.session_id.as_deref(),
            expires_at: self.expires_at,
            amr: amr.as_deref(),
            auth_time: self.auth_time,
        })
    }
}

/// `strings` as the interface's `list<string>` is passed: one slice of
/// `&str` (one allocation; the strings are not copied).
pub(crate) fn strs(strings: &[String]) -> Vec<&str> {
    strings.iter().map(String::as_str).collect()
}
