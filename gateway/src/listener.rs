//! The accept loop and the life of one client connection.
//!
//! hyper's HTTP/1 server keeps an 8 KiB read buffer and an 8 KiB write
//! buffer (plus its dispatcher state) for as long as a connection lives, so
//! 10,000 idle keep-alive connections held ~20 KiB each. Here a connection
//! that has been idle for [`PARK_AFTER`] between two requests is *parked*:
//! hyper is ended without closing the socket, its buffers are freed, and the
//! task waits for the next request's first byte with nothing but the socket.
//! When it comes, a fresh hyper connection takes over. To the client this is
//! one ordinary keep-alive connection.
//!
//! The trick is in [`ParkingIo`]: once the last response has been written in
//! full, the request body was read to its end, and no byte has come for
//! [`PARK_AFTER`], a read answers end-of-file, which hyper takes as the client
//! closing between requests; the `shutdown` that follows is not passed to
//! the socket. A connection that upgraded (WebSocket: the socket belongs to
//! the tunnel), speaks HTTP/2, or is in the middle of an exchange is never
//! parked.
//!
//! With `[server.tls]` the same life runs over TLS ([`Transport`] covers
//! both): the handshake (bounded by the header timeout) comes first, with
//! the certificates current at accept; ALPN, not a peek, tells HTTP/2 from
//! HTTP/1.1; a parked TLS connection keeps its rustls session (the bytes
//! that wake it are decrypted into [`ParkingIo::prefix`], since TLS cannot
//! be peeked); every request carries the negotiated [`TlsConnection`] and,
//! when one was verified, the client's [`PeerCertificate`]; every answer
//! carries `Strict-Transport-Security`.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, Response};
use bytes::{Buf, Bytes};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::time::{Instant, Sleep};
use tower::Service;

use crate::tls::PeerCertificate;
use crate::tls::server::{Acceptor, TlsConnection};

/// How long a keep-alive connection may sit idle between requests before
/// its HTTP state is freed. Above the gaps inside one burst of requests (a
/// busy connection keeps its buffers), far below the idle bound
/// (`server.header_read_timeout`). Shorter means less memory held by
/// connections that have just gone idle; a parked connection's next
/// request costs a few allocations and a peek more. The buffers of every
/// connection active within this window are live at once, and glibc keeps
/// what they free: 10,000 idle connections made 66.3 MiB RSS at 250 ms,
/// 55.5 MiB at 100 ms (docs/benchmarks.md).
pub const PARK_AFTER: Duration = Duration::from_millis(100);

/// The HTTP/2 connection preface (RFC 9113 3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Connections of one listener, for `/metrics` and for shutdown to wait on.
#[derive(Debug, Default)]
pub struct Stats {
    open: AtomicUsize,
    parked: AtomicUsize,
    rejected: AtomicU64,
    tls_failed: AtomicU64,
    closed: Notify,
}

impl Stats {
    /// Client connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Of those, the idle keep-alive connections parked now.
    pub fn parked(&self) -> usize {
        self.parked.load(Ordering::Relaxed)
    }

    /// Connections closed at accept since start, because
    /// [`Settings::max_connections`] were open.
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    /// TLS handshakes that failed or timed out since start.
    pub fn tls_failed(&self) -> u64 {
        self.tls_failed.load(Ordering::Relaxed)
    }

    /// Resolves once no connection is open.
    async fn all_closed(&self) {
        loop {
            let closed = self.closed.notified();
            if self.open() == 0 {
                return;
            }
            closed.await;
        }
    }
}

/// Counts a connection (or a parked one) for as long as it lives.
struct Counted {
    stats: Arc<Stats>,
    parked: bool,
}

impl Counted {
    fn open(stats: &Arc<Stats>) -> Self {
        stats.open.fetch_add(1, Ordering::Relaxed);
        Self {
            stats: stats.clone(),
            parked: false,
        }
    }

    fn parked(stats: &Arc<Stats>) -> Self {
        stats.parked.fetch_add(1, Ordering::Relaxed);
        Self {
            stats: stats.clone(),
            parked: true,
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        if self.parked {
            self.stats.parked.fetch_sub(1, Ordering::Relaxed);
        } else if self.stats.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.stats.closed.notify_waiters();
        }
    }
}

/// How connections on one listener are served.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Time to the first byte of a request on an idle connection (new or
    /// parked), and hyper's bound for a whole request head.
    pub header_timeout: Duration,
    /// How long in-flight requests may finish after shutdown begins.
    pub drain: Duration,
    /// Idle time between requests after which a connection is parked.
    pub park_after: Duration,
    /// Where the listener counts its connections.
    pub stats: Arc<Stats>,
    /// Connections open at once; past it, a new connection is closed as
    /// soon as it is accepted (and counted in [`Stats::rejected`]). 0: no
    /// bound.
    pub max_connections: usize,
    /// HTTP/2: a PING after this long without a frame from the client...
    pub h2_keepalive_interval: Duration,
    /// ...and the connection is closed if the PING is not answered within
    /// this long.
    pub h2_keepalive_timeout: Duration,
    /// HTTP/2: a connection with no stream open for this long is closed
    /// (GOAWAY, then close).
    pub h2_idle_timeout: Duration,
    /// Terminate TLS with this acceptor's current config; `None`: plain HTTP.
    pub tls: Option<Arc<Acceptor>>,
    /// A way past the router for the requests it would only hand on to one
    /// handler ([`Shortcut`]); `None`: every request goes to the router.
    pub shortcut: Option<Shortcut>,
}

/// The response future a [`Shortcut`] answers with.
pub type ShortcutFuture = Pin<Box<dyn Future<Output = Response<Body>> + Send>>;

/// Serves a request past the router, or hands it back for the router (it
/// may have prepared it: the proxy's makes its path canonical).
pub type ServeFn = dyn Fn(Request<Body>) -> Result<ShortcutFuture, Request<Body>> + Send + Sync;

/// A way past the router (the proxy's fast path,
/// [`crate::api::proxy_shortcut`]): `serve` answers the requests it takes
/// and hands any other back to the router. One function decides and
/// serves, so what it decided is what serves the request.
#[derive(Clone)]
pub struct Shortcut {
    pub serve: Arc<ServeFn>,
}

impl std::fmt::Debug for Shortcut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Shortcut")
    }
}

impl Settings {
    /// Settings for `stats` with the default bounds of `server` config.
    pub fn new(server: &crate::config::ServerConfig, drain: Duration, stats: Arc<Stats>) -> Self {
        Self {
            header_timeout: server.header_read_timeout,
            drain,
            park_after: PARK_AFTER,
            stats,
            max_connections: server.max_connections,
            h2_keepalive_interval: server.http2_keepalive_interval,
            h2_keepalive_timeout: server.http2_keepalive_timeout,
            h2_idle_timeout: server.http2_idle_timeout,
            tls: None,
            shortcut: None,
        }
    }
}

/// Connections the kernel may hold, handshake done, until the accept loop
/// takes them (capped by `net.core.somaxconn`). tokio's `TcpListener::bind`
/// asks for 128, std's and mio's default: a burst of more clients than that
/// overflows the accept queue, the kernel drops their SYNs and last ACKs,
/// and they wait for retransmits (one second, then doubling), or hang if
/// they send nothing: 61 to 146 of 1,000 silent connections were never cut
/// in the soak's slowloris check.
pub const LISTEN_BACKLOG: u32 = 4096;

/// A listener on `addr` with [`LISTEN_BACKLOG`] (and `SO_REUSEADDR`, as
/// tokio's `bind` sets). Call it inside the runtime.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    bind_with(addr, false)
}

/// [`bind`], with `SO_REUSEPORT` when `reuse_port` (thread-per-core's
/// sibling sockets, [`crate::cores`]): then another socket of this user may
/// bind the same address and share its connections.
pub fn bind_with(addr: SocketAddr, reuse_port: bool) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    if reuse_port {
        socket.set_reuseport(true)?;
    }
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Serves `router` on `listener` until `shutdown`, then stops accepting,
/// lets in-flight requests finish for at most `settings.drain`, and closes
/// idle connections at once.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    settings: Settings,
) -> io::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let stats = settings.stats.clone();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if settings.max_connections > 0 && stats.open() >= settings.max_connections {
            // Full: close at once. Serving it would take memory and a task
            // the bound is there to protect.
            stats.rejected.fetch_add(1, Ordering::Relaxed);
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        let (open, router, stop) = (Counted::open(&stats), router.clone(), stop_rx.clone());
        // Two kinds of task: a TLS connection's state (the handshake, then
        // rustls' session beside hyper's) is several KiB that every plain
        // connection's task would carry too, idle or not, were it one.
        match settings.tls.clone() {
            None => tokio::spawn(serve_connection(
                open,
                stream,
                peer,
                router,
                settings.clone(),
                stop,
                None,
            )),
            Some(tls) => tokio::spawn(tls_connection(
                tls,
                open,
                stream,
                peer,
                router,
                settings.clone(),
                stop,
            )),
        };
    }
    drop(listener);
    tracing::info!("shutting down: draining in-flight requests");
    let _ = stop_tx.send(true);
    if tokio::time::timeout(settings.drain, stats.all_closed())
        .await
        .is_err()
    {
        tracing::warn!(drain = ?settings.drain, "shutdown timeout reached; dropping remaining connections");
    }
    Ok(())
}

/// One TLS client connection, from accept to close: the handshake
/// (bounded by the header timeout), then its HTTP life.
async fn tls_connection(
    tls: Arc<Acceptor>,
    open: Counted,
    stream: TcpStream,
    peer: SocketAddr,
    router: axum::Router,
    settings: Settings,
    mut stop: watch::Receiver<bool>,
) {
    let handshake = tls.acceptor().accept(stream);
    let stream = tokio::select! {
        biased;
        _ = stop.wait_for(|stop| *stop) => return,
        done = tokio::time::timeout(settings.header_timeout, handshake) => match done {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                // Scanners, old clients, a refused client certificate.
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                settings.stats.tls_failed.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake timed out");
                settings.stats.tls_failed.fetch_add(1, Ordering::Relaxed);
                return;
            }
        },
    };
    let (conn, peer_cert) = crate::tls::server::negotiated(stream.get_ref().1);
    let info = Arc::new(TlsInfo {
        conn,
        peer_cert,
        hsts: tls.hsts(),
    });
    serve_connection(open, stream, peer, router, settings, stop, Some(info)).await;
}

/// What a TLS connection gives each of its requests and answers.
struct TlsInfo {
    conn: TlsConnection,
    peer_cert: Option<PeerCertificate>,
    hsts: Option<axum::http::HeaderValue>,
}

/// A connection's HTTP life over `stream` (TCP, or TLS after its handshake).
async fn serve_connection<S: Transport>(
    _open: Counted,
    stream: S,
    peer: SocketAddr,
    router: axum::Router,
    settings: Settings,
    mut stop: watch::Receiver<bool>,
    tls: Option<Arc<TlsInfo>>,
) {
    let flags = Arc::new(Flags::new());
    let mut io = ParkingIo::new(stream, flags.clone(), settings.park_after);
    let service = ConnService {
        router,
        shortcut: settings.shortcut.clone(),
        peer,
        flags,
        tls,
    };
    loop {
        // Idle: only the socket is held until the next request's first byte.
        if io.prefix.is_empty() {
            let _parked = io.parked.then(|| Counted::parked(&settings.stats));
            // A parked connection has been idle for `park_after` already.
            let limit = if io.parked {
                settings.header_timeout.saturating_sub(settings.park_after)
            } else {
                settings.header_timeout
            };
            let ParkingIo { stream, prefix, .. } = &mut io;
            tokio::select! {
                biased;
                _ = stop.wait_for(|stop| *stop) => return,
                ready = tokio::time::timeout(limit, stream.wait_readable(prefix)) => {
                    if !matches!(ready, Ok(Ok(()))) {
                        return;
                    }
                }
            }
        }
        match protocol(&io, settings.header_timeout).await {
            Protocol::Closed => return,
            Protocol::Http2 => {
                // Boxed, as the HTTP/1 connection below: its builder and
                // driver must not size every connection's task.
                Box::pin(serve_h2(io, service, &settings, &mut stop)).await;
                return;
            }
            Protocol::Http1 => {}
        }
        io.unpark();
        // Boxed: a parked connection's task must not carry hyper's state inline.
        let mut conn = Box::pin(
            http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(settings.header_timeout)
                .serve_connection(TokioIo::new(io), service.clone())
                .with_upgrades(),
        );
        if drive(conn.as_mut(), &mut stop, None).await.is_err() {
            return;
        }
        let Some(parts) = Pin::into_inner(conn).into_parts() else {
            return; // upgraded: the tunnel owns the socket now
        };
        let mut next = parts.io.into_inner();
        if !next.parked {
            return; // the client closed, or keep-alive ended
        }
        // `read_buf` is a view into hyper's read buffer: copied (it is
        // empty but for pipelined bytes), so that the buffer is freed.
        next.prefix = if parts.read_buf.is_empty() {
            Bytes::new()
        } else {
            Bytes::copy_from_slice(&parts.read_buf)
        };
        io = next;
    }
}

/// An HTTP/2 connection's whole life (never parked).
async fn serve_h2<S: Transport>(
    io: ParkingIo<S>,
    service: ConnService,
    settings: &Settings,
    stop: &mut watch::Receiver<bool>,
) {
    service.flags.never.store(true, Ordering::Relaxed);
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .keep_alive_interval(settings.h2_keepalive_interval)
        .keep_alive_timeout(settings.h2_keepalive_timeout);
    let flags = service.flags.clone();
    let mut conn = std::pin::pin!(builder.serve_connection(TokioIo::new(io), service));
    let idle = Some((flags, settings.h2_idle_timeout));
    let _ = drive(conn.as_mut(), stop, idle).await;
}

/// A client connection's byte stream: plain TCP, or TLS over it.
trait Transport: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Resolves when the client has sent something (or closed: then an
    /// error). TLS moves the decrypted bytes into `prefix`, since it cannot
    /// be peeked; TCP leaves them in the socket.
    fn wait_readable<'a>(
        &'a mut self,
        prefix: &'a mut Bytes,
    ) -> impl Future<Output = io::Result<()>> + Send + 'a;

    /// HTTP/2 or not, as negotiated by ALPN; `None` when there was no
    /// negotiation (plain TCP: the preface is peeked for instead).
    fn alpn_h2(&self) -> Option<bool>;

    /// Copies the next bytes without consuming them (plain TCP only).
    fn peek<'a>(&'a self, buf: &'a mut [u8])
    -> impl Future<Output = io::Result<usize>> + Send + 'a;
}

impl Transport for TcpStream {
    async fn wait_readable(&mut self, _prefix: &mut Bytes) -> io::Result<()> {
        self.readable().await
    }

    fn alpn_h2(&self) -> Option<bool> {
        None
    }

    async fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        TcpStream::peek(self, buf).await
    }
}

impl Transport for tokio_rustls::server::TlsStream<TcpStream> {
    async fn wait_readable(&mut self, prefix: &mut Bytes) -> io::Result<()> {
        use tokio::io::AsyncReadExt;
        // Small: a parked connection holds this only while it waits.
        let mut buf = [0u8; 512];
        let n = self.read(&mut buf).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        *prefix = Bytes::copy_from_slice(&buf[..n]);
        Ok(())
    }

    fn alpn_h2(&self) -> Option<bool> {
        Some(self.get_ref().1.alpn_protocol() == Some(b"h2"))
    }

    async fn peek(&self, _buf: &mut [u8]) -> io::Result<usize> {
        Err(io::ErrorKind::Unsupported.into())
    }
}

/// A served connection that can be asked to finish gracefully.
trait Graceful: Future<Output = hyper::Result<()>> {
    /// In-flight requests complete, then the connection ends.
    fn begin_shutdown(self: Pin<&mut Self>);
}

impl<S: Transport> Graceful for http1::UpgradeableConnection<TokioIo<ParkingIo<S>>, ConnService> {
    fn begin_shutdown(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<S: Transport> Graceful
    for http2::Connection<TokioIo<ParkingIo<S>>, ConnService, TokioExecutor>
{
    fn begin_shutdown(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// Polls a connection to its end; once shutdown begins, asks it to finish
/// gracefully and keeps polling. With `idle` (HTTP/2), a connection with
/// no exchange in flight for that long is asked to finish too.
async fn drive<C: Graceful + ?Sized>(
    mut conn: Pin<&mut C>,
    stop: &mut watch::Receiver<bool>,
    idle: Option<(Arc<Flags>, Duration)>,
) -> hyper::Result<()> {
    let mut stopping = false;
    let idle_limit = idle.as_ref().map_or(Duration::MAX, |(_, d)| *d);
    let mut check = Instant::now().checked_add(idle_limit);
    loop {
        if !stopping && *stop.borrow() {
            stopping = true;
            conn.as_mut().begin_shutdown();
        }
        let wake = async {
            match check {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = &result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return result;
            }
            _ = stop.wait_for(|stop| *stop), if !stopping => {}
            () = wake, if !stopping => {
                let Some((flags, limit)) = &idle else { continue };
                check = match flags.idle_since() {
                    Some(since) if since.elapsed() >= *limit => {
                        tracing::debug!("idle HTTP/2 connection closed");
                        stopping = true;
                        conn.as_mut().begin_shutdown();
                        None
                    }
                    Some(since) => Some(since + *limit),
                    None => Some(Instant::now() + *limit),
                };
            }
        }
    }
}

/// What the next bytes on an idle connection are.
enum Protocol {
    Http1,
    Http2,
    Closed,
}

/// Tells HTTP/2 from HTTP/1: by ALPN over TLS, else by peeking for the
/// preface, without consuming.
async fn protocol<S: Transport>(io: &ParkingIo<S>, limit: Duration) -> Protocol {
    match io.stream.alpn_h2() {
        Some(true) => return Protocol::Http2,
        Some(false) => return Protocol::Http1,
        None => {}
    }
    if !io.prefix.is_empty() {
        return Protocol::Http1; // pipelined bytes after an HTTP/1 request
    }
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; H2_PREFACE.len()];
    loop {
        let n = match tokio::time::timeout_at(deadline, io.stream.peek(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => return Protocol::Closed,
        };
        if !H2_PREFACE.starts_with(&buf[..n]) {
            return Protocol::Http1;
        }
        if n == H2_PREFACE.len() {
            return Protocol::Http2;
        }
        // Part of the preface: the rest is on its way.
        if tokio::time::timeout_at(deadline, tokio::time::sleep(Duration::from_millis(1)))
            .await
            .is_err()
        {
            return Protocol::Closed;
        }
    }
}

/// Where one connection stands between requests, shared by its socket
/// wrapper and the bodies of its current exchange.
#[derive(Default)]
struct Flags {
    /// The current response's body has been handed to hyper to its end.
    response_done: AtomicBool,
    /// The current request's body has been read to its end (or it had none).
    request_done: AtomicBool,
    /// Never park: HTTP/2 (streams come and go on their own), or the
    /// connection was upgraded and belongs to a tunnel now.
    never: AtomicBool,
    /// Exchanges in flight (HTTP/2 streams), and since when there has been
    /// none.
    active: AtomicUsize,
    idle_since: std::sync::Mutex<Option<Instant>>,
}

impl Flags {
    fn begin(&self, request_has_body: bool) {
        self.response_done.store(false, Ordering::Relaxed);
        self.request_done
            .store(!request_has_body, Ordering::Relaxed);
    }

    /// Since when no exchange has been in flight; `None` while one is (or,
    /// before the first, since the connection began: see [`Flags::new`]).
    fn idle_since(&self) -> Option<Instant> {
        if self.active.load(Ordering::SeqCst) > 0 {
            return None;
        }
        *self.idle_since.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn new() -> Self {
        Self {
            idle_since: std::sync::Mutex::new(Some(Instant::now())),
            ..Self::default()
        }
    }

    fn between_requests(&self) -> bool {
        !self.never.load(Ordering::Relaxed)
            && self.response_done.load(Ordering::Relaxed)
            && self.request_done.load(Ordering::Relaxed)
    }
}

/// The socket as hyper sees it; see the module docs.
struct ParkingIo<S> {
    stream: S,
    /// Bytes hyper had read past its last request, served before the socket.
    prefix: Bytes,
    flags: Arc<Flags>,
    park_after: Duration,
    /// When to look again whether the connection has been idle for
    /// `park_after`; armed at hyper's first read that finds nothing.
    tick: Option<Pin<Box<Sleep>>>,
    /// When bytes last came from the client.
    last_read: Instant,
    /// The last write could not go out at once: hyper still holds output.
    write_blocked: bool,
    /// End-of-file was answered to end hyper between requests.
    parked: bool,
}

impl<S: Transport> ParkingIo<S> {
    fn new(stream: S, flags: Arc<Flags>, park_after: Duration) -> Self {
        Self {
            stream,
            prefix: Bytes::new(),
            flags,
            park_after,
            tick: None,
            last_read: Instant::now(),
            write_blocked: false,
            parked: false,
        }
    }

    /// Ready for a fresh hyper connection.
    fn unpark(&mut self) {
        self.parked = false;
        self.last_read = Instant::now();
        self.write_blocked = false;
        self.flags.begin(true);
    }

    /// On a read that found nothing: whether to end hyper now.
    fn should_park(&mut self, cx: &mut Context<'_>) -> bool {
        let due = self.last_read + self.park_after;
        let tick = self
            .tick
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
        if tick.as_mut().poll(cx).is_pending() {
            return false;
        }
        // Idle for `park_after`, nothing owed either way: park.
        let now = Instant::now();
        if now >= due && !self.write_blocked && self.flags.between_requests() {
            self.tick = None;
            return true;
        }
        // Busy since, or in the middle of an exchange: look again later
        // (this also registers the waker for the new deadline).
        tick.as_mut().reset(due.max(now + self.park_after / 4));
        let _ = tick.as_mut().poll(cx);
        false
    }
}

impl<S: Transport> AsyncRead for ParkingIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.parked {
            return Poll::Ready(Ok(()));
        }
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            this.last_read = Instant::now();
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Pending => {
                if this.should_park(cx) {
                    this.parked = true;
                    return Poll::Ready(Ok(()));
                }
                Poll::Pending
            }
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    this.last_read = Instant::now();
                }
                Poll::Ready(result)
            }
        }
    }
}

impl<S: Transport> AsyncWrite for ParkingIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.write_blocked = result.is_pending();
        result
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.write_blocked = result.is_pending();
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    /// Parked, hyper's shutdown must not reach the socket: the client keeps it.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.parked {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_shutdown(cx)
    }
}

/// The router as one connection's hyper service: adds the peer address,
/// and tracks where the exchange stands in the connection's [`Flags`].
#[derive(Clone)]
struct ConnService {
    router: axum::Router,
    shortcut: Option<Shortcut>,
    peer: SocketAddr,
    flags: Arc<Flags>,
    tls: Option<Arc<TlsInfo>>,
}

impl hyper::service::Service<Request<Incoming>> for ConnService {
    type Response = Response<Tracked<Body>>;
    type Error = std::convert::Infallible;
    type Future = Exchange;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        self.flags.begin(!req.body().is_end_stream());
        let flags = self.flags.clone();
        let mut req = req.map(|body| {
            Body::new(Tracked {
                inner: body,
                flags: flags.clone(),
                done: Side::Request,
                _active: None,
            })
        });
        req.extensions_mut().insert(ConnectInfo(self.peer));
        if let Some(tls) = &self.tls {
            req.extensions_mut().insert(tls.conn.clone());
            if let Some(cert) = &tls.peer_cert {
                req.extensions_mut().insert(cert.clone());
            }
        }
        let http1 = req.version() < axum::http::Version::HTTP_2;
        let served = match &self.shortcut {
            Some(shortcut) => (shortcut.serve)(req),
            None => Err(req),
        };
        Exchange {
            hsts: self.tls.as_ref().and_then(|t| t.hsts.clone()),
            http1,
            // Only HTTP/2 has an idle timeout to keep.
            active: (!http1).then(|| Active::begin(&flags)),
            inner: match served {
                Ok(direct) => Inner::Direct { direct },
                Err(req) => Inner::Router {
                    routed: self.router.clone().call(req),
                },
            },
            flags: Some(flags),
        }
    }
}

pin_project_lite::pin_project! {
    /// Where an exchange's response comes from: the router, or the shortcut.
    #[project = InnerProj]
    enum Inner {
        Router { #[pin] routed: axum::routing::future::RouteFuture<std::convert::Infallible> },
        Direct { direct: ShortcutFuture },
    }
}

impl Future for Inner {
    type Output = Result<Response<Body>, std::convert::Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            InnerProj::Router { routed } => routed.poll(cx),
            InnerProj::Direct { direct } => direct.as_mut().poll(cx).map(Ok),
        }
    }
}

pin_project_lite::pin_project! {
    /// The router's (or the shortcut's) response, its body tracked.
    struct Exchange {
        #[pin]
        inner: Inner,
        flags: Option<Arc<Flags>>,
        http1: bool,
        active: Option<Active>,
        hsts: Option<axum::http::HeaderValue>,
    }
}

/// One exchange in flight, from the request to the end (or drop) of its
/// response body.
struct Active(Arc<Flags>);

impl Active {
    fn begin(flags: &Arc<Flags>) -> Self {
        flags.active.fetch_add(1, Ordering::SeqCst);
        Self(flags.clone())
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        let mut since = self.0.idle_since.lock().unwrap_or_else(|e| e.into_inner());
        if self.0.active.fetch_sub(1, Ordering::SeqCst) == 1 {
            *since = Some(Instant::now());
        }
    }
}

impl Future for Exchange {
    type Output = Result<Response<Tracked<Body>>, std::convert::Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.inner.poll(cx));
        let flags = this.flags.take().unwrap_or_default();
        let mut response = response;
        if let Ok(r) = &mut response {
            if let Some(hsts) = this.hsts.take() {
                // The gateway's policy, whatever an upstream said.
                r.headers_mut()
                    .insert(axum::http::header::STRICT_TRANSPORT_SECURITY, hsts);
            }
            if r.status() == axum::http::StatusCode::SWITCHING_PROTOCOLS {
                flags.never.store(true, Ordering::Relaxed);
            } else if *this.http1 && !flags.request_done.load(Ordering::Relaxed) {
                // An answer before the request body was read (an early 401,
                // 404, 413, 502...): hyper will close the connection rather
                // than wait for the rest of the body, so say so, or the
                // client's next request on it would fail.
                r.headers_mut().insert(
                    axum::http::header::CONNECTION,
                    axum::http::HeaderValue::from_static("close"),
                );
            }
        }
        let active = this.active.take();
        Poll::Ready(response.map(|r| {
            r.map(|inner| Tracked {
                inner,
                flags,
                done: Side::Response,
                _active: active,
            })
        }))
    }
}

/// Which flag a [`Tracked`] body sets at its end.
#[derive(Clone, Copy)]
enum Side {
    Request,
    Response,
}

pin_project_lite::pin_project! {
    /// A body that marks its end in the connection's [`Flags`].
    struct Tracked<B> {
        #[pin]
        inner: B,
        flags: Arc<Flags>,
        done: Side,
        _active: Option<Active>,
    }
}

impl<B> Tracked<B> {
    fn mark_done(flags: &Flags, side: Side) {
        let flag = match side {
            Side::Request => &flags.request_done,
            Side::Response => &flags.response_done,
        };
        flag.store(true, Ordering::Relaxed);
    }
}

impl<B: HttpBody> HttpBody for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        if frame.is_none() {
            Self::mark_done(this.flags, *this.done);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        let end = self.inner.is_end_stream();
        if end {
            Self::mark_done(&self.flags, self.done);
        }
        end
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use axum::routing::{get, post};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const BIG: usize = 4 << 20;

    struct Server {
        addr: SocketAddr,
        stats: Arc<Stats>,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        task: tokio::task::JoinHandle<io::Result<()>>,
    }

    /// A server on port 0 with a few routes, parking after 100 ms.
    async fn server(header_timeout: Duration) -> Server {
        server_with(header_timeout, |_| {}).await
    }

    /// [`server`], with `tweak` applied to its settings.
    async fn server_with(header_timeout: Duration, tweak: impl FnOnce(&mut Settings)) -> Server {
        let router = axum::Router::new()
            .route("/hello", get(|| async { "hello" }))
            .route("/big", get(|| async { vec![b'x'; BIG] }))
            .route("/echo", post(|body: Bytes| async move { body }))
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_millis(600)).await;
                    "slow"
                }),
            )
            .route("/upgrade", get(upgrade_echo))
            .route(
                "/ignore",
                post(|| async { (axum::http::StatusCode::UNAUTHORIZED, "no") }),
            );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stats = Arc::new(Stats::default());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let mut settings = Settings {
            header_timeout,
            drain: Duration::from_secs(5),
            park_after: Duration::from_millis(100),
            stats: stats.clone(),
            max_connections: 0,
            h2_keepalive_interval: Duration::from_secs(10),
            h2_keepalive_timeout: Duration::from_secs(10),
            h2_idle_timeout: Duration::from_secs(10),
            tls: None,
            shortcut: None,
        };
        tweak(&mut settings);
        let task = tokio::spawn(serve(
            listener,
            router,
            async move {
                let _ = rx.await;
            },
            settings,
        ));
        Server {
            addr,
            stats,
            stop: Some(tx),
            task,
        }
    }

    /// Answers 101 and echoes what comes through the upgraded connection.
    async fn upgrade_echo(mut req: Request<Body>) -> Response<Body> {
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let Ok(upgraded) = upgrade.await else { return };
            let mut io = TokioIo::new(upgraded);
            let mut buf = [0u8; 64];
            loop {
                match io.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if io.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Response::builder()
            .status(axum::http::StatusCode::SWITCHING_PROTOCOLS)
            .header("connection", "upgrade")
            .header("upgrade", "echo")
            .body(Body::empty())
            .unwrap()
    }

    /// Reads one HTTP/1.1 response with a Content-Length: (status, body).
    async fn response(stream: &mut TcpStream) -> (u16, Vec<u8>) {
        let (_, status, body) = response_with_head(stream).await;
        (status, body)
    }

    /// A response head, byte by byte up to the blank line (nothing after it
    /// is read).
    async fn read_head(stream: &mut TcpStream) -> String {
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            assert_eq!(stream.read(&mut byte).await.unwrap(), 1, "closed in head");
            head.push(byte[0]);
        }
        String::from_utf8(head).unwrap()
    }

    /// [`response`], with the head.
    async fn response_with_head(stream: &mut TcpStream) -> (String, u16, Vec<u8>) {
        let head = read_head(stream).await;
        let status = head[9..12].parse().unwrap();
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().unwrap())
            })
            .expect("content-length");
        let mut body = vec![0u8; length];
        stream.read_exact(&mut body).await.unwrap();
        (head, status, body)
    }

    async fn get_on(stream: &mut TcpStream, path: &str) -> (u16, Vec<u8>) {
        let req = format!("GET {path} HTTP/1.1\r\nhost: t\r\n\r\n");
        stream.write_all(req.as_bytes()).await.unwrap();
        response(stream).await
    }

    async fn until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(3);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// An idle keep-alive connection is parked (hyper's state freed), and
    /// the next request on the same socket is served as if nothing happened.
    #[tokio::test]
    async fn idle_keep_alive_connection_is_parked_then_served_again() {
        let s = server(Duration::from_secs(10)).await;
        let mut c = TcpStream::connect(s.addr).await.unwrap();
        assert_eq!(get_on(&mut c, "/hello").await, (200, b"hello".to_vec()));
        until("the connection to park", || s.stats.parked() == 1).await;
        assert_eq!(s.stats.open(), 1);
        for _ in 0..3 {
            assert_eq!(get_on(&mut c, "/hello").await, (200, b"hello".to_vec()));
        }
        assert_eq!(s.stats.parked(), 0, "a request unparks it");
        // Parks again after the next idle period; still the same connection.
        until("the connection to park again", || s.stats.parked() == 1).await;
        c.write_all(b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 4\r\n\r\nping")
            .await
            .unwrap();
        assert_eq!(response(&mut c).await, (200, b"ping".to_vec()));
        assert_eq!(s.stats.open(), 1);
    }

    /// Requests pipelined in one write are all answered, in order.
    #[tokio::test]
    async fn pipelined_requests_are_all_answered() {
        let s = server(Duration::from_secs(10)).await;
        let mut c = TcpStream::connect(s.addr).await.unwrap();
        c.write_all(
            b"GET /hello HTTP/1.1\r\nhost: t\r\n\r\nPOST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 3\r\n\r\nabcGET /hello HTTP/1.1\r\nhost: t\r\n\r\n",
        )
        .await
        .unwrap();
        assert_eq!(response(&mut c).await, (200, b"hello".to_vec()));
        assert_eq!(response(&mut c).await, (200, b"abc".to_vec()));
        assert_eq!(response(&mut c).await, (200, b"hello".to_vec()));
    }

    /// A client that reads a large response slowly gets every byte: a
    /// response still being written is never cut by parking.
    #[tokio::test]
    async fn slow_reader_of_a_large_response_gets_every_byte() {
        let s = server(Duration::from_secs(10)).await;
        let mut c = TcpStream::connect(s.addr).await.unwrap();
        c.write_all(b"GET /big HTTP/1.1\r\nhost: t\r\n\r\n")
            .await
            .unwrap();
        // Several park periods with the socket buffers full.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(s.stats.parked(), 0);
        let (status, body) = response(&mut c).await;
        assert_eq!((status, body.len()), (200, BIG));
        assert!(body.iter().all(|b| *b == b'x'));
        assert_eq!(get_on(&mut c, "/hello").await, (200, b"hello".to_vec()));
    }

    /// An answer given before the request body was read says
    /// `Connection: close` and the connection ends after it: it is never
    /// parked (the rest of the body would be read as a new request), and
    /// the client is told not to send another request on it.
    #[tokio::test]
    async fn early_answer_to_an_unread_body_closes_the_connection() {
        let s = server(Duration::from_secs(10)).await;
        let mut c = TcpStream::connect(s.addr).await.unwrap();
        c.write_all(b"POST /ignore HTTP/1.1\r\nhost: t\r\ncontent-length: 100\r\n\r\nhalf")
            .await
            .unwrap();
        let (head, status, body) = response_with_head(&mut c).await;
        assert_eq!((status, body), (401, b"no".to_vec()));
        assert!(
            head.to_ascii_lowercase()
                .contains("\r\nconnection: close\r\n"),
            "{head}"
        );
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(3), c.read(&mut buf))
            .await
            .expect("closed by the server")
            .unwrap_or(0);
        assert_eq!(n, 0);
        assert_eq!(s.stats.parked(), 0);
        // A body read to its end keeps the connection alive, and says nothing.
        let mut c = TcpStream::connect(s.addr).await.unwrap();
        c.write_all(b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 4\r\n\r\nping")
            .await
            .unwrap();
        let (head, status, _) = response_with_head(&mut c).await;
        assert_eq!(status, 200);
        assert!(!head.to_ascii_lowercase().contains("connection:"), "{head}");
        assert_eq!(get_on(&mut c, "/hello").await, (200, b"hello".to_vec()));
    }

    /// A burst of clients larger than tokio's default backlog (128) all
    /// complete their handshake before the accept loop has taken any: with
    /// 128, the 130th and later SYNs are dropped and their connect waits a
    /// second for a retransmit.
    #[tokio::test]
    async fn the_accept_queue_holds_a_burst_of_connections() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let attempts = (0..400)
            .map(|_| tokio::time::timeout(Duration::from_millis(500), TcpStream::connect(addr)));
        let connected = futures::future::join_all(attempts)
            .await
            .into_iter()
            .filter(|r| matches!(r, Ok(Ok(_))))
            .count();
        // The kernel caps the backlog at net.core.somaxconn (4096 here).
        let cap = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .unwrap_or(4096);
        assert_eq!(
            connected,
            400.min(cap + 1),
            "connections left out of the accept queue"
        );
        drop(listener);
    }

    /// A parked connection is closed once idle for the header timeout, and
    /// a connection that never sends a byte too.
    #[tokio::test]
    async fn idle_connections_close_after_the_header_timeout() {
        let s = server(Duration::from_millis(600)).await;
        let mut used = TcpStream::connect(s.addr).await.unwrap();
        let mut silent = TcpStream::connect(s.addr).await.unwrap();
        assert_eq!(get_on(&mut used, "/hello").await, (200, b"hello".to_vec()));
        let mut buf = [0u8; 1];
        for c in [&mut used, &mut silent] {
            let n = tokio::time::timeout(Duration::from_secs(3), c.read(&mut buf))
                .await
                .expect("closed by the server")
                .unwrap_or(0);
            assert_eq!(n, 0);
        }
        until("both to be counted closed", || s.stats.open() == 0).await;
    }

    /// Shutdown closes parked connections at once and returns without
    /// waiting for the drain bound.
    #[tokio::test]
    async fn shutdown_closes_parked_connections_at_once() {
        let mut s = server(Duration::from_secs(30)).await;
        let mut c = TcpStream::connect(s.addr).await.unwrap();
        assert_eq!(get_on(&mut c, "/hello").await, (200, b"hello".to_vec()));
        until("the connection to park", || s.stats.parked() == 1).await;
        let started = Instant::now();
        s.stop.take().unwrap().send(()).unwrap();
        (&mut s.task).await.unwrap().unwrap();
        assert!(started.elapsed() < Duration::from_secs(2));
        let mut buf = [0u8; 1];
        assert_eq!(c.read(&mut buf).await.unwrap_or(0), 0);
        assert_eq!(s.stats.open(), 0);
    }

    /// An upgraded connection (a WebSocket tunnel) idle longer than the
    /// park delay keeps its tunnel: bytes still flow both ways.
    #[tokio::test]
    async fn upgraded_connection_is_never_parked() {
        let s = server(Duration::from_secs(10)).await;
        let mut c = TcpStream::connect(s.addr).await.unwrap();
        c.write_all(
            b"GET /upgrade HTTP/1.1\r\nhost: t\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n",
        )
        .await
        .unwrap();
        let head = read_head(&mut c).await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        for _ in 0..2 {
            tokio::time::sleep(Duration::from_millis(400)).await;
            c.write_all(b"ping").await.unwrap();
            let mut echo = [0u8; 4];
            tokio::time::timeout(Duration::from_secs(2), c.read_exact(&mut echo))
                .await
                .expect("echo in time")
                .expect("the tunnel is still open");
            assert_eq!(&echo, b"ping");
        }
        assert_eq!(s.stats.parked(), 0);
    }

    /// An HTTP/2 connection idle longer than the park delay stays open
    /// (HTTP/2 is never parked) and serves the next request.
    #[tokio::test]
    async fn idle_http2_connection_stays_open() {
        let s = server(Duration::from_secs(10)).await;
        let client = reqwest::Client::builder()
            .http2_prior_knowledge()
            .build()
            .unwrap();
        let url = format!("http://{}/hello", s.addr);
        for _ in 0..2 {
            let r = client.get(&url).send().await.unwrap();
            assert_eq!(r.text().await.unwrap(), "hello");
            tokio::time::sleep(Duration::from_millis(400)).await;
            assert_eq!((s.stats.open(), s.stats.parked()), (1, 0));
        }
    }

    /// HTTP/2 with prior knowledge is told from HTTP/1 and served.
    #[tokio::test]
    async fn http2_prior_knowledge_is_served() {
        let s = server(Duration::from_secs(10)).await;
        let client = reqwest::Client::builder()
            .http2_prior_knowledge()
            .build()
            .unwrap();
        let r = client
            .get(format!("http://{}/hello", s.addr))
            .send()
            .await
            .unwrap();
        assert_eq!(r.version(), reqwest::Version::HTTP_2);
        assert_eq!(r.text().await.unwrap(), "hello");
    }

    /// An HTTP/2 connection with no request in flight for the idle timeout
    /// is closed; one busy for longer than that is not cut.
    #[tokio::test]
    async fn idle_http2_connection_is_closed_after_the_idle_timeout() {
        let s = server_with(Duration::from_secs(10), |s| {
            s.h2_idle_timeout = Duration::from_millis(300);
        })
        .await;
        let client = reqwest::Client::builder()
            .http2_prior_knowledge()
            .build()
            .unwrap();
        // The exchange outlasts the idle timeout.
        let r = client.get(format!("http://{}/slow", s.addr)).send().await;
        assert_eq!(r.unwrap().text().await.unwrap(), "slow");
        assert_eq!(s.stats.open(), 1);
        until("the idle connection to close", || s.stats.open() == 0).await;
    }

    /// An HTTP/2 client that stops answering PINGs is dropped after the
    /// keepalive interval and timeout, long before the idle timeout.
    #[tokio::test]
    async fn http2_client_that_ignores_pings_is_dropped() {
        let s = server_with(Duration::from_secs(10), |s| {
            s.h2_keepalive_interval = Duration::from_millis(200);
            s.h2_keepalive_timeout = Duration::from_millis(200);
            s.h2_idle_timeout = Duration::from_secs(30);
        })
        .await;
        let mut c = TcpStream::connect(s.addr).await.unwrap();
        // The preface and an empty SETTINGS frame, then silence.
        c.write_all(H2_PREFACE).await.unwrap();
        c.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
        let started = Instant::now();
        let mut buf = [0u8; 1024];
        let closed = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match c.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "still open after 5 s");
        assert!(started.elapsed() < Duration::from_secs(3));
        until("the connection to be counted closed", || {
            s.stats.open() == 0
        })
        .await;
    }

    /// A plain connection's task (`serve` spawns `serve_connection` over
    /// TCP as it is) holds no TLS state. Every open connection, idle or
    /// not, costs its task's size: with the TLS handshake and session
    /// inline (one task type for both) it was 5,632 bytes in a release
    /// build, now about 1.1 KiB; 10,000 idle keep-alive connections made
    /// 116 MiB RSS, and about 70 MiB without it.
    #[tokio::test]
    async fn a_plain_connection_task_carries_no_tls_state() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (_stop, stop_rx) = watch::channel(false);
        let settings = Settings::new(
            &crate::config::ServerConfig::default(),
            Duration::from_secs(1),
            Arc::default(),
        );
        let task = serve_connection(
            Counted::open(&settings.stats),
            stream,
            addr,
            axum::Router::new(),
            settings.clone(),
            stop_rx,
            None,
        );
        let size = std::mem::size_of_val(&task);
        assert!(size <= 2048, "a plain connection's task is {size} bytes");
    }
}
