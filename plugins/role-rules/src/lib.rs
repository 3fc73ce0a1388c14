//! role-rules: the default authgw policy plugin.
//!
//! The rule logic lives in [`rules`] and compiles on any target, so it is
//! unit-tested natively; [`component`] is the thin wasm32 shell that binds it
//! to the `authgw:policy` world.
pub mod rules;

#[cfg(target_arch = "wasm32")]
mod component;
