//! What plugins read of a request: the `needs` a plugin of interface 0.2.0
//! or later declares in `configure`, and the records built from them.
//! Copying a string into a plugin is most of what a call costs, so the host
//! leaves out what no plugin of the route reads.

use std::fmt::Display;

use super::bindings::{
    ClientCertParam, HeaderParam, IdentityParam, RequestParam, WitNeeds, v0_2, v0_3,
};
use super::records::{Identity, Request, strs};
use crate::proxy::headers::is_identity_header;

/// What a plugin, or a route's chain (the union of its plugins'), reads
/// beyond the method, the path and the caller's roles, admin flag and
/// expiry, which every plugin gets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Needs {
    /// Every header (what a 0.1.0 plugin gets), not only `headers`.
    pub all_headers: bool,
    /// Header names, lower-case.
    pub headers: Vec<String>,
    pub query: bool,
    pub host: bool,
    pub route: bool,
    /// The user id, login and session id.
    pub user: bool,
    /// The verified TLS client certificate (interface 0.3.0).
    pub client_cert: bool,
    /// How and when the session authenticated: `identity.amr` and
    /// `identity.auth-time` (interface 0.4.0).
    pub amr: bool,
}

/// The request as the gateway sees it, before [`Needs::request`] trims it.
#[derive(Clone, Copy, Debug)]
pub struct RequestParts<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub host: Option<&'a str>,
    pub route: &'a str,
    /// The subject of the TLS client certificate the listener verified for
    /// the request's connection (`crate::tls::PeerCertificate`); None
    /// without one, and for forward-auth decisions.
    pub client_cert: Option<&'a str>,
}

/// The verified caller, before [`Needs::identity`] trims it.
#[derive(Clone, Copy)]
pub struct CallerParts<'a> {
    pub user_id: &'a dyn Display,
    pub login: &'a str,
    pub session_id: &'a dyn Display,
    pub roles: &'a [String],
    pub is_admin: bool,
    pub expires_at: i64,
    /// The token's `amr` (RFC 8176: `pwd`, `otp`, `rcode`, ...); empty in
    /// tokens issued before it existed.
    pub amr: &'a [String],
    /// The token's `auth_time`, seconds since the Unix epoch; None when the
    /// token does not say (issued before it existed).
    pub auth_time: Option<i64>,
}

/// Headers no plugin ever sees: credentials and authgw's identity headers.
fn withheld(name: &str) -> bool {
    name.eq_ignore_ascii_case("authorization")
        || name.eq_ignore_ascii_case("cookie")
        || is_identity_header(name)
}

impl Needs {
    /// Everything a plugin of interface 0.1.0 is given: every field of the
    /// 0.1.0 records. Not the client certificate nor the session's
    /// authentication methods, which 0.1.0 has no fields for (a plugin of the
    /// same chain that declares them still gets them).
    pub fn everything() -> Needs {
        Needs {
            all_headers: true,
            headers: Vec::new(),
            query: true,
            host: true,
            route: true,
            user: true,
            client_cert: false,
            amr: false,
        }
    }

    /// A 0.3.0 plugin's declaration: 0.4.0's without `amr`.
    pub(crate) fn declared_v0_3(wit: v0_3::Needs) -> Needs {
        Needs::declared(WitNeeds {
            headers: wit.headers,
            query: wit.query,
            host: wit.host,
            route: wit.route,
            user: wit.user,
            client_cert: wit.client_cert,
            amr: false,
        })
    }

    /// A 0.2.0 plugin's declaration: 0.3.0's without the client certificate.
    pub(crate) fn declared_v0_2(wit: v0_2::Needs) -> Needs {
        Needs::declared(WitNeeds {
            headers: wit.headers,
            query: wit.query,
            host: wit.host,
            route: wit.route,
            user: wit.user,
            client_cert: false,
            amr: false,
        })
    }

    /// A plugin's declaration, header names lower-cased.
    pub(crate) fn declared(wit: WitNeeds) -> Needs {
        let mut headers: Vec<String> = wit.headers.iter().map(|h| h.to_ascii_lowercase()).collect();
        headers.sort();
        headers.dedup();
        Needs {
            all_headers: false,
            headers,
            query: wit.query,
            host: wit.host,
            route: wit.route,
            user: wit.user,
            client_cert: wit.client_cert,
            amr: wit.amr,
        }
    }

    /// Adds what `other` reads.
    pub fn add(&mut self, other: &Needs) {
        self.all_headers |= other.all_headers;
        for name in &other.headers {
            if !self.headers.contains(name) {
                self.headers.push(name.clone());
            }
        }
        self.query |= other.query;
        self.host |= other.host;
        self.route |= other.route;
        self.user |= other.user;
        self.client_cert |= other.client_cert;
        self.amr |= other.amr;
    }

    /// Whether a request header goes to the plugins.
    pub fn passes_header(&self, name: &str) -> bool {
        !withheld(name)
            && (self.all_headers || self.headers.iter().any(|h| h.eq_ignore_ascii_case(name)))
    }

    /// Calls `f` with the plugins' records: what is needed, nothing more,
    /// borrowed from `parts`, `headers` and `caller`. Header names must be
    /// lower-case, as a `HeaderMap`'s are. Only what the interface holds in
    /// another form is made: a `&str` slice of the roles (and of `amr` when
    /// declared), the user and session ids as text when declared, and a
    /// slice of the headers when any are.
    pub fn with_records<'h, T>(
        &self,
        parts: RequestParts<'_>,
        headers: impl IntoIterator<Item = (&'h str, &'h str)>,
        caller: Option<CallerParts<'_>>,
        f: impl FnOnce(&RequestParam<'_>, Option<&IdentityParam<'_>>) -> T,
    ) -> T {
        let headers = self.header_params(headers);
        let request = self.request_param(parts, &headers);
        let text = caller.as_ref().map(|caller| self.caller_text(caller));
        let identity = caller
            .as_ref()
            .zip(text.as_ref())
            .map(|(caller, text)| self.identity_param(caller, text));
        f(&request, identity.as_ref())
    }

    /// The plugins' request record, owned (tests, `authgw plugin test`):
    /// what [`Needs::with_records`] passes, header names lower-cased.
    pub fn request<'h>(
        &self,
        parts: RequestParts<'_>,
        headers: impl IntoIterator<Item = (&'h str, &'h str)>,
    ) -> Request {
        let headers = self.header_params(headers);
        Request::from_param(&self.request_param(parts, &headers))
    }

    /// The plugins' identity record, owned: what [`Needs::with_records`]
    /// passes.
    pub fn identity(&self, caller: CallerParts<'_>) -> Identity {
        let text = self.caller_text(&caller);
        Identity::from_param(&self.identity_param(&caller, &text))
    }

    /// The headers that pass, in order; none unless some are read.
    fn header_params<'h>(
        &self,
        headers: impl IntoIterator<Item = (&'h str, &'h str)>,
    ) -> Vec<HeaderParam<'h>> {
        if !self.all_headers && self.headers.is_empty() {
            return Vec::new();
        }
        headers
            .into_iter()
            .filter(|(name, _)| self.passes_header(name))
            .map(|(name, value)| HeaderParam { name, value })
            .collect()
    }

    fn request_param<'a>(
        &self,
        parts: RequestParts<'a>,
        headers: &'a [HeaderParam<'a>],
    ) -> RequestParam<'a> {
        RequestParam {
            method: parts.method,
            path: parts.path,
            query: parts.query.filter(|_| self.query),
            host: parts.host.filter(|_| self.host),
            headers,
            route: self.route.then_some(parts.route),
            client_cert: parts
                .client_cert
                .filter(|_| self.client_cert)
                .map(|subject| ClientCertParam { subject }),
        }
    }

    fn caller_text<'c>(&self, caller: &CallerParts<'c>) -> CallerText<'c> {
        CallerText {
            user_id: self.user.then(|| caller.user_id.to_string()),
            session_id: self.user.then(|| caller.session_id.to_string()),
            roles: strs(caller.roles),
            amr: self.amr.then(|| strs(caller.amr)),
        }
    }

    fn identity_param<'a>(
        &self,
        caller: &CallerParts<'a>,
        text: &'a CallerText<'a>,
    ) -> IdentityParam<'a> {
        IdentityParam {
            user_id: text.user_id.as_deref(),
            login: self.user.then_some(caller.login),
            roles: &text.roles,
            is_admin: caller.is_admin,
            session_id: text.session_id.as_deref(),
            expires_at: caller.expires_at,
            amr: text.amr.as_deref(),
            auth_time: caller.auth_time.filter(|_| self.amr),
        }
    }
}

/// What an identity record borrows that the caller holds in another form.
struct CallerText<'c> {
    user_id: Option<String>,
    session_id: Option<String>,
    roles: Vec<&'c str>,
    amr: Option<Vec<&'c str>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts() -> RequestParts<'static> {
        RequestParts {
            method: "GET",
            path: "/films/1",
            query: Some("hd=1"),
            host: Some("cinema.example"),
            route: "films",
            client_cert: Some("CN=ops,O=cinema"),
        }
    }

    const HEADERS: [(&str, &str); 5] = [
        ("accept", "text/html"),
        ("authorization", "Bearer secret"),
        ("cookie", "access_token=secret"),
        ("X-User-Id", "forged"),
        ("x-request-id", "r-1"),
    ];

    /// A plugin that declares nothing gets the method and path only.
    #[test]
    fn nothing_declared_passes_method_and_path_only() {
        let request = Needs::default().request(parts(), HEADERS);
        assert_eq!(request.method, "GET");
        assert_eq!(request.path, "/films/1");
        assert_eq!(request.query, None);
        assert_eq!(request.host, None);
        assert_eq!(request.route, None);
        assert!(request.client_cert.is_none());
        assert!(request.headers.is_empty());
    }

    /// The client certificate's subject passes only when declared, and only
    /// when the request came with one; a 0.2.0 declaration never asks for it,
    /// nor does "everything" (what a 0.1.0 plugin gets).
    #[test]
    fn client_cert_passes_only_when_declared_and_present() {
        let needs = Needs {
            client_cert: true,
            ..Needs::default()
        };
        let request = needs.request(parts(), HEADERS);
        assert_eq!(
            request.client_cert.map(|c| c.subject).as_deref(),
            Some("CN=ops,O=cinema")
        );
        let without = RequestParts {
            client_cert: None,
            ..parts()
        };
        assert!(needs.request(without, HEADERS).client_cert.is_none());
        assert!(
            Needs::everything()
                .request(parts(), HEADERS)
                .client_cert
                .is_none()
        );
        let old = Needs::declared_v0_2(v0_2::Needs {
            headers: vec![],
            query: true,
            host: true,
            route: true,
            user: true,
        });
        assert!(!old.client_cert);
        let mut chain = Needs::everything();
        chain.add(&needs);
        assert!(chain.request(parts(), HEADERS).client_cert.is_some());
    }

    /// The session's `amr` and `auth_time` pass only when declared (by any
    /// plugin of the chain); never to a plugin of 0.3.0 or older, whose
    /// declarations cannot ask for them, nor with "everything" (0.1.0).
    /// An unknown `auth_time` stays absent even when declared.
    #[test]
    fn amr_and_auth_time_pass_only_when_declared() {
        let amr = ["pwd".to_string(), "otp".to_string()];
        let caller = CallerParts {
            user_id: &"u-1",
            login: "alice",
            session_id: &"s-1",
            roles: &[],
            is_admin: true,
            expires_at: 1,
            amr: &amr,
            auth_time: Some(1_700_000_000),
        };
        let needs = Needs {
            amr: true,
            ..Needs::default()
        };
        let identity = needs.identity(caller);
        assert_eq!(identity.amr.as_deref(), Some(&amr[..]));
        assert_eq!(identity.auth_time, Some(1_700_000_000));
        assert_eq!(identity.login, None, "amr is not the user fields");
        let unknown = needs.identity(CallerParts {
            amr: &[],
            auth_time: None,
            ..caller
        });
        assert_eq!(
            (unknown.amr, unknown.auth_time),
            (Some(Vec::new()), None),
            "a token from before amr: declared, so an empty list"
        );

        let bare = Needs::default().identity(caller);
        assert_eq!((bare.amr, bare.auth_time), (None, None));
        let everything = Needs::everything().identity(caller);
        assert_eq!((everything.amr, everything.auth_time), (None, None));
        let v0_3 = Needs::declared_v0_3(v0_3::Needs {
            headers: vec![],
            query: true,
            host: true,
            route: true,
            user: true,
            client_cert: true,
        });
        assert!(!v0_3.amr && v0_3.client_cert);
        let v0_2 = Needs::declared_v0_2(v0_2::Needs {
            headers: vec![],
            query: true,
            host: true,
            route: true,
            user: true,
        });
        assert!(!v0_2.amr);

        let mut chain = v0_3;
        chain.add(&needs);
        assert_eq!(chain.identity(caller).amr.as_deref(), Some(&amr[..]));
    }

    /// Declared headers pass (case-insensitively); credentials never do,
    /// even when declared or when everything is asked for.
    #[test]
    fn declared_headers_pass_and_credentials_never_do() {
        let needs = Needs::declared(WitNeeds {
            headers: vec!["X-Request-Id".into(), "authorization".into()],
            query: true,
            host: false,
            route: true,
            user: false,
            client_cert: false,
            amr: false,
        });
        let request = needs.request(parts(), HEADERS);
        let names: Vec<_> = request.headers.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["x-request-id"]);
        assert_eq!(request.query.as_deref(), Some("hd=1"));
        assert_eq!(request.host, None);
        assert_eq!(request.route.as_deref(), Some("films"));

        let all = Needs::everything().request(parts(), HEADERS);
        let names: Vec<_> = all.headers.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["accept", "x-request-id"]);
    }

    /// The union of a chain's needs reads what either plugin reads.
    #[test]
    fn union_reads_what_either_reads() {
        let mut chain = Needs::default();
        chain.add(&Needs {
            headers: vec!["accept".into()],
            user: true,
            ..Needs::default()
        });
        chain.add(&Needs {
            headers: vec!["accept".into(), "x-a".into()],
            host: true,
            ..Needs::default()
        });
        assert_eq!(chain.headers, ["accept", "x-a"]);
        assert!(chain.user && chain.host && !chain.query && !chain.route);
        let caller = CallerParts {
            user_id: &"u-1",
            login: "alice",
            session_id: &"s-1",
            roles: &["subscriber".to_string()],
            is_admin: false,
            expires_at: 1,
            amr: &[],
            auth_time: None,
        };
        assert_eq!(chain.identity(caller).login.as_deref(), Some("alice"));
        let bare = Needs::default().identity(caller);
        assert_eq!(
            (bare.user_id, bare.login, bare.session_id, bare.roles),
            (None, None, None, vec!["subscriber".to_string()])
        );
    }
}
