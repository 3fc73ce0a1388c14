//! `[mfa]`: TOTP second factors (docs/mfa.md). Whether administrators must
//! use one is `auth.require_mfa_for_admins`.

use std::time::Duration;

use serde::Deserialize;

use super::duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MfaConfig {
    /// The issuer an authenticator app shows beside the account (and the
    /// `otpauth://` URI's label prefix).
    pub issuer: String,
    /// How long a login's challenge waits for its second factor.
    #[serde(deserialize_with = "duration")]
    pub challenge_ttl: Duration,
    /// Codes one challenge may be tried with before it dies.
    pub challenge_attempts: u32,
}

impl Default for MfaConfig {
    fn default() -> Self {
        Self {
            issuer: "authgw".into(),
            challenge_ttl: Duration::from_secs(300),
            challenge_attempts: 5,
        }
    }
}

impl MfaConfig {
    /// The key and the reason of the first bad setting.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.issuer.trim().is_empty() || self.issuer.len() > 64 || self.issuer.contains(':') {
            return Err((
                "mfa.issuer",
                "must be 1-64 bytes, without ':' (it separates issuer and account in authenticator apps)".into(),
            ));
        }
        if self.challenge_ttl < Duration::from_secs(30)
            || self.challenge_ttl > Duration::from_secs(900)
        {
            return Err(("mfa.challenge_ttl", "must be between 30s and 15m".into()));
        }
        if !(1..=10).contains(&self.challenge_attempts) {
            return Err(("mfa.challenge_attempts", "must be between 1 and 10".into()));
        }
        Ok(())
    }
}
