//! WebAssembly policy plugins (issue 6): components of the
//! `authgw:policy/plugin` world (plugins/wit/policy.wit, 0.4.0; 0.3.0, 0.2.0
//! and 0.1.0 still load), run by wasmtime.
//!
//! - [`spec`]: gateway.toml's `[plugins]` settings and plugin entries.
//! - [`host`]: the one `Engine` (pooling allocator), the `Linker`, loading
//!   plugins into a [`PluginSet`].
//! - [`epoch`]: the epoch ticker that enforces deadlines, parked while idle.
//! - [`deadline`]: a call's deadline in the CPU time it gets, read when
//!   the epoch says its deadline passed.
//! - [`pool`]: a loaded [`Plugin`]: warm instances, fail-closed `decide`,
//!   background replacement of failed instances.
//! - [`instance`]: one instance with its memory limit and deadline.
//! - [`sandbox`]: the empty WASI context, plugin output into the log.
//! - [`nonblocking`]: WASI I/O that never blocks the request thread.
//! - [`chain`]: [`run_chain`], a route's plugins in order.
//! - [`needs`]: what plugins read; builds the records passed to `decide`,
//!   borrowed from the request and the claims.
//! - [`records`]: the same records owned, for tests and `authgw plugin test`.
//! - [`stats`]: per-plugin counters for metrics.
//! - [`authoring`]: `authgw plugin check` and `authgw plugin test`.
//!
//! See docs/plugins.md.

pub mod authoring;
mod bindings;
pub mod chain;
mod deadline;
mod epoch;
mod error;
pub mod host;
mod instance;
pub mod needs;
mod nonblocking;
pub mod pool;
mod records;
mod sandbox;
pub mod spec;
pub mod stats;

pub use bindings::{
    ClientCertParam, HeaderParam, INTERFACE_VERSION, IdentityParam, RequestParam,
    SUPPORTED_VERSIONS, WitDecision, WitNeeds,
};
pub use chain::{Decision, chain_needs, is_problem_code, run_chain, run_chain_params};
pub use epoch::EPOCH_TICK;
pub use error::{FailureKind, PluginError, PluginFailure};
pub use host::{PluginHost, PluginSet};
pub use instance::Retirement;
pub use needs::{CallerParts, Needs, RequestParts};
pub use pool::Plugin;
pub use records::{ClientCert, Header, Identity, Request};
pub use spec::{ByteSize, HostConfig, PluginSpec};
pub use stats::PluginStats;
