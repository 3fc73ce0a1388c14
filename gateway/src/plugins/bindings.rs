//! Rust types for the `authgw:policy` WIT worlds this host loads: 0.4.0
//! (plugins/wit/policy.wit, the current one), 0.3.0
//! (plugins/wit/v0.3.0/policy.wit), 0.2.0 (plugins/wit/v0.2.0/policy.wit)
//! and 0.1.0 (plugins/wit/v0.1.0/policy.wit), the older three adapted on the
//! host side.

wasmtime::component::bindgen!({
    path: "../plugins/wit",
    world: "plugin",
    ownership: Borrowing { duplicate_if_necessary: true },
});

/// The 0.3.0 world: 0.4.0 without `needs.amr`, `identity.amr`,
/// `identity.auth-time` and `deny.code`.
pub(crate) mod v0_3 {
    wasmtime::component::bindgen!({
        path: "../plugins/wit/v0.3.0",
        world: "plugin",
        ownership: Borrowing { duplicate_if_necessary: true },
    });

    pub(crate) use authgw::policy::types::{
        ClientCert, Decision, HeaderParam, Identity, Level, Needs, Request,
    };
}

/// The 0.2.0 world: 0.3.0 without the client certificate.
pub(crate) mod v0_2 {
    wasmtime::component::bindgen!({
        path: "../plugins/wit/v0.2.0",
        world: "plugin",
        ownership: Borrowing { duplicate_if_necessary: true },
    });

    pub(crate) use authgw::policy::types::{
        Decision, HeaderParam, Identity, Level, Needs, Request,
    };
}

/// The 0.1.0 world.
pub(crate) mod v0_1 {
    wasmtime::component::bindgen!({
        path: "../plugins/wit/v0.1.0",
        world: "plugin",
        ownership: Borrowing { duplicate_if_necessary: true },
    });

    pub(crate) use authgw::policy::types::{Decision, HeaderParam, Identity, Level, Request};
}

/// What one plugin returns (before the chain combines them).
pub use authgw::policy::types::Decision as WitDecision;
pub use authgw::policy::types::Needs as WitNeeds;
pub use authgw::policy::types::{Allow, Deny, HeaderResult, Level};
/// The records `decide` takes, borrowed from the request and the claims
/// (`ownership: Borrowing`): nothing is copied on the host side before the
/// strings are lowered into the guest. [`super::records`] has owned ones.
pub use authgw::policy::types::{
    ClientCert as ClientCertParam, HeaderParam, Identity as IdentityParam, Request as RequestParam,
};

/// The name prefix of the interface a plugin must export.
pub const POLICY_EXPORT: &str = "authgw:policy/policy";
/// The interface version of plugins/wit/policy.wit.
pub const INTERFACE_VERSION: &str = "0.4.0";
/// The version of plugins/wit/v0.3.0/policy.wit.
pub(crate) const V0_3_VERSION: &str = "0.3.0";
/// The version of plugins/wit/v0.2.0/policy.wit.
pub(crate) const V0_2_VERSION: &str = "0.2.0";
/// The version of plugins/wit/v0.1.0/policy.wit.
pub(crate) const V0_1_VERSION: &str = "0.1.0";
/// The interface versions this host loads, newest first.
pub const SUPPORTED_VERSIONS: [&str; 4] =
    [INTERFACE_VERSION, V0_3_VERSION, V0_2_VERSION, V0_1_VERSION];
