//! A route's plugins run in order: the first deny wins, and the header
//! changes of the allows accumulate.

use std::sync::Arc;

use axum::http::{HeaderName, HeaderValue};

use super::bindings::{IdentityParam, RequestParam, WitDecision};
use super::error::{FailureKind, PluginFailure};
use super::needs::Needs;
use super::pool::Plugin;
use super::records::{Identity, Request};
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
        /// The problem `code` the client gets instead of `policy_denied`
        /// (interface 0.4.0's `deny.code`), when the plugin gave one that
        /// [`is_problem_code`]; None otherwise (and for older plugins).
        code: Option<String>,
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

/// Runs `plugins` in order on one request, given as owned records (tests,
/// `authgw plugin test`): [`run_chain_params`] on them, borrowed.
pub fn run_chain(
    plugins: &[Arc<Plugin>],
    request: &Request,
    identity: Option<&Identity>,
) -> Result<Decision, PluginFailure> {
    request.with_param(|request| match identity {
        Some(identity) => {
            identity.with_param(|identity| run_chain_params(plugins, request, Some(identity)))
        }
        None => run_chain_params(plugins, request, None),
    })
}

/// Runs `plugins` in order on one request, its records borrowed (the
/// proxy's, from [`super::Needs::with_records`]). A failure of any plugin
/// fails the whole chain (the caller answers 503).
pub fn run_chain_params(
    plugins: &[Arc<Plugin>],
    request: &RequestParam<'_>,
    identity: Option<&IdentityParam<'_>>,
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
                    code: deny.code.filter(|c| is_problem_code(c)),
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

/// Whether a plugin's `deny.code` may be the problem's `code`: 1 to 64
/// characters of `a-z`, `0-9` and `_`, starting with a letter (as authgw's
/// own codes are). Anything else is dropped, and the client gets
/// `policy_denied`: a code is a short token for programs, never text.
pub fn is_problem_code(code: &str) -> bool {
    (1..=64).contains(&code.len())
        && code.starts_with(|c: char| c.is_ascii_lowercase())
        && code
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
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

#[cfg(test)]
mod tests {
    use super::is_problem_code;

    /// Codes are short lower-case tokens; text, upper case, spaces, a
    /// leading digit or underscore, and more than 64 characters are not.
    #[test]
    fn problem_codes_are_short_lower_case_tokens() {
        for ok in [
            "mfa_required",
            "a",
            "x2",
            "payment_required_2",
            &"a".repeat(64),
        ] {
            assert!(is_problem_code(ok), "{ok}");
        }
        for bad in [
            "",
            "Bad Code!",
            "MFA_REQUIRED",
            "mfa-required",
            "mfa required",
            "2fa",
            "_x",
            "caf\u{e9}",
            &"a".repeat(65),
        ] {
            assert!(!is_problem_code(bad), "{bad:?}");
        }
    }
}
