//! In-process upstreams for the proxy tests: an echo server that reports what
//! reached it, and raw TCP servers for the misbehaving cases.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, Response, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use gateway::config::{AuthMode, OneOrMany, RouteConfig};

/// An echo upstream. Every request is counted; the answer is JSON with the
/// method, path, query, headers (name -> list of values) and the number of
/// body bytes, read frame by frame (nothing buffered). Paths:
/// - `/slow/<ms>`: answers after `ms` milliseconds;
/// - `/stream/<chunks>/<ms>`: streams `chunks` chunks of 1 KiB, `ms` apart;
/// - `/ws`: answers an `Upgrade` with 101 and echoes the bytes it gets;
/// - `/hop`: answers with hop-by-hop headers of its own;
/// - `.../acao`: echoes, with CORS headers of its own (`*`);
/// - anything else: echoes.
pub struct Echo {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    pub name: &'static str,
}

impl Echo {
    pub async fn start(name: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let app = axum::Router::new().fallback(move |req: Request| {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                handle(name, req).await
            }
        });
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, hits, name }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

fn headers_json(h: &HeaderMap) -> Value {
    let mut map = serde_json::Map::new();
    for (k, v) in h {
        let entry = map
            .entry(k.as_str().to_string())
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(list) = entry {
            list.push(Value::String(String::from_utf8_lossy(v.as_bytes()).into()));
        }
    }
    Value::Object(map)
}

async fn handle(name: &'static str, mut req: Request) -> Response<Body> {
    let path = req.uri().path().to_string();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        ["slow", ms] => {
            tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0))).await;
        }
        ["stream", chunks, ms] => {
            let chunks: usize = chunks.parse().unwrap_or(1);
            let ms: u64 = ms.parse().unwrap_or(0);
            let (tx, rx) =
                tokio::sync::mpsc::channel::<Result<axum::body::Bytes, std::io::Error>>(1);
            tokio::spawn(async move {
                for _ in 0..chunks {
                    if tx.send(Ok(vec![b'x'; 1024].into())).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
            });
            let stream = futures::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|item| (item, rx))
            });
            return Response::new(Body::from_stream(stream));
        }
        ["ws"] if req.headers().contains_key("upgrade") => {
            let upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                if let Ok(io) = upgrade.await {
                    let mut io = hyper_util::rt::TokioIo::new(io);
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = io.read(&mut buf).await {
                        if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                }
            });
            return Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header("connection", "upgrade")
                .header("upgrade", "websocket")
                .body(Body::empty())
                .unwrap();
        }
        ["hop"] => {
            return Response::builder()
                .header("connection", "x-up-hop")
                .header("x-up-hop", "1")
                .header("keep-alive", "timeout=5")
                .header("x-end-to-end", "kept")
                .body(Body::from("hop"))
                .unwrap();
        }
        _ => {}
    }
    let own_cors = parts.last() == Some(&"acao");
    let method = req.method().to_string();
    let query = req.uri().query().map(str::to_string);
    let headers = headers_json(req.headers());
    let mut body = req.into_body();
    let mut bytes: u64 = 0;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => bytes += f.data_ref().map_or(0, |d| d.len() as u64),
            Err(_) => break,
        }
    }
    let reply = json!({
        "upstream": name,
        "method": method,
        "path": path,
        "query": query,
        "headers": headers,
        "body_bytes": bytes,
    });
    let mut answer = Response::builder().header("content-type", "application/json");
    if own_cors {
        answer = answer
            .header("access-control-allow-origin", "*")
            .header("access-control-allow-methods", "*");
    }
    answer.body(Body::from(reply.to_string())).unwrap()
}

/// An address where nothing listens (bound, then released).
pub async fn refused_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

/// A raw upstream that reads a request and then never answers. The sender
/// gets a message when the proxy closes the connection (EOF or reset).
pub async fn silent_upstream() -> (SocketAddr, tokio::sync::mpsc::Receiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                loop {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => {
                            let _ = tx.send(()).await;
                            return;
                        }
                        Ok(_) => {}
                    }
                }
            });
        }
    });
    (addr, rx)
}

/// A raw keep-alive upstream that answers the first request on each
/// connection and closes the connection, without answering, when a second
/// request arrives on it: what a pooled connection the upstream timed out
/// looks like when the proxy reuses it at the wrong moment.
pub async fn stale_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let mut seen = Vec::new();
                // First request: read up to the end of its headers (and any
                // Content-Length body), answer with keep-alive.
                loop {
                    let Ok(n) = sock.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    if let Some(end) = find(&seen, b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&seen[..end]).to_ascii_lowercase();
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        if seen.len() >= end + 4 + len {
                            break;
                        }
                    }
                }
                let body = r#"{"stale":"first"}"#;
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: keep-alive\r\n\r\n{body}",
                    body.len()
                );
                if sock.write_all(reply.as_bytes()).await.is_err() {
                    return;
                }
                // Second request on this connection: drop it unanswered.
                let _ = sock.read(&mut buf).await;
            });
        }
    });
    addr
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A route to `upstream` with the defaults of gateway.toml and generous timeouts.
pub fn route(name: &str, prefix: &str, upstream: &str, auth: AuthMode) -> RouteConfig {
    RouteConfig {
        name: name.into(),
        prefix: prefix.into(),
        host: None,
        methods: None,
        upstream: OneOrMany::One(upstream.into()),
        auth,
        strip_prefix: false,
        forward_authorization: false,
        preserve_host: false,
        websocket: false,
        escaped_slashes: Default::default(),
        cors: false,
        plugins: Vec::new(),
        tls_ca: None,
        tls_server_name: None,
        tls_client_cert: None,
        tls_client_key: None,
        upstream_http2: false,
        connect_timeout: Duration::from_secs(2),
        response_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(10),
        pool_idle_timeout: Duration::from_secs(4),
    }
}
