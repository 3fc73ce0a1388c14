//! Rust types for the `authgw:policy` WIT world (plugins/wit/policy.wit).

wasmtime::component::bindgen!({
    path: "../plugins/wit",
    world: "plugin",
});

/// What one plugin returns (before the chain combines them).
pub use authgw::policy::types::Decision as WitDecision;
pub use authgw::policy::types::{Header, Identity, Level, Request};

/// The name prefix of the interface a plugin must export.
pub const POLICY_EXPORT: &str = "authgw:policy/policy";
/// The interface version this host implements.
pub const INTERFACE_VERSION: &str = "0.1.0";
