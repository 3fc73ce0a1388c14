//! `[[identity_providers]]`: sign-in with OpenID Connect and OAuth 2.0
//! providers (docs/social-login.md). The redirect targets a flow may return
//! to are `auth.allowed_redirects`.

use std::path::PathBuf;

use serde::Deserialize;

/// How a provider is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// OpenID Connect: endpoints by discovery from `issuer`, an ID token.
    Oidc,
    /// OAuth 2.0: explicit endpoints, the user from `userinfo_url`.
    Oauth2,
}

/// How the client authenticates at the token endpoint (RFC 6749 2.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TokenAuth {
    #[default]
    ClientSecretBasic,
    ClientSecretPost,
}

/// Where the user's fields are in the ID token or the userinfo answer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClaimMapping {
    pub subject: String,
    pub email: String,
    /// Absent in the answer: the address is taken as unverified.
    pub email_verified: String,
    /// The name a new account's login is made from.
    pub login: String,
}

impl Default for ClaimMapping {
    fn default() -> Self {
        Self {
            subject: "sub".into(),
            email: "email".into(),
            email_verified: "email_verified".into(),
            login: "preferred_username".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityProviderConfig {
    /// In the URLs (`/api/v1/auth/oauth/{name}/...`): 1-32 of `[a-z0-9-]`.
    pub name: String,
    pub kind: ProviderKind,
    /// OpenID Connect: the issuer; discovery reads
    /// `{issuer}/.well-known/openid-configuration`.
    #[serde(default)]
    pub issuer: Option<String>,
    pub client_id: String,
    /// The environment variable holding the client secret.
    #[serde(default)]
    pub client_secret_env: Option<String>,
    /// A file holding the client secret (relative to the config file's directory).
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub token_auth: TokenAuth,
    /// Link a first login to an existing account with the same address when
    /// the provider says it is verified and the account's is verified too.
    #[serde(default)]
    pub link_by_verified_email: bool,
    /// OAuth 2.0 (or overriding discovery): the endpoints.
    #[serde(default)]
    pub authorize_url: Option<String>,
    #[serde(default)]
    pub token_url: Option<String>,
    #[serde(default)]
    pub userinfo_url: Option<String>,
    #[serde(default)]
    pub claims: ClaimMapping,
}

fn default_scopes() -> Vec<String> {
    vec!["openid".into(), "email".into(), "profile".into()]
}

/// Whether `url` may be called: `https://`, or `http://` to a loopback host.
pub fn is_safe_endpoint(url: &str) -> bool {
    let Ok(parsed) = url::Url::parse(url) else {
        return false;
    };
    match parsed.scheme() {
        "https" => parsed.host().is_some(),
        "http" => match parsed.host() {
            Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        },
        _ => false,
    }
}

impl IdentityProviderConfig {
    /// The client secret, from the environment or the file (relative to
    /// `base_dir`); the key and the reason when it cannot be read.
    pub fn client_secret(
        &self,
        base_dir: &std::path::Path,
    ) -> Result<String, (&'static str, String)> {
        if let Some(var) = &self.client_secret_env {
            return match std::env::var(var) {
                Ok(v) if !v.trim().is_empty() => Ok(v.trim().to_string()),
                _ => Err((
                    "client_secret_env",
                    format!("the environment variable {var} is not set (or empty)"),
                )),
            };
        }
        let Some(path) = &self.client_secret_file else {
            return Err(("client_secret_env", "no client secret configured".into()));
        };
        let path = base_dir.join(path);
        match std::fs::read_to_string(&path) {
            Ok(v) if !v.trim().is_empty() => Ok(v.trim().to_string()),
            Ok(_) => Err(("client_secret_file", format!("{} is empty", path.display()))),
            Err(e) => Err((
                "client_secret_file",
                format!("cannot read {}: {e}", path.display()),
            )),
        }
    }

    /// The key (relative to `identity_providers[i]`) and reason of the first
    /// bad setting.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        let name_ok = (1..=32).contains(&self.name.len())
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !name_ok {
            return Err(("name", "must be 1-32 of [a-z0-9-]".into()));
        }
        if self.client_id.is_empty() {
            return Err(("client_id", "must not be empty".into()));
        }
        if self.client_secret_env.is_some() == self.client_secret_file.is_some() {
            return Err((
                "client_secret_env",
                "set exactly one of client_secret_env and client_secret_file (never the secret itself)".into(),
            ));
        }
        let endpoint = |key: &'static str, url: &Option<String>, needed: bool| match url {
            Some(u) if !is_safe_endpoint(u) => Err((
                key,
                format!("{u:?} must be an https:// URL (http:// only to a loopback host)"),
            )),
            None if needed => Err((key, "required for kind = \"oauth2\"".into())),
            _ => Ok(()),
        };
        match self.kind {
            ProviderKind::Oidc => {
                match &self.issuer {
                    None => return Err(("issuer", "required for kind = \"oidc\"".into())),
                    Some(i) if !is_safe_endpoint(i) => {
                        return Err((
                            "issuer",
                            format!(
                                "{i:?} must be an https:// URL (http:// only to a loopback host)"
                            ),
                        ));
                    }
                    Some(_) => {}
                }
                if !self.scopes.iter().any(|s| s == "openid") {
                    return Err((
                        "scopes",
                        "must include \"openid\" for kind = \"oidc\"".into(),
                    ));
                }
            }
            ProviderKind::Oauth2 => {
                endpoint("userinfo_url", &self.userinfo_url, true)?;
                endpoint("authorize_url", &self.authorize_url, true)?;
                endpoint("token_url", &self.token_url, true)?;
            }
        }
        endpoint("authorize_url", &self.authorize_url, false)?;
        endpoint("token_url", &self.token_url, false)?;
        endpoint("userinfo_url", &self.userinfo_url, false)?;
        for (key, v) in [
            ("claims.subject", &self.claims.subject),
            ("claims.email", &self.claims.email),
            ("claims.email_verified", &self.claims.email_verified),
            ("claims.login", &self.claims.login),
        ] {
            if v.is_empty() {
                return Err((key, "must not be empty".into()));
            }
        }
        Ok(())
    }
}
