//! Talking to the upstream: the request with its timeouts, one retry of an
//! idempotent request that met a stale pooled connection, and an idle
//! timeout on the streamed response body. Tunnels are in `upgrade`.

use std::error::Error as StdError;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, Response, Uri, Version};
use http_body::{Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use super::pool::{SendError, UpstreamBody};
use super::routes::{Route, Upstream};
use crate::error::Error;

type BoxError = Box<dyn StdError + Send + Sync>;

/// Idempotent methods (RFC 9110 9.2.2) may be sent twice.
fn idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// Sends `req` (an origin-form target) to `upstream`, one of the route's,
/// waiting at most the route's `response_timeout` for the response headers:
/// through the upstream's own pool for `http://` ([`super::pool`]), else
/// hyper-util's client.
///
/// A request that failed after its connection was made (a pooled connection
/// the upstream had closed) is sent once more on a fresh connection when it
/// is idempotent and has no body; a non-idempotent request never is.
pub async fn send(
    route: &Route,
    upstream: &Upstream,
    req: Request<Body>,
) -> Result<Response<UpstreamBody>, Error> {
    let replay =
        (idempotent(req.method()) && http_body::Body::is_end_stream(req.body())).then(|| {
            (
                req.method().clone(),
                req.uri().clone(),
                req.headers().clone(),
            )
        });
    match attempt(route, upstream, req).await {
        Err(Attempt::AfterConnect(why)) => match replay {
            Some((method, uri, headers)) => {
                tracing::debug!(route = route.name(), %why, "retrying idempotent request once");
                // Boxed: the retry is rare, and a second attempt's state
                // inline would double every request's future.
                Box::pin(attempt(route, upstream, rebuild(method, uri, headers)))
                    .await
                    .map_err(Attempt::into_error)
            }
            None => Err(Attempt::AfterConnect(why).into_error()),
        },
        other => other.map_err(Attempt::into_error),
    }
}

fn rebuild(method: Method, uri: Uri, headers: HeaderMap) -> Request<Body> {
    let mut req = Request::new(Body::empty());
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.headers_mut() = headers;
    *req.version_mut() = Version::HTTP_11;
    req
}

enum Attempt {
    /// No connection could be made (refused, unreachable).
    Connect(String),
    /// Connecting or the response headers took too long.
    Timeout(String),
    /// The connection failed after it was made (reset, closed early).
    AfterConnect(String),
}

impl Attempt {
    fn into_error(self) -> Error {
        match self {
            Attempt::Connect(why) | Attempt::AfterConnect(why) => Error::BadGateway(why),
            Attempt::Timeout(why) => Error::GatewayTimeout(why),
        }
    }
}

async fn attempt(
    route: &Route,
    upstream: &Upstream,
    req: Request<Body>,
) -> Result<Response<UpstreamBody>, Attempt> {
    let limit = route.config.response_timeout;
    let answered = match upstream.pool() {
        // Boxed, as hyper-util's client boxes its own: inline, the
        // pool's future (the request held until it is sent) would make
        // every request's future larger, and that is copied a few times
        // per request (benchmarks.md, the sixth and seventh sessions).
        Some(pool) if req.method() != Method::CONNECT => {
            tokio::time::timeout(limit, Box::pin(pool.send(req)))
                .await
                .map(|sent| {
                    sent.map_err(|e| match e {
                        SendError::Connect(e) => connect_failed(route, &*e),
                        SendError::Request(e) => after_connect(route, &e),
                    })
                })
        }
        _ => {
            let req = absolute(req, upstream);
            tokio::time::timeout(limit, route.client().request(req))
                .await
                .map(|sent| match sent {
                    Ok(response) => Ok(response.map(UpstreamBody::from)),
                    Err(e) => Err(client_failed(route, upstream, &e)),
                })
        }
    };
    answered.unwrap_or_else(|_| {
        Err(Attempt::Timeout(format!(
            "the upstream did not answer within {}",
            humantime::format_duration(limit)
        )))
    })
}

/// `req`'s target in absolute form, as hyper-util's client takes it.
fn absolute(mut req: Request<Body>, upstream: &Upstream) -> Request<Body> {
    let mut parts = axum::http::uri::Parts::default();
    parts.scheme = Some(upstream.scheme.clone());
    parts.authority = Some(upstream.authority.clone());
    parts.path_and_query = req.uri().path_and_query().cloned();
    if let Ok(uri) = Uri::from_parts(parts) {
        *req.uri_mut() = uri;
    }
    req
}

/// What a failure of hyper-util's client was.
fn client_failed(
    route: &Route,
    upstream: &Upstream,
    e: &hyper_util::client::legacy::Error,
) -> Attempt {
    // TLS with the upstream failed (unknown issuer, expired, name
    // mismatch, an alert): the reason goes to the log, never to the
    // client, who gets a 502 problem saying only that TLS failed.
    if let Some(tls) = tls_error(e) {
        tracing::warn!(
            route = route.name(),
            upstream = %upstream.authority,
            reason = %tls,
            "TLS with the upstream failed"
        );
        let why = "the TLS handshake with the upstream failed".to_string();
        return if e.is_connect() {
            Attempt::Connect(why)
        } else {
            Attempt::AfterConnect(why)
        };
    }
    if e.is_connect() {
        connect_failed(route, e)
    } else {
        after_connect(route, e)
    }
}

/// No connection: refused, or not made within the connect timeout.
fn connect_failed(route: &Route, e: &(dyn StdError + 'static)) -> Attempt {
    if caused_by_timeout(e) {
        Attempt::Timeout(format!(
            "connecting to the upstream took longer than {}",
            humantime::format_duration(route.config.connect_timeout)
        ))
    } else {
        Attempt::Connect("the upstream refused the connection".into())
    }
}

/// The connection failed once made, before a response.
fn after_connect(route: &Route, e: &(dyn StdError + 'static)) -> Attempt {
    tracing::debug!(route = route.name(), error = %crate::error::with_causes(e), "upstream request failed");
    Attempt::AfterConnect("the upstream closed the connection without a response".into())
}

fn caused_by_timeout(e: &(dyn StdError + 'static)) -> bool {
    causes(e).any(|err| {
        err.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
    })
}

/// The rustls error somewhere in `e`'s chain, if TLS is what failed.
fn tls_error<'a>(e: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    causes(e).find_map(|err| err.downcast_ref::<rustls::Error>())
}

/// `e` and every error under it. An `io::Error` wrapping another error
/// reports, as its `source`, the *wrapped error's* source, skipping the
/// wrapped error itself (a rustls error inside tokio-rustls' `io::Error`,
/// inside hyper-rustls' own): so the walk steps into an `io::Error`
/// through `get_ref` instead.
fn causes<'a>(
    e: &'a (dyn StdError + 'static),
) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    std::iter::successors(Some(e), |&err: &&'a (dyn StdError + 'static)| match err
        .downcast_ref::<std::io::Error>()
    {
        Some(io) => io.get_ref().map(|inner| inner as &(dyn StdError + 'static)),
        None => err.source(),
    })
}

pin_project! {
    /// A response body that fails when the upstream sends nothing for `idle`.
    pub struct IdleTimeout<B> {
        #[pin]
        inner: B,
        #[pin]
        sleep: Sleep,
        idle: Duration,
    }
}

impl<B> IdleTimeout<B> {
    pub fn new(inner: B, idle: Duration) -> Self {
        Self {
            inner,
            sleep: tokio::time::sleep(idle),
            idle,
        }
    }
}

impl<B> http_body::Body for IdleTimeout<B>
where
    B: http_body::Body,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(frame) => {
                let idle = *this.idle;
                this.sleep.as_mut().reset(Instant::now() + idle);
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => match this.sleep.poll(cx) {
                Poll::Ready(()) => {
                    Poll::Ready(Some(Err("upstream response body idle timeout".into())))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rustls::CertificateError;

    /// A rustls error two `io::Error`s deep, as tokio-rustls and
    /// hyper-rustls wrap it, is found, though `source()` alone skips it.
    #[test]
    fn finds_the_rustls_error_through_io_errors() {
        let rustls = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        let inner = std::io::Error::new(std::io::ErrorKind::InvalidData, rustls);
        let outer: BoxError = Box::new(std::io::Error::other(inner));
        assert!(outer.source().is_none(), "std's io::Error hides it");
        assert!(matches!(
            tls_error(&*outer),
            Some(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer
            ))
        ));
        let refused: BoxError =
            Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(tls_error(&*refused).is_none());
        let timed_out: BoxError = Box::new(std::io::Error::other(std::io::Error::from(
            std::io::ErrorKind::TimedOut,
        )));
        assert!(caused_by_timeout(&*timed_out));
    }
}
