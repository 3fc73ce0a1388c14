//! Prometheus metrics, served as text on the admin listener's `/metrics`.
//!
//! Counters and histograms are updated where things happen (the proxy); the
//! gauges that describe shared state (revocation set, pool, hashing queue)
//! are read when scraped, so they cost nothing per request.

use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::plugins::PluginStats;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteStatus {
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    pub route: String,
}

/// A forward-auth answer: which endpoint, what came of it, with what status.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Decision {
    pub endpoint: &'static str,
    /// allow, deny, invalid (unreadable original request), failed (a plugin
    /// failed: closed), untrusted (the caller is not a trusted proxy).
    pub outcome: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reason {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MfaLabel {
    /// `totp` or `recovery_code`.
    pub method: &'static str,
    /// `success` or `failure`.
    pub result: &'static str,
}

/// One route's proxy metrics (`proxy_requests` by status, and
/// `upstream_response_seconds`), resolved in the families once and then
/// kept: the per-request path updates them without building label strings
/// or hashing into a family (issue 18). A route is served by one gateway,
/// so the first [`Metrics`] that touches it is the only one.
pub struct RouteMetrics {
    route: String,
    latency: OnceLock<Histogram>,
    /// `proxy_requests` per status, indexed by status - 100 (100..=599).
    by_status: Box<[OnceLock<Counter>]>,
}

impl RouteMetrics {
    pub fn new(route: &str) -> Self {
        Self {
            route: route.to_string(),
            latency: OnceLock::new(),
            by_status: (100..600).map(|_| OnceLock::new()).collect(),
        }
    }

    /// Counts one request answered with `status`.
    pub fn count(&self, metrics: &Metrics, status: u16) {
        let family = || {
            metrics
                .requests
                .get_or_create(&RouteStatus {
                    route: self.route.clone(),
                    status,
                })
                .clone()
        };
        match self.by_status.get(usize::from(status).wrapping_sub(100)) {
            Some(slot) => slot.get_or_init(family).inc(),
            None => family().inc(),
        };
    }

    /// Records the time until the upstream's response headers.
    pub fn observe_upstream(&self, metrics: &Metrics, seconds: f64) {
        self.latency
            .get_or_init(|| {
                metrics
                    .upstream_latency
                    .get_or_create(&RouteLabel {
                        route: self.route.clone(),
                    })
                    .clone()
            })
            .observe(seconds);
    }
}

/// Every metric of the process.
pub struct Metrics {
    registry: Registry,
    /// Proxied requests by route and final status.
    pub requests: Family<RouteStatus, Counter>,
    /// Time from sending to the upstream until its response headers, seconds.
    pub upstream_latency: Family<RouteLabel, Histogram>,
    /// Refused tokens on proxied requests by reason (missing, expired, revoked, invalid).
    pub auth_failures: Family<Reason, Counter>,
    /// Forward-auth answers by endpoint, outcome and status.
    pub decisions: Family<Decision, Counter>,
    revocations: Gauge,
    revocation_sync_age: Gauge<f64, AtomicU64>,
    pool_in_use: Gauge,
    hash_queue: Gauge,
    hashes_running: Gauge,
    hashes_running_max: Gauge,
    hash_slots: Gauge,
    hashes: Counter,
    connections_open: Gauge,
    connections_rejected: Counter,
    tls_handshake_failures: Counter,
    connections_parked: Gauge,
    email_queued: Gauge,
    email_failed_rows: Gauge,
    email_oldest: Gauge<f64, AtomicU64>,
    email_sent: Counter,
    email_failed: Counter,
    email_send_errors: Counter,
    resets_dropped: Counter,
    mfa: Family<MfaLabel, Counter>,
    /// Serializes scrapes: gauges are set, then encoded.
    scrape: Mutex<()>,
}

/// Shared state read at scrape time.
pub struct Snapshot {
    pub revocations: usize,
    /// Time since the revocation set was last known current.
    pub revocation_sync_age: Duration,
    pub pool_in_use: u32,
    pub hash_queue: usize,
    /// The hasher's slots and what runs in them.
    pub hasher: crate::passwords::HasherStats,
    /// Counters of the plugins loaded now (they restart at a reload, which
    /// Prometheus reads as a counter reset).
    pub plugins: Vec<(String, PluginStats)>,
    /// Client connections open on the main listener, and of those the idle
    /// keep-alive connections parked (holding no HTTP buffers).
    pub connections_open: usize,
    pub connections_parked: usize,
    /// Connections closed at accept since start: `server.max_connections`
    /// were open.
    pub connections_rejected: u64,
    /// TLS handshakes on the main listener that failed or timed out.
    pub tls_handshake_failures: u64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("authgw");
        let requests = Family::<RouteStatus, Counter>::default();
        registry.register(
            "proxy_requests",
            "Proxied requests by route and status",
            requests.clone(),
        );
        let upstream_latency = Family::<RouteLabel, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ])
        });
        registry.register(
            "upstream_response_seconds",
            "Time until the upstream's response headers",
            upstream_latency.clone(),
        );
        let auth_failures = Family::<Reason, Counter>::default();
        registry.register(
            "proxy_auth_failures",
            "Tokens refused on proxied requests, by reason",
            auth_failures.clone(),
        );
        let decisions = Family::<Decision, Counter>::default();
        registry.register(
            "authz_decisions",
            "Forward-auth answers (/api/v1/authz/*) by endpoint, outcome and status",
            decisions.clone(),
        );
        let mut gauge = |name: &str, help: &str| {
            let g = Gauge::default();
            registry.register(name, help, g.clone());
            g
        };
        let revocations = gauge(
            "revocation_set_entries",
            "Revoked sessions and users held in memory",
        );
        let pool_in_use = gauge("db_pool_in_use", "Database connections checked out");
        let hash_queue = gauge(
            "password_hash_queue",
            "Password hashes running or waiting for a slot",
        );
        let hashes_running = gauge("password_hashes_running", "Password hashes computing now");
        let hashes_running_max = gauge(
            "password_hashes_running_max",
            "The most password hashes ever computing at once since start",
        );
        let hash_slots = gauge(
            "password_hash_slots",
            "Password hashes allowed to compute at once",
        );
        let connections_open = gauge(
            "connections_open",
            "Client connections open on the main listener",
        );
        let connections_parked = gauge(
            "connections_parked",
            "Idle keep-alive connections parked: no HTTP buffers held",
        );
        let email_queued = gauge(
            "email_outbox_queued",
            "Messages in the outbox waiting to be sent (as of the sender's last pass)",
        );
        let email_failed_rows = gauge(
            "email_outbox_failed",
            "Messages in the outbox given up on (authgw email retry requeues them)",
        );
        let hashes = Counter::default();
        registry.register(
            "password_hashes",
            "Password hashes and verifications computed",
            hashes.clone(),
        );
        let connections_rejected = Counter::default();
        registry.register(
            "connections_rejected",
            "Connections closed at accept because server.max_connections were open",
            connections_rejected.clone(),
        );
        let tls_handshake_failures = Counter::default();
        registry.register(
            "tls_handshake_failures",
            "TLS handshakes on the main listener that failed (old protocol, no shared suite, refused client certificate) or timed out",
            tls_handshake_failures.clone(),
        );
        let revocation_sync_age = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "revocation_sync_age_seconds",
            "Time since the revocation set was last known current (its LISTEN connection answered a probe); revocations made since may be missing",
            revocation_sync_age.clone(),
        );
        let email_oldest = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "email_outbox_oldest_queued_seconds",
            "Age of the oldest message waiting in the outbox (0 when none)",
            email_oldest.clone(),
        );
        let mut counter = |name: &str, help: &str| {
            let c = Counter::default();
            registry.register(name, help, c.clone());
            c
        };
        let email_sent = counter("email_sent", "Messages this process delivered");
        let email_failed = counter(
            "email_failed",
            "Messages this process gave up on (max_attempts reached or refused for good)",
        );
        let email_send_errors = counter(
            "email_send_errors",
            "Failed delivery attempts by this process (each retried or given up)",
        );
        let resets_dropped = counter(
            "password_reset_dropped",
            "Password-reset requests answered 202 but dropped: email.max_pending_resets were queued or running",
        );
        let mfa = Family::<MfaLabel, Counter>::default();
        registry.register(
            "mfa_verifications",
            "Second-factor codes checked (login, enrolment, regeneration, disabling) by method (totp, recovery_code) and result (success, failure)",
            mfa.clone(),
        );
        Self {
            registry,
            requests,
            upstream_latency,
            auth_failures,
            decisions,
            revocations,
            revocation_sync_age,
            pool_in_use,
            hash_queue,
            hashes_running,
            hashes_running_max,
            hash_slots,
            hashes,
            connections_open,
            connections_rejected,
            tls_handshake_failures,
            connections_parked,
            email_queued,
            email_failed_rows,
            email_oldest,
            email_sent,
            email_failed,
            email_send_errors,
            resets_dropped,
            mfa,
            scrape: Mutex::new(()),
        }
    }

    /// The outbox as the mail sender last saw it.
    pub fn set_outbox(&self, stats: crate::store::outbox::Stats) {
        self.email_queued.set(stats.queued);
        self.email_failed_rows.set(stats.failed);
        self.email_oldest.set(stats.oldest_queued_secs);
    }

    pub fn email_sent(&self) {
        self.email_sent.inc();
    }

    /// A password-reset request dropped after its 202 (a flood).
    pub fn reset_dropped(&self) {
        self.resets_dropped.inc();
    }

    /// A second-factor code checked: `method` is `totp` or `recovery_code`.
    pub fn mfa(&self, method: &'static str, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.mfa.get_or_create(&MfaLabel { method, result }).inc();
    }

    /// A failed attempt; `given_up` when the message is now failed.
    pub fn email_send_error(&self, given_up: bool) {
        self.email_send_errors.inc();
        if given_up {
            self.email_failed.inc();
        }
    }

    /// The Prometheus text exposition of every metric, gauges set from `now`.
    pub fn render(&self, now: &Snapshot) -> String {
        let _one_at_a_time = self.scrape.lock();
        let set = |gauge: &Gauge, value: usize| {
            gauge.set(i64::try_from(value).unwrap_or(i64::MAX));
        };
        set(&self.revocations, now.revocations);
        self.revocation_sync_age
            .set(now.revocation_sync_age.as_secs_f64());
        self.pool_in_use.set(i64::from(now.pool_in_use));
        set(&self.hash_queue, now.hash_queue);
        set(&self.connections_open, now.connections_open);
        set(&self.connections_parked, now.connections_parked);
        set(&self.hashes_running, now.hasher.running);
        set(&self.hashes_running_max, now.hasher.running_max);
        set(&self.hash_slots, now.hasher.slots);
        // Counters kept elsewhere: catch up to their value.
        let catch_up = |counter: &Counter, value: u64| {
            counter.inc_by(value.saturating_sub(counter.get()));
        };
        catch_up(&self.hashes, now.hasher.total as u64);
        catch_up(&self.connections_rejected, now.connections_rejected);
        catch_up(&self.tls_handshake_failures, now.tls_handshake_failures);
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "metrics encoding failed");
        }
        // The plugin counters live with the plugins; append them before "# EOF".
        let eof = out.rfind("# EOF").unwrap_or(out.len());
        let tail = out.split_off(eof);
        render_plugins(&mut out, &now.plugins);
        out.push_str(&tail);
        out
    }
}

fn render_plugins(out: &mut String, plugins: &[(String, PluginStats)]) {
    use std::fmt::Write;
    let mut family =
        |name: &str, help: &str, value: &dyn Fn(&PluginStats) -> Vec<(String, u64)>| {
            let _ = writeln!(out, "# HELP authgw_{name} {help}.");
            let _ = writeln!(out, "# TYPE authgw_{name} counter");
            for (plugin, stats) in plugins {
                for (extra, v) in value(stats) {
                    let _ = writeln!(out, "authgw_{name}_total{{plugin=\"{plugin}\"{extra}}} {v}");
                }
            }
        };
    family("plugin_calls", "Policy plugin decide calls", &|s| {
        vec![(String::new(), s.calls)]
    });
    family("plugin_denies", "Policy plugin denies", &|s| {
        vec![(String::new(), s.denies)]
    });
    family(
        "plugin_failures",
        "Policy plugin failures by kind (the request got 503)",
        &|s| {
            s.failures
                .iter()
                .map(|(k, n)| (format!(",kind=\"{}\"", k.as_str()), *n))
                .collect()
        },
    );
    family(
        "plugin_instances_recycled",
        "Plugin instances thrown away after a failure",
        &|s| vec![(String::new(), s.recycled)],
    );
    family(
        "plugin_instances_retired",
        "Healthy plugin instances retired after a call, by reason (memory past recycle_at, max_calls_per_instance)",
        &|s| {
            s.retired
                .iter()
                .map(|(r, n)| (format!(",reason=\"{}\"", r.as_str()), *n))
                .collect()
        },
    );
    family(
        "plugin_inline_instantiations",
        "Plugin instances made on the request path",
        &|s| vec![(String::new(), s.inline_instantiations)],
    );
}
