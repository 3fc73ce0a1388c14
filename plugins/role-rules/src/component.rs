//! The component shell: WIT types in, [`crate::rules`] decides, WIT types out.
use std::cell::RefCell;

use crate::rules::{Caller, Config, Verdict};

wit_bindgen::generate!({ path: "../wit", world: "plugin" });

use authgw::policy::types::{Allow, Decision, Deny, Identity, Needs, Request};
use exports::authgw::policy::policy::Guest;

thread_local! {
    static CONFIG: RefCell<Option<Config>> = const { RefCell::new(None) };
}

struct RoleRules;

impl Guest for RoleRules {
    /// Rules read the method, the path, the roles and the admin flag, which
    /// every plugin gets: no header, query, host, route or user is copied in.
    /// The client certificate only when a rule asks for one; how the session
    /// authenticated (`amr`) only when a rule asks for a second factor.
    fn configure(config: String) -> Result<Needs, String> {
        let parsed = Config::from_json(&config)?;
        let client_cert = parsed.reads_client_cert();
        let amr = parsed.reads_amr();
        CONFIG.with(|c| *c.borrow_mut() = Some(parsed));
        Ok(Needs {
            headers: Vec::new(),
            query: false,
            host: false,
            route: false,
            user: false,
            client_cert,
            amr,
        })
    }

    fn decide(request: Request, identity: Option<Identity>) -> Decision {
        let caller = identity.as_ref().map(|id| Caller {
            roles: &id.roles,
            is_admin: id.is_admin,
            amr: id.amr.as_deref().unwrap_or_default(),
        });
        let verdict = CONFIG.with(|c| match c.borrow().as_ref() {
            Some(config) => config.decide_with_cert(
                &request.method,
                &request.path,
                caller,
                request.client_cert.as_ref().map(|c| c.subject.as_str()),
            ),
            None => Verdict::Deny {
                status: 500,
                reason: "role-rules is not configured".into(),
                code: None,
            },
        });
        match verdict {
            Verdict::Allow => Decision::Allow(Allow {
                set_headers: Vec::new(),
                remove_headers: Vec::new(),
            }),
            Verdict::Deny {
                status,
                reason,
                code,
            } => Decision::Deny(Deny {
                status,
                reason,
                code: code.map(str::to_string),
            }),
        }
    }
}

export!(RoleRules);
