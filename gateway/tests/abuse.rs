//! Abusive clients, the fast cases (the slow ones, at scale, are in
//! scripts/soak.sh): oversized headers get 431, oversized bodies 413 whether
//! declared or streamed, a body that stalls 408, a connection that sends
//! nothing is cut by the header read timeout like one that trickles, and
//! connections past `server.max_connections` are closed at accept.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends `request` raw and returns the status of the answer and how long it took.
async fn raw_status(app: &TestApp, request: &[u8]) -> (Option<u16>, Duration) {
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let started = Instant::now();
    // The server may answer and close before it has read everything.
    let _ = stream.write_all(request).await;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        while !buf.windows(2).any(|w| w == b"\r\n") {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no answer within 5 s");
    let status = String::from_utf8_lossy(&buf)
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok());
    (status, started.elapsed())
}

const SIGNUP_HEAD: &str =
    "POST /api/v1/auth/signup HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n";

/// A header block larger than the server's buffer, or with too many
/// headers, gets 431 Request Header Fields Too Large.
#[tokio::test]
async fn oversized_headers_are_431() {
    let app = spawn_app().await;
    let big = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(1024 * 1024)
    );
    assert_eq!(raw_status(&app, big.as_bytes()).await.0, Some(431));
    let many: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
    let many = format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{many}\r\n");
    assert_eq!(raw_status(&app, many.as_bytes()).await.0, Some(431));
    assert_eq!(app.get("/healthz", None).await.status, 200);
}

/// A declared body over the limit gets 413 at once, without the server
/// waiting for (or reading) the body; a streamed (chunked) one gets 413 too.
#[tokio::test]
async fn oversized_bodies_are_413_declared_or_streamed() {
    let app = spawn_app().await;
    let declared = format!("{SIGNUP_HEAD}Content-Length: 1000000000\r\n\r\n");
    let (status, took) = raw_status(&app, declared.as_bytes()).await;
    assert_eq!(status, Some(413));
    assert!(took < Duration::from_secs(2), "took {took:?}");

    let chunk = "a".repeat(8192);
    let body: String = (0..12)
        .map(|_| format!("{:x}\r\n{chunk}\r\n", chunk.len()))
        .collect();
    let chunked = format!("{SIGNUP_HEAD}Transfer-Encoding: chunked\r\n\r\n{body}0\r\n\r\n");
    assert_eq!(raw_status(&app, chunked.as_bytes()).await.0, Some(413));
    assert_eq!(app.db.count("SELECT count(*) FROM users"), 0);
}

/// A connection that never sends a byte is closed after the header read
/// timeout, like one that trickles its headers.
#[tokio::test]
async fn silent_connections_are_cut_off() {
    let app = spawn_app_with(|c| c.server.header_read_timeout = Duration::from_millis(500)).await;
    let mut silent = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), silent.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "silent connection still open after 5 s");
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert_eq!(app.get("/healthz", None).await.status, 200);
}

/// A request body that stalls is answered 408 once
/// `server.body_read_timeout` passes, instead of holding the connection
/// and its task for as long as the client likes.
#[tokio::test]
async fn stalled_body_gets_408() {
    let app = spawn_app_with(|c| c.server.body_read_timeout = Duration::from_millis(500)).await;
    let partial = format!("{SIGNUP_HEAD}Content-Length: 100\r\n\r\n{{\"login\":");
    let (status, took) = raw_status(&app, partial.as_bytes()).await;
    assert_eq!(status, Some(408));
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(3),
        "took {took:?}"
    );
    assert_eq!(app.db.count("SELECT count(*) FROM users"), 0);
}

/// A raw connection with one request answered on it (so it is counted).
async fn served_connection(app: &TestApp) -> tokio::net::TcpStream {
    let mut s = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    s
}

/// Past `server.max_connections`, a new connection is closed as soon as it
/// is accepted, and counted in /metrics; once one closes, new ones are
/// served again.
#[tokio::test]
async fn connections_past_the_bound_are_closed_and_counted() {
    let app = spawn_app_with(|c| c.server.max_connections = 4).await;
    let open = app.metric("authgw_connections_open").await as usize;
    let mut held = Vec::new();
    for _ in open..4 {
        held.push(served_connection(&app).await);
    }
    assert_eq!(app.metric("authgw_connections_rejected_total").await, 0.0);
    for expected in 1..=3 {
        let mut extra = tokio::net::TcpStream::connect(app.addr).await.unwrap();
        let _ = extra
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await;
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(2), extra.read(&mut buf)).await;
        assert!(matches!(read, Ok(Ok(0) | Err(_))), "{read:?}");
        assert_eq!(
            app.metric("authgw_connections_rejected_total").await,
            f64::from(expected)
        );
    }
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(3);
    while app.metric("authgw_connections_open").await >= 4.0 {
        assert!(
            Instant::now() < deadline,
            "the closed connection is still counted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(served_connection(&app).await);
}
