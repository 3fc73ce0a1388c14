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
    /// A consumed refresh token came back within the grace: nobody is logged out.
    #[error("the refresh token was already rotated by a concurrent request")]
    RefreshTokenAlreadyRotated,
    #[error("{0}")]
    Forbidden(String),
    #[error("{what} '{name}' not found")]
    NotFound { what: &'static str, name: String },
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
    /// The password hasher's queue is full.
    #[error("the server is busy; retry shortly")]
    Busy { retry_after: Duration },
    /// The database (or another dependency) cannot be reached right now.
    #[error("service unavailable: {0}")]
    Unavailable(String),
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

impl From<postgres::Error> for Error {
    fn from(e: postgres::Error) -> Self {
        // A dropped connection is the database being unavailable (503), not a bug.
        if e.is_closed() {
            return Self::Unavailable(format!("database: {e}"));
        }
        Self::Internal(format!("database: {e}"))
    }
}
