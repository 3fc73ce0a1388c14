//! header-stamp: an example authgw policy plugin of another shape than
//! role-rules. It denies requests that lack required headers (400) and
//! otherwise allows them, setting upstream headers from templates such as
//! `{login}` or `{roles}` and removing the listed ones.
//!
//! The logic lives in [`stamp`] (native unit tests); [`component`] binds it.
pub mod stamp;

#[cfg(target_arch = "wasm32")]
mod component;
