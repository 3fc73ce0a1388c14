//! allow-all: allows every request and changes nothing. The cheapest plugin
//! there is, so the benchmarks measure role-rules against it.
#![cfg(target_arch = "wasm32")]

wit_bindgen::generate!({ path: "../wit", world: "plugin" });

use authgw::policy::types::{Allow, Decision, Identity, Needs, Request};

struct AllowAll;

impl exports::authgw::policy::policy::Guest for AllowAll {
    /// Reads nothing beyond what every plugin gets.
    fn configure(_config: String) -> Result<Needs, String> {
        Ok(Needs {
            headers: Vec::new(),
            query: false,
            host: false,
            route: false,
            user: false,
            client_cert: false,
            amr: false,
        })
    }

    fn decide(_request: Request, _identity: Option<Identity>) -> Decision {
        Decision::Allow(Allow {
            set_headers: Vec::new(),
            remove_headers: Vec::new(),
        })
    }
}

export!(AllowAll);
