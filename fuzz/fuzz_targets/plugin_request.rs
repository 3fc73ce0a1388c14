//! The conversion of an HTTP request into the plugin's request record
//! (`proxy::policy::request_record`), from arbitrary methods, paths, queries,
//! hosts and headers, after the canonical request target
//! (`proxy::path::rewrite`), as the proxy does it.
//!
//! Canonicalizer properties: nothing panics; a refused path is refused by
//! `canonicalize` alike; an accepted one is canonical again unchanged and
//! without allocating, never holds `//`, `/./`, `/../`, a final `/.` or
//! `/..` or an encoded unreserved character, and the query is kept byte for
//! byte. The record's path is exactly the canonical path.
//!
//! Properties: nothing panics; the record never carries `authorization`,
//! `cookie` or any `x-user-*` header (the token and spoofed identities never
//! reach a plugin). With everything needed (a 0.1.0 plugin), every other
//! valid UTF-8 header is there, in order, and method, path, query, host and
//! route are passed through unchanged. With arbitrary declared needs, only
//! declared headers are there and undeclared parts are absent.
#![no_main]

use arbitrary::Arbitrary;
use axum::http::{HeaderName, HeaderValue, Method, Request, Uri};
use gateway::plugins::Needs;
use gateway::proxy::path::{canonicalize, rewrite};
use gateway::proxy::policy::request_record;
use libfuzzer_sys::fuzz_target;
use std::borrow::Cow;

#[derive(Arbitrary, Debug)]
struct Input {
    method: String,
    path_and_query: String,
    host: Option<String>,
    route: String,
    headers: Vec<(String, Vec<u8>)>,
    declared: Vec<String>,
    query: bool,
    host_needed: bool,
    route_needed: bool,
}

fuzz_target!(|input: Input| {
    let Ok(method) = Method::from_bytes(input.method.as_bytes()) else {
        return;
    };
    let Ok(uri) = format!("/{}", input.path_and_query.trim_start_matches('/')).parse::<Uri>()
    else {
        return;
    };
    let mut req = Request::new(());
    *req.method_mut() = method.clone();
    *req.uri_mut() = uri.clone();
    let raw = uri;
    if let Err(refused) = rewrite(&mut req) {
        assert_eq!(canonicalize(raw.path()).err(), Some(refused));
        return;
    }
    let uri = req.uri().clone();
    check_canonical(uri.path());
    assert_eq!(uri.query(), raw.query(), "the query passes unchanged");
    let mut expected = Vec::new();
    for (name, value) in &input.headers {
        let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value),
        ) else {
            continue;
        };
        req.headers_mut().append(n, v);
    }
    for (n, v) in req.headers() {
        let name = n.as_str();
        if name == "authorization" || name == "cookie" || name.starts_with("x-user-") {
            continue;
        }
        if let Ok(text) = v.to_str() {
            expected.push((name.to_string(), text.to_string()));
        }
    }
    let needs = Needs {
        headers: input.declared.clone(),
        query: input.query,
        host: input.host_needed,
        route: input.route_needed,
        ..Needs::default()
    };
    let some = request_record(&needs, &input.route, &req, input.host.as_deref());
    assert_eq!(some.method, method.as_str());
    assert_eq!(some.path, uri.path());
    assert_eq!(some.query.is_some(), input.query && uri.query().is_some());
    assert_eq!(
        some.host.is_some(),
        input.host_needed && input.host.is_some()
    );
    assert_eq!(some.route.is_some(), input.route_needed);
    for h in &some.headers {
        assert!(
            input
                .declared
                .iter()
                .any(|d| d.eq_ignore_ascii_case(&h.name)),
            "{} was not declared",
            h.name
        );
        assert!(
            h.name != "authorization" && h.name != "cookie" && !h.name.starts_with("x-user-"),
            "{} reached a plugin",
            h.name
        );
    }

    let record = request_record(
        &Needs::everything(),
        &input.route,
        &req,
        input.host.as_deref(),
    );
    assert_eq!(record.method, method.as_str());
    assert_eq!(record.path, uri.path());
    assert_eq!(record.query.as_deref(), uri.query());
    assert_eq!(record.host.as_deref(), input.host.as_deref());
    assert_eq!(record.route.as_deref(), Some(input.route.as_str()));
    let got: Vec<(String, String)> = record
        .headers
        .into_iter()
        .map(|h| (h.name, h.value))
        .collect();
    for (name, _) in &got {
        assert!(
            name != "authorization" && name != "cookie" && !name.starts_with("x-user-"),
            "{name} reached a plugin"
        );
    }
    assert_eq!(got, expected);
});

/// What every canonical path satisfies.
fn check_canonical(path: &str) {
    assert!(path.starts_with('/'), "{path:?}");
    for bad in ["//", "/./", "/../"] {
        assert!(!path.contains(bad), "{path:?} holds {bad}");
    }
    assert!(!path.ends_with("/.") && !path.ends_with("/.."), "{path:?}");
    let b = path.as_bytes();
    for i in 0..b.len() {
        if b[i] == b'%' {
            let hex = &path[i + 1..i + 3];
            let v = u8::from_str_radix(hex, 16).expect("a valid percent-encoding");
            assert!(
                !(v.is_ascii_alphanumeric() || b"-._~".contains(&v)),
                "{path:?} encodes an unreserved character"
            );
            assert_eq!(hex, hex.to_ascii_uppercase(), "{path:?}: lower-case hex");
        }
    }
    let again = canonicalize(path).expect("a canonical path is accepted");
    assert!(
        matches!(again.path, Cow::Borrowed(p) if p == path),
        "{path:?} is not a fixed point"
    );
}
