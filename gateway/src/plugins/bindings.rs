//! Rust types for the `authgw:policy` WIT worlds this host loads: 0.2.0
//! (plugins/wit/policy.wit, the current one) and 0.1.0
//! (plugins/wit/v0.1.0/policy.wit, adapted on the host side).

wasmtime::component::bindgen!({
    path: "../plugins/wit",
    world: "plugin",
});

/// The 0.1.0 world.
pub(crate) mod v0_1 {
    wasmtime::component::bindgen!({
        path: "../plugins/wit/v0.1.0",
        world: "plugin",
    });

    pub(crate) use authgw::policy::types::{Decision, Header, Identity, Level, Request};
}

/// What one plugin returns (before the chain combines them).
pub use authgw::policy::types::Decision as WitDecision;
pub use authgw::policy::types::Needs as WitNeeds;
pub use authgw::policy::types::{Allow, Deny, Header, Identity, Level, Request};

/// The name prefix of the interface a plugin must export.
pub const POLICY_EXPORT: &str = "authgw:policy/policy";
/// The interface version of plugins/wit/policy.wit.
pub const INTERFACE_VERSION: &str = "0.2.0";
/// The interface versions this host loads, newest first.
pub const SUPPORTED_VERSIONS: [&str; 2] = [INTERFACE_VERSION, "0.1.0"];
