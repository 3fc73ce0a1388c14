//! The rule language of role-rules, independent of WebAssembly.
//!
//! A config is a list of rules plus a default. The first rule whose path and
//! methods match the request decides it; when none matches, the default does
//! (deny unless `"default": "allow"`).
//!
//! A rule may also demand a verified TLS client certificate
//! (`client_cert`), or one of a few exact subjects (`client_cert_subject`):
//! checked before the caller's identity, since without the certificate no
//! login helps. And it may demand a second factor (`mfa`): checked last,
//! after the roles, since signing in again helps only a caller the roles
//! already admit.

use serde::Deserialize;

/// Who is asking, borrowed from the plugin's `identity` (None: anonymous).
#[derive(Clone, Copy, Debug)]
pub struct Caller<'a> {
    pub roles: &'a [String],
    pub is_admin: bool,
    /// How the session authenticated (the token's `amr`, RFC 8176); empty
    /// when not known (the plugin declares `needs.amr` only for `mfa`).
    pub amr: &'a [String],
}

impl Caller<'_> {
    /// Whether the session passed a second factor: a TOTP code (`otp`) or a
    /// recovery code (`rcode`).
    pub fn has_second_factor(&self) -> bool {
        self.amr.iter().any(|m| m == "otp" || m == "rcode")
    }
}

/// The outcome for one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Deny {
        status: u16,
        reason: String,
        /// The problem `code` the client gets (None: `policy_denied`).
        code: Option<&'static str>,
    },
}

/// Status of a denial for a request without an identity on a rule that
/// requires one.
pub const UNAUTHENTICATED: u16 = 401;
/// Status of a denial when the rule sets no `deny_status`, and of the default.
pub const FORBIDDEN: u16 = 403;
/// The reason when a rule demands a client certificate and the request came
/// without a verified one.
pub const CLIENT_CERT_REQUIRED: &str = "a verified TLS client certificate is required";
/// The reason when the certificate's subject is not one the rule names (the
/// allowed subjects are not told).
pub const CLIENT_CERT_NOT_ALLOWED: &str = "this TLS client certificate is not allowed here";
/// The code of a denial for a session without a second factor on an `mfa`
/// rule (always with [`UNAUTHENTICATED`]): the client should step up.
pub const MFA_REQUIRED: &str = "mfa_required";
/// Its reason.
pub const MFA_REQUIRED_REASON: &str =
    "this route requires a second factor: sign in again with your authenticator app";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    rules: Vec<RawRule>,
    #[serde(default)]
    default: DefaultAction,
}

#[derive(Deserialize, Default, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum DefaultAction {
    Allow,
    #[default]
    Deny,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    path: Option<String>,
    glob: Option<String>,
    methods: Option<Vec<String>>,
    #[serde(default)]
    any_of: Vec<String>,
    #[serde(default)]
    all_of: Vec<String>,
    #[serde(default)]
    admin_only: bool,
    deny_status: Option<u16>,
    client_cert: Option<bool>,
    client_cert_subject: Option<OneOrMany>,
    #[serde(default)]
    mfa: bool,
}

/// `"CN=ops,O=cinema"` or `["CN=ops,O=cinema", "CN=backup,O=cinema"]`.
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// A validated configuration.
#[derive(Debug)]
pub struct Config {
    rules: Vec<Rule>,
    default: DefaultAction,
}

#[derive(Debug)]
struct Rule {
    pattern: Pattern,
    /// Upper-case; None matches every method.
    methods: Option<Vec<String>>,
    any_of: Vec<String>,
    all_of: Vec<String>,
    admin_only: bool,
    deny_status: u16,
    client_cert: CertRequirement,
    /// The session must have passed a second factor.
    mfa: bool,
}

/// What a rule asks of the TLS client certificate.
#[derive(Debug, PartialEq, Eq)]
enum CertRequirement {
    None,
    /// Any certificate the gateway verified.
    Any,
    /// A verified certificate with one of these subjects, compared exactly.
    Subjects(Vec<String>),
}

#[derive(Debug)]
enum Pattern {
    /// Matches the prefix itself and anything below it (`/a` matches `/a`
    /// and `/a/b`, not `/ab`).
    Prefix(String),
    Glob(Vec<Token>),
}

/// A glob token: `*` is any run of characters but `/`, `**` any run at all,
/// `?` one character but `/`.
#[derive(Debug, PartialEq, Eq)]
enum Token {
    Literal(String),
    Star,
    DoubleStar,
    One,
}

impl Config {
    /// Parses and validates the plugin's JSON config. The error names the
    /// rule (by index) and the key at fault.
    pub fn from_json(json: &str) -> Result<Config, String> {
        let raw: RawConfig =
            serde_json::from_str(json).map_err(|e| format!("role-rules config: {e}"))?;
        let rules = raw
            .rules
            .into_iter()
            .enumerate()
            .map(|(i, r)| Rule::validate(r).map_err(|e| format!("role-rules: rules[{i}]: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Config {
            rules,
            default: raw.default,
        })
    }

    /// Decides one request that came without a client certificate.
    pub fn decide(&self, method: &str, path: &str, caller: Option<Caller<'_>>) -> Verdict {
        self.decide_with_cert(method, path, caller, None)
    }

    /// Decides one request: the first matching rule, else the default.
    /// `client_cert` is the subject of the verified TLS client certificate
    /// the request came with, if any.
    pub fn decide_with_cert(
        &self,
        method: &str,
        path: &str,
        caller: Option<Caller<'_>>,
        client_cert: Option<&str>,
    ) -> Verdict {
        match self.rules.iter().find(|r| r.matches(method, path)) {
            Some(rule) => rule.judge(caller, client_cert),
            None if self.default == DefaultAction::Allow => Verdict::Allow,
            None => Verdict::Deny {
                status: FORBIDDEN,
                reason: "no rule allows this request".into(),
                code: None,
            },
        }
    }

    /// Whether a rule reads the client certificate: only then does the
    /// plugin declare `needs.client-cert`.
    pub fn reads_client_cert(&self) -> bool {
        self.rules
            .iter()
            .any(|r| r.client_cert != CertRequirement::None)
    }

    /// Whether a rule reads how the session authenticated (`mfa`): only
    /// then does the plugin declare `needs.amr`.
    pub fn reads_amr(&self) -> bool {
        self.rules.iter().any(|r| r.mfa)
    }
}

impl Rule {
    fn validate(raw: RawRule) -> Result<Rule, String> {
        let pattern = match (raw.path, raw.glob) {
            (Some(_), Some(_)) => return Err("set either `path` or `glob`, not both".into()),
            (None, None) => return Err("missing `path` (a prefix) or `glob`".into()),
            (Some(p), None) => {
                check_absolute("path", &p)?;
                Pattern::Prefix(p.trim_end_matches('/').to_string())
            }
            (None, Some(g)) => {
                check_absolute("glob", &g)?;
                Pattern::Glob(parse_glob(&g))
            }
        };
        let deny_status = raw.deny_status.unwrap_or(FORBIDDEN);
        if !(400..=599).contains(&deny_status) {
            return Err(format!("deny_status {deny_status} is not in 400..=599"));
        }
        let methods = match raw.methods {
            Some(ms) if ms.is_empty() => return Err("`methods` is empty; omit it for all".into()),
            Some(ms) => Some(ms.iter().map(|m| m.to_ascii_uppercase()).collect()),
            None => None,
        };
        let client_cert = match raw.client_cert_subject {
            Some(_) if raw.client_cert == Some(false) => {
                return Err("`client_cert_subject` with `client_cert`: false; a subject needs a certificate".into());
            }
            Some(subjects) => {
                let subjects = match subjects {
                    OneOrMany::One(s) => vec![s],
                    OneOrMany::Many(list) => list,
                };
                if subjects.is_empty() {
                    return Err("`client_cert_subject` is empty; omit it, or set `client_cert` for any certificate".into());
                }
                if let Some(blank) = subjects.iter().find(|s| s.trim().is_empty()) {
                    return Err(format!("`client_cert_subject` {blank:?} is blank"));
                }
                CertRequirement::Subjects(subjects)
            }
            None if raw.client_cert == Some(true) => CertRequirement::Any,
            None => CertRequirement::None,
        };
        Ok(Rule {
            pattern,
            methods,
            any_of: raw.any_of,
            all_of: raw.all_of,
            admin_only: raw.admin_only,
            deny_status,
            client_cert,
            mfa: raw.mfa,
        })
    }

    fn matches(&self, method: &str, path: &str) -> bool {
        let method_ok = self
            .methods
            .as_ref()
            .is_none_or(|ms| ms.iter().any(|m| m == method));
        method_ok && self.pattern.matches(path)
    }

    /// Whether the rule asks nothing of the caller: anyone, anonymous
    /// included, passes (after the certificate, if it asks for one).
    fn is_open(&self) -> bool {
        !self.admin_only && !self.mfa && self.any_of.is_empty() && self.all_of.is_empty()
    }

    fn judge(&self, caller: Option<Caller<'_>>, client_cert: Option<&str>) -> Verdict {
        let deny = |reason: String| Verdict::Deny {
            status: self.deny_status,
            reason,
            code: None,
        };
        match (&self.client_cert, client_cert) {
            (CertRequirement::None, _) => {}
            (_, None) => return deny(CLIENT_CERT_REQUIRED.into()),
            (CertRequirement::Any, Some(_)) => {}
            (CertRequirement::Subjects(allowed), Some(subject)) => {
                if !allowed.iter().any(|s| s == subject) {
                    return deny(CLIENT_CERT_NOT_ALLOWED.into());
                }
            }
        }
        if self.is_open() {
            return Verdict::Allow;
        }
        let Some(caller) = caller else {
            return Verdict::Deny {
                status: UNAUTHENTICATED,
                reason: "authentication required".into(),
                code: None,
            };
        };
        if self.admin_only && !caller.is_admin {
            return deny("administrators only".into());
        }
        let has = |role: &String| caller.roles.iter().any(|r| r == role);
        let missing: Vec<&str> = self
            .all_of
            .iter()
            .filter(|r| !has(r))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            return deny(format!("requires the roles: {}", missing.join(", ")));
        }
        if !self.any_of.is_empty() && !self.any_of.iter().any(has) {
            return deny(format!(
                "requires one of the roles: {}",
                self.any_of.join(", ")
            ));
        }
        // Last: a second factor helps only a caller the roles admit, so the
        // 401 that asks for one comes only when it would let them in.
        if self.mfa && !caller.has_second_factor() {
            return Verdict::Deny {
                status: UNAUTHENTICATED,
                reason: MFA_REQUIRED_REASON.into(),
                code: Some(MFA_REQUIRED),
            };
        }
        Verdict::Allow
    }
}

fn check_absolute(key: &str, value: &str) -> Result<(), String> {
    if value.starts_with('/') {
        Ok(())
    } else {
        Err(format!("`{key}` {value:?} must start with '/'"))
    }
}

impl Pattern {
    fn matches(&self, path: &str) -> bool {
        match self {
            Pattern::Prefix(prefix) => {
                let (path, prefix) = (path.as_bytes(), prefix.as_bytes());
                // The prefix's last byte first: sibling prefixes (`/films/a`,
                // `/films/b`) differ there, so most misses cost one comparison.
                let last_matches = match prefix.last() {
                    Some(last) => path.get(prefix.len() - 1) == Some(last),
                    None => true,
                };
                last_matches
                    && path.starts_with(prefix)
                    && path.get(prefix.len()).is_none_or(|&next| next == b'/')
            }
            Pattern::Glob(tokens) => glob_matches(tokens, path),
        }
    }
}

fn parse_glob(glob: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut literal = String::new();
    let mut chars = glob.chars().peekable();
    while let Some(c) = chars.next() {
        let token = match c {
            '*' if chars.peek() == Some(&'*') => {
                chars.next();
                Token::DoubleStar
            }
            '*' => Token::Star,
            '?' => Token::One,
            c => {
                literal.push(c);
                continue;
            }
        };
        if !literal.is_empty() {
            tokens.push(Token::Literal(std::mem::take(&mut literal)));
        }
        tokens.push(token);
    }
    if !literal.is_empty() {
        tokens.push(Token::Literal(literal));
    }
    tokens
}

/// Backtracking match; patterns are short and written by operators.
fn glob_matches(tokens: &[Token], path: &str) -> bool {
    let Some((first, rest)) = tokens.split_first() else {
        return path.is_empty();
    };
    match first {
        Token::Literal(lit) => path
            .strip_prefix(lit.as_str())
            .is_some_and(|p| glob_matches(rest, p)),
        Token::One => {
            let mut chars = path.chars();
            matches!(chars.next(), Some(c) if c != '/') && glob_matches(rest, chars.as_str())
        }
        Token::Star | Token::DoubleStar => {
            let crosses = *first == Token::DoubleStar;
            for (i, c) in path.char_indices() {
                if glob_matches(rest, &path[i..]) {
                    return true;
                }
                if c == '/' && !crosses {
                    return false;
                }
            }
            glob_matches(rest, "")
        }
    }
}

// An explicit path, so that the module resolves the same when this file is
// compiled into fixtures/role-rules-v0-3 (by `#[path]`) as here.
#[cfg(test)]
#[path = "rules/tests.rs"]
mod tests;
