//! Upgrades: only `Upgrade: websocket` passes (an `h2c` upgrade would open
//! a raw channel past routing, auth and plugins), the upstream's 101 must
//! switch to WebSocket, and a tunnel lives no longer than its access token,
//! its session (revocation is seen within a second) and the route's
//! `idle_timeout` without traffic.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::{HeaderMap, header};
use hyper_util::rt::TokioIo;
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;
use uuid::Uuid;

use crate::error::Error;
use crate::revocation::RevocationSet;
use crate::tokens::Claims;

/// How often a tunnel looks its session up in the revocation set.
const REVOCATION_POLL: Duration = Duration::from_millis(500);

/// What a request's `Upgrade` header asks for: `Ok(false)` nothing,
/// `Ok(true)` WebSocket, and any other protocol (`h2c`, a list, an empty
/// value) is a 400 `upgrade_not_allowed`, whatever the route.
pub fn requested(headers: &HeaderMap) -> Result<bool, Error> {
    let mut values = headers.get_all(header::UPGRADE).iter().peekable();
    if values.peek().is_none() {
        return Ok(false);
    }
    let tokens: Vec<&str> = values
        .map(|v| v.to_str().unwrap_or("\u{fffd}"))
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    match tokens.as_slice() {
        [only] if only.eq_ignore_ascii_case("websocket") => Ok(true),
        _ => Err(Error::BadRequest {
            code: "upgrade_not_allowed",
            field: None,
            detail:
                "only `Upgrade: websocket` is accepted, and only on routes with websocket = true"
                    .into(),
        }),
    }
}

/// Whether the upstream's 101 switches to WebSocket (`Upgrade: websocket`);
/// anything else opens no tunnel (502).
pub fn accepted(response: &HeaderMap) -> bool {
    let mut values = response.get_all(header::UPGRADE).iter();
    matches!(
        (values.next().and_then(|v| v.to_str().ok()), values.next()),
        (Some(v), None) if v.trim().eq_ignore_ascii_case("websocket")
    )
}

/// What ends a tunnel besides either side closing it.
pub struct Lifetime {
    pub route: String,
    /// The route's `idle_timeout`: no byte either way for this long.
    pub idle: Duration,
    /// The access token that opened it (none on anonymous tunnels).
    pub token: Option<TokenWatch>,
}

/// The token a tunnel was opened with: it closes at `exp` or when the
/// session or user is revoked.
pub struct TokenWatch {
    exp: i64,
    sub: Uuid,
    sid: Uuid,
    revocations: Arc<RevocationSet>,
}

impl TokenWatch {
    pub fn new(claims: &Claims, revocations: Arc<RevocationSet>) -> Self {
        Self {
            exp: claims.exp,
            sub: claims.sub,
            sid: claims.sid,
            revocations,
        }
    }

    /// When the token expires, as a monotonic instant.
    fn expires_at(&self) -> Instant {
        let now_ms = chrono::Utc::now().timestamp_millis();
        let left_ms = self.exp.saturating_mul(1000).saturating_sub(now_ms);
        Instant::now() + Duration::from_millis(u64::try_from(left_ms).unwrap_or(0))
    }
}

/// The last time a byte went either way.
struct Activity {
    base: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            base: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.base + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

pin_project! {
    /// An upgraded connection that records when it reads anything (every
    /// byte written to one side was read from the other).
    struct Watched<T> {
        #[pin]
        io: T,
        activity: Arc<Activity>,
    }
}

impl<T: AsyncRead> AsyncRead for Watched<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let polled = this.io.poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.touch();
        }
        polled
    }
}

impl<T: AsyncWrite> AsyncWrite for Watched<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.project().io.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }
}

/// Why the watchdog ended a tunnel.
async fn watchdog(lifetime: &Lifetime, activity: &Activity) -> &'static str {
    let expires = lifetime.token.as_ref().map(TokenWatch::expires_at);
    loop {
        let mut next = activity.last() + lifetime.idle;
        if let Some(exp) = expires {
            next = next.min(exp).min(Instant::now() + REVOCATION_POLL);
        }
        tokio::time::sleep_until(next).await;
        let now = Instant::now();
        if let Some(token) = &lifetime.token {
            if expires.is_some_and(|exp| exp <= now) {
                return "access token expired";
            }
            if token.revocations.is_revoked(token.sub, token.sid) {
                return "access token revoked";
            }
        }
        if activity.last() + lifetime.idle <= now {
            return "idle timeout";
        }
    }
}

/// Joins the client's and the upstream's upgraded connections and copies
/// bytes both ways until either side closes or the [`Lifetime`] ends; then
/// both connections are closed.
pub fn tunnel(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    lifetime: Lifetime,
) {
    tokio::spawn(async move {
        let route = lifetime.route.as_str();
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(route, error = %e, "upgrade failed");
                return;
            }
        };
        let activity = Arc::new(Activity::new());
        let mut client = Watched {
            io: TokioIo::new(client),
            activity: activity.clone(),
        };
        let mut upstream = Watched {
            io: TokioIo::new(upstream),
            activity: activity.clone(),
        };
        tokio::select! {
            copied = tokio::io::copy_bidirectional(&mut client, &mut upstream) => match copied {
                Ok((up, down)) => tracing::debug!(route, up, down, "tunnel closed"),
                Err(e) => tracing::debug!(route, error = %e, "tunnel ended with an error"),
            },
            why = watchdog(&lifetime, &activity) => {
                tracing::info!(route, why, "tunnel closed by the gateway");
            }
        }
    });
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn upgrade(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::UPGRADE, HeaderValue::from_str(v).expect("value"));
        }
        h
    }

    /// Only a lone `websocket` token (any case) passes; h2c, lists and
    /// empty values are refused; no header is no upgrade.
    #[test]
    fn only_websocket_is_requested() {
        assert!(matches!(requested(&HeaderMap::new()), Ok(false)));
        assert!(matches!(requested(&upgrade(&["websocket"])), Ok(true)));
        assert!(matches!(requested(&upgrade(&["WebSocket"])), Ok(true)));
        for bad in [
            &["h2c"][..],
            &["websocket, h2c"],
            &["websocket", "h2c"],
            &[""],
            &["TLS/1.2"],
        ] {
            assert!(requested(&upgrade(bad)).is_err(), "{bad:?}");
        }
        assert!(accepted(&upgrade(&["websocket"])));
        assert!(!accepted(&upgrade(&["h2c"])));
        assert!(!accepted(&HeaderMap::new()));
    }
}
