//! Header requirements and templates, independent of WebAssembly.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The configuration, e.g.
/// `{"require": ["x-request-id"], "set": {"x-login": "{login}"}, "remove": ["x-debug"]}`.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Header names the request must carry (case-insensitive).
    #[serde(default)]
    require: Vec<String>,
    /// Upstream headers to set: name -> template. Placeholders: `{user_id}`,
    /// `{login}`, `{roles}` (comma-separated), `{session_id}`, `{method}`,
    /// `{route}`. A header whose template names an identity field is not set
    /// for anonymous requests.
    #[serde(default)]
    set: BTreeMap<String, String>,
    /// Upstream headers to remove.
    #[serde(default)]
    remove: Vec<String>,
}

/// What the template placeholders are filled from.
pub struct Fields<'a> {
    pub method: &'a str,
    pub route: &'a str,
    /// None for anonymous requests.
    pub identity: Option<IdentityFields<'a>>,
}

pub struct IdentityFields<'a> {
    pub user_id: &'a str,
    pub login: &'a str,
    pub roles: &'a [String],
    pub session_id: &'a str,
}

/// What the config makes the plugin read of a request (its `needs`).
#[derive(Debug, PartialEq, Eq)]
pub struct Reads {
    /// The required headers.
    pub headers: Vec<String>,
    /// A template uses `{route}`.
    pub route: bool,
    /// A template uses `{user_id}`, `{login}` or `{session_id}`.
    pub user: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Allow {
        set: Vec<(String, String)>,
        remove: Vec<String>,
    },
    Deny {
        status: u16,
        reason: String,
    },
}

const PLACEHOLDERS: [&str; 6] = ["user_id", "login", "roles", "session_id", "method", "route"];
const IDENTITY_PLACEHOLDERS: [&str; 4] = ["user_id", "login", "roles", "session_id"];

impl Config {
    /// Parses the JSON config and checks every template's placeholders.
    pub fn from_json(json: &str) -> Result<Config, String> {
        let mut config: Config =
            serde_json::from_str(json).map_err(|e| format!("header-stamp config: {e}"))?;
        for (name, template) in &config.set {
            for p in placeholders(template) {
                if !PLACEHOLDERS.contains(&p) {
                    return Err(format!(
                        "header-stamp: set.{name}: unknown placeholder {{{p}}} (known: {})",
                        PLACEHOLDERS.join(", ")
                    ));
                }
            }
        }
        for name in config.require.iter_mut().chain(config.remove.iter_mut()) {
            *name = name.to_ascii_lowercase();
        }
        Ok(config)
    }

    /// What deciding reads: the required headers, and the route and user
    /// fields only if a template uses them (`{roles}` and `{method}` are
    /// always there).
    pub fn reads(&self) -> Reads {
        let used = |names: &[&str]| {
            self.set
                .values()
                .flat_map(|t| placeholders(t))
                .any(|p| names.contains(&p))
        };
        Reads {
            headers: self.require.clone(),
            route: used(&["route"]),
            user: used(&["user_id", "login", "session_id"]),
        }
    }

    /// Decides one request given the names of its headers (lower-case).
    pub fn decide<'h>(
        &self,
        header_names: impl Iterator<Item = &'h str> + Clone,
        fields: &Fields<'_>,
    ) -> Outcome {
        if let Some(missing) = self
            .require
            .iter()
            .find(|r| !header_names.clone().any(|h| h == r.as_str()))
        {
            return Outcome::Deny {
                status: 400,
                reason: format!("missing header {missing}"),
            };
        }
        let set = self
            .set
            .iter()
            .filter_map(|(name, template)| Some((name.clone(), fill(template, fields)?)))
            .collect();
        Outcome::Allow {
            set,
            remove: self.remove.clone(),
        }
    }
}

/// The placeholder names in a template (`{x}` yields `x`).
fn placeholders(template: &str) -> impl Iterator<Item = &str> {
    template
        .split('{')
        .skip(1)
        .filter_map(|part| part.split_once('}').map(|(name, _)| name))
}

/// Fills a template; None when it needs identity fields and there is none.
fn fill(template: &str, fields: &Fields<'_>) -> Option<String> {
    let mut out = template.to_string();
    for p in placeholders(template) {
        let value = match (p, &fields.identity) {
            ("method", _) => fields.method.to_string(),
            ("route", _) => fields.route.to_string(),
            (p, None) if IDENTITY_PLACEHOLDERS.contains(&p) => return None,
            ("user_id", Some(id)) => id.user_id.to_string(),
            ("login", Some(id)) => id.login.to_string(),
            ("roles", Some(id)) => id.roles.join(","),
            ("session_id", Some(id)) => id.session_id.to_string(),
            _ => continue,
        };
        out = out.replace(&format!("{{{p}}}"), &value);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: &str) -> Config {
        match Config::from_json(json) {
            Ok(c) => c,
            Err(e) => panic!("{json}: {e}"),
        }
    }

    const ROLES: [String; 0] = [];

    fn alice(roles: &[String]) -> Fields<'_> {
        Fields {
            method: "GET",
            route: "films",
            identity: Some(IdentityFields {
                user_id: "u-1",
                login: "alice",
                roles,
                session_id: "s-1",
            }),
        }
    }

    #[test]
    fn missing_required_header_is_a_400_naming_it() {
        let c = config(r#"{"require": ["X-Request-Id"]}"#);
        let out = c.decide(["accept"].into_iter(), &alice(&ROLES));
        assert_eq!(
            out,
            Outcome::Deny {
                status: 400,
                reason: "missing header x-request-id".into()
            }
        );
        let ok = c.decide(["accept", "x-request-id"].into_iter(), &alice(&ROLES));
        assert!(matches!(ok, Outcome::Allow { .. }));
    }

    #[test]
    fn templates_fill_identity_and_request_fields() {
        let c = config(
            r#"{"set": {"x-login": "{login}", "x-roles": "{roles}", "x-where": "{method} {route}"},
                "remove": ["X-Debug"]}"#,
        );
        let roles = vec!["a".to_string(), "b".to_string()];
        let out = c.decide(std::iter::empty(), &alice(&roles));
        assert_eq!(
            out,
            Outcome::Allow {
                set: vec![
                    ("x-login".into(), "alice".into()),
                    ("x-roles".into(), "a,b".into()),
                    ("x-where".into(), "GET films".into()),
                ],
                remove: vec!["x-debug".into()],
            }
        );
    }

    #[test]
    fn identity_headers_are_skipped_for_anonymous_requests() {
        let c = config(r#"{"set": {"x-login": "{login}", "x-route": "{route}"}}"#);
        let anon = Fields {
            method: "GET",
            route: "films",
            identity: None,
        };
        let out = c.decide(std::iter::empty(), &anon);
        assert_eq!(
            out,
            Outcome::Allow {
                set: vec![("x-route".into(), "films".into())],
                remove: vec![],
            }
        );
    }

    #[test]
    fn unknown_placeholders_and_fields_are_refused() {
        let e = Config::from_json(r#"{"set": {"x": "{password}"}}"#).err();
        assert!(e.is_some_and(|e| e.contains("set.x: unknown placeholder {password}")));
        let e = Config::from_json(r#"{"sett": {}}"#).err();
        assert!(e.is_some_and(|e| e.contains("unknown field `sett`")));
    }

    /// The needs follow the config: required headers, and the route and
    /// user fields only when a template uses them.
    #[test]
    fn reads_follow_the_templates() {
        let c = config(r#"{"require": ["X-Request-Id"], "set": {"x-r": "{roles} {method}"}}"#);
        assert_eq!(
            c.reads(),
            Reads {
                headers: vec!["x-request-id".into()],
                route: false,
                user: false,
            }
        );
        let c = config(r#"{"set": {"x-a": "{route}", "x-b": "{login}"}}"#);
        assert_eq!(
            c.reads(),
            Reads {
                headers: vec![],
                route: true,
                user: true,
            }
        );
    }
}
