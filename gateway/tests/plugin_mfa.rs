//! Step-up through plugins (issue 16): plugin interface 0.4.0's
//! `identity.amr` and `identity.auth-time` (passed when `needs.amr` is
//! declared) and `deny.code` (the problem's `code`); what reaches plugins of
//! each interface version (0.4.0, 0.3.0, 0.2.0, 0.1.0); role-rules'
//! `mfa = true` through the proxy and the forward-auth endpoints (401
//! `mfa_required` with RFC 9470's `WWW-Authenticate`); codes that are not
//! valid becoming `policy_denied`; and `plugin test` cases with `amr` and an
//! expected `code`. Real components from plugins/dist/
//! (scripts/build-plugins.sh), real PostgreSQL, real servers on port 0.
//! Access tokens are minted with the gateway's own `Tokens::issue` from the
//! test server's keys: a password session (`amr` `["pwd"]`), a TOTP one
//! (`["pwd", "otp"]`) or a recovery-code one (`["pwd", "rcode"]`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::http::Request as HttpRequest;
use common::upstream::{Echo, route};
use common::*;
use gateway::config::{AuthMode, Config, RouteConfig, TokenConfig};
use gateway::plugins::{
    Decision, HostConfig, Needs, Plugin, PluginHost, PluginSet, PluginSpec, chain_needs, run_chain,
};
use gateway::proxy::policy::{identity_record, request_record};
use gateway::tls::PeerCertificate;
use gateway::tokens::{Claims, Grant, Keyring, Tokens};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

/// role-rules' step-up reason (plugins/role-rules/src/rules.rs).
const STEP_UP: &str =
    "this route requires a second factor: sign in again with your authenticator app";
/// The start of RFC 9470's challenge that goes with a 401 `mfa_required`.
const CHALLENGE: &str = "Bearer error=\"insufficient_user_authentication\"";
/// When the minted sessions authenticated.
const AUTH_TIME: i64 = 1_767_225_600;

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins/role-rules/examples")
        .join(name)
}

fn example_json(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(example(name)).unwrap()).unwrap()
}

fn host() -> &'static PluginHost {
    static HOST: OnceLock<PluginHost> = OnceLock::new();
    HOST.get_or_init(|| PluginHost::new(&HostConfig::default()).expect("plugin host"))
}

fn spec(name: &str, file: &str, config: Value) -> PluginSpec {
    let mut spec = plugin(name, file, config);
    // Wall-clock deadline: generous on a machine busy with parallel tests.
    spec.deadline = Duration::from_millis(250);
    spec
}

fn load(specs: &[(&str, &str, Value)]) -> PluginSet {
    let specs: Vec<PluginSpec> = specs
        .iter()
        .map(|(name, file, config)| spec(name, file, config.clone()))
        .collect();
    host().load(&specs, Path::new("/")).expect("plugins load")
}

fn one(set: &PluginSet, name: &str) -> Arc<Plugin> {
    set.get(name).expect("plugin in set")
}

/// A session's methods.
fn amr(methods: &[&str]) -> Vec<String> {
    methods.iter().map(|m| m.to_string()).collect()
}

/// Signs access tokens with the keys in `keys` (those of a test server,
/// which then accepts them), for the issuer and audience of `config`.
struct Minter(Tokens);

impl Minter {
    fn new(keys: &Path, config: &TokenConfig) -> Minter {
        Minter(Tokens::new(Keyring::load(keys).unwrap(), config))
    }

    /// A token for `login` whose session authenticated by `methods` at
    /// `auth_time` (0: a token that does not say).
    fn token(&self, login: &str, admin: bool, methods: &[&str], auth_time: i64) -> String {
        let methods = amr(methods);
        self.0
            .issue(&Grant {
                sub: Uuid::new_v4(),
                login,
                roles: &[],
                adm: admin,
                sid: Uuid::new_v4(),
                email_verified: true,
                amr: &methods,
                auth_time,
            })
            .unwrap()
    }

    fn claims(&self, login: &str, admin: bool, methods: &[&str], auth_time: i64) -> Claims {
        self.0
            .verify(&self.token(login, admin, methods, auth_time))
            .unwrap()
    }
}

/// A minter over a fresh keys directory, for tests without a server.
fn minter() -> Minter {
    static KEYS: OnceLock<Arc<tempfile::TempDir>> = OnceLock::new();
    let keys = KEYS.get_or_init(keys_dir);
    Minter::new(keys.path(), &TokenConfig::default())
}

fn get(path: &str) -> HttpRequest<()> {
    HttpRequest::get(path)
        .header("x-request-id", "r-1")
        .body(())
        .unwrap()
}

/// What the amr-probe fixture saw: its `x-probe-amr` and
/// `x-probe-auth-time` headers (when it allowed).
fn seen(decision: &Decision) -> (String, String) {
    let Decision::Allow { set_headers, .. } = decision else {
        panic!("expected an allow, got {decision:?}");
    };
    let header = |name: &str| {
        set_headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("{name} not set: {set_headers:?}"))
    };
    (header("x-probe-amr"), header("x-probe-auth-time"))
}

fn pair(amr: &str, auth_time: &str) -> (String, String) {
    (amr.to_string(), auth_time.to_string())
}

/// A 0.4.0 plugin that declares `needs.amr` gets the token's `amr` and
/// `auth_time` exactly (built from real claims by the proxy's
/// `identity_record`); one that does not declare it gets neither, unless
/// another plugin of its chain declared it (the union). A token from before
/// `amr` (empty list, `auth_time` 0) gives an empty list and no time; an
/// anonymous request gives no identity at all.
#[test]
fn a_0_4_0_plugin_gets_amr_and_auth_time_only_when_declared() {
    let set = load(&[
        ("reads", "amr-probe", json!({"amr": true})),
        ("blind", "amr-probe", json!({})),
    ]);
    let (reads, blind) = (one(&set, "reads"), one(&set, "blind"));
    assert_eq!(reads.interface_version(), "0.4.0");
    assert!(reads.needs().amr);
    assert_eq!(*blind.needs(), Needs::default());

    let mint = minter();
    let otp = mint.claims("alice", false, &["pwd", "otp"], AUTH_TIME);
    let old = mint.claims("alice", false, &[], 0);
    let decide = |chain: &[Arc<Plugin>], claims: Option<&Claims>| {
        let needs = chain_needs(chain);
        let request = request_record(&needs, "films", &get("/films/1"), None);
        let identity = claims.map(|c| identity_record(&needs, c));
        run_chain(chain, &request, identity.as_ref()).unwrap()
    };

    let declared = [reads.clone()];
    assert_eq!(
        seen(&decide(&declared, Some(&otp))),
        pair("pwd,otp", "1767225600")
    );
    assert_eq!(seen(&decide(&declared, Some(&old))), pair("empty", "none"));
    assert_eq!(
        seen(&decide(&declared, None)),
        pair("anonymous", "anonymous")
    );

    let undeclared = [blind.clone()];
    assert_eq!(seen(&decide(&undeclared, Some(&otp))), pair("none", "none"));

    // In a chain with a plugin that declares it, both are given it (the
    // later plugin's headers win; the blind one runs last here).
    let union = [reads, blind];
    assert!(chain_needs(&union).amr);
    assert_eq!(
        seen(&decide(&union, Some(&otp))),
        pair("pwd,otp", "1767225600")
    );
}

/// 0.3.0 plugins still load and decide exactly as before: role-rules built
/// against 0.3.0 (the fixture role-rules-v0-3, today's rule logic) reports
/// 0.3.0, declares the client certificate but never `amr`, and decides the
/// admin-mtls rules as role-rules 0.4.0 does, with or without the
/// certificate, also in a chain after a plugin that reads `amr` (the host
/// adapts the records) and beside 0.2.0 and 0.1.0 plugins. Its denials
/// carry no code. Configured with a rule it cannot honour (`mfa`), it
/// refuses to load.
#[test]
fn plugins_of_0_3_0_and_older_load_and_decide_as_before() {
    let set = load(&[
        (
            "old-mtls",
            "role-rules-v0-3",
            example_json("admin-mtls.json"),
        ),
        ("new-mtls", "role-rules", example_json("admin-mtls.json")),
        ("probe", "amr-probe", json!({"amr": true})),
        (
            "stamp",
            "header-stamp",
            json!({"set": {"x-login": "{login}"}}),
        ),
        ("legacy", "legacy", json!({})),
    ]);
    let (old, new) = (one(&set, "old-mtls"), one(&set, "new-mtls"));
    assert_eq!(old.interface_version(), "0.3.0");
    assert_eq!(one(&set, "stamp").interface_version(), "0.2.0");
    assert_eq!(one(&set, "legacy").interface_version(), "0.1.0");
    assert_eq!(
        *old.needs(),
        Needs {
            client_cert: true,
            ..Needs::default()
        }
    );
    assert_eq!(old.needs(), new.needs(), "admin-mtls has no mfa rule");

    let mint = minter();
    let admin = mint.claims("root", true, &["pwd"], AUTH_TIME);
    let user = mint.claims("bob", false, &["pwd", "otp"], AUTH_TIME);
    let ops = "CN=ops,O=cinema";
    let cases: [(&str, Option<&str>, Option<&Claims>); 7] = [
        ("/admin/users", Some(ops), Some(&admin)),
        ("/admin/users", None, Some(&admin)),
        ("/admin/users", Some("CN=intern,O=cinema"), Some(&admin)),
        ("/admin/users", Some(ops), Some(&user)),
        ("/admin/users", Some(ops), None),
        ("/ops/status", Some("CN=probe,O=cinema"), None),
        ("/films/1", None, None),
    ];
    let probe = one(&set, "probe");
    for (path, cert, claims) in cases {
        let decide = |chain: &[Arc<Plugin>]| {
            let needs = chain_needs(chain);
            let mut req = get(path);
            if let Some(subject) = cert {
                req.extensions_mut().insert(PeerCertificate {
                    subject: subject.into(),
                });
            }
            let request = request_record(&needs, "admin", &req, None);
            let identity = claims.map(|c| identity_record(&needs, c));
            run_chain(chain, &request, identity.as_ref()).unwrap()
        };
        let before = decide(std::slice::from_ref(&old));
        assert_eq!(
            before,
            decide(std::slice::from_ref(&new)),
            "{path} {cert:?}"
        );
        if let Decision::Deny { code, .. } = &before {
            assert_eq!(*code, None, "a 0.3.0 plugin gives no code");
        }
        // After a plugin that reads amr, the 0.3.0 plugin's record is adapted
        // and its decision stays the same.
        let after = decide(&[probe.clone(), old.clone()]);
        match (&before, &after) {
            (Decision::Deny { .. }, _) => assert_eq!(before, after, "{path} {cert:?}"),
            (Decision::Allow { .. }, Decision::Allow { set_headers, .. }) => {
                assert!(set_headers.iter().any(|(n, _)| n == "x-probe-amr"));
            }
            _ => panic!("{path} {cert:?}: {before:?} then {after:?}"),
        }
    }

    // The 0.2.0 and 0.1.0 plugins behind a chain that reads amr: as before.
    let chain = [probe, one(&set, "stamp"), one(&set, "legacy")];
    let needs = chain_needs(&chain);
    let request = request_record(&needs, "films", &get("/films/1"), None);
    let identity = identity_record(&needs, &user);
    let Decision::Allow { set_headers, .. } = run_chain(&chain, &request, Some(&identity)).unwrap()
    else {
        panic!("the chain allows");
    };
    let header = |name: &str| {
        set_headers
            .iter()
            .find(|(n, _)| n == name)
            .unwrap()
            .1
            .clone()
    };
    assert_eq!(header("x-login"), "bob");
    assert_eq!(header("x-legacy"), "films bob x-request-id");

    // `mfa` cannot be honoured by a 0.3.0 build: a load error, not a hole.
    let refused = host()
        .load(
            &[spec(
                "old-cinema",
                "role-rules-v0-3",
                example_json("cinema.json"),
            )],
            Path::new("/"),
        )
        .expect_err("a 0.3.0 role-rules must refuse mfa");
    assert!(
        refused.to_string().contains("`mfa` needs interface 0.4.0"),
        "{refused}"
    );
}

/// role-rules declares `needs.amr` only when a rule has `mfa`: with the
/// cinema rules (whose `/admin` has it) it does, with admin-mtls it does not.
/// Its step-up denial carries the code `mfa_required` through the chain.
#[test]
fn role_rules_reads_amr_only_for_mfa_rules_and_gives_the_code() {
    let set = load(&[
        ("cinema", "role-rules", cinema_rules()),
        ("mtls", "role-rules", example_json("admin-mtls.json")),
    ]);
    assert!(one(&set, "cinema").needs().amr);
    assert!(!one(&set, "mtls").needs().amr);

    let chain = [one(&set, "cinema")];
    let needs = chain_needs(&chain);
    let request = request_record(&needs, "admin", &get("/admin/users"), None);
    let mint = minter();
    let decide = |claims: &Claims| {
        run_chain(&chain, &request, Some(&identity_record(&needs, claims))).unwrap()
    };
    assert_eq!(
        decide(&mint.claims("root", true, &["pwd"], AUTH_TIME)),
        Decision::Deny {
            status: 401,
            reason: STEP_UP.into(),
            code: Some("mfa_required".into()),
        }
    );
    assert_eq!(
        decide(&mint.claims("root", true, &["pwd", "otp"], AUTH_TIME)),
        Decision::allow()
    );
    // A token from before amr has no second factor.
    assert!(matches!(
        decide(&mint.claims("root", true, &[], 0)),
        Decision::Deny { status: 401, .. }
    ));
}

/// `/admin` behind role-rules with the cinema rules (`admin_only` and
/// `mfa`), on the echo upstream; `/deny` behind amr-probe fixtures that deny
/// with the codes `Bad Code!` (401), `mfa_required` (403) and
/// `payment_required` (402); `/old` behind the 0.3.0 role-rules, which
/// denies without a code. 127.0.0.1 is a trusted forward-auth proxy.
async fn step_up_gateway(echo: &Echo) -> TestApp {
    let url = echo.url();
    spawn_app_with(move |c: &mut Config| {
        c.server.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
        let deny = |status: u16, code: &str| {
            json!({"deny": {"status": status, "reason": "denied by the probe", "code": code}})
        };
        c.plugins = vec![
            plugin("cinema", "role-rules", cinema_rules()),
            plugin("bad-code", "amr-probe", deny(401, "Bad Code!")),
            plugin("mfa-403", "amr-probe", deny(403, "mfa_required")),
            plugin("pay", "amr-probe", deny(402, "payment_required")),
            plugin(
                "old",
                "role-rules-v0-3",
                json!({"rules": [{"path": "/old", "admin_only": true}]}),
            ),
        ];
        let routed = |name: &str, prefix: &str, plugins: &[&str]| RouteConfig {
            plugins: plugins.iter().map(|p| p.to_string()).collect(),
            ..route(name, prefix, &url, AuthMode::Required)
        };
        c.routes = vec![
            routed("admin", "/admin", &["cinema"]),
            routed("bad-code", "/deny/bad", &["bad-code"]),
            routed("mfa-403", "/deny/forbidden", &["mfa-403"]),
            routed("pay", "/deny/pay", &["pay"]),
            routed("old", "/old", &["old"]),
        ];
    })
    .await
}

/// A minter for `app`'s keys, issuer and audience.
fn minter_for(app: &TestApp) -> Minter {
    Minter::new(app.keys.path(), &app.config.tokens)
}

fn assert_step_up(reply: &Reply) {
    reply.assert_problem(401, "mfa_required");
    assert_eq!(reply.body["detail"], STEP_UP, "{}", reply.body);
    let challenge = reply.header("www-authenticate").unwrap_or_default();
    assert!(challenge.starts_with(CHALLENGE), "{challenge:?}");
}

fn assert_no_step_up(reply: &Reply) {
    let challenge = reply.header("www-authenticate").unwrap_or_default();
    assert!(
        !challenge.contains("insufficient_user_authentication"),
        "{challenge:?}"
    );
}

/// role-rules' `mfa = true` through the proxy (the cinema's `/admin`): an
/// administrator whose session passed TOTP (`otp`) or a recovery code
/// (`rcode`) gets 200 from the upstream; a password-only session gets 401
/// problem `mfa_required` with the step-up reason and RFC 9470's
/// `WWW-Authenticate: Bearer error="insufficient_user_authentication"`, and
/// the upstream never sees it; a non-administrator with a second factor gets
/// 403 `policy_denied` (stepping up would not help), without the challenge.
#[tokio::test]
async fn mfa_rules_through_the_proxy() {
    let echo = Echo::start("admin").await;
    let app = step_up_gateway(&echo).await;
    let mint = minter_for(&app);

    let pwd = mint.token("root", true, &["pwd"], AUTH_TIME);
    let denied = app.get("/admin/users", Some(&pwd)).await;
    assert_step_up(&denied);
    assert_eq!(
        echo.hits(),
        0,
        "a denied request must not reach the upstream"
    );

    let otp = mint.token("root", true, &["pwd", "otp"], AUTH_TIME);
    let allowed = app.get("/admin/users", Some(&otp)).await;
    assert_eq!(allowed.status, StatusCode::OK, "{}", allowed.body);
    assert_eq!(allowed.body["path"], "/admin/users");
    assert_eq!(allowed.body["headers"]["x-user-admin"], json!(["true"]));
    assert_eq!(echo.hits(), 1);

    let rcode = mint.token("root", true, &["pwd", "rcode"], AUTH_TIME);
    let recovered = app.get("/admin/settings", Some(&rcode)).await;
    assert_eq!(recovered.status, StatusCode::OK, "{}", recovered.body);
    assert_eq!(recovered.body["path"], "/admin/settings");
    assert_eq!(echo.hits(), 2);

    let member = mint.token("bob", false, &["pwd", "otp"], AUTH_TIME);
    let forbidden = app.get("/admin/users", Some(&member)).await;
    forbidden.assert_problem(403, "policy_denied");
    assert_eq!(forbidden.body["detail"], "administrators only");
    assert_no_step_up(&forbidden);

    // A token from before amr and auth_time: no second factor is known.
    let old = mint.token("root", true, &[], 0);
    assert_step_up(&app.get("/admin/users", Some(&old)).await);
    assert_eq!(echo.hits(), 2);
}

/// The same rule through the forward-auth endpoints: Traefik's and Caddy's
/// `/api/v1/authz/forward-auth` answers 200 for a TOTP or recovery-code
/// session and 401 `mfa_required` with the RFC 9470 challenge for a
/// password-only one; nginx's `/api/v1/authz/auth-request` passes the 401
/// (one of the statuses nginx understands) with the challenge too.
#[tokio::test]
async fn mfa_rules_through_forward_auth() {
    let echo = Echo::start("admin").await;
    let app = step_up_gateway(&echo).await;
    let mint = minter_for(&app);
    let ask = |endpoint: &'static str, token: String| {
        let app = &app;
        async move {
            let described: &[(&str, &str)] = if endpoint.ends_with("auth-request") {
                &[
                    ("x-original-uri", "/admin/users"),
                    ("x-original-method", "GET"),
                    ("x-forwarded-host", "cinema.example"),
                ]
            } else {
                &[
                    ("x-forwarded-method", "GET"),
                    ("x-forwarded-proto", "https"),
                    ("x-forwarded-host", "cinema.example"),
                    ("x-forwarded-uri", "/admin/users"),
                ]
            };
            let mut req = app.http.get(app.url(endpoint)).bearer_auth(token);
            for (name, value) in described {
                req = req.header(*name, *value);
            }
            reply(req.send().await.unwrap()).await
        }
    };
    for endpoint in ["/api/v1/authz/forward-auth", "/api/v1/authz/auth-request"] {
        let pwd = ask(endpoint, mint.token("root", true, &["pwd"], AUTH_TIME)).await;
        assert_step_up(&pwd);
        for methods in [&["pwd", "otp"], &["pwd", "rcode"]] {
            let ok = ask(endpoint, mint.token("root", true, methods, AUTH_TIME)).await;
            assert_eq!(
                ok.status,
                StatusCode::OK,
                "{endpoint} {methods:?}: {}",
                ok.body
            );
            assert_eq!(ok.header("x-user-admin"), Some("true"));
        }
        let member = ask(
            endpoint,
            mint.token("bob", false, &["pwd", "otp"], AUTH_TIME),
        )
        .await;
        assert_eq!(member.status, StatusCode::FORBIDDEN, "{endpoint}");
        assert_no_step_up(&member);
    }
    assert_eq!(echo.hits(), 0, "decisions never call the upstream");
}

/// A plugin's `deny.code` becomes the problem's `code` only when it is a
/// valid code (1-64 of `[a-z0-9_]`, starting with a letter): `Bad Code!`
/// becomes `policy_denied` (and, though with 401, no step-up challenge);
/// `payment_required` passes as it is; `mfa_required` with 403 keeps its
/// code but gets no challenge (that goes with 401 only); a 0.3.0 plugin's
/// deny has no code: `policy_denied`. None reaches the upstream.
#[tokio::test]
async fn plugin_codes_are_validated() {
    let echo = Echo::start("deny").await;
    let app = step_up_gateway(&echo).await;
    let token = minter_for(&app).token("alice", false, &["pwd"], AUTH_TIME);

    let bad = app.get("/deny/bad", Some(&token)).await;
    bad.assert_problem(401, "policy_denied");
    assert_eq!(bad.body["detail"], "denied by the probe");
    assert_no_step_up(&bad);

    let pay = app.get("/deny/pay/1", Some(&token)).await;
    pay.assert_problem(402, "payment_required");
    assert_no_step_up(&pay);

    let forbidden = app.get("/deny/forbidden", Some(&token)).await;
    forbidden.assert_problem(403, "mfa_required");
    assert_no_step_up(&forbidden);

    let old = app.get("/old/x", Some(&token)).await;
    old.assert_problem(403, "policy_denied");
    assert_eq!(old.body["detail"], "administrators only");

    assert_eq!(echo.hits(), 0);
}

fn authgw_cli(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_authgw"))
        .args(args)
        .env_remove("AUTHGW_CONFIG")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap()
}

/// `authgw plugin test` cases take the session's `amr` (default
/// `["pwd"]`) and `auth_time` (0: unknown), and may expect a `code` (the
/// one the client gets: `policy_denied` when the plugin gave none or an
/// invalid one). The cinema cases (admin with `otp`: allow; with a password
/// only: 401 `mfa_required`; a non-administrator with `otp`: 403) all pass;
/// a wrong code expectation fails naming both codes. `plugin check` reports
/// the 0.3.0 fixture as 0.3.0.
#[test]
fn plugin_test_cases_carry_amr_and_expect_codes() {
    let rules = dist("role-rules");
    let out = authgw_cli(&[
        "plugin",
        "test",
        rules.to_str().unwrap(),
        "--config",
        example("cinema.json").to_str().unwrap(),
        "--cases",
        example("cinema-cases.toml").to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("9 passed, 0 failed"), "{stdout}");
    assert!(
        stdout.contains("pass: an administrator with a password only is asked to step up"),
        "{stdout}"
    );

    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let config = write(
        "probe.json",
        r#"{"amr": true, "deny": {"status": 401, "reason": "no", "code": "Bad Code!"}}"#,
    );
    let cases = write(
        "probe.toml",
        r#"
[[case]]
name = "the session's methods and time reach a plugin that declared amr"
path = "/x"
identity = { amr = ["pwd", "otp"], auth_time = 1700000000 }
expect = { decision = "allow", set_headers = { "x-probe-amr" = "pwd,otp", "x-probe-auth-time" = "1700000000" } }

[[case]]
name = "by default a password session of a fixed time"
path = "/x"
identity = {}
expect = { decision = "allow", set_headers = { "x-probe-amr" = "pwd", "x-probe-auth-time" = "1767225600" } }

[[case]]
name = "auth_time 0 is a token that does not say"
path = "/x"
identity = { amr = [], auth_time = 0 }
expect = { decision = "allow", set_headers = { "x-probe-amr" = "empty", "x-probe-auth-time" = "none" } }

[[case]]
name = "an invalid code is policy_denied"
path = "/deny"
identity = {}
expect = { decision = "deny", status = 401, code = "policy_denied" }

[[case]]
name = "a wrong code expectation fails"
path = "/deny"
identity = {}
expect = { decision = "deny", code = "mfa_required" }
"#,
    );
    let probe = dist("amr-probe");
    let out = authgw_cli(&[
        "plugin",
        "test",
        probe.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
        "--cases",
        cases.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("4 passed, 1 failed"), "{stdout}");
    assert!(
        stdout.contains(
            "FAIL: a wrong code expectation fails: expected code \"mfa_required\", got \"policy_denied\""
        ),
        "{stdout}"
    );

    // `code` goes with a deny only.
    let invalid = write(
        "invalid.toml",
        "[[case]]\nname = \"x\"\npath = \"/\"\nexpect = { decision = \"allow\", code = \"x\" }\n",
    );
    let out = authgw_cli(&[
        "plugin",
        "test",
        probe.to_str().unwrap(),
        "--cases",
        invalid.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("status/reason/code only go with"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let old = dist("role-rules-v0-3");
    let out = authgw_cli(&["plugin", "check", old.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or_default()
            .ends_with("exports authgw:policy/policy@0.3.0"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
