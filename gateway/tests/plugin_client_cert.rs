//! The verified TLS client certificate as a plugin input (issue 22):
//! interface 0.3.0's `request.client-cert`; what reaches plugins of each
//! interface version (0.3.0, 0.2.0, 0.1.0); role-rules' `client_cert` rules
//! through the proxy (the certificate put into the request's extensions, as
//! the TLS listener does) and through forward-auth (never passed); and
//! `plugin test` cases that carry a certificate. Real components from
//! plugins/dist/ (scripts/build-plugins.sh).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request as HttpRequest, StatusCode};
use common::upstream::{Echo, route};
use common::*;
use gateway::config::{AuthMode, Config, RouteConfig};
use gateway::plugins::{
    CallerParts, Decision, HostConfig, Identity, Needs, Plugin, PluginHost, PluginSet, PluginSpec,
    chain_needs, run_chain,
};
use gateway::proxy::policy::request_record;
use gateway::tls::PeerCertificate;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

/// The subject the admin-mtls example demands on `/admin`.
const OPS: &str = "CN=ops,O=cinema";
/// role-rules' reasons (plugins/role-rules/src/rules.rs).
const REQUIRED: &str = "a verified TLS client certificate is required";
const NOT_ALLOWED: &str = "this TLS client certificate is not allowed here";

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins/role-rules/examples")
        .join(name)
}

/// plugins/role-rules/examples/admin-mtls.json: `/admin` for administrators
/// with the certificate `CN=ops,O=cinema`, `/ops/status` (GET) for any
/// verified certificate, `/films` (GET, HEAD) for everyone.
fn admin_mtls() -> Value {
    serde_json::from_str(&std::fs::read_to_string(example("admin-mtls.json")).unwrap()).unwrap()
}

fn host() -> &'static PluginHost {
    static HOST: OnceLock<PluginHost> = OnceLock::new();
    HOST.get_or_init(|| PluginHost::new(&HostConfig::default()).expect("plugin host"))
}

fn load(specs: &[(&str, &str, Value)]) -> PluginSet {
    let specs: Vec<PluginSpec> = specs
        .iter()
        .map(|(name, file, config)| {
            let mut spec = plugin(name, file, config.clone());
            spec.deadline = Duration::from_millis(250);
            spec
        })
        .collect();
    host().load(&specs, Path::new("/")).expect("plugins load")
}

fn one(set: &PluginSet, name: &str) -> Arc<Plugin> {
    set.get(name).expect("plugin in set")
}

/// `GET path` with `x-request-id`, carrying `cert` in its extensions as the
/// listener puts it there.
fn http_request(path: &str, cert: Option<&str>) -> HttpRequest<()> {
    let mut req = HttpRequest::get(path)
        .header("x-request-id", "r-1")
        .body(())
        .unwrap();
    if let Some(subject) = cert {
        req.extensions_mut().insert(PeerCertificate {
            subject: subject.into(),
        });
    }
    req
}

fn root(needs: &Needs) -> Identity {
    needs.identity(CallerParts {
        user_id: &"5f0c7e9a-0000-4000-8000-000000000001",
        login: "root",
        session_id: &"5f0c7e9a-0000-4000-8000-000000000002",
        roles: &[],
        is_admin: true,
        expires_at: 4_102_444_800,
        amr: &[],
        auth_time: None,
    })
}

fn deny(reason: &str) -> Decision {
    Decision::Deny {
        status: 403,
        reason: reason.into(),
        code: None,
    }
}

/// A plugin of 0.3.0 or later whose config reads the certificate
/// (role-rules, 0.4.0, with admin-mtls.json) declares `needs.client-cert`
/// and receives the exact subject of a `PeerCertificate` in the request's
/// extensions; without the extension, or when no plugin of the chain
/// declares it (role-rules with the cinema rules), it gets none. (The 0.3.0
/// build, fixtures/role-rules-v0-3, is in tests/plugin_mfa.rs.)
#[test]
fn a_0_3_0_plugin_gets_the_subject_only_when_declared_and_present() {
    let set = load(&[
        ("mtls", "role-rules", admin_mtls()),
        ("cinema", "role-rules", cinema_rules()),
    ]);
    let mtls = [one(&set, "mtls")];
    assert_eq!(mtls[0].interface_version(), "0.4.0");
    assert!(mtls[0].needs().client_cert);
    assert!(!one(&set, "cinema").needs().client_cert);
    let needs = chain_needs(&mtls);

    let with = request_record(
        &needs,
        "admin",
        &http_request("/admin/users", Some(OPS)),
        None,
    );
    assert_eq!(
        with.client_cert.as_ref().map(|c| c.subject.as_str()),
        Some(OPS)
    );
    assert_eq!(
        run_chain(&mtls, &with, Some(&root(&needs))).unwrap(),
        Decision::allow()
    );

    let without = request_record(&needs, "admin", &http_request("/admin/users", None), None);
    assert!(without.client_cert.is_none());
    assert_eq!(
        run_chain(&mtls, &without, Some(&root(&needs))).unwrap(),
        deny(REQUIRED)
    );

    let other = request_record(
        &needs,
        "admin",
        &http_request("/admin/users", Some("CN=intern,O=cinema")),
        None,
    );
    assert_eq!(
        run_chain(&mtls, &other, Some(&root(&needs))).unwrap(),
        deny(NOT_ALLOWED)
    );

    // Not declared: the certificate stays out of the record.
    let cinema = chain_needs(&[one(&set, "cinema")]);
    let undeclared = request_record(&cinema, "films", &http_request("/films", Some(OPS)), None);
    assert!(undeclared.client_cert.is_none());
}

/// A 0.2.0 plugin (header-stamp) and a 0.1.0 plugin (the legacy fixture)
/// still load, report their versions, never declare the certificate, and
/// decide exactly as before, also in a chain after a 0.3.0 plugin whose
/// record carries one (the host adapts the record to their shapes).
#[test]
fn older_plugins_load_and_decide_as_before_beside_a_client_cert() {
    let set = load(&[
        ("mtls", "role-rules", admin_mtls()),
        (
            "stamp",
            "header-stamp",
            json!({"require": ["x-request-id"], "set": {"x-login": "{login}", "x-r": "{route}"}}),
        ),
        ("old", "legacy", json!({})),
    ]);
    let (mtls, stamp, old) = (one(&set, "mtls"), one(&set, "stamp"), one(&set, "old"));
    assert_eq!(stamp.interface_version(), "0.2.0");
    assert_eq!(old.interface_version(), "0.1.0");
    assert!(!stamp.needs().client_cert && !old.needs().client_cert);
    assert_eq!(
        *stamp.needs(),
        Needs {
            headers: vec!["x-request-id".into()],
            route: true,
            user: true,
            ..Needs::default()
        }
    );
    let expected = Decision::Allow {
        set_headers: vec![
            ("x-login".into(), "root".into()),
            ("x-r".into(), "admin".into()),
            ("x-legacy".into(), "admin root x-request-id".into()),
        ],
        remove_headers: vec![],
    };

    // On their own, with no certificate anywhere: as before 0.3.0.
    let alone = [stamp.clone(), old.clone()];
    let needs = chain_needs(&alone);
    let record = request_record(&needs, "admin", &http_request("/admin/x", Some(OPS)), None);
    assert!(record.client_cert.is_none(), "neither declares it");
    assert_eq!(
        run_chain(&alone, &record, Some(&root(&needs))).unwrap(),
        expected
    );

    // After a 0.3.0 plugin that reads the certificate: the record carries
    // it, the older plugins decide the same.
    let chain = [mtls, stamp, old];
    let needs = chain_needs(&chain);
    assert!(needs.client_cert);
    let record = request_record(&needs, "admin", &http_request("/admin/x", Some(OPS)), None);
    assert!(record.client_cert.is_some());
    assert_eq!(
        run_chain(&chain, &record, Some(&root(&needs))).unwrap(),
        expected
    );
    let record = request_record(&needs, "admin", &http_request("/admin/x", None), None);
    assert_eq!(
        run_chain(&chain, &record, Some(&root(&needs))).unwrap(),
        deny(REQUIRED),
        "the first deny still wins"
    );
}

/// `authgw plugin test` cases may say `client_cert = "subject"`: the
/// admin-mtls example's cases (with and without a certificate, the right
/// and a wrong subject) all pass; a certificate given to a plugin that did
/// not declare it does not reach it (the cinema rules ignore it).
#[test]
fn plugin_test_cases_may_carry_a_client_certificate() {
    let authgw = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_authgw"))
            .args(args)
            .env_remove("AUTHGW_CONFIG")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap()
    };
    let rules = dist("role-rules");
    let out = authgw(&[
        "plugin",
        "test",
        rules.to_str().unwrap(),
        "--config",
        example("admin-mtls.json").to_str().unwrap(),
        "--cases",
        example("admin-mtls-cases.toml").to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("8 passed, 0 failed"), "{stdout}");

    let dir = tempfile::tempdir().unwrap();
    let cases = dir.path().join("cases.toml");
    std::fs::write(
        &cases,
        r#"
[[case]]
name = "a certificate the cinema rules do not read changes nothing"
method = "DELETE"
path = "/films/7"
client_cert = "CN=ops,O=cinema"
identity = { roles = ["trial"] }
expect = { decision = "deny", status = 403, reason = "no rule allows this request" }
"#,
    )
    .unwrap();
    let out = authgw(&[
        "plugin",
        "test",
        rules.to_str().unwrap(),
        "--config",
        example("cinema.json").to_str().unwrap(),
        "--cases",
        cases.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("1 passed, 0 failed"), "{stdout}");
}

/// `/admin` demands an administrator with the certificate `CN=ops,O=cinema`
/// (role-rules, admin-mtls.json), on a gateway that trusts 127.0.0.1 as a
/// forward-auth proxy.
async fn admin_gateway(echo: &Echo) -> TestApp {
    let url = echo.url();
    spawn_app_with(move |c: &mut Config| {
        c.server.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
        c.plugins = vec![plugin("admin-mtls", "role-rules", admin_mtls())];
        c.routes = vec![RouteConfig {
            plugins: vec!["admin-mtls".into()],
            ..route("admin", "/admin", &url, AuthMode::Required)
        }];
    })
    .await
}

/// One request through the gateway's router (what the listener serves),
/// from 127.0.0.1, with `cert` in its extensions as the TLS listener puts
/// it there for a verified client certificate.
async fn through_router(
    router: &axum::Router,
    req: axum::http::request::Builder,
    cert: Option<&str>,
) -> (StatusCode, Value) {
    let mut req = req.body(Body::empty()).unwrap();
    req.extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40_000))));
    if let Some(subject) = cert {
        req.extensions_mut().insert(PeerCertificate {
            subject: subject.into(),
        });
    }
    let response = router.clone().oneshot(req).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, body)
}

/// An admin route that demands mTLS, through the proxy: an administrator's
/// request without a client certificate (plain HTTP, or the router without
/// the extension) gets 403 with role-rules' reason and never reaches the
/// upstream; with another subject, 403 too; with the `CN=ops,O=cinema`
/// certificate in the request's extensions, 200 from the upstream.
#[tokio::test]
async fn an_admin_route_demanding_mtls_through_the_proxy() {
    let echo = Echo::start("admin").await;
    let app = admin_gateway(&echo).await;
    let admin = app.admin("root").await;

    let plain = app.get("/admin/users", Some(&admin)).await;
    plain.assert_problem(403, "policy_denied");
    assert_eq!(plain.body["detail"], REQUIRED);

    // A second gateway on the same database and keys, driven through its
    // router so that the request can carry the certificate extension.
    let gateway = gateway::server::Gateway::build(app.config.clone()).unwrap();
    let router = gateway::api::router(gateway.state().clone());
    let get = || {
        HttpRequest::get("/admin/users")
            .header("host", "cinema.example")
            .header("authorization", format!("Bearer {admin}"))
    };
    let (status, body) = through_router(&router, get(), None).await;
    assert_eq!(
        (status, body["detail"].as_str()),
        (StatusCode::FORBIDDEN, Some(REQUIRED))
    );
    let (status, body) = through_router(&router, get(), Some("CN=intern,O=cinema")).await;
    assert_eq!(
        (status, body["detail"].as_str()),
        (StatusCode::FORBIDDEN, Some(NOT_ALLOWED))
    );
    assert_eq!(
        echo.hits(),
        0,
        "denied requests must not reach the upstream"
    );

    let (status, body) = through_router(&router, get(), Some(OPS)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["path"], "/admin/users", "{body}");
    assert_eq!(echo.hits(), 1);

    // The certificate does not stand in for the token.
    let anonymous = HttpRequest::get("/admin/users").header("host", "cinema.example");
    let (status, _) = through_router(&router, anonymous, Some(OPS)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(echo.hits(), 1);
}

/// Forward-auth decisions never pass a client certificate to plugins: the
/// original client's TLS ended at the calling proxy, and a certificate on
/// the decision call itself is that proxy's. So the same administrator, on
/// the same route, is refused by the mTLS rule at `/api/v1/authz/*` even
/// when the call carries the `CN=ops,O=cinema` extension.
#[tokio::test]
async fn forward_auth_decisions_pass_no_client_certificate() {
    let echo = Echo::start("admin").await;
    let app = admin_gateway(&echo).await;
    let admin = app.admin("root").await;
    let gateway = gateway::server::Gateway::build(app.config.clone()).unwrap();
    let router = gateway::api::router(gateway.state().clone());
    let ask = HttpRequest::get("/api/v1/authz/forward-auth")
        .header("host", "authgw.internal")
        .header("x-forwarded-method", "GET")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "cinema.example")
        .header("x-forwarded-uri", "/admin/users")
        .header("authorization", format!("Bearer {admin}"));
    let (status, body) = through_router(&router, ask, Some(OPS)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["detail"], REQUIRED, "{body}");

    // The same call through the proxy with the certificate is allowed: the
    // rule, not the token, refused the decision.
    let proxied = HttpRequest::get("/admin/users")
        .header("host", "cinema.example")
        .header("authorization", format!("Bearer {admin}"));
    let (status, _) = through_router(&router, proxied, Some(OPS)).await;
    assert_eq!(status, StatusCode::OK);
}
