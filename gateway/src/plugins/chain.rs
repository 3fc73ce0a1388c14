//! A route's plugins run in order: the first deny wins, and the header
//! changes of the allows accumulate.

use std::sync::Arc;

use axum::http::{HeaderName, HeaderValue};

use super::bindings::{Identity, Request, WitDecision};
use super::error::{FailureKind, PluginFailure};
use super::needs::Needs;
use super::pool::Plugin;
use crate::proxy::headers::is_not_for_plugins;

/// The combined decision of a chain.
///
/// For an allow, the proxy removes `remove_headers` from the upstream
/// request, then sets (replaces) each of `set_headers`. Names are lower-case
/// and each appears at most once across both lists: the chain already
/// applied later plugins' changes over earlier ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow {
        set_headers: Vec<(String, String)>,
        remove_headers: Vec<String>,
    },
    Deny {
        /// 400..=599 (a plugin's status outside that range becomes 403).
        status: u16,
        reason: String,
    },
}

impl Decision {
    /// An allow that changes nothing (the result of an empty chain).
    pub fn allow() -> Decision {
        Decision::Allow {
            set_headers: Vec::new(),
            remove_headers: Vec::new(),
        }
    }
}

/// What a chain reads: the union of its plugins' needs. Every plugin of the
/// chain gets this much (more than it declared, never less).
pub fn chain_needs(plugins: &[Arc<Plugin>]) -> Needs {
    let mut needs = Needs::default();
    for plugin in plugins {
        needs.add(plugin.needs());
    }
    needs
}

/// Runs `plugins` in order on one request. A failure of any plugin fails the
/// whole chain (the caller answers 503).
pub fn run_chain(
    plugins: &[Arc<Plugin>],
    request: &Request,
    identity: Option<&Identity>,
) -> Result<Decision, PluginFailure> {
    let mut set: Vec<(String, String)> = Vec::new();
    let mut remove: Vec<String> = Vec::new();
    for plugin in plugins {
        match plugin.decide(request, identity)? {
            WitDecision::Deny(deny) => {
                let status = if (400..=599).contains(&deny.status) {
                    deny.status
                } else {
                    403
                };
                return Ok(Decision::Deny {
                    status,
                    reason: deny.reason,
                });
            }
            WitDecision::Allow(allow) => {
                for name in allow.remove_headers {
                    let name = header_name(plugin, &name)?;
                    set.retain(|(n, _)| *n != name);
                    if !remove.contains(&name) {
                        remove.push(name);
                    }
                }
                for header in allow.set_headers {
                    let name = header_name(plugin, &header.name)?;
                    if HeaderValue::from_str(&header.value).is_err() {
                        return Err(plugin.fail(
                            FailureKind::BadDecision,
                            format!("header {name}: invalid value {:?}", header.value),
                        ));
                    }
                    remove.retain(|n| *n != name);
                    set.retain(|(n, _)| *n != name);
                    set.push((name, header.value));
                }
            }
        }
    }
    Ok(Decision::Allow {
        set_headers: set,
        remove_headers: remove,
    })
}

/// The lower-case form of a header name a plugin returned, if valid HTTP
/// and one a plugin may change: setting or removing a hop-by-hop or framing
/// header (`Connection`, `Transfer-Encoding`, `Content-Length`, `Host`, ...)
/// is a failure, counted as a bad decision, and the request fails closed.
fn header_name(plugin: &Plugin, name: &str) -> Result<String, PluginFailure> {
    match HeaderName::from_bytes(name.as_bytes()) {
        Ok(valid) if is_not_for_plugins(valid.as_str()) => Err(plugin.fail(
            FailureKind::BadDecision,
            format!("header {valid}: hop-by-hop and framing headers are the proxy's alone"),
        )),
        Ok(valid) => Ok(valid.as_str().to_string()),
        Err(_) => Err(plugin.fail(
            FailureKind::BadDecision,
            format!("invalid header name {name:?}"),
        )),
    }
}
