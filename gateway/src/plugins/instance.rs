//! One plugin instance: a `Store` with its limits, instantiated from the
//! plugin's `InstancePre` and configured. Serves one call at a time.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use wasmtime::Store;

use super::bindings::{
    self, HeaderResult, IdentityParam, RequestParam, WitDecision, v0_1, v0_2, v0_3,
};
use super::epoch::Ticker;
use super::error::FailureKind;
use super::needs::Needs;
use super::sandbox::State;
use super::spec::ByteSize;

/// Budget of instantiation plus `configure`, in epoch ticks: configuration
/// may parse a large config, and happens off the request path.
pub(crate) const CONFIGURE_TICKS: u64 = 1000;

/// What an instance needs to come to life; shared by every instance of a plugin.
pub(crate) struct Blueprint {
    pub(crate) name: Arc<str>,
    pub(crate) pre: Pre,
    pub(crate) memory_limit: usize,
    /// Retire an instance whose memory reached this ([`Instance::retirement`]).
    pub(crate) recycle_at: usize,
    /// Retire an instance after this many calls.
    pub(crate) max_calls: Option<u64>,
    pub(crate) config_json: String,
    /// Epoch ticks one `decide` may take.
    pub(crate) deadline_ticks: u64,
    /// Keeps the epoch advancing while a call runs.
    pub(crate) ticker: Arc<Ticker>,
}

/// A plugin compiled and linked, for the interface version it exports.
pub(crate) enum Pre {
    Current(bindings::PluginPre<State>),
    V0_3(v0_3::PluginPre<State>),
    V0_2(v0_2::PluginPre<State>),
    V0_1(v0_1::PluginPre<State>),
}

impl Pre {
    fn engine(&self) -> &wasmtime::Engine {
        match self {
            Pre::Current(pre) => pre.engine(),
            Pre::V0_3(pre) => pre.engine(),
            Pre::V0_2(pre) => pre.engine(),
            Pre::V0_1(pre) => pre.engine(),
        }
    }
}

/// An instance's exports, by interface version.
enum Bound {
    Current(bindings::Plugin),
    V0_3(v0_3::Plugin),
    V0_2(v0_2::Plugin),
    V0_1(v0_1::Plugin),
}

pub(crate) struct Instance {
    store: Store<State>,
    plugin: Bound,
    ticker: Arc<Ticker>,
    /// `decide` calls served.
    calls: u64,
}

/// Why a healthy instance is retired after a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retirement {
    /// Its memory reached `recycle_at`.
    Memory,
    /// It served `max_calls_per_instance` calls.
    Calls,
}

impl Retirement {
    pub const ALL: [Retirement; 2] = [Retirement::Memory, Retirement::Calls];

    /// Its label in `/metrics`.
    pub fn as_str(self) -> &'static str {
        match self {
            Retirement::Memory => "memory",
            Retirement::Calls => "calls",
        }
    }
}

/// Why an instance could not be made: the plugin refused its config, or a
/// failure (trap, deadline, memory) on the way.
#[derive(Debug)]
pub(crate) enum CreateError {
    Refused(String),
    Failed(FailureKind, String),
    /// A fresh instance is already at `recycle_at` (bytes, both).
    StartsTooLarge {
        memory: usize,
        recycle_at: usize,
    },
}

impl std::fmt::Display for CreateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CreateError::Refused(msg) => write!(f, "configure refused the config: {msg}"),
            CreateError::Failed(kind, detail) => write!(f, "{kind} while starting: {detail}"),
            CreateError::StartsTooLarge { memory, recycle_at } => write!(
                f,
                "recycle_at: the plugin starts with {} of linear memory, at or above recycle_at ({}): \
                 every call would retire its instance; raise memory_limit (recycle_at defaults to 75 % of it)",
                ByteSize(*memory as u64),
                ByteSize(*recycle_at as u64)
            ),
        }
    }
}

impl Instance {
    /// Instantiates and configures a fresh instance; returns it with what
    /// its `decide` reads (everything a 0.1.0 plugin can be given, for one).
    pub(crate) fn create(bp: &Blueprint) -> Result<(Instance, Needs), CreateError> {
        let mut store = Store::new(
            bp.pre.engine(),
            State::new(bp.name.clone(), bp.memory_limit),
        );
        store.limiter(|s| s);
        // At the end of each deadline-long window: go on while the thread
        // was waiting for a core, stop once it was running (deadline.rs).
        store.epoch_deadline_callback(|mut store| {
            Ok(store
                .data_mut()
                .deadline
                .window_ended(super::deadline::thread_cpu()))
        });
        set_deadline(&mut store, CONFIGURE_TICKS);
        let failed = |(kind, detail)| CreateError::Failed(kind, detail);
        let plugin = guarded(&bp.ticker, &mut store, |store| match &bp.pre {
            Pre::Current(pre) => pre.instantiate(store).map(Bound::Current),
            Pre::V0_3(pre) => pre.instantiate(store).map(Bound::V0_3),
            Pre::V0_2(pre) => pre.instantiate(store).map(Bound::V0_2),
            Pre::V0_1(pre) => pre.instantiate(store).map(Bound::V0_1),
        })
        .map_err(failed)?;
        set_deadline(&mut store, CONFIGURE_TICKS);
        let config = bp.config_json.as_str();
        let needs = guarded(&bp.ticker, &mut store, |store| match &plugin {
            Bound::Current(p) => Ok(p
                .authgw_policy_policy()
                .call_configure(store, config)?
                .map(Needs::declared)),
            Bound::V0_3(p) => Ok(p
                .authgw_policy_policy()
                .call_configure(store, config)?
                .map(Needs::declared_v0_3)),
            Bound::V0_2(p) => Ok(p
                .authgw_policy_policy()
                .call_configure(store, config)?
                .map(Needs::declared_v0_2)),
            Bound::V0_1(p) => Ok(p
                .authgw_policy_policy()
                .call_configure(store, config)?
                .map(|()| Needs::everything())),
        })
        .map_err(failed)?
        .map_err(CreateError::Refused)?;
        let instance = Instance {
            store,
            plugin,
            ticker: bp.ticker.clone(),
            calls: 0,
        };
        Ok((instance, needs))
    }

    /// Runs `decide` within the deadline. An error means this instance must
    /// be thrown away.
    pub(crate) fn decide(
        &mut self,
        deadline_ticks: u64,
        request: &RequestParam<'_>,
        identity: Option<&IdentityParam<'_>>,
    ) -> Result<WitDecision, (FailureKind, String)> {
        set_deadline(&mut self.store, deadline_ticks);
        self.calls += 1;
        let plugin = &self.plugin;
        guarded(&self.ticker, &mut self.store, |store| match plugin {
            Bound::Current(p) => {
                p.authgw_policy_policy()
                    .call_decide(store, request.clone(), identity.cloned())
            }
            Bound::V0_3(p) => {
                let headers = v0_3_headers(request);
                let request = v0_3_request(request, &headers);
                p.authgw_policy_policy()
                    .call_decide(store, request, identity.map(v0_3_identity))
                    .map(from_v0_3)
            }
            Bound::V0_2(p) => {
                let headers = v0_2_headers(request);
                let request = v0_2_request(request, &headers);
                p.authgw_policy_policy()
                    .call_decide(store, request, identity.map(v0_2_identity))
                    .map(from_v0_2)
            }
            Bound::V0_1(p) => {
                let headers = v0_1_headers(request);
                let request = v0_1_request(request, &headers);
                p.authgw_policy_policy()
                    .call_decide(store, request, identity.map(v0_1_identity))
                    .map(from_v0_1)
            }
        })
    }

    /// Whether this instance should be retired now that a call is done: its
    /// memory reached `recycle_at` (a guest that keeps growing would fail a
    /// request at `memory_limit` later), or it served `max_calls`.
    pub(crate) fn retirement(&self, bp: &Blueprint) -> Option<Retirement> {
        if self.store.data().memory_high >= bp.recycle_at {
            Some(Retirement::Memory)
        } else if bp.max_calls.is_some_and(|max| self.calls >= max) {
            Some(Retirement::Calls)
        } else {
            None
        }
    }

    /// The largest linear memory of this instance, in bytes.
    pub(crate) fn memory_bytes(&self) -> usize {
        self.store.data().memory_high
    }
}

/// For an interface version older than the current one: its request's
/// headers borrowed from the current request's, and its decision in the
/// current shape (a deny without a code: `policy_denied`); with a fourth
/// name, its identity too.
macro_rules! older_version {
    ($v:ident, $headers:ident, $from:ident) => {
        fn $headers<'a>(r: &RequestParam<'a>) -> Vec<$v::HeaderParam<'a>> {
            r.headers
                .iter()
                .map(|h| $v::HeaderParam {
                    name: h.name,
                    value: h.value,
                })
                .collect()
        }

        fn $from(decision: $v::Decision) -> WitDecision {
            use bindings::{Allow, Deny};
            match decision {
                $v::Decision::Allow(a) => WitDecision::Allow(Allow {
                    set_headers: a
                        .set_headers
                        .into_iter()
                        .map(|h| HeaderResult {
                            name: h.name,
                            value: h.value,
                        })
                        .collect(),
                    remove_headers: a.remove_headers,
                }),
                $v::Decision::Deny(d) => WitDecision::Deny(Deny {
                    status: d.status,
                    reason: d.reason,
                    code: None,
                }),
            }
        }
    };
    // And its identity, which differs from the current one only by the
    // fields it lacks (`amr`, `auth-time`).
    ($v:ident, $headers:ident, $from:ident, $identity:ident) => {
        older_version!($v, $headers, $from);

        fn $identity<'a>(id: &IdentityParam<'a>) -> $v::Identity<'a> {
            $v::Identity {
                user_id: id.user_id,
                login: id.login,
                roles: id.roles,
                is_admin: id.is_admin,
                session_id: id.session_id,
                expires_at: id.expires_at,
            }
        }
    };
}

older_version!(v0_3, v0_3_headers, from_v0_3, v0_3_identity);
older_version!(v0_2, v0_2_headers, from_v0_2, v0_2_identity);
older_version!(v0_1, v0_1_headers, from_v0_1);

/// The 0.3.0 shapes: 0.4.0's request as it is; the identity without `amr`
/// and `auth-time`, which a 0.3.0 plugin cannot be given. Borrowed, as the
/// current records are.
fn v0_3_request<'a>(
    r: &RequestParam<'a>,
    headers: &'a [v0_3::HeaderParam<'a>],
) -> v0_3::Request<'a> {
    v0_3::Request {
        method: r.method,
        path: r.path,
        query: r.query,
        host: r.host,
        headers,
        route: r.route,
        client_cert: r
            .client_cert
            .as_ref()
            .map(|c| v0_3::ClientCert { subject: c.subject }),
    }
}

/// The 0.2.0 shapes: 0.3.0 without `request.client-cert`, which a 0.2.0
/// plugin cannot be given.
fn v0_2_request<'a>(
    r: &RequestParam<'a>,
    headers: &'a [v0_2::HeaderParam<'a>],
) -> v0_2::Request<'a> {
    v0_2::Request {
        method: r.method,
        path: r.path,
        query: r.query,
        host: r.host,
        headers,
        route: r.route,
    }
}

/// The 0.1.0 shapes: the route and the user fields were plain strings.
fn v0_1_request<'a>(
    r: &RequestParam<'a>,
    headers: &'a [v0_1::HeaderParam<'a>],
) -> v0_1::Request<'a> {
    v0_1::Request {
        method: r.method,
        path: r.path,
        query: r.query,
        host: r.host,
        headers,
        route: r.route.unwrap_or_default(),
    }
}

fn v0_1_identity<'a>(id: &IdentityParam<'a>) -> v0_1::Identity<'a> {
    v0_1::Identity {
        user_id: id.user_id.unwrap_or_default(),
        login: id.login.unwrap_or_default(),
        roles: id.roles,
        is_admin: id.is_admin,
        session_id: id.session_id.unwrap_or_default(),
        expires_at: id.expires_at,
    }
}

/// Arms the next call's deadline: the epoch's and the CPU-time windows it
/// ends ([`super::deadline`]), always the same length.
fn set_deadline(store: &mut Store<State>, ticks: u64) {
    store.data_mut().deadline.start(ticks);
    store.set_epoch_deadline(ticks);
}

/// Runs a call into the plugin with the epoch ticking, turning a trap, a
/// host panic or an error into a classified failure.
fn guarded<T>(
    ticker: &Ticker,
    store: &mut Store<State>,
    call: impl FnOnce(&mut Store<State>) -> wasmtime::Result<T>,
) -> Result<T, (FailureKind, String)> {
    let _ticking = ticker.busy();
    match catch_unwind(AssertUnwindSafe(|| call(&mut *store))) {
        Ok(Ok(out)) => Ok(out),
        Ok(Err(e)) => Err(classify(store.data().memory_exhausted, &e)),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err((
                FailureKind::Trap,
                format!("host panicked during the call: {msg}"),
            ))
        }
    }
}

fn classify(memory_exhausted: bool, e: &wasmtime::Error) -> (FailureKind, String) {
    let detail = one_line(e);
    if memory_exhausted {
        return (FailureKind::Memory, detail);
    }
    match e.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt) => (FailureKind::Deadline, detail),
        _ => (FailureKind::Trap, detail),
    }
}

/// The error and its causes on one line.
pub(crate) fn one_line(e: &wasmtime::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        if text.is_empty() || out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}
