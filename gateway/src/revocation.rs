//! The in-memory revocation set every process consults on each token check,
//! fed by PostgreSQL LISTEN/NOTIFY and reloaded in full on every (re)connect.
//! The hot path (`is_revoked`) never touches the database.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use fallible_iterator::FallibleIterator;
use uuid::Uuid;

use crate::store::revocations::{self, CHANNEL, Kind, Revocation};

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
#[derive(Default)]
pub struct RevocationSet {
    entries: RwLock<Entries>,
    connected: AtomicBool,
}

impl RevocationSet {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// True when the session `sid` or the user `sub` is revoked.
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
}

/// Keeps `set` in step with the database on a dedicated OS thread (the sync
/// client must not run on a tokio worker) until `stop` is set.
pub fn spawn_listener(
    url: String,
    connect_timeout: Duration,
    set: Arc<RevocationSet>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("revocation-listener".into())
        .spawn(move || {
            let mut backoff = Duration::from_millis(200);
            while !stop.load(Ordering::SeqCst) {
                match listen_once(&url, connect_timeout, &set, &stop) {
                    Ok(()) => return,
                    Err(e) => {
                        set.connected.store(false, Ordering::SeqCst);
                        tracing::warn!(error = %e, "revocation listener disconnected; retrying");
                    }
                }
                sleep_unless_stopped(backoff, &stop);
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        })
}

fn sleep_unless_stopped(total: Duration, stop: &AtomicBool) {
    let until = Instant::now() + total;
    while Instant::now() < until && !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One connection's life: LISTEN first, then load (so nothing falls between),
/// then apply notifications as they come. Returns Ok only when stopped.
fn listen_once(
    url: &str,
    connect_timeout: Duration,
    set: &RevocationSet,
    stop: &AtomicBool,
) -> Result<(), String> {
    let mut client = crate::store::connect(url, connect_timeout).map_err(|e| e.to_string())?;
    client
        .batch_execute(&format!("LISTEN {CHANNEL}"))
        .map_err(|e| e.to_string())?;
    let live = revocations::live(&mut client).map_err(|e| e.to_string())?;
    set.replace_all(&live);
    set.connected.store(true, Ordering::SeqCst);
    tracing::info!(entries = live.len(), "revocation set loaded");
    let mut last_purge = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        {
            let mut notifications = client.notifications();
            let mut iter = notifications.timeout_iter(Duration::from_millis(200));
            while let Some(n) = iter.next().map_err(|e| e.to_string())? {
                match Revocation::from_payload(n.payload()) {
                    Some(r) => set.insert(&[r]),
                    None => tracing::warn!("ignored a malformed revocation notification"),
                }
            }
        }
        if client.is_closed() {
            return Err("connection closed".into());
        }
        if last_purge.elapsed() > Duration::from_secs(60) {
            last_purge = Instant::now();
            set.purge_expired();
            // A silently dead connection would stop notifications: probe it.
            client.simple_query("SELECT 1").map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}
