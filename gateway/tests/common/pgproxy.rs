//! A TCP relay between the gateway and PostgreSQL that a test can break:
//! take the database "down" (every connection closed, new ones refused) or
//! freeze the connections open now (they stay open and silent, like a hung
//! server or a dropped route, while new ones pass).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, Default)]
struct Faults {
    down: bool,
    /// Connections numbered below this are frozen.
    frozen_below: u64,
    /// Number of the next connection.
    next: u64,
}

pub struct PgProxy {
    pub addr: SocketAddr,
    faults: watch::Sender<Faults>,
    accept: tokio::task::JoinHandle<()>,
}

impl PgProxy {
    /// Relays to the host and port of `db_url`.
    pub async fn start(db_url: &str) -> Self {
        let target = host_port(db_url);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (faults, _) = watch::channel(Faults::default());
        let tx = faults.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let mut number = 0;
                tx.send_modify(|f| {
                    number = f.next;
                    f.next += 1;
                });
                if tx.borrow().down {
                    continue; // dropped: closed at once
                }
                let Ok(server) = TcpStream::connect(&target).await else {
                    continue;
                };
                tokio::spawn(relay(client, server, number, tx.subscribe()));
            }
        });
        Self {
            addr,
            faults,
            accept,
        }
    }

    /// `db_url` with its host and port replaced by the relay's.
    pub fn url(&self, db_url: &str) -> String {
        db_url.replacen(&host_port(db_url), &self.addr.to_string(), 1)
    }

    /// PostgreSQL "stops": every connection closes, new ones are refused.
    pub fn down(&self) {
        self.faults.send_modify(|f| f.down = true);
    }

    /// PostgreSQL is back.
    pub fn up(&self) {
        self.faults.send_modify(|f| f.down = false);
    }

    /// Every connection open now goes silent (bytes are held, nothing is
    /// closed); connections made afterwards pass.
    pub fn freeze_existing(&self) {
        self.faults.send_modify(|f| f.frozen_below = f.next);
    }
}

impl Drop for PgProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.faults.send_modify(|f| f.down = true);
    }
}

fn host_port(db_url: &str) -> String {
    let after_scheme = db_url.split_once("://").unwrap().1;
    let authority = after_scheme.split(['/', '?']).next().unwrap();
    authority
        .rsplit_once('@')
        .map_or(authority, |(_, h)| h)
        .to_string()
}

async fn relay(
    mut client: TcpStream,
    mut server: TcpStream,
    number: u64,
    mut faults: watch::Receiver<Faults>,
) {
    let (mut a, mut b) = ([0u8; 8192], [0u8; 8192]);
    loop {
        let f = *faults.borrow_and_update();
        if f.down {
            return;
        }
        if number < f.frozen_below {
            // Silent until the relay goes down or away.
            while faults.changed().await.is_ok() {
                if faults.borrow().down {
                    return;
                }
            }
            return;
        }
        tokio::select! {
            changed = faults.changed() => if changed.is_err() { return },
            n = client.read(&mut a) => match n {
                Ok(0) | Err(_) => return,
                Ok(n) => if server.write_all(&a[..n]).await.is_err() { return },
            },
            n = server.read(&mut b) => match n {
                Ok(0) | Err(_) => return,
                Ok(n) => if client.write_all(&b[..n]).await.is_err() { return },
            },
        }
    }
}
