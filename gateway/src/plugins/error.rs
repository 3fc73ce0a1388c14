//! The two ways plugins go wrong: at load time ([`PluginError`], a start-up
//! error or a refused reload) and on a request ([`PluginFailure`], a 503).

use std::fmt;
use std::sync::Arc;

/// A plugin could not be loaded or configured, or the host could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PluginError {
    /// Names the plugin (its `name` in the config) and what is wrong with it.
    #[error("plugin '{plugin}': {reason}")]
    Plugin { plugin: String, reason: String },
    /// The shared engine could not be built (e.g. no address space for the
    /// pooling allocator).
    #[error("plugin host: {0}")]
    Host(String),
}

impl PluginError {
    pub(crate) fn plugin(plugin: &str, reason: impl Into<String>) -> Self {
        PluginError::Plugin {
            plugin: plugin.into(),
            reason: reason.into(),
        }
    }

    /// The plugin at fault, if it is one plugin's error.
    pub fn plugin_name(&self) -> Option<&str> {
        match self {
            PluginError::Plugin { plugin, .. } => Some(plugin),
            PluginError::Host(_) => None,
        }
    }
}

/// Why a `decide` call did not produce a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// The plugin trapped (a panic, `unreachable`, out-of-bounds access, or
    /// a forbidden blocking WASI call).
    Trap,
    /// It ran past its `deadline`.
    Deadline,
    /// It tried to grow its memory past `memory_limit`.
    Memory,
    /// It returned a header name or value that is not valid HTTP, or asked
    /// to set or remove a hop-by-hop or framing header (`Connection`,
    /// `Transfer-Encoding`, `Content-Length`, `Host`, `Upgrade`, `TE`, ...).
    BadDecision,
    /// No instance could be made for the call (e.g. all pool slots in use).
    Unavailable,
}

impl FailureKind {
    /// Every kind, in the order metrics list them.
    pub const ALL: [FailureKind; 5] = [
        FailureKind::Trap,
        FailureKind::Deadline,
        FailureKind::Memory,
        FailureKind::BadDecision,
        FailureKind::Unavailable,
    ];

    /// The metric label: `trap`, `deadline`, `memory`, `bad_decision`, `unavailable`.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Trap => "trap",
            FailureKind::Deadline => "deadline",
            FailureKind::Memory => "memory",
            FailureKind::BadDecision => "bad_decision",
            FailureKind::Unavailable => "unavailable",
        }
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `decide` call failed; the request fails closed (503). Already logged
/// and counted by the time the caller sees it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("plugin '{plugin}' failed ({kind}): {detail}")]
pub struct PluginFailure {
    pub plugin: Arc<str>,
    pub kind: FailureKind,
    pub detail: String,
}
