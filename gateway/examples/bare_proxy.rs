//! A bare hyper 1 reverse proxy: the transport authgw's proxy is built on and
//! nothing else (no auth, plugins, metrics, logs, timeouts or header rules).
//! `scripts/bench.sh` measures it beside authgw (issue 18), so that each run
//! shows how far authgw stands from its own transport's limit.
//!
//! ```sh
//! cargo build --release --example bare_proxy
//! target/release/examples/bare_proxy 127.0.0.1:8081 http://127.0.0.1:8080
//! ```
//!
//! An HTTP/1.1 server (keep-alive) on a tokio runtime: current-thread when
//! the process has one CPU (as under the benchmark's `taskset -c 0`, where
//! authgw's `server.runtime = "auto"` picks the same), multi-thread
//! otherwise (where authgw's picks thread-per-core, which this proxy does
//! not build; `BARE_RUNTIME=current-thread` or `multi-thread` forces either); every
//! request goes to the one upstream through hyper-util's legacy pooled
//! client (the client authgw's routes use), path and query kept; 502 when
//! the upstream cannot be reached.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{Either, Empty};
use hyper::body::Incoming;
use hyper::http::uri::{Authority, PathAndQuery, Scheme};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;

type Upstream = Client<HttpConnector, Incoming>;
type Body = Either<Incoming, Empty<Bytes>>;

const USAGE: &str =
    "usage: bare_proxy LISTEN_ADDR UPSTREAM_URL (e.g. 127.0.0.1:8081 http://127.0.0.1:8080)";

fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let current = match std::env::var("BARE_RUNTIME").as_deref() {
        Ok("current-thread") => true,
        Ok("multi-thread") => false,
        Ok(other) => {
            return Err(format!("BARE_RUNTIME={other}: not current-thread or multi-thread").into());
        }
        Err(_) => cpus == 1,
    };
    let runtime = if current {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Runtime::new()?
    };
    let scheduler = if current {
        "current-thread"
    } else {
        "multi-thread"
    };
    runtime.block_on(serve(scheduler))
}

async fn serve(scheduler: &str) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let mut args = std::env::args().skip(1);
    let listen: SocketAddr = args.next().ok_or(USAGE)?.parse()?;
    let upstream: Uri = args.next().ok_or(USAGE)?.parse()?;
    let authority = upstream
        .authority()
        .ok_or("the upstream URL needs a host")?
        .clone();
    let scheme = upstream.scheme().cloned().unwrap_or(Scheme::HTTP);

    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Upstream = Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .build(connector);

    let listener = TcpListener::bind(listen).await?;
    eprintln!("bare_proxy: {listen} -> {scheme}://{authority} ({scheduler} runtime)");
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // EMFILE and the like: keep serving the open connections.
                eprintln!("bare_proxy: accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (client, scheme, authority) = (client.clone(), scheme.clone(), authority.clone());
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                forward(client.clone(), scheme.clone(), authority.clone(), req)
            });
            if let Err(e) = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                eprintln!("bare_proxy: connection: {e}");
            }
        });
    }
}

/// Sends the request on to the upstream, the same path and query.
async fn forward(
    client: Upstream,
    scheme: Scheme,
    authority: Authority,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, hyper::http::Error> {
    let mut uri = std::mem::take(req.uri_mut()).into_parts();
    uri.scheme = Some(scheme);
    uri.authority = Some(authority);
    if uri.path_and_query.is_none() {
        uri.path_and_query = Some(PathAndQuery::from_static("/"));
    }
    *req.uri_mut() = Uri::from_parts(uri)?;
    match client.request(req).await {
        Ok(res) => Ok(res.map(Either::Left)),
        Err(e) => {
            eprintln!("bare_proxy: upstream: {e}");
            Response::builder()
                .status(StatusCode::BAD_GATEWAY)
                .body(Either::Right(Empty::new()))
        }
    }
}
