//! The component shell of header-stamp. Built against interface 0.2.0
//! (`wit/v0.2.0`): it reads no client certificate, and it keeps a 0.2.0
//! plugin with needs under test (the gateway loads 0.3.0, 0.2.0 and 0.1.0).
use std::cell::RefCell;

use crate::stamp::{Config, Fields, IdentityFields, Outcome};

wit_bindgen::generate!({ path: "../wit/v0.2.0", world: "plugin" });

use authgw::policy::types::{Allow, Decision, Deny, Header, Identity, Needs, Request};
use exports::authgw::policy::policy::Guest;

thread_local! {
    static CONFIG: RefCell<Config> = RefCell::new(Config::default());
}

struct HeaderStamp;

impl Guest for HeaderStamp {
    /// Reads the required headers, and the route and user fields only when a
    /// template uses them.
    fn configure(config: String) -> Result<Needs, String> {
        let parsed = Config::from_json(&config)?;
        let reads = parsed.reads();
        CONFIG.with(|c| *c.borrow_mut() = parsed);
        Ok(Needs {
            headers: reads.headers,
            query: false,
            host: false,
            route: reads.route,
            user: reads.user,
        })
    }

    fn decide(request: Request, identity: Option<Identity>) -> Decision {
        let fields = Fields {
            method: &request.method,
            route: request.route.as_deref().unwrap_or_default(),
            identity: identity.as_ref().map(|id| IdentityFields {
                user_id: id.user_id.as_deref().unwrap_or_default(),
                login: id.login.as_deref().unwrap_or_default(),
                roles: &id.roles,
                session_id: id.session_id.as_deref().unwrap_or_default(),
            }),
        };
        let names = request.headers.iter().map(|h| h.name.as_str());
        match CONFIG.with(|c| c.borrow().decide(names, &fields)) {
            Outcome::Allow { set, remove } => Decision::Allow(Allow {
                set_headers: set
                    .into_iter()
                    .map(|(name, value)| Header { name, value })
                    .collect(),
                remove_headers: remove,
            }),
            Outcome::Deny { status, reason } => Decision::Deny(Deny { status, reason }),
        }
    }
}

export!(HeaderStamp);
