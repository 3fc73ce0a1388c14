//! Thread-per-core (`server.runtime = "thread-per-core"`, and what `auto`,
//! the default, picks on more than one CPU): the main listener served by
//! one current-thread runtime per CPU, as nginx's and Pingora's workers
//! are, instead of one multi-thread runtime whose workers steal each
//! other's tasks.
//!
//! The thread `authgw serve` starts on is the first worker (its runtime also
//! runs the admin and plain-HTTP listeners and the background tasks); each
//! other CPU gets a thread named `authgw-worker-N` with its own runtime and
//! its own socket on the listener's address. Sockets are `SO_REUSEPORT`
//! siblings when the listener was bound with it (`authgw serve` binds so in
//! this mode, [`listener::bind_with`]): the kernel spreads new connections
//! among them, each with its own accept queue. A listener bound without it
//! (a test's, an inherited one) is shared instead: each worker accepts from
//! a duplicate of its file descriptor. A connection stays on the worker
//! that accepted it, and so do its upstream connections: each upstream has
//! a connection pool per worker ([`worker`]; `proxy::routes::Upstream::pool`
//! for `http://`, `Route::client` for `https://`).
//! Other shared state (the routes, the token cache, the plugins' instance
//! pools) is the same `Arc`s on every worker; each runtime has its own
//! blocking pool for the database.

use std::io;

use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

use crate::config::RuntimeFlavor;
use crate::listener::{self, Settings};

/// The number of CPUs this process may use (its affinity, a container's
/// quota), at least 1.
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

thread_local! {
    /// This thread's worker number: 0 for the thread `authgw serve` starts
    /// on (and any thread that is not a worker), N for `authgw-worker-N`.
    static WORKER: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// The worker this thread is ([`spawn`] numbers them), so that per-worker
/// state (the routes' upstream connection pools) stays on its worker.
pub fn worker() -> usize {
    WORKER.with(std::cell::Cell::get)
}

/// Numbers this thread as worker `n` ([`spawn`] does it for each worker).
pub(crate) fn set_worker(n: usize) {
    WORKER.with(|w| w.set(n));
}

/// Workers beyond the thread `authgw serve` starts on: one per other CPU
/// with `thread-per-core` and `auto` (the default), none otherwise.
pub fn extra_workers(flavor: RuntimeFlavor) -> usize {
    match flavor {
        RuntimeFlavor::Auto | RuntimeFlavor::ThreadPerCore => cpus() - 1,
        RuntimeFlavor::MultiThread | RuntimeFlavor::CurrentThread => 0,
    }
}

/// `n` more sockets accepting what `listener` accepts: `SO_REUSEPORT`
/// siblings on its address when it allows them, else duplicates of its
/// file descriptor (one accept queue, shared).
pub fn siblings(
    listener: TcpListener,
    n: usize,
) -> io::Result<(TcpListener, Vec<std::net::TcpListener>)> {
    if n == 0 {
        return Ok((listener, Vec::new()));
    }
    let addr = listener.local_addr()?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        match listener::bind_with(addr, true) {
            Ok(sibling) => out.push(sibling.into_std()?),
            // EADDRINUSE: `listener` was bound without SO_REUSEPORT.
            Err(_) => break,
        }
    }
    if out.len() == n {
        return Ok((listener, out));
    }
    out.clear();
    let std = listener.into_std()?;
    for _ in 0..n {
        out.push(std.try_clone()?);
    }
    Ok((TcpListener::from_std(std)?, out))
}

/// A worker thread serving one socket; resolves when it has drained.
pub struct Worker {
    done: oneshot::Receiver<io::Result<()>>,
}

impl Worker {
    /// Waits for the worker's listener to stop and drain (bounded by
    /// `settings.drain`, as the main listener's).
    pub async fn finished(self) -> io::Result<()> {
        self.done
            .await
            .unwrap_or_else(|_| Err(io::Error::other("a worker thread ended abnormally")))
    }
}

/// Starts one worker thread per socket, each serving `router` (and the
/// settings' shortcut) on its own current-thread runtime until `stop` turns
/// true or its sender is dropped (the main listener returned), then
/// draining as [`listener::serve`] does.
pub fn spawn(
    sockets: Vec<std::net::TcpListener>,
    router: &axum::Router,
    settings: &Settings,
    stop: &watch::Receiver<bool>,
) -> io::Result<Vec<Worker>> {
    let mut workers = Vec::with_capacity(sockets.len());
    for (i, socket) in sockets.into_iter().enumerate() {
        let (router, settings, mut stop) = (router.clone(), settings.clone(), stop.clone());
        let (done_tx, done) = oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name(format!("authgw-worker-{}", i + 1))
            .spawn(move || {
                set_worker(i + 1);
                let served = runtime.block_on(async move {
                    let listener = TcpListener::from_std(socket)?;
                    let stopped = async move {
                        let _ = stop.wait_for(|stop| *stop).await;
                    };
                    listener::serve(listener, router, stopped, settings).await
                });
                let _ = done_tx.send(served);
            })?;
        workers.push(Worker { done });
    }
    Ok(workers)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::io::Write;

    use super::*;

    /// The kernel's socket behind a descriptor (`socket:[inode]`): the
    /// same for duplicates, another for each socket.
    fn socket_of(fd: &impl std::os::fd::AsRawFd) -> std::path::PathBuf {
        std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap()
    }

    /// Beside a listener bound with `SO_REUSEPORT`, each sibling is a
    /// socket of its own on the same port; beside one bound without it, the
    /// siblings are the same socket, and a connection made to the port is
    /// accepted through a sibling.
    #[tokio::test]
    async fn siblings_bind_beside_a_reusable_listener_and_share_a_plain_one() {
        let any = "127.0.0.1:0".parse().unwrap();
        let reusable = listener::bind_with(any, true).unwrap();
        let port = reusable.local_addr().unwrap().port();
        let (main, sockets) = siblings(reusable, 2).unwrap();
        assert_eq!(sockets.len(), 2);
        let mut kernel = vec![socket_of(&main)];
        for s in &sockets {
            assert_eq!(s.local_addr().unwrap().port(), port);
            kernel.push(socket_of(s));
        }
        kernel.sort();
        kernel.dedup();
        assert_eq!(kernel.len(), 3, "three sockets: {kernel:?}");

        let plain = listener::bind(any).unwrap();
        let port = plain.local_addr().unwrap().port();
        let (main, sockets) = siblings(plain, 2).unwrap();
        assert_eq!(sockets.len(), 2);
        for s in &sockets {
            assert_eq!(socket_of(s), socket_of(&main), "a duplicate");
        }
        let mut client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        client.write_all(b"x").unwrap();
        sockets[1].set_nonblocking(false).unwrap();
        let (mut accepted, _) = sockets[1].accept().unwrap();
        let mut byte = [0u8; 1];
        std::io::Read::read_exact(&mut accepted, &mut byte).unwrap();
        assert_eq!(&byte, b"x");
    }

    /// `auto` and thread-per-core add a worker per other CPU; multi-thread
    /// and current-thread none.
    #[test]
    fn auto_and_thread_per_core_add_workers() {
        for flavor in [RuntimeFlavor::MultiThread, RuntimeFlavor::CurrentThread] {
            assert_eq!(extra_workers(flavor), 0, "{flavor:?}");
        }
        for flavor in [RuntimeFlavor::Auto, RuntimeFlavor::ThreadPerCore] {
            assert_eq!(extra_workers(flavor), cpus() - 1, "{flavor:?}");
        }
    }
}
