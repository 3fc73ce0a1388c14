//! The connection pool of a plain `http://` upstream (issue 18): HTTP/1.1
//! connections made with hyper's `client::conn::http1`, one pool per
//! upstream and thread-per-core worker, in place of hyper-util's legacy
//! client, whose pool hashes its key (SipHash of scheme and authority) at
//! each checkout and return, and spawns a task per request to put the
//! connection back.
//!
//! - Each connection is driven by a task of its own, as hyper-util's are:
//!   a scheduler pass's writes to the upstream still leave together (driving
//!   the connection in the request's task lost to that batching:
//!   docs/benchmarks.md, the third session).
//! - The idle list is last in, first out; a connection idle for
//!   `pool_idle_timeout` is never used again (it and every older one are
//!   dropped at the next checkout, or by the reaper when no request comes).
//! - A connection goes back when its response body has ended ([`UpstreamBody`]),
//!   once the connection is ready for the next request (else a task waits
//!   for that, as hyper-util's does); a body dropped before its end, a 101
//!   and a connection the upstream closes are never reused.
//! - A request the connection refused before sending a byte (it was closed
//!   meanwhile) is sent again on another connection, as hyper-util's
//!   `retry_canceled_requests` did; [`super::upstream`] keeps its own retry
//!   of an idempotent request that was sent and got no answer.
//!
//! `https://` upstreams and `CONNECT` stay with hyper-util's client
//! ([`super::routes::UpstreamClient`]).

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, Response, StatusCode, Uri};
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::GaiResolver;
use tower::ServiceExt;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The reaper's shortest interval: it looks at most this often, however
/// short `pool_idle_timeout` is (zero would spin).
const REAP_AT_MOST_EVERY: Duration = Duration::from_millis(250);

/// Why a request got no response from the pool.
#[derive(Debug)]
pub enum SendError {
    /// No connection could be made (refused, unreachable, timed out: the
    /// connector's error, with its causes).
    Connect(BoxError),
    /// The connection failed after it was made.
    Request(hyper::Error),
}

/// One upstream's idle connections, for one worker.
pub struct Pool {
    idle: Mutex<Vec<Idle>>,
    connector: HttpConnector<GaiResolver>,
    /// The upstream's `http://` URI: the connector reads its host and port.
    target: Uri,
    idle_timeout: Duration,
    reaping: AtomicBool,
}

struct Idle {
    sender: SendRequest<Body>,
    since: Instant,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("target", &self.target)
            .field("idle", &self.lock().len())
            .finish()
    }
}

impl Pool {
    /// A pool of connections to `target`'s host and port (an `http://`
    /// URI) made by `connector` (which holds the route's connect timeout).
    pub fn new(
        connector: HttpConnector<GaiResolver>,
        target: Uri,
        idle_timeout: Duration,
    ) -> Arc<Self> {
        Arc::new(Self {
            idle: Mutex::new(Vec::new()),
            connector,
            target,
            idle_timeout,
            reaping: AtomicBool::new(false),
        })
    }

    /// Sends `req` (origin-form target, `Host` set) on an idle connection,
    /// else on a new one; the response body gives the connection back when
    /// it ends.
    pub async fn send(
        self: &Arc<Self>,
        mut req: Request<Body>,
    ) -> Result<Response<UpstreamBody>, SendError> {
        loop {
            let (mut sender, reused) = match self.checkout() {
                Some(sender) => (sender, true),
                // Boxed: a new connection is the rare case, and its
                // future (the connector's, hyper's handshake) would
                // otherwise make every request's future larger, which is
                // copied on each request (benchmarks.md, the sixth session).
                None => (Box::pin(self.connect()).await?, false),
            };
            match sender.try_send_request(req).await {
                Ok(response) => {
                    let reusable = response.status() != StatusCode::SWITCHING_PROTOCOLS;
                    let back = Back {
                        pool: Arc::clone(self),
                        sender,
                        reusable,
                    };
                    return Ok(response.map(|inner| UpstreamBody {
                        inner,
                        back: Some(back),
                    }));
                }
                Err(mut e) => match e.take_message() {
                    // Refused before a byte was sent: the pooled connection
                    // had closed. Another one (or a new one) takes it.
                    Some(unsent) if reused => req = unsent,
                    _ => return Err(SendError::Request(e.into_error())),
                },
            }
        }
    }

    /// The most recently used connection ready for a request, if one was
    /// idle for less than the idle timeout (an expired one, and every older
    /// one, is dropped).
    fn checkout(&self) -> Option<SendRequest<Body>> {
        let mut idle = self.lock();
        while let Some(entry) = idle.pop() {
            if entry.since.elapsed() >= self.idle_timeout {
                idle.clear();
                return None;
            }
            if entry.sender.is_ready() {
                return Some(entry.sender);
            }
        }
        None
    }

    /// A new connection, driven by a task of its own on this worker.
    async fn connect(self: &Arc<Self>) -> Result<SendRequest<Body>, SendError> {
        let io = self
            .connector
            .clone()
            .oneshot(self.target.clone())
            .await
            .map_err(|e| SendError::Connect(Box::new(e)))?;
        let (sender, connection) = http1::Builder::new()
            .handshake::<_, Body>(io)
            .await
            .map_err(|e| SendError::Connect(Box::new(e)))?;
        tokio::spawn(async move {
            if let Err(e) = connection.with_upgrades().await {
                tracing::debug!(error = %crate::error::with_causes(&e), "upstream connection ended");
            }
        });
        self.start_reaper();
        Ok(sender)
    }

    /// Keeps a connection whose exchange is over for the next request: at
    /// once if it is ready for one, else once it is (a task waits), never
    /// if it closed.
    fn put(self: &Arc<Self>, mut sender: SendRequest<Body>) {
        if self.idle_timeout.is_zero() || sender.is_closed() {
            return;
        }
        if sender.is_ready() {
            self.push(sender);
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let pool = Arc::clone(self);
            runtime.spawn(async move {
                if sender.ready().await.is_ok() {
                    pool.push(sender);
                }
            });
        }
    }

    fn push(&self, sender: SendRequest<Body>) {
        let since = Instant::now();
        self.lock().push(Idle { sender, since });
    }

    /// Drops idle connections past the idle timeout, or closed, from time
    /// to time while the pool lives (the checkout alone would keep them
    /// until the next request).
    fn start_reaper(self: &Arc<Self>) {
        if self.reaping.swap(true, Ordering::Relaxed) {
            return;
        }
        let pool: Weak<Self> = Arc::downgrade(self);
        let every = self.idle_timeout.max(REAP_AT_MOST_EVERY);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(pool) = pool.upgrade() else {
                    return;
                };
                pool.reap();
            }
        });
    }

    fn reap(&self) {
        let timeout = self.idle_timeout;
        self.lock()
            .retain(|e| e.since.elapsed() < timeout && !e.sender.is_closed());
    }

    /// Idle connections now.
    #[cfg(test)]
    fn idle(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Idle>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The connection a response came on, until its body ends.
struct Back {
    pool: Arc<Pool>,
    sender: SendRequest<Body>,
    /// Not after a 101: the connection is the tunnel's.
    reusable: bool,
}

/// An upstream response body: hyper's, plus (from the pool) the connection
/// it came on, given back to the pool when the body has ended (read to its
/// end, or empty); dropped earlier, the connection closes with it.
pub struct UpstreamBody {
    inner: Incoming,
    back: Option<Back>,
}

impl From<Incoming> for UpstreamBody {
    /// A body from hyper-util's client, which pools its own connection.
    fn from(inner: Incoming) -> Self {
        Self { inner, back: None }
    }
}

impl UpstreamBody {
    fn give_back(&mut self) {
        if let Some(back) = self.back.take()
            && back.reusable
        {
            back.pool.put(back.sender);
        }
    }
}

impl http_body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            this.give_back();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // An empty body (204, 304, a HEAD's answer) may never be polled.
        if http_body::Body::is_end_stream(&self.inner) {
            self.give_back();
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::net::SocketAddr;
    use std::sync::atomic::AtomicUsize;
    use tokio::net::TcpListener;

    /// An upstream (hyper's server) that counts its connections and answers
    /// each request with `body` (and `Connection: close` when `close`).
    async fn upstream(body: &'static str, close: bool) -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let answer = hyper::service::service_fn(move |_req| async move {
                    let mut response = Response::new(http_body_util::Full::new(Bytes::from(body)));
                    if close {
                        response.headers_mut().insert(
                            axum::http::header::CONNECTION,
                            axum::http::HeaderValue::from_static("close"),
                        );
                    }
                    Ok::<_, std::convert::Infallible>(response)
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(sock), answer),
                );
            }
        });
        (addr, accepted)
    }

    fn pool(addr: SocketAddr, idle: Duration) -> Arc<Pool> {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        Pool::new(connector, format!("http://{addr}").parse().unwrap(), idle)
    }

    fn get(addr: SocketAddr) -> Request<Body> {
        Request::builder()
            .uri("/x")
            .header("host", addr.to_string())
            .body(Body::empty())
            .unwrap()
    }

    async fn read(response: Response<UpstreamBody>) -> String {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    /// Requests one after another share one connection, given back when
    /// each response body ends.
    #[tokio::test]
    async fn a_connection_is_reused_once_its_body_has_ended() {
        let (addr, accepted) = upstream("hello", false).await;
        let pool = pool(addr, Duration::from_secs(30));
        for _ in 0..5 {
            let response = pool.send(get(addr)).await.unwrap();
            assert_eq!(read(response).await, "hello");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(pool.idle(), 1);
    }

    /// A body dropped before its end takes its connection with it: the next
    /// request gets a new one, and its answer is its own.
    #[tokio::test]
    async fn a_body_dropped_early_does_not_give_its_connection_back() {
        let (addr, accepted) = upstream("a body of some length", false).await;
        let pool = pool(addr, Duration::from_secs(30));
        let first = pool.send(get(addr)).await.unwrap();
        drop(first);
        assert_eq!(pool.idle(), 0);
        let second = pool.send(get(addr)).await.unwrap();
        assert_eq!(read(second).await, "a body of some length");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    /// A connection idle for the pool's idle timeout is not used again.
    #[tokio::test]
    async fn an_expired_connection_is_not_reused() {
        let (addr, accepted) = upstream("ok", false).await;
        let pool = pool(addr, Duration::from_millis(50));
        assert_eq!(read(pool.send(get(addr)).await.unwrap()).await, "ok");
        assert_eq!(pool.idle(), 1);
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert_eq!(read(pool.send(get(addr)).await.unwrap()).await, "ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    /// A connection the upstream closes (`Connection: close`) is not kept.
    #[tokio::test]
    async fn a_closed_connection_is_not_kept() {
        let (addr, accepted) = upstream("bye", true).await;
        let pool = pool(addr, Duration::from_secs(30));
        for _ in 0..3 {
            assert_eq!(read(pool.send(get(addr)).await.unwrap()).await, "bye");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    /// Nothing listening: a connect error, not a request error.
    #[tokio::test]
    async fn a_refused_connection_is_a_connect_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let pool = pool(addr, Duration::from_secs(30));
        let e = pool.send(get(addr)).await.err().expect("an error");
        assert!(matches!(e, SendError::Connect(_)), "{e:?}");
    }
}
