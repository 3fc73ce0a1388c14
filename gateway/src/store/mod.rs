//! Everything SQL. Functions here take a plain `&mut postgres::Client` (or a
//! transaction) so the CLI calls them directly and the server calls them
//! through [`Db::run`], which keeps the synchronous driver off tokio workers.

pub mod audit;
pub mod email_tokens;
pub mod failures;
pub mod history;
pub mod identities;
pub mod mfa;
pub mod migrations;
pub mod outbox;
pub mod revocations;
pub mod roles;
pub mod sessions;
pub mod tls;
pub mod users;

use std::sync::Arc;
use std::time::Duration;

use postgres::Client;
use tokio::sync::Semaphore;

use crate::error::{Error, Result};

pub type Pool = r2d2::Pool<Manager>;

/// The pool's connection manager: connects with `database.url`'s TLS
/// settings ([`tls::Target`]), and its errors carry their causes (which
/// certificate problem), for the pool's log and its timeout error.
pub struct Manager {
    config: postgres::Config,
    connector: tls::Connector,
}

impl r2d2::ManageConnection for Manager {
    type Connection = Client;
    type Error = ConnectError;

    fn connect(&self) -> std::result::Result<Client, ConnectError> {
        self.config
            .connect(self.connector.clone())
            .map_err(ConnectError)
    }

    fn is_valid(&self, client: &mut Client) -> std::result::Result<(), ConnectError> {
        client.simple_query("").map(drop).map_err(ConnectError)
    }

    fn has_broken(&self, client: &mut Client) -> bool {
        client.is_closed()
    }
}

/// A `postgres::Error` displayed with its causes.
#[derive(Debug)]
pub struct ConnectError(postgres::Error);

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&tls::describe(&self.0))
    }
}

impl std::error::Error for ConnectError {}

/// The server's database handle: an r2d2 pool plus a semaphore of the same
/// size, so a burst of requests waits asynchronously for a permit instead of
/// parking blocking threads on the pool.
#[derive(Clone)]
pub struct Db {
    pool: Arc<PoolGuard>,
    permits: Arc<Semaphore>,
}

/// Owns the pool. Dropping a `postgres::Client` blocks on its own runtime,
/// which panics on a tokio worker; so when the last handle goes away inside
/// the runtime, the pool (and its connections) is dropped on a plain thread.
struct PoolGuard(Option<Pool>);

impl Drop for PoolGuard {
    fn drop(&mut self) {
        if let Some(pool) = self.0.take()
            && tokio::runtime::Handle::try_current().is_ok()
        {
            let _ = std::thread::Builder::new()
                .name("pool-drop".into())
                .spawn(move || drop(pool));
        }
    }
}

impl Db {
    /// Builds the pool without connecting: the server starts even when the
    /// database is down, and connections are made when it comes back.
    /// `url`'s TLS settings are checked (and its certificate files read) here.
    pub fn new(url: &str, size: u32, connect_timeout: Duration) -> Result<Self> {
        let target = tls::Target::parse(url).map_err(Error::Internal)?;
        let mut config = target.sync_config();
        config.connect_timeout(connect_timeout);
        let manager = Manager {
            config,
            connector: target.connector(),
        };
        let pool = r2d2::Pool::builder()
            .max_size(size)
            .min_idle(Some(0))
            .connection_timeout(connect_timeout)
            .error_handler(Box::new(r2d2::LoggingErrorHandler))
            .build_unchecked(manager);
        Ok(Self {
            pool: Arc::new(PoolGuard(Some(pool))),
            permits: Arc::new(Semaphore::new(size as usize)),
        })
    }

    /// Connections checked out of the pool right now (a metrics gauge).
    pub fn in_use(&self) -> u32 {
        self.pool.0.as_ref().map_or(0, |p| {
            let s = p.state();
            s.connections - s.idle_connections
        })
    }

    /// Runs `f` with a pooled connection on the blocking thread pool, after
    /// waiting for a permit. This is the only way the server touches PostgreSQL.
    pub async fn run<T, F>(&self, f: F) -> Result<T>
    where
        F: FnOnce(&mut Client) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        // The permit moves into the blocking closure: a caller that goes
        // away (a client that disconnects) frees it only when its query is
        // done, so blocking threads never queue on the pool behind it.
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::Unavailable("database pool closed".into()))?;
        let pool = self.pool.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let pool = pool
                .0
                .as_ref()
                .ok_or_else(|| Error::Unavailable("database pool closed".into()))?;
            let mut conn = pool
                .get()
                .map_err(|e| Error::Unavailable(format!("database: {e}")))?;
            f(&mut conn)
        })
        .await
        .map_err(Error::internal)?
    }
}

/// A direct connection, for the CLI, with `url`'s TLS settings.
pub fn connect(url: &str, connect_timeout: Duration) -> Result<Client> {
    let target = tls::Target::parse(url).map_err(Error::Internal)?;
    let mut config = target.sync_config();
    config.connect_timeout(connect_timeout);
    config
        .connect(target.connector())
        .map_err(|e| Error::Unavailable(target.connect_error(&e)))
}

/// True when `e` is a unique-constraint violation.
pub(crate) fn is_unique_violation(e: &postgres::Error) -> bool {
    e.code() == Some(&postgres::error::SqlState::UNIQUE_VIOLATION)
}

/// Opaque keyset cursor: the last id of a page, base64url.
pub fn encode_cursor(key: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key)
}

pub fn decode_cursor(cursor: &str) -> Result<String> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| Error::invalid("cursor", "not a cursor returned by this API"))
}

pub fn decode_id_cursor(cursor: &str) -> Result<i64> {
    decode_cursor(cursor)?
        .parse()
        .map_err(|_| Error::invalid("cursor", "not a cursor returned by this API"))
}

/// One page of a keyset-paginated listing.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// `rows` was fetched with `limit + 1`; the extra row only says there is more.
    pub fn from_rows(mut rows: Vec<T>, limit: usize, key: impl Fn(&T) -> String) -> Self {
        let more = rows.len() > limit;
        rows.truncate(limit);
        let next_cursor = if more {
            rows.last().map(|r| encode_cursor(&key(r)))
        } else {
            None
        };
        Self {
            items: rows,
            next_cursor,
        }
    }
}
