//! What a policy plugin adds to a request, measured against a peer in the
//! same run: `decide` of role-rules with a 20-rule config (the request
//! matches the last rule, so every rule is tried) against `decide` of
//! allow-all (the bare cost of a call into a warm instance). The records
//! are built as the proxy builds them, from each plugin's needs (role-rules
//! and allow-all read the method, path and roles only); the `everything`
//! cases pass every part, as a 0.1.0 plugin or a chain with a plugin that
//! reads everything would get.
//! Budget: role-rules' `decide` at most 2 µs at the median.
//!
//! `plugin_decide_example`: the example policy premium-gate (plugins/examples)
//! in Rust (role-rules with premium-gate-role-rules.json), Python
//! (componentize-py) and JavaScript (componentize-js), on the same request
//! and caller (a subscriber, allowed): what the language costs.
//!
//! Needs plugins/dist/ (scripts/build-plugins.sh). Run with
//! `cargo bench --bench plugins`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

mod common;

use common::dist;
use criterion::{Criterion, criterion_group, criterion_main};
use gateway::plugins::{
    CallerParts, HostConfig, Needs, Plugin, PluginHost, PluginSpec, RequestParts, chain_needs,
    run_chain_params,
};
use serde_json::json;

/// 19 rules that do not match `/films/premium/42`, then the one that does.
fn twenty_rules() -> serde_json::Value {
    let mut rules: Vec<_> = (0..19)
        .map(|i| match i % 3 {
            0 => json!({"path": format!("/section-{i}"), "any_of": ["staff", "editor"]}),
            1 => json!({"glob": format!("/api/v{i}/*/items"), "methods": ["POST", "PUT"], "all_of": ["writer"]}),
            _ => json!({"path": format!("/films/collection-{i}"), "admin_only": true, "deny_status": 404}),
        })
        .collect();
    rules.push(
        json!({"path": "/films/premium", "any_of": ["trial", "subscriber"], "deny_status": 402}),
    );
    json!({ "rules": rules, "default": "deny" })
}

fn load(host: &PluginHost, name: &str, file: &str, config: serde_json::Value) -> Arc<Plugin> {
    let mut spec = PluginSpec::new(name, dist(file));
    spec.config = config;
    spec.instances = 1;
    // Speed is measured here, not the deadline; it is wall-clock time, and a
    // descheduled thread must not fail a sample.
    spec.deadline = std::time::Duration::from_secs(1);
    host.load(&[spec], Path::new("/"))
        .unwrap()
        .get(name)
        .unwrap()
}

fn decide(c: &mut Criterion) {
    let host = PluginHost::new(&HostConfig::default()).unwrap();
    let rules = load(&host, "role-rules", "role-rules", twenty_rules());
    let allow_all = load(&host, "allow-all", "allow-all", json!({}));
    let parts = RequestParts {
        method: "GET",
        path: "/films/premium/42",
        query: Some("quality=hd"),
        host: Some("cinema.example"),
        route: "films",
        client_cert: None,
    };
    let headers = [
        ("accept", "application/json"),
        ("user-agent", "bench/1.0"),
        ("x-request-id", "0b6f1c9e-3d1f-4f7e-9a53-0e0f1a2b3c4d"),
    ];
    let roles = ["subscriber".to_string(), "adult".to_string()];
    let amr = ["pwd".to_string(), "otp".to_string()];
    let caller = CallerParts {
        user_id: &"5f0c7e9a-0000-4000-8000-000000000001",
        login: "alice",
        session_id: &"5f0c7e9a-0000-4000-8000-000000000002",
        roles: &roles,
        is_admin: false,
        expires_at: 4_102_444_800,
        amr: &amr,
        auth_time: Some(1_767_225_600),
    };
    let mut group = c.benchmark_group("plugin_decide");
    for (name, plugin) in [("allow-all", &allow_all), ("role-rules-20", &rules)] {
        let chain = [plugin.clone()];
        for (suffix, needs) in [
            ("", chain_needs(&chain)),
            ("/everything", Needs::everything()),
        ] {
            // As the proxy calls it: the records built, borrowed, per call.
            group.bench_function(format!("{name}{suffix}"), |b| {
                b.iter(|| {
                    needs.with_records(black_box(parts), headers, Some(caller), |r, i| {
                        run_chain_params(black_box(&chain), r, i).unwrap()
                    })
                })
            });
        }
    }
    group.finish();
}

fn example_in_three_languages(c: &mut Criterion) {
    // 64 MiB for CPython: no pooled slots.
    let host = PluginHost::new(&HostConfig {
        pooling_allocator: false,
        ..HostConfig::default()
    })
    .unwrap();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/examples");
    let config = |name: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(examples.join(name)).unwrap()).unwrap()
    };
    let mut specs = Vec::new();
    for (name, file, config, mib) in [
        (
            "rust",
            "role-rules",
            config("premium-gate-role-rules.json"),
            16,
        ),
        ("python", "premium-gate-py", config("premium-gate.json"), 64),
        ("js", "premium-gate-js", config("premium-gate.json"), 32),
    ] {
        let mut spec = PluginSpec::new(name, dist(file));
        spec.config = config;
        spec.instances = 1;
        spec.memory_limit = gateway::plugins::ByteSize(mib << 20);
        spec.deadline = std::time::Duration::from_secs(1);
        specs.push(spec);
    }
    let set = host.load(&specs, Path::new("/")).unwrap();
    let parts = RequestParts {
        method: "GET",
        path: "/films/premium/42",
        query: None,
        host: Some("cinema.example"),
        route: "films",
        client_cert: None,
    };
    let roles = ["subscriber".to_string()];
    let amr = ["pwd".to_string()];
    let caller = CallerParts {
        user_id: &"5f0c7e9a-0000-4000-8000-000000000001",
        login: "alice",
        session_id: &"5f0c7e9a-0000-4000-8000-000000000002",
        roles: &roles,
        is_admin: false,
        expires_at: 4_102_444_800,
        amr: &amr,
        auth_time: Some(1_767_225_600),
    };
    let mut group = c.benchmark_group("plugin_decide_example");
    for name in ["rust", "python", "js"] {
        let chain = [set.get(name).unwrap()];
        let needs = chain_needs(&chain);
        group.bench_function(name, |b| {
            b.iter(|| {
                needs.with_records(black_box(parts), [], Some(caller), |r, i| {
                    run_chain_params(black_box(&chain), r, i).unwrap()
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, decide, example_in_three_languages);
criterion_main!(benches);
