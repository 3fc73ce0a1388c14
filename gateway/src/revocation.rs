//! The in-memory revocation set every process consults on each token check,
//! fed by PostgreSQL LISTEN/NOTIFY and reloaded in full on every (re)connect.
//! The hot path (`is_revoked`) never touches the database.
//!
//! The LISTEN connection proves itself every [`ListenerSettings::probe_interval`]
//! with an empty query that must be answered within [`PROBE_TIMEOUT`] (and TCP
//! keepalive plus a TCP user timeout under it), so a dead or hung connection
//! is dropped and replaced within seconds instead of silently starving the
//! set. The set's sync age, the time since the connection last proved
//! itself, is what `revocation.max_staleness` bounds.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_postgres::AsyncMessage;
use uuid::Uuid;

use crate::store::revocations::{self, CHANNEL, Kind, Revocation};
use crate::store::tls::{Connector, Target};

/// How long the listener waits for the answer to a probe (and to LISTEN)
/// before it calls the connection dead, drops it and reconnects.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the full load on (re)connect may take.
const LOAD_TIMEOUT: Duration = Duration::from_secs(10);
/// TCP keepalive on the LISTEN connection: first probe after this much
/// silence, then one a second, three unanswered ones end it.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(2);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
const KEEPALIVE_RETRIES: u32 = 3;
/// Data sent on the LISTEN connection and not acknowledged within this long
/// ends it (Linux `TCP_USER_TIMEOUT`).
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Default)]
struct Entries {
    sessions: HashMap<Uuid, i64>,
    users: HashMap<Uuid, i64>,
}

impl Entries {
    fn insert(&mut self, r: &Revocation) {
        let map = match r.kind {
            Kind::Session => &mut self.sessions,
            Kind::User => &mut self.users,
        };
        let exp = r.expires_at.timestamp();
        let slot = map.entry(r.subject).or_insert(exp);
        *slot = (*slot).max(exp);
    }
}

/// Revoked sessions and users, each until its expiry.
pub struct RevocationSet {
    entries: RwLock<Entries>,
    connected: AtomicBool,
    /// When the set was made: until the first load, the sync age counts from here.
    born: Instant,
    /// Microseconds after `born` at which the set was last known current,
    /// plus one; 0 = never.
    synced_at: AtomicU64,
}

impl Default for RevocationSet {
    fn default() -> Self {
        Self {
            entries: RwLock::default(),
            connected: AtomicBool::new(false),
            born: Instant::now(),
            synced_at: AtomicU64::new(0),
        }
    }
}

impl RevocationSet {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// True when the session `sid` or the user `sub` is revoked. Expiries
    /// are compared on this process's clock, the one that stamps `exp`.
    pub fn is_revoked(&self, sub: Uuid, sid: Uuid) -> bool {
        let now = chrono::Utc::now().timestamp();
        let Ok(entries) = self.entries.read() else {
            return true; // poisoned: fail closed
        };
        let live = |m: &HashMap<Uuid, i64>, k: &Uuid| m.get(k).is_some_and(|exp| *exp >= now);
        live(&entries.sessions, &sid) || live(&entries.users, &sub)
    }

    pub fn insert(&self, revocations: &[Revocation]) {
        if let Ok(mut entries) = self.entries.write() {
            for r in revocations {
                entries.insert(r);
            }
        }
    }

    fn replace_all(&self, revocations: &[Revocation]) {
        let mut fresh = Entries::default();
        for r in revocations {
            fresh.insert(r);
        }
        if let Ok(mut entries) = self.entries.write() {
            *entries = fresh;
        }
    }

    fn purge_expired(&self) {
        let now = chrono::Utc::now().timestamp();
        if let Ok(mut entries) = self.entries.write() {
            entries.sessions.retain(|_, exp| *exp >= now);
            entries.users.retain(|_, exp| *exp >= now);
        }
    }

    /// Revoked sessions plus revoked users held (a metrics gauge).
    pub fn len(&self) -> usize {
        self.entries
            .read()
            .map_or(0, |e| e.sessions.len() + e.users.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the listener is connected and the set is current.
    pub fn is_synced(&self) -> bool {
        self.connected.load(Ordering::SeqCst)
    }

    /// Whether the set was ever loaded from the database.
    pub fn has_loaded(&self) -> bool {
        self.synced_at.load(Ordering::SeqCst) != 0
    }

    /// Records that every revocation committed before `at` is in the set.
    fn mark_synced(&self, at: Instant) {
        let micros = at.saturating_duration_since(self.born).as_micros();
        let stamp = u64::try_from(micros).unwrap_or(u64::MAX - 1) + 1;
        self.synced_at.fetch_max(stamp, Ordering::SeqCst);
    }

    /// How long ago the set was last known current: revocations committed
    /// since may be missing. Counts from the set's creation until the first
    /// load (the metrics gauge `authgw_revocation_sync_age_seconds`).
    pub fn sync_age(&self) -> Duration {
        let stamp = self.synced_at.load(Ordering::SeqCst);
        let since = self.born + Duration::from_micros(stamp.saturating_sub(1));
        since.elapsed()
    }

    /// Whether the set is older than `bound` (`revocation.max_staleness`).
    pub fn is_stale(&self, bound: Duration) -> bool {
        self.sync_age() > bound
    }
}

/// Where the listener connects and how fresh it keeps the set.
#[derive(Debug, Clone)]
pub struct ListenerSettings {
    pub url: String,
    pub connect_timeout: Duration,
    /// `revocation.max_staleness`: the connection is probed four times within it.
    pub max_staleness: Duration,
}

impl ListenerSettings {
    /// Time between two probes: a quarter of the staleness bound, 50 ms to 1 s.
    pub fn probe_interval(&self) -> Duration {
        (self.max_staleness / 4).clamp(Duration::from_millis(50), Duration::from_secs(1))
    }

    /// The LISTEN connection's configuration and connector: `url`'s TLS
    /// settings, as the pool's.
    fn pg_config(&self) -> Result<(tokio_postgres::Config, Connector), String> {
        let target = Target::parse(&self.url)?;
        let mut pg = target.tokio_config();
        pg.connect_timeout(self.connect_timeout)
            .keepalives(true)
            .keepalives_idle(KEEPALIVE_IDLE)
            .keepalives_interval(KEEPALIVE_INTERVAL)
            .keepalives_retries(KEEPALIVE_RETRIES)
            .tcp_user_timeout(TCP_USER_TIMEOUT);
        if pg.get_application_name().is_none() {
            pg.application_name(LISTENER_APPLICATION_NAME);
        }
        Ok((pg, target.connector()))
    }
}

/// `application_name` of the LISTEN connection (in `pg_stat_activity`),
/// unless the database URL sets one.
pub const LISTENER_APPLICATION_NAME: &str = "authgw revocation listener";

/// Keeps `set` in step with the database on a dedicated OS thread with its
/// own single-threaded runtime, until `stop` is set.
pub fn spawn_listener(
    settings: ListenerSettings,
    set: Arc<RevocationSet>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("revocation-listener".into())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime.block_on(run(settings, set, stop)),
                Err(e) => tracing::error!(error = %e, "revocation listener cannot start"),
            }
        })
}

async fn run(settings: ListenerSettings, set: Arc<RevocationSet>, stop: Arc<AtomicBool>) {
    let (pg, connector) = match settings.pg_config() {
        Ok(pg) => pg,
        Err(e) => {
            tracing::error!(error = %e, "revocation listener cannot start");
            return;
        }
    };
    let _watch = AbortOnDrop(tokio::spawn(watch_staleness(
        set.clone(),
        settings.max_staleness,
    )));
    let mut backoff = Duration::from_millis(200);
    while !stop.load(Ordering::SeqCst) {
        match listen_once(&pg, &connector, &settings, &set, &stop).await {
            Ok(()) => return,
            Err(e) => {
                if set.connected.swap(false, Ordering::SeqCst) {
                    backoff = Duration::from_millis(200);
                }
                tracing::warn!(error = %e, "revocation listener disconnected; retrying");
            }
        }
        sleep_unless_stopped(backoff, &stop).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Logs once when the set goes stale and once when it is current again.
async fn watch_staleness(set: Arc<RevocationSet>, bound: Duration) {
    let mut stale = false;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        let age = set.sync_age();
        match (stale, age > bound) {
            (false, true) => tracing::warn!(
                age_seconds = age.as_secs_f64(),
                max_staleness = ?bound,
                "revocation set is stale: revocations made since are not seen by this process"
            ),
            (true, false) => tracing::info!("revocation set is current again"),
            _ => {}
        }
        stale = age > bound;
    }
}

async fn sleep_unless_stopped(total: Duration, stop: &AtomicBool) {
    let until = Instant::now() + total;
    while Instant::now() < until && !stop.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Aborts a task (and drops what it owns, here the connection) when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `f`, or an error naming `what` when it fails or takes longer than `limit`.
async fn deadline<T>(
    limit: Duration,
    what: &str,
    f: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, String> {
    match tokio::time::timeout(limit, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {}", crate::error::with_causes(&e))),
        Err(_) => Err(format!("{what}: no answer within {limit:?}")),
    }
}

/// What the connection task hands over: a notification's payload, or why
/// the connection ended.
type Message = Result<String, String>;

/// Applies every notification already received; an error if the connection ended.
fn drain(rx: &mut mpsc::UnboundedReceiver<Message>, set: &RevocationSet) -> Result<(), String> {
    while let Ok(message) = rx.try_recv() {
        apply(message, set)?;
    }
    Ok(())
}

fn apply(message: Message, set: &RevocationSet) -> Result<(), String> {
    match Revocation::from_payload(&message?) {
        Some(r) => set.insert(&[r]),
        None => tracing::warn!("ignored a malformed revocation notification"),
    }
    Ok(())
}

/// One connection's life: LISTEN first, then load (so nothing falls between),
/// then apply notifications as they come and probe the connection. Returns
/// Ok only when stopped.
async fn listen_once(
    pg: &tokio_postgres::Config,
    connector: &Connector,
    settings: &ListenerSettings,
    set: &RevocationSet,
    stop: &AtomicBool,
) -> Result<(), String> {
    let (client, mut connection) = deadline(
        settings.connect_timeout + PROBE_TIMEOUT,
        "connect",
        pg.connect(connector.clone()),
    )
    .await?;
    let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
    let _connection = AbortOnDrop(tokio::spawn(async move {
        loop {
            let message = match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(n))) => Ok(n.payload().to_owned()),
                Some(Ok(_)) => continue,
                Some(Err(e)) => Err(format!("connection: {}", crate::error::with_causes(&e))),
                None => Err("connection closed".to_owned()),
            };
            let ended = message.is_err();
            if tx.send(message).is_err() || ended {
                return;
            }
        }
    }));
    deadline(
        PROBE_TIMEOUT,
        "LISTEN",
        client.batch_execute(&format!("LISTEN {CHANNEL}")),
    )
    .await?;
    let loading = Instant::now();
    let rows = deadline(
        LOAD_TIMEOUT,
        "load",
        client.query(revocations::LIVE_SQL, &[&chrono::Utc::now()]),
    )
    .await?;
    let live: Vec<Revocation> = rows.iter().filter_map(revocations::from_row).collect();
    set.replace_all(&live);
    drain(&mut rx, set)?;
    set.mark_synced(loading);
    set.connected.store(true, Ordering::SeqCst);
    tracing::info!(entries = live.len(), "revocation set loaded");
    let probe_every = settings.probe_interval();
    let mut tick = tokio::time::interval(probe_every.min(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_probe = Instant::now();
    let mut last_purge = Instant::now();
    loop {
        tokio::select! {
            message = rx.recv() => {
                apply(message.unwrap_or_else(|| Err("connection closed".into())), set)?;
            }
            _ = tick.tick() => {
                if stop.load(Ordering::SeqCst) {
                    return Ok(());
                }
                if last_probe.elapsed() >= probe_every {
                    // Everything committed before the probe was sent is
                    // notified before its answer arrives.
                    let sent = Instant::now();
                    deadline(PROBE_TIMEOUT, "probe", client.simple_query("")).await?;
                    drain(&mut rx, set)?;
                    set.mark_synced(sent);
                    last_probe = Instant::now();
                }
                if last_purge.elapsed() > Duration::from_secs(60) {
                    last_purge = Instant::now();
                    set.purge_expired();
                }
            }
        }
    }
}
