//! The one domain error type. It knows nothing of HTTP: `api::problem` maps it
//! to a status and an `application/problem+json` body in exactly one place, and
//! the CLI maps it to an exit code.

use std::time::Duration;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad login or password (also a locked or unknown account: same answer).
    #[error("invalid login or password")]
    InvalidCredentials,
    /// Access token missing, malformed, expired, tampered or revoked.
    #[error("{0}")]
    InvalidToken(String),
    /// Refresh token unknown, expired or revoked.
    #[error("the refresh token is unknown, expired or revoked")]
    InvalidRefreshToken,
    /// A consumed refresh token came back after the grace: the session is revoked.
    #[error("the refresh token was already used; the session has been revoked")]
    RefreshTokenReused,
    /// A consumed refresh token came back within the grace, but its successor
    /// was rotated further already: nobody is logged out, and the caller
    /// holds (or a sibling tab holds) a newer token.
    #[error(
        "this refresh token's successor was already rotated further; use the newest refresh token"
    )]
    RefreshTokenAlreadyRotated,
    /// `auth.require_verified_email`: a correct password, but the address
    /// is not verified yet.
    #[error("verify your email address first: follow the link mailed to it")]
    EmailNotVerified,
    /// A verification link's token is unknown, used, superseded or expired.
    #[error("the verification link is invalid or has expired; ask for a new one")]
    InvalidEmailToken,
    /// A password-reset link's token is unknown, used, superseded or expired.
    #[error("the password-reset link is invalid or has expired; ask for a new one")]
    InvalidResetToken,
    /// A caller of introspection did not authenticate as a configured client.
    #[error("{0}")]
    InvalidClient(String),
    #[error("{0}")]
    Forbidden(String),
    /// A cookie-authenticated request that changes state did not prove it
    /// came from the app (`csrf`): 403 `csrf_rejected`.
    #[error("{0}")]
    CsrfRejected(String),
    #[error("{what} '{name}' not found")]
    NotFound { what: &'static str, name: String },
    /// A route covers the path, but not for this method.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// A uniqueness conflict; `code` is the machine-readable problem code.
    #[error("{detail}")]
    Conflict { code: &'static str, detail: String },
    /// Malformed request: bad JSON, unknown field.
    #[error("{detail}")]
    BadRequest {
        code: &'static str,
        field: Option<String>,
        detail: String,
    },
    /// A field is missing or its value is not acceptable.
    #[error("{field}: {detail}")]
    Invalid { field: String, detail: String },
    #[error("request body larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("too many requests")]
    RateLimited { retry_after: Duration },
    /// Too many failed password checks for this account from this client:
    /// the pair is locked and nothing is verified until `retry_after`.
    #[error("too many failed password attempts from this address; retry later")]
    TooManyAttempts { retry_after: Duration },
    /// A request body did not arrive in full within the read timeout.
    #[error("the request body did not arrive within {limit:?}")]
    RequestTimeout { limit: Duration },
    /// The password hasher's queue is full.
    #[error("the server is busy; retry shortly")]
    Busy { retry_after: Duration },
    /// The database (or another dependency) cannot be reached right now.
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// The proxy could not get a response from the upstream (refused, reset).
    #[error("{0}")]
    BadGateway(String),
    /// The upstream did not answer (or connect) in time.
    #[error("{0}")]
    GatewayTimeout(String),
    /// A policy plugin refused the request with its own status (400-599)
    /// and, from plugin interface 0.4.0, its own problem code.
    #[error("{reason}")]
    Denied {
        status: u16,
        reason: String,
        code: Option<String>,
    },
    /// The session has no second factor and this needs one (a route's
    /// `mfa` rule, `auth.require_mfa_for_admins`): the caller must step up.
    #[error("{0}")]
    MfaRequired(String),
    /// A TOTP or recovery code that is wrong, malformed or already used.
    #[error("the code is wrong or was already used")]
    InvalidMfaCode,
    /// A social-login callback without a live flow of this browser: the
    /// state is unknown, used or expired, or the flow's cookie is missing.
    #[error("the sign-in flow is unknown, used or expired, or not this browser's; start again")]
    InvalidOauthState,
    /// A social login's one-time exchange code is unknown, used or expired.
    #[error("the exchange code is invalid, used or expired; sign in again")]
    InvalidExchangeCode,
    /// A sensitive change (linking a sign-in method) needs a session whose
    /// login is recent: 403 `reauthentication_required`.
    #[error("{0}")]
    ReauthenticationRequired(String),
    /// An identity provider cannot be reached (discovery failed).
    #[error("{0}")]
    ProviderUnavailable(String),
    /// A login's MFA challenge is unknown, used, expired or out of attempts.
    #[error("the sign-in challenge is invalid or has expired; sign in again")]
    InvalidMfaChallenge,
    /// A policy plugin trapped, overran its deadline or its memory: fail closed.
    #[error("{0}")]
    PolicyFailed(String),
    /// A bug or an unexpected failure; the detail is logged, never sent.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub fn invalid(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            detail: detail.into(),
        }
    }

    pub fn internal(e: impl std::fmt::Display) -> Self {
        Self::Internal(e.to_string())
    }
}

/// An error with its causes, `outer: cause: cause`, on one line of text:
/// most libraries' top-level message ("db error", "error performing TLS
/// handshake", "network error") says nothing of why. A cause whose text the
/// message already ends with is not repeated.
pub fn with_causes(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

impl From<postgres::Error> for Error {
    fn from(e: postgres::Error) -> Self {
        // The database going away is it being unavailable (503), not a bug:
        // a dropped connection, an I/O error on it, or the server saying it
        // is shutting down or cannot accept us (SQLSTATE classes 08 and 57:
        // a stop in the middle of a transaction ends it with 57P01).
        let going_away = e.is_closed()
            || e.code().is_some_and(|c| {
                let c = c.code();
                c.starts_with("08") || c.starts_with("57")
            })
            || (e.as_db_error().is_none()
                && std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>()));
        if going_away {
            return Self::Unavailable(format!("database: {e}"));
        }
        Self::Internal(format!("database: {e}"))
    }
}
