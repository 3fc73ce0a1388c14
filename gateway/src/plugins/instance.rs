//! One plugin instance: a `Store` with its limits, instantiated from the
//! plugin's `InstancePre` and configured. Serves one call at a time.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use wasmtime::Store;

use super::bindings::{self, Identity, Request, WitDecision};
use super::epoch::Ticker;
use super::error::FailureKind;
use super::sandbox::State;

/// Budget of instantiation plus `configure`, in epoch ticks: configuration
/// may parse a large config, and happens off the request path.
pub(crate) const CONFIGURE_TICKS: u64 = 1000;

/// What an instance needs to come to life; shared by every instance of a plugin.
pub(crate) struct Blueprint {
    pub(crate) name: Arc<str>,
    pub(crate) pre: bindings::PluginPre<State>,
    pub(crate) memory_limit: usize,
    pub(crate) config_json: String,
    /// Epoch ticks one `decide` may take.
    pub(crate) deadline_ticks: u64,
    /// Keeps the epoch advancing while a call runs.
    pub(crate) ticker: Arc<Ticker>,
}

pub(crate) struct Instance {
    store: Store<State>,
    plugin: bindings::Plugin,
    ticker: Arc<Ticker>,
}

/// Why an instance could not be made: the plugin refused its config, or a
/// failure (trap, deadline, memory) on the way.
#[derive(Debug)]
pub(crate) enum CreateError {
    Refused(String),
    Failed(FailureKind, String),
}

impl std::fmt::Display for CreateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CreateError::Refused(msg) => write!(f, "configure refused the config: {msg}"),
            CreateError::Failed(kind, detail) => write!(f, "{kind} while starting: {detail}"),
        }
    }
}

impl Instance {
    /// Instantiates and configures a fresh instance.
    pub(crate) fn create(bp: &Blueprint) -> Result<Instance, CreateError> {
        let mut store = Store::new(
            bp.pre.engine(),
            State::new(bp.name.clone(), bp.memory_limit),
        );
        store.limiter(|s| s);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(CONFIGURE_TICKS);
        let plugin = guarded(&bp.ticker, &mut store, |store| bp.pre.instantiate(store))
            .map_err(|(kind, detail)| CreateError::Failed(kind, detail))?;
        store.set_epoch_deadline(CONFIGURE_TICKS);
        let policy = plugin.authgw_policy_policy();
        guarded(&bp.ticker, &mut store, |store| {
            policy.call_configure(store, &bp.config_json)
        })
        .map_err(|(kind, detail)| CreateError::Failed(kind, detail))?
        .map_err(CreateError::Refused)?;
        Ok(Instance {
            store,
            plugin,
            ticker: bp.ticker.clone(),
        })
    }

    /// Runs `decide` within the deadline. An error means this instance must
    /// be thrown away.
    pub(crate) fn decide(
        &mut self,
        deadline_ticks: u64,
        request: &Request,
        identity: Option<&Identity>,
    ) -> Result<WitDecision, (FailureKind, String)> {
        self.store.set_epoch_deadline(deadline_ticks);
        let policy = self.plugin.authgw_policy_policy();
        guarded(&self.ticker, &mut self.store, |store| {
            policy.call_decide(store, request, identity)
        })
    }
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
