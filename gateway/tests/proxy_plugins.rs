//! Policy plugins end to end through the proxy: real components from
//! plugins/dist/ (scripts/build-plugins.sh), a real gateway, an echo upstream.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::upstream::{Echo, route};
use common::*;
use gateway::config::{AuthMode, Config, RouteConfig};
use gateway::plugins::{ByteSize, PluginSpec};
use reqwest::StatusCode;
use serde_json::json;

/// A route to `upstream` guarded by `plugins`, in order.
fn guarded(
    name: &str,
    prefix: &str,
    upstream: &str,
    auth: AuthMode,
    plugins: &[&str],
) -> RouteConfig {
    RouteConfig {
        plugins: plugins.iter().map(|p| p.to_string()).collect(),
        ..route(name, prefix, upstream, auth)
    }
}

/// A `[[plugins]]` entry for an interpreted plugin (Python, JS): one
/// instance, `mib` MiB of memory, a deadline of 250 ms (a busy test host).
/// The gateway then needs `plugin_host.pooling_allocator = false`: no pooled
/// slots of that size for every test.
fn interpreted(name: &str, file: &str, config: serde_json::Value, mib: u64) -> PluginSpec {
    let mut spec = plugin(name, file, config);
    spec.memory_limit = ByteSize(mib << 20);
    spec.deadline = Duration::from_millis(250);
    spec.instances = 1;
    spec
}

/// role-rules decides through the proxy: a subscriber reaches premium films;
/// a trial user gets the rule's 402 and reason as a problem and never reaches
/// the upstream; anonymous callers of a protected path get 401; and the
/// headers a later plugin in the chain sets (or removes) reach the upstream.
#[tokio::test]
async fn role_rules_allow_deny_and_chain_headers() {
    let echo = Echo::start("films").await;
    let app = spawn_app_with(|c: &mut Config| {
        c.plugins = vec![
            plugin("cinema", "role-rules", cinema_rules()),
            plugin(
                "stamp",
                "header-stamp",
                json!({"set": {"x-authgw-login": "{login}", "x-authgw-route": "{method} {route}"}, "remove": ["x-debug"]}),
            ),
        ];
        c.routes = vec![guarded("films", "/films", &echo.url(), AuthMode::Optional, &["cinema", "stamp"])];
    })
    .await;
    let admin = app.admin("root").await;
    let subscriber = user_with_roles(&app, &admin, "sub", &["subscriber"]).await;
    let trial = user_with_roles(&app, &admin, "tri", &["trial"]).await;

    let ok = app
        .http
        .get(app.url("/films/premium/42"))
        .bearer_auth(&subscriber)
        .header("x-debug", "1")
        .send()
        .await
        .unwrap();
    let ok = reply(ok).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    let seen = ok.body["headers"].as_object().unwrap();
    assert_eq!(seen["x-authgw-login"], json!(["sub"]));
    assert_eq!(seen["x-authgw-route"], json!(["GET films"]));
    assert_eq!(seen["x-user-roles"], json!(["subscriber"]));
    assert!(!seen.contains_key("x-debug"), "{seen:?}");

    let hits = echo.hits();
    let denied = app.get("/films/premium/42", Some(&trial)).await;
    denied.assert_problem(402, "policy_denied");
    assert_eq!(
        denied.body["detail"],
        "requires one of the roles: subscriber"
    );
    let adult_only = app.get("/films/18plus/3", Some(&subscriber)).await;
    adult_only.assert_problem(403, "policy_denied");
    assert_eq!(adult_only.body["detail"], "requires the roles: adult");
    let anonymous = app.get("/films/trial/7", None).await;
    anonymous.assert_problem(401, "policy_denied");
    assert_eq!(
        echo.hits(),
        hits,
        "denied requests must not reach the upstream"
    );

    assert_eq!(
        app.get("/films/trial/7", Some(&trial)).await.status,
        StatusCode::OK
    );
    assert_eq!(
        app.get("/films", None).await.status,
        StatusCode::OK,
        "an open rule"
    );
}

/// What reaches a plugin through the proxy: a 0.1.0 plugin (the legacy
/// fixture, which stamps what it saw) gets the route, the login and every
/// header but the credentials and client-sent identity headers; the token
/// never reaches it.
#[tokio::test]
async fn a_0_1_0_plugin_behind_the_proxy_sees_everything_but_credentials() {
    let echo = Echo::start("old").await;
    let app = spawn_app_with(|c: &mut Config| {
        c.plugins = vec![plugin("old", "legacy", json!({}))];
        c.routes = vec![guarded(
            "old",
            "/old",
            &echo.url(),
            AuthMode::Required,
            &["old"],
        )];
    })
    .await;
    let (_, _, _) = app.user("alice").await;
    let token = app.tokens("alice").await.0;
    let r = app
        .http
        .get(app.url("/old/x"))
        .bearer_auth(&token)
        .header("x-request-id", "r-7")
        .header("x-user-id", "forged")
        .header("cookie", "a=b")
        .send()
        .await
        .unwrap();
    let r = reply(r).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let stamp = r.body["headers"]["x-legacy"][0]
        .as_str()
        .unwrap()
        .to_string();
    let (head, names) = stamp.rsplit_once(' ').unwrap();
    assert_eq!(head, "old alice");
    let names: Vec<&str> = names.split(',').collect();
    assert!(names.contains(&"x-request-id"), "{stamp}");
    for withheld in ["authorization", "cookie", "x-user-id"] {
        assert!(
            !names.contains(&withheld),
            "{withheld} reached the plugin: {stamp}"
        );
    }
}

/// A plugin that loops forever is stopped at its deadline: that request gets
/// a 503 problem quickly, and the next request is served by a fresh instance.
/// A plugin that grows its memory without bound is trapped the same way.
#[tokio::test]
async fn runaway_plugins_fail_closed_and_recover() {
    let echo = Echo::start("e").await;
    let app = spawn_app_with(|c: &mut Config| {
        // The bomb gets a long deadline, so that the memory limit is what stops it.
        let mut bomb = plugin("bomb", "memory-bomb", json!({}));
        bomb.deadline = Duration::from_millis(900);
        c.plugins = vec![plugin("spin", "spin", json!({})), bomb];
        c.routes = vec![
            guarded("spin", "/spin", &echo.url(), AuthMode::Public, &["spin"]),
            guarded("bomb", "/bomb", &echo.url(), AuthMode::Public, &["bomb"]),
        ];
    })
    .await;
    for stuck in ["/spin/forever", "/bomb/grow"] {
        for _ in 0..3 {
            let started = Instant::now();
            let r = app.get(stuck, None).await;
            r.assert_problem(503, "policy_failed");
            assert!(
                started.elapsed() < Duration::from_secs(3),
                "{stuck} took {:?}",
                started.elapsed()
            );
        }
    }
    assert_eq!(
        echo.hits(),
        0,
        "failed policies must not reach the upstream"
    );
    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains("authgw_plugin_failures_total{plugin=\"spin\",kind=\"deadline\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("authgw_plugin_failures_total{plugin=\"bomb\",kind=\"memory\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("authgw_plugin_instances_recycled_total{plugin=\"spin\"} 3"),
        "{metrics}"
    );
    // Failed instances are recycled, not retired: retirement is for healthy ones.
    for reason in ["memory", "calls"] {
        let line = format!(
            "authgw_plugin_instances_retired_total{{plugin=\"spin\",reason=\"{reason}\"}} 0"
        );
        assert!(metrics.contains(&line), "{metrics}");
    }
}

/// After a runaway call, the same route serves the next allowed request.
#[tokio::test]
async fn next_request_after_a_deadline_is_served() {
    let echo = Echo::start("e").await;
    let app = spawn_app_with(|c: &mut Config| {
        c.plugins = vec![plugin("spin", "spin", json!({}))];
        c.routes = vec![guarded(
            "all",
            "/",
            &echo.url(),
            AuthMode::Public,
            &["spin"],
        )];
    })
    .await;
    app.get("/loop", None)
        .await
        .assert_problem(503, "policy_failed");
    for _ in 0..4 {
        let r = app.get("/ok/film", None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }
    assert_eq!(echo.hits(), 4);
}

/// A bad plugin file and a bad plugin config stop start-up with an error that
/// names the plugin; so does a route naming an undefined plugin.
#[tokio::test]
async fn bad_plugins_are_startup_errors() {
    let db = std::sync::Arc::new(TestDb::migrated());
    let keys = keys_dir();
    let base = test_config(&db.url, keys.path());
    let not_wasm = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(not_wasm.path(), b"not a component").unwrap();
    let cases = [
        (
            PluginSpec::new("broken", not_wasm.path()),
            "plugin 'broken'",
        ),
        (
            plugin(
                "strict",
                "role-rules",
                json!({"rules": [{"path": "no-slash"}]}),
            ),
            "plugin 'strict'",
        ),
        (plugin("other", "wrong-world", json!({})), "plugin 'other'"),
    ];
    for (spec, expected) in cases {
        let mut config = base.clone();
        config.plugins = vec![spec];
        let err = gateway::server::Gateway::build(config)
            .err()
            .expect("build must fail");
        assert!(err.to_string().contains(expected), "{err}");
    }
    let raw = "[[routes]]\nname = \"r\"\nprefix = \"/\"\nupstream = \"http://127.0.0.1:1\"\nplugins = [\"ghost\"]\n";
    // Config::load validates: write the file and load it.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("g.toml");
    std::fs::write(&file, raw).unwrap();
    let err = Config::load(&file, true)
        .expect_err("an undefined plugin is refused")
        .to_string();
    assert!(
        err.contains("routes[0].plugins") && err.contains("'ghost'"),
        "{err}"
    );
}

/// The example policy in Rust, Python and JavaScript behind the proxy (the
/// components scripts/build-plugins.sh builds from plugins/examples): for
/// each language a subscriber reaches the upstream, a trial user gets the
/// policy's 402 and reason and never reaches it, an anonymous caller gets
/// 401, and a path outside the gate passes.
#[tokio::test]
async fn the_example_policy_in_three_languages_guards_its_routes() {
    let echo = Echo::start("films").await;
    let gate =
        |prefix: &str| json!({"prefix": prefix, "any_of": ["subscriber"], "deny_status": 402});
    let app = spawn_app_with(|c: &mut Config| {
        c.plugin_host.pooling_allocator = false;
        c.plugins = vec![
            plugin(
                "gate-rust",
                "role-rules",
                json!({"rules": [{"path": "/rust/premium", "any_of": ["subscriber"], "deny_status": 402}], "default": "allow"}),
            ),
            interpreted("gate-py", "premium-gate-py", gate("/py/premium"), 64),
            interpreted("gate-js", "premium-gate-js", gate("/js/premium"), 32),
        ];
        c.routes = ["rust", "py", "js"]
            .iter()
            .map(|lang| {
                guarded(
                    lang,
                    &format!("/{lang}"),
                    &echo.url(),
                    AuthMode::Optional,
                    &[&format!("gate-{lang}")],
                )
            })
            .collect();
    })
    .await;
    let admin = app.admin("root").await;
    let subscriber = user_with_roles(&app, &admin, "sub", &["subscriber"]).await;
    let trial = user_with_roles(&app, &admin, "tri", &["trial"]).await;
    for lang in ["rust", "py", "js"] {
        let premium = format!("/{lang}/premium/42");
        let ok = app.get(&premium, Some(&subscriber)).await;
        assert_eq!(ok.status, StatusCode::OK, "{lang}: {}", ok.body);
        let hits = echo.hits();
        let denied = app.get(&premium, Some(&trial)).await;
        denied.assert_problem(402, "policy_denied");
        assert_eq!(
            denied.body["detail"], "requires one of the roles: subscriber",
            "{lang}"
        );
        app.get(&premium, None)
            .await
            .assert_problem(401, "policy_denied");
        assert_eq!(
            echo.hits(),
            hits,
            "{lang}: a denied request reached the upstream"
        );
        let open = app.get(&format!("/{lang}/catalogue"), None).await;
        assert_eq!(open.status, StatusCode::OK, "{lang}");
    }
}

/// An interpreted plugin that runs out of memory fails closed behind the
/// proxy: the JavaScript example given only a little more memory than it
/// starts with (and no retirement before the limit, `recycle_at` =
/// `memory_limit`) soon cannot grow (at request 4,024 here); that request
/// gets 503 `policy_failed`, never the upstream, and the next one is served
/// by a fresh instance.
#[tokio::test]
async fn an_interpreted_plugin_out_of_memory_fails_closed() {
    let echo = Echo::start("films").await;
    let start = {
        let host = gateway::plugins::PluginHost::new(&gateway::plugins::HostConfig {
            pooling_allocator: false,
            ..Default::default()
        })
        .unwrap();
        let mut spec = plugin("probe", "premium-gate-js", json!({}));
        spec.memory_limit = ByteSize(32 << 20);
        spec.instances = 1;
        let set = host.load(&[spec], std::path::Path::new("/")).unwrap();
        set.get("probe").unwrap().start_memory() as u64
    };
    let app = spawn_app_with(|c: &mut Config| {
        c.plugin_host.pooling_allocator = false;
        let mut js = interpreted(
            "gate-js",
            "premium-gate-js",
            json!({"prefix": "/js/premium"}),
            0,
        );
        js.memory_limit = ByteSize(start + (256 << 10));
        js.recycle_at = Some(js.memory_limit);
        c.plugins = vec![js];
        c.routes = vec![guarded(
            "js",
            "/js",
            &echo.url(),
            AuthMode::Optional,
            &["gate-js"],
        )];
    })
    .await;
    let mut failed_at = None;
    for i in 0..20_000 {
        let hits = echo.hits();
        let r = app.get("/js/catalogue", None).await;
        if r.status == StatusCode::SERVICE_UNAVAILABLE {
            r.assert_problem(503, "policy_failed");
            assert_eq!(echo.hits(), hits, "a failed decision reached the upstream");
            failed_at = Some(i);
            break;
        }
        assert_eq!(r.status, StatusCode::OK, "call {i}: {}", r.body);
    }
    let failed_at = failed_at.expect("the JS instance never ran out of 256 KiB of headroom");
    eprintln!("the JS example ran out of memory at request {failed_at}");
    assert_eq!(app.get("/js/catalogue", None).await.status, StatusCode::OK);
}

/// A Python plugin whose `decide` raises (the fixture python-trap, built
/// with componentize-py) fails closed behind the proxy: 503 `policy_failed`,
/// counted as a trap, never the upstream; the next request is served by a
/// fresh instance.
#[tokio::test]
async fn a_python_plugin_that_raises_fails_closed() {
    let echo = Echo::start("films").await;
    let app = spawn_app_with(|c: &mut Config| {
        c.plugin_host.pooling_allocator = false;
        c.plugins = vec![interpreted("py-trap", "python-trap", json!({}), 64)];
        c.routes = vec![guarded(
            "py",
            "/py",
            &echo.url(),
            AuthMode::Optional,
            &["py-trap"],
        )];
    })
    .await;
    assert_eq!(app.get("/py/ok", None).await.status, StatusCode::OK);
    let hits = echo.hits();
    app.get("/py/boom", None)
        .await
        .assert_problem(503, "policy_failed");
    assert_eq!(echo.hits(), hits, "a failed decision reached the upstream");
    assert_eq!(app.get("/py/ok", None).await.status, StatusCode::OK);
    assert_eq!(
        app.metric("authgw_plugin_failures_total{plugin=\"py-trap\",kind=\"trap\"}")
            .await,
        1.0
    );
}
