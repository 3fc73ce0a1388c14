//! allow-all: allows every request and changes nothing. The cheapest plugin
//! there is, so the benchmarks measure role-rules against it.
#![cfg(target_arch = "wasm32")]

wit_bindgen::generate!({ path: "../wit", world: "plugin" });

use authgw::policy::types::{Allow, Decision, Identity, Request};

struct AllowAll;

impl exports::authgw::policy::policy::Guest for AllowAll {
    fn configure(_config: String) -> Result<(), String> {
        Ok(())
    }

    fn decide(_request: Request, _identity: Option<Identity>) -> Decision {
        Decision::Allow(Allow {
            set_headers: Vec::new(),
            remove_headers: Vec::new(),
        })
    }
}

export!(AllowAll);
