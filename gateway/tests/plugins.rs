//! Policy plugins against real components from plugins/dist/ (built by
//! scripts/build-plugins.sh): decisions, chains, fail-closed limits, load
//! errors, and the `authgw plugin` commands. No database involved.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use gateway::plugins::{
    ByteSize, Decision, FailureKind, Header, HostConfig, Identity, Needs, Plugin, PluginError,
    PluginHost, PluginSet, PluginSpec, Request, Retirement, chain_needs, run_chain,
};
use serde_json::json;

fn dist(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins/dist")
        .join(format!("{name}.wasm"));
    assert!(
        path.is_file(),
        "{} is missing: run scripts/build-plugins.sh first",
        path.display()
    );
    path
}

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins/role-rules/examples")
        .join(name)
}

fn cinema_config() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(example("cinema.json")).unwrap()).unwrap()
}

/// One host for the whole test binary, as in the gateway (one per process).
fn host() -> &'static PluginHost {
    static HOST: OnceLock<PluginHost> = OnceLock::new();
    HOST.get_or_init(|| PluginHost::new(&HostConfig::default()).expect("plugin host"))
}

fn spec(name: &str, file: &str, config: serde_json::Value) -> PluginSpec {
    let mut spec = PluginSpec::new(name, dist(file));
    spec.config = config;
    spec.instances = 2;
    // The deadline is wall-clock time: on a machine busy with parallel tests
    // a thread may wait longer than 5 ms for a core. Only the deadline test
    // uses a short one.
    spec.deadline = Duration::from_millis(250);
    spec
}

fn load(specs: &[PluginSpec]) -> PluginSet {
    host().load(specs, Path::new("/")).expect("plugins load")
}

fn load_err(spec: PluginSpec) -> PluginError {
    host()
        .load(&[spec], Path::new("/"))
        .expect_err("load must fail")
}

fn one(set: &PluginSet, name: &str) -> Arc<Plugin> {
    set.get(name).expect("plugin in set")
}

fn request(path: &str) -> Request {
    Request {
        method: "GET".into(),
        path: path.into(),
        query: None,
        host: Some("cinema.example".into()),
        headers: vec![Header {
            name: "x-request-id".into(),
            value: "r-1".into(),
        }],
        route: Some("films".into()),
        client_cert: None,
    }
}

fn user(login: &str, roles: &[&str]) -> Identity {
    Identity {
        user_id: Some("5f0c7e9a-0000-4000-8000-000000000001".into()),
        login: Some(login.into()),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        is_admin: false,
        session_id: Some("5f0c7e9a-0000-4000-8000-000000000002".into()),
        expires_at: 4_102_444_800,
        amr: None,
        auth_time: None,
    }
}

fn deny(status: u16, reason: &str) -> Decision {
    Decision::Deny {
        status,
        reason: reason.into(),
        code: None,
    }
}

/// role-rules with the worked cinema config allows a subscriber, and denies a
/// trial user with the rule's status and reason, and anonymous users with 401.
#[test]
fn role_rules_allows_and_denies_with_status_and_reason() {
    let set = load(&[spec("roles", "role-rules", cinema_config())]);
    let chain = [one(&set, "roles")];
    let alice = user("alice", &["subscriber"]);
    let bob = user("bob", &["trial"]);
    let premium = request("/films/premium/42");
    assert_eq!(
        run_chain(&chain, &premium, Some(&alice)).unwrap(),
        Decision::allow()
    );
    assert_eq!(
        run_chain(&chain, &premium, Some(&bob)).unwrap(),
        deny(402, "requires one of the roles: subscriber")
    );
    assert_eq!(
        run_chain(&chain, &request("/films/trial/1"), None).unwrap(),
        deny(401, "authentication required")
    );
    let stats = chain[0].stats();
    assert_eq!((stats.calls, stats.denies), (3, 2));
    assert_eq!(chain[0].interface_version(), "0.4.0");
}

/// Plugins say in `configure` what `decide` reads: role-rules nothing beyond
/// the method, path and roles, but how the session authenticated (`amr`),
/// since the cinema's `/admin` asks for a second factor; header-stamp what
/// its config uses. A route's chain reads the union.
#[test]
fn plugins_declare_what_they_read_and_a_chain_reads_the_union() {
    let set = load(&[
        spec("roles", "role-rules", cinema_config()),
        spec(
            "stamp",
            "header-stamp",
            json!({"require": ["X-Request-Id"], "set": {"x-login": "{login}"}}),
        ),
        spec(
            "route-stamp",
            "header-stamp",
            json!({"set": {"x-r": "{route}"}}),
        ),
    ]);
    let roles = Needs {
        amr: true,
        ..Needs::default()
    };
    assert_eq!(*one(&set, "roles").needs(), roles);
    let stamp = Needs {
        headers: vec!["x-request-id".into()],
        user: true,
        ..Needs::default()
    };
    assert_eq!(*one(&set, "stamp").needs(), stamp);
    let chain: Vec<_> = set.iter().cloned().collect();
    assert_eq!(
        chain_needs(&chain),
        Needs {
            route: true,
            amr: true,
            ..stamp
        }
    );
}

/// A plugin built against interface 0.1.0 still loads, is reported as
/// 0.1.0, is given everything (every header, the route, the user fields),
/// and its decision is applied like any other.
#[test]
fn a_0_1_0_plugin_still_loads_and_gets_everything() {
    let set = load(&[spec("old", "legacy", json!({}))]);
    let old = one(&set, "old");
    assert_eq!(old.interface_version(), "0.1.0");
    assert_eq!(*old.needs(), Needs::everything());
    let decision = run_chain(
        std::slice::from_ref(&old),
        &request("/films/1"),
        Some(&user("alice", &[])),
    );
    assert_eq!(
        decision.unwrap(),
        Decision::Allow {
            set_headers: vec![("x-legacy".into(), "films alice x-request-id".into())],
            remove_headers: vec![],
        }
    );
    let anonymous = run_chain(&[old], &request("/films/1"), None).unwrap();
    assert!(
        matches!(&anonymous, Decision::Allow { set_headers, .. } if set_headers[0].1 == "films - x-request-id"),
        "{anonymous:?}"
    );
}

/// Allows accumulate header changes in chain order (a later plugin's set or
/// remove wins over an earlier one), and the first deny ends the chain: the
/// plugin after it (one that would loop forever) never runs.
#[test]
fn chain_accumulates_allow_headers_and_first_deny_wins() {
    let set = load(&[
        spec(
            "stamp-a",
            "header-stamp",
            json!({"set": {"x-login": "{login}", "x-debug": "on"}, "require": ["x-request-id"]}),
        ),
        spec(
            "stamp-b",
            "header-stamp",
            json!({"set": {"x-route": "{method} {route}"}, "remove": ["x-debug"]}),
        ),
        spec("roles", "role-rules", cinema_config()),
        spec("spin", "spin", json!({})),
    ]);
    let alice = user("alice", &["trial"]);
    let stamps = [one(&set, "stamp-a"), one(&set, "stamp-b")];
    assert_eq!(
        run_chain(&stamps, &request("/films/1"), Some(&alice)).unwrap(),
        Decision::Allow {
            set_headers: vec![
                ("x-login".into(), "alice".into()),
                ("x-route".into(), "GET films".into()),
            ],
            remove_headers: vec!["x-debug".into()],
        }
    );
    let denying = [one(&set, "stamp-a"), one(&set, "roles"), one(&set, "spin")];
    let started = Instant::now();
    assert_eq!(
        run_chain(&denying, &request("/films/premium"), Some(&alice)).unwrap(),
        deny(402, "requires one of the roles: subscriber")
    );
    assert_eq!(one(&set, "spin").stats().calls, 0);
    assert!(started.elapsed() < Duration::from_secs(1));
    // A missing required header is header-stamp's own deny (400).
    let mut bare = request("/films/1");
    bare.headers.clear();
    assert_eq!(
        run_chain(&stamps, &bare, Some(&alice)).unwrap(),
        deny(400, "missing header x-request-id")
    );
}

/// An endless loop in decide is stopped at the deadline (well under a
/// second), reported as a deadline failure naming the plugin, counted, and
/// the instance replaced: the next call on the same plugin succeeds.
#[test]
fn endless_loop_fails_closed_at_the_deadline_and_the_plugin_keeps_serving() {
    let mut s = spec("spin", "spin", json!({}));
    s.instances = 1;
    s.deadline = Duration::from_millis(5);
    let set = load(&[s]);
    let chain = [one(&set, "spin")];
    let started = Instant::now();
    let failure = run_chain(&chain, &request("/loop"), None).unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(
        (&*failure.plugin, failure.kind),
        ("spin", FailureKind::Deadline)
    );
    assert!(
        failure
            .to_string()
            .starts_with("plugin 'spin' failed (deadline)")
    );
    assert_eq!(
        run_chain(&chain, &request("/ok"), None).unwrap(),
        Decision::allow()
    );
    let stats = chain[0].stats();
    assert_eq!(stats.failures_of(FailureKind::Deadline), 1);
    assert_eq!(stats.recycled, 1);
}

/// The epoch ticker parks when no call has been made for a while; the
/// first call after that wakes it, so an endless loop is still stopped at
/// its deadline (a ticker left asleep would let it spin forever).
#[test]
fn deadline_holds_after_the_ticker_has_parked() {
    let host = PluginHost::new(&HostConfig::default()).unwrap();
    let mut s = spec("spin", "spin", json!({}));
    s.instances = 1;
    s.deadline = Duration::from_millis(5);
    let set = host.load(&[s], Path::new("/")).unwrap();
    let chain = [one(&set, "spin")];
    // Idle well past the ticker's 100 idle ticks.
    std::thread::sleep(Duration::from_millis(400));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let started = Instant::now();
        let failure = run_chain(&chain, &request("/loop"), None).unwrap_err();
        let _ = tx.send((failure.kind, started.elapsed()));
    });
    let (kind, took) = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("the endless loop was not stopped: the ticker did not wake");
    assert_eq!(kind, FailureKind::Deadline);
    assert!(took < Duration::from_secs(1), "took {took:?}");
}

/// The deadline counts the CPU a call gets, not the time its thread waits
/// for a core: a call that needs a fifth of its deadline of CPU, on a
/// thread of low priority sharing its CPU with a busy one, takes longer
/// than its deadline and is still allowed (a wall-clock deadline stopped
/// it: a 503 for a quick plugin on an overloaded host). The endless loop
/// on the same starved thread is still stopped.
#[test]
fn a_call_waiting_for_a_core_is_not_stopped_for_it() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let deadline = Duration::from_millis(10);
    let mut s = spec("spin", "spin", json!({}));
    s.instances = 1;
    s.deadline = deadline;
    let set = load(&[s]);
    let chain = [one(&set, "spin")];
    let cpu = || {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
        Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
    };
    // Turns of the loop for 2 ms of CPU, measured on the thread's own clock.
    let probe = 2_000_000u64;
    let before = cpu();
    assert_eq!(
        run_chain(&chain, &request(&format!("/iter/{probe}")), None).unwrap(),
        Decision::allow()
    );
    let per_turn = (cpu() - before).as_secs_f64() / probe as f64;
    let turns = (0.002 / per_turn) as u64;
    // The call's thread and a busy one on the same CPU, the call's at nice 10.
    let busy = Arc::new(AtomicBool::new(true));
    let pin = || {
        let mut one_cpu = rustix::thread::CpuSet::new();
        one_cpu.set(0);
        rustix::thread::sched_setaffinity(None, &one_cpu).unwrap();
    };
    let hog = {
        let busy = busy.clone();
        std::thread::spawn(move || {
            pin();
            let mut n = 0u64;
            while busy.load(Ordering::Relaxed) {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        })
    };
    let caller = std::thread::spawn(move || {
        pin();
        rustix::process::setpriority_process(Some(rustix::thread::gettid()), 10).unwrap();
        let mut walls = Vec::new();
        for _ in 0..3 {
            let started = Instant::now();
            let decided = run_chain(&chain, &request(&format!("/iter/{turns}")), None);
            walls.push(started.elapsed());
            assert_eq!(decided.unwrap(), Decision::allow(), "{walls:?}");
        }
        let started = Instant::now();
        let failure = run_chain(&chain, &request("/loop"), None).unwrap_err();
        (walls, failure.kind, started.elapsed())
    });
    let (walls, kind, took) = caller.join().unwrap();
    busy.store(false, Ordering::Relaxed);
    hog.join().unwrap();
    // The calls did wait: longer than the deadline, wall-clock.
    assert!(walls.iter().any(|w| *w > deadline), "{walls:?}");
    assert_eq!(kind, FailureKind::Deadline);
    assert!(took < Duration::from_secs(1), "took {took:?}");
}

/// A plugin growing memory without bound is stopped at its memory limit and
/// reported as a memory failure; the plugin then serves the next request.
#[test]
fn memory_bomb_is_stopped_at_the_memory_limit() {
    let mut s = spec("bomb", "memory-bomb", json!({}));
    s.instances = 1;
    let set = load(&[s]);
    let chain = [one(&set, "bomb")];
    let failure = run_chain(&chain, &request("/boom"), None).unwrap_err();
    assert_eq!(failure.kind, FailureKind::Memory, "{failure}");
    assert_eq!(
        run_chain(&chain, &request("/ok"), None).unwrap(),
        Decision::allow()
    );
    assert_eq!(chain[0].stats().failures_of(FailureKind::Memory), 1);
}

/// A guest that leaks 64 KiB on every call never fails one: 100,000 calls
/// at a 16 MiB limit all allow, because each instance is retired once its
/// memory passes `recycle_at` (75 % of the limit), after its answer, and
/// replaced. Without the retirement the first instance fails at call 239
/// (a memory failure, 503); checked by disabling it.
#[test]
fn a_leaking_guest_is_recycled_before_its_limit() {
    let mut s = spec("leaky", "leaky", json!({}));
    s.instances = 2;
    let set = load(&[s]);
    let chain = [one(&set, "leaky")];
    for i in 0..100_000 {
        if let Err(failure) = run_chain(&chain, &request("/films"), None) {
            panic!("call {i} failed: {failure}");
        }
    }
    let stats = chain[0].stats();
    assert_eq!(stats.calls, 100_000);
    assert!(stats.failures.iter().all(|(_, n)| *n == 0), "{stats:?}");
    // About (12 MiB - the start) / 64 KiB calls per instance.
    let retired = stats.retired_for(Retirement::Memory);
    assert!((400..=1000).contains(&retired), "{stats:?}");
}

/// The JavaScript example at 32 MiB serves 100,000 calls with no failure:
/// whatever its engine keeps, an instance is retired at `recycle_at` before
/// it reaches the limit. Without retirement, call 60,094 fails here (memory,
/// 503): checked by disabling it.
#[test]
fn the_js_example_serves_100_000_calls_without_a_failure() {
    let host = PluginHost::new(&HostConfig {
        pooling_allocator: false,
        ..HostConfig::default()
    })
    .unwrap();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/examples");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(examples.join("premium-gate.json")).unwrap())
            .unwrap();
    let mut js = spec("gate-js", "premium-gate-js", config);
    js.memory_limit = ByteSize(32 << 20);
    js.instances = 1;
    let set = host.load(&[js], Path::new("/")).unwrap();
    let chain = [one(&set, "gate-js")];
    let trial = user("bob", &["trial"]);
    for i in 0..100_000 {
        let (path, identity) = if i % 2 == 0 {
            ("/films/premium/42", Some(&trial))
        } else {
            ("/films", None)
        };
        if let Err(failure) = run_chain(&chain, &request(path), identity) {
            panic!("call {i} failed: {failure}");
        }
    }
    let stats = chain[0].stats();
    assert_eq!(stats.calls, 100_000);
    assert!(stats.failures.iter().all(|(_, n)| *n == 0), "{stats:?}");
    // Its memory does grow: 2 instances retired here (24 MiB of 32).
    assert!(stats.retired_for(Retirement::Memory) >= 1, "{stats:?}");
}

/// `max_calls_per_instance` retires an instance after that many calls, with
/// no failed call; the pool keeps serving.
#[test]
fn instances_are_retired_after_max_calls() {
    let mut s = spec("allow-all", "allow-all", json!({}));
    s.instances = 2;
    s.max_calls_per_instance = Some(10);
    let set = load(&[s]);
    let chain = [one(&set, "allow-all")];
    for _ in 0..100 {
        assert_eq!(
            run_chain(&chain, &request("/x"), None).unwrap(),
            Decision::allow()
        );
    }
    let stats = chain[0].stats();
    let retired = stats.retired_for(Retirement::Calls);
    assert!((5..=10).contains(&retired), "{stats:?}");
    assert_eq!(stats.retired_for(Retirement::Memory), 0);
}

/// A plugin that starts at or above its `recycle_at` would retire an
/// instance on every call: it is a load error naming the key, and a
/// `recycle_at` above `memory_limit` or a zero `max_calls_per_instance` is
/// refused as config.
#[test]
fn recycling_limits_that_cannot_work_are_load_errors() {
    let mut s = spec("tight", "allow-all", json!({}));
    s.recycle_at = Some(ByteSize(64 * 1024));
    let err = load_err(s).to_string();
    assert!(err.contains("recycle_at") && err.contains("tight"), "{err}");
    let mut s = spec("over", "allow-all", json!({}));
    s.recycle_at = Some(ByteSize(64 * 1024 * 1024));
    let err = load_err(s).to_string();
    assert!(err.contains("recycle_at"), "{err}");
    let mut s = spec("zero", "allow-all", json!({}));
    s.max_calls_per_instance = Some(0);
    let err = load_err(s).to_string();
    assert!(err.contains("max_calls_per_instance"), "{err}");
}

/// A plugin that traps on every other call of an instance fails closed on
/// those calls only, from tokio worker threads too (its panic message goes
/// through WASI stderr into the log without blocking), and the pool is
/// refilled in the background to its configured size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traps_fail_closed_and_the_pool_is_refilled() {
    let mut s = spec("flaky", "flaky", json!({}));
    s.instances = 2;
    let set = load(&[s]);
    let chain = [one(&set, "flaky")];
    let (mut ok, mut traps) = (0, 0);
    for _ in 0..20 {
        match run_chain(&chain, &request("/x"), None) {
            Ok(decision) => {
                assert_eq!(decision, Decision::allow());
                ok += 1;
            }
            Err(failure) => {
                assert_eq!(failure.kind, FailureKind::Trap, "{failure}");
                traps += 1;
            }
        }
    }
    assert!(ok >= 10 && traps >= 1, "ok {ok}, traps {traps}");
    let stats = chain[0].stats();
    assert_eq!(stats.failures_of(FailureKind::Trap), traps);
    assert_eq!(stats.recycled, traps);
    let deadline = Instant::now() + Duration::from_secs(10);
    while chain[0].idle_instances() < 2 {
        assert!(Instant::now() < deadline, "the pool was not refilled");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// More concurrent callers than warm instances are all served: each call
/// has an instance to itself, extra ones made inline and counted.
#[test]
fn concurrent_callers_beyond_the_pool_are_served() {
    let mut s = spec("roles", "role-rules", cinema_config());
    s.instances = 1;
    let set = load(&[s]);
    let plugin = one(&set, "roles");
    std::thread::scope(|scope| {
        for _ in 0..4 {
            let chain = [plugin.clone()];
            scope.spawn(move || {
                let alice = user("alice", &["subscriber"]);
                for _ in 0..25 {
                    let d = run_chain(&chain, &request("/films/premium"), Some(&alice));
                    assert_eq!(d.unwrap(), Decision::allow());
                }
            });
        }
    });
    let stats = plugin.stats();
    assert_eq!(stats.calls, 100);
    assert_eq!(plugin.idle_instances(), 1);
    assert!(stats.inline_instantiations <= 100);
}

/// A file that is not wasm, a component of another world, and a missing
/// file each fail the load with an error naming the plugin and the cause.
#[test]
fn bad_plugin_files_are_load_errors_naming_the_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"definitely not wasm").unwrap();
    let e = load_err(PluginSpec::new("junk", &junk));
    assert_eq!(e.plugin_name(), Some("junk"));
    assert!(
        e.to_string().contains("is not a WebAssembly component"),
        "{e}"
    );

    let e = load_err(spec("other", "wrong-world", json!({})));
    assert_eq!(e.plugin_name(), Some("other"));
    assert!(
        e.to_string()
            .contains("does not export authgw:policy/policy"),
        "{e}"
    );

    let e = load_err(PluginSpec::new("gone", dir.path().join("gone.wasm")));
    assert!(
        e.to_string().starts_with("plugin 'gone': cannot read"),
        "{e}"
    );

    let mut twice = vec![spec("a", "allow-all", json!({}))];
    twice.push(twice[0].clone());
    let e = host().load(&twice, Path::new("/")).unwrap_err();
    assert_eq!(e.to_string(), "plugin 'a': defined twice");
}

/// A plugin of an interface version this gateway does not know is refused
/// at load, naming its version and the versions the gateway loads.
#[test]
fn an_unknown_interface_version_is_a_load_error() {
    let e = load_err(spec("future", "future", json!({})));
    assert_eq!(e.plugin_name(), Some("future"));
    let text = e.to_string();
    assert!(
        text.contains(
            "exports authgw:policy/policy@0.9.0; this gateway loads versions 0.4.0, 0.3.0, 0.2.0, 0.1.0"
        ),
        "{text}"
    );
}

/// A config the plugin refuses is a load error with the plugin's name and
/// the plugin's own message (which names the rule and key).
#[test]
fn refused_config_is_a_load_error_naming_the_plugin() {
    let e = load_err(spec(
        "roles",
        "role-rules",
        json!({"rules": [{"path": "/films", "any_of": ["x"]}, {"path": "films"}]}),
    ));
    assert_eq!(e.plugin_name(), Some("roles"));
    let text = e.to_string();
    assert!(text.contains("configure refused the config"), "{text}");
    assert!(
        text.contains("rules[1]: `path` \"films\" must start with '/'"),
        "{text}"
    );
}

/// The pooling allocator can be turned off; plugins work the same.
#[test]
fn plugins_run_without_the_pooling_allocator() {
    let host = PluginHost::new(&HostConfig {
        pooling_allocator: false,
        ..HostConfig::default()
    })
    .unwrap();
    let set = host
        .load(
            &[spec("roles", "role-rules", cinema_config())],
            Path::new("/"),
        )
        .unwrap();
    let d = run_chain(&[one(&set, "roles")], &request("/films"), None).unwrap();
    assert_eq!(d, Decision::allow());
}

fn authgw(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_authgw"))
        .args(args)
        .env_remove("AUTHGW_CONFIG")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `plugin check` prints the exported interface version and exits 0; a
/// component of another world is exit 1, a missing file exit 2, each with
/// one `error:` line.
#[test]
fn plugin_check_reports_the_interface_version_and_exit_codes() {
    let rules = dist("role-rules");
    let out = authgw(&["plugin", "check", rules.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let first = stdout.lines().next().unwrap_or_default();
    assert!(
        first.ends_with("exports authgw:policy/policy@0.4.0"),
        "{stdout}"
    );
    let stamp = dist("header-stamp");
    let out = authgw(&["plugin", "check", stamp.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout)
            .lines()
            .next()
            .unwrap_or_default()
            .ends_with("exports authgw:policy/policy@0.2.0"),
        "{}",
        text(&out.stdout)
    );
    let old = dist("legacy");
    let out = authgw(&["plugin", "check", old.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout)
            .lines()
            .next()
            .unwrap_or_default()
            .ends_with("exports authgw:policy/policy@0.1.0"),
        "{}",
        text(&out.stdout)
    );

    let other = dist("wrong-world");
    let out = authgw(&["plugin", "check", other.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("error: ") && stderr.contains("does not export authgw:policy/policy")
    );

    let out = authgw(&["plugin", "check", "no/such/plugin.wasm"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).starts_with("error: cannot read no/such/plugin.wasm"));
}

/// `plugin check` also instantiates the plugin and calls `configure` under
/// the limits it is given, as the gateway does at load, and says what memory
/// it starts with: a plugin that cannot start under its limit, or refuses
/// its config, fails the check (exit 1); a limit out of range is exit 2
/// naming the option.
#[test]
fn plugin_check_configures_the_plugin_under_its_limits() {
    let rules = dist("role-rules");
    let rules = rules.to_str().unwrap();
    let cinema = example("cinema.json");
    let out = authgw(&[
        "plugin",
        "check",
        rules,
        "--config",
        cinema.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let second = stdout.lines().nth(1).unwrap_or_default();
    assert!(
        second.starts_with("configured under memory_limit 16MiB: starts with ")
            && second.ends_with("of linear memory (instances are retired at 12MiB)"),
        "{stdout}"
    );

    let out = authgw(&["plugin", "check", rules, "--memory-limit", "1MiB"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("error: ") && stderr.lines().count() == 1,
        "{stderr}"
    );
    assert!(
        stderr.contains("memory") || stderr.contains("recycle_at"),
        "{stderr}"
    );

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"rules": [{"path": "films"}]}"#).unwrap();
    let out = authgw(&["plugin", "check", rules, "--config", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("configure refused the config"),
        "{}",
        text(&out.stderr)
    );

    let out = authgw(&["plugin", "check", rules, "--deadline", "5s"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).starts_with("error: --deadline: "),
        "{}",
        text(&out.stderr)
    );
}

/// `plugin test --repeat N` runs every case N times under the given limits
/// and reports each case's and the whole run's median and p99 call time.
#[test]
fn plugin_test_repeats_and_reports_call_times() {
    let rules = dist("role-rules");
    let (config, cases) = (example("cinema.json"), example("cinema-cases.toml"));
    let out = authgw(&[
        "plugin",
        "test",
        rules.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
        "--cases",
        cases.to_str().unwrap(),
        "--repeat",
        "50",
        "--memory-limit",
        "32MiB",
        "--deadline",
        "50ms",
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.last(), Some(&"9 passed, 0 failed"));
    let total = lines[lines.len() - 2];
    assert!(
        total.starts_with("call time over 450 calls: median ") && total.contains(" µs, p99 "),
        "{stdout}"
    );
    assert!(
        lines
            .iter()
            .filter(|l| l.starts_with("pass: ") && l.contains("(median "))
            .count()
            == 9,
        "{stdout}"
    );
}

/// A host started again with the same `cache_dir` (a restart) takes the
/// compiled plugin from wasmtime's cache instead of compiling it, and the
/// cached code decides the same; an empty `cache_dir` turns the cache off.
/// `authgw plugin compile` warms the same cache.
#[test]
fn a_restart_takes_compiled_plugins_from_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let config = HostConfig {
        cache_dir: cache.clone(),
        ..HostConfig::default()
    };
    let specs = [spec("roles", "role-rules", cinema_config())];
    let first = PluginHost::new(&config).unwrap();
    first.load(&specs, Path::new("/")).unwrap();
    let (hits, misses) = first.cache_stats().unwrap();
    assert!(
        hits == 0 && misses >= 1,
        "first start: {hits} hits, {misses} misses"
    );
    let second = PluginHost::new(&config).unwrap();
    let set = second.load(&specs, Path::new("/")).unwrap();
    let (hits, misses) = second.cache_stats().unwrap();
    assert!(
        hits >= 1 && misses == 0,
        "restart: {hits} hits, {misses} misses"
    );
    let chain = [one(&set, "roles")];
    assert_eq!(
        run_chain(&chain, &request("/films"), None).unwrap(),
        Decision::allow()
    );
    let off = PluginHost::new(&HostConfig {
        cache_dir: PathBuf::new(),
        ..HostConfig::default()
    })
    .unwrap();
    assert_eq!(off.cache_stats(), None);

    let warm = dir.path().join("warm");
    let (rules, warm_arg) = (dist("allow-all"), warm.to_str().unwrap().to_string());
    let compile = || {
        let out = authgw(&[
            "plugin",
            "compile",
            rules.to_str().unwrap(),
            "--cache-dir",
            &warm_arg,
        ]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    assert!(compile().contains("compiled into the cache"));
    assert!(compile().contains("already in the cache"));
}

/// The example policy (plugins/examples) decides the same in Rust
/// (role-rules with premium-gate-role-rules.json), in Python
/// (componentize-py, plugins/dist/premium-gate-py.wasm) and in JavaScript
/// (componentize-js, premium-gate-js.wasm): the same requests get the same
/// decisions through `run_chain`, and `authgw plugin test` passes the shared
/// cases file for all three. The Python component embeds CPython (it starts
/// at about 12.4 MiB: 64 MiB), the JS one SpiderMonkey (about 9 MiB: 32 MiB).
#[test]
fn the_example_policy_decides_the_same_in_rust_python_and_js() {
    let host = PluginHost::new(&HostConfig {
        pooling_allocator: false,
        ..HostConfig::default()
    })
    .unwrap();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/examples");
    let config = |name: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(examples.join(name)).unwrap()).unwrap()
    };
    let rust = spec(
        "gate-rust",
        "role-rules",
        config("premium-gate-role-rules.json"),
    );
    let mut python = spec("gate-py", "premium-gate-py", config("premium-gate.json"));
    python.memory_limit = ByteSize(64 << 20);
    let mut js = spec("gate-js", "premium-gate-js", config("premium-gate.json"));
    js.memory_limit = ByteSize(32 << 20);
    let set = host.load(&[rust, python, js], Path::new("/")).unwrap();
    let (rust, python, js) = (
        [one(&set, "gate-rust")],
        [one(&set, "gate-py")],
        [one(&set, "gate-js")],
    );
    let cases: [(&str, Option<&[&str]>, Decision); 5] = [
        (
            "/films/premium/42",
            Some(&["subscriber"]),
            Decision::allow(),
        ),
        (
            "/films/premium/42",
            Some(&["trial"]),
            deny(402, "requires one of the roles: subscriber"),
        ),
        (
            "/films/premium",
            None,
            Decision::Deny {
                status: 401,
                reason: String::new(),
                code: None,
            },
        ),
        ("/films/premiumx", None, Decision::allow()),
        ("/films", Some(&[]), Decision::allow()),
    ];
    for (path, roles, want) in cases {
        let identity = roles.map(|r| user("alice", r));
        let mut got = Vec::new();
        for chain in [&rust, &python, &js] {
            let mut d = run_chain(chain, &request(path), identity.as_ref()).unwrap();
            if let Decision::Deny {
                status: 401,
                reason,
                ..
            } = &mut d
            {
                // The wording of "log in first" is each plugin's own.
                reason.clear();
            }
            got.push(d);
        }
        assert_eq!(
            got,
            vec![want.clone(), want.clone(), want],
            "{path} {roles:?}"
        );
    }
    let cases = examples.join("premium-gate-cases.toml");
    for (file, config, limits) in [
        ("role-rules", "premium-gate-role-rules.json", vec![]),
        (
            "premium-gate-py",
            "premium-gate.json",
            vec!["--memory-limit", "64MiB", "--deadline", "250ms"],
        ),
        (
            "premium-gate-js",
            "premium-gate.json",
            vec!["--memory-limit", "32MiB", "--deadline", "250ms"],
        ),
    ] {
        let (wasm, config) = (dist(file), examples.join(config));
        let mut args = vec![
            "plugin",
            "test",
            wasm.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
            "--cases",
            cases.to_str().unwrap(),
        ];
        args.extend(limits);
        let out = authgw(&args);
        let stdout = text(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{file}: {stdout}{}",
            text(&out.stderr)
        );
        assert_eq!(stdout.lines().last(), Some("5 passed, 0 failed"), "{file}");
    }
}

/// `plugin test` prints a pass line per case and exits 0 when all pass; a
/// wrong expectation is a FAIL line and exit 1; an invalid cases file is
/// exit 2 naming the file and the key.
#[test]
fn plugin_test_compares_decisions_with_the_cases() {
    let rules = dist("role-rules");
    let rules = rules.to_str().unwrap();
    let config = example("cinema.json");
    let cinema_test = |cases: &Path| {
        let (config, cases) = (config.to_str().unwrap(), cases.to_str().unwrap());
        authgw(&[
            "plugin", "test", rules, "--config", config, "--cases", cases,
        ])
    };
    let out = cinema_test(&example("cinema-cases.toml"));
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.lines().filter(|l| l.starts_with("pass: ")).count() >= 9);
    assert_eq!(stdout.lines().last(), Some("9 passed, 0 failed"));

    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("wrong.toml");
    std::fs::write(
        &wrong,
        r#"
[[case]]
name = "premium is free (it is not)"
path = "/films/premium"
identity = { roles = ["trial"] }
expect = { decision = "allow" }

[[case]]
name = "catalogue"
path = "/films"
expect = { decision = "allow" }
"#,
    )
    .unwrap();
    let out = cinema_test(&wrong);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(stdout.contains(
        "FAIL: premium is free (it is not): expected allow, got deny 402 (requires one of the roles: subscriber)"
    ), "{stdout}");
    assert!(stdout.contains("pass: catalogue"));
    assert_eq!(text(&out.stderr).trim(), "error: 1 of 2 cases failed");

    let invalid = dir.path().join("invalid.toml");
    std::fs::write(
        &invalid,
        "[[case]]\nname = \"x\"\npath = \"/\"\nexpect = { decision = \"allow\", status = \"x\" }\n",
    )
    .unwrap();
    let out = cinema_test(&invalid);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with(&format!(
            "error: {}: case[0].expect.status",
            invalid.display()
        )),
        "{stderr}"
    );
}
