//! The epoch ticker: a thread that advances the engine's epoch every
//! [`EPOCH_TICK`], which is what ends a plugin call at its deadline. It ticks
//! only while plugin calls are being made: after [`IDLE_TICKS`] ticks with no
//! call it parks, and the next call wakes it. An idle gateway does not wake
//! a thousand times a second, and a busy one pays one atomic add per call.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::thread::Thread;
use std::time::Duration;

use wasmtime::Engine;

/// One epoch tick. A call is stopped between its deadline and one tick after it.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// Ticks without a call before the ticker parks (100 ms).
const IDLE_TICKS: u32 = 100;

/// What the ticker thread and the calls share.
#[derive(Debug, Default)]
pub(crate) struct Ticker {
    /// Calls in progress.
    running: AtomicUsize,
    /// Calls ever started: tells the ticker a call came and went between ticks.
    started: AtomicU64,
    /// The thread is parked, or about to be.
    parked: AtomicBool,
    thread: OnceLock<Thread>,
}

/// A call in progress: the epoch advances while it lives.
pub(crate) struct Busy<'a>(&'a Ticker);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Ticker {
    /// Marks a call into a plugin as started, waking the ticker if it sleeps.
    pub(crate) fn busy(&self) -> Busy<'_> {
        self.started.fetch_add(1, Ordering::Relaxed);
        self.running.fetch_add(1, Ordering::SeqCst);
        if self.parked.load(Ordering::SeqCst) {
            self.wake();
        }
        Busy(self)
    }

    /// Unparks the thread (also how it learns that its engine is gone).
    pub(crate) fn wake(&self) {
        if let Some(thread) = self.thread.get() {
            thread.unpark();
        }
    }

    /// Starts the thread; it ends once `owner` is gone (whose drop must
    /// call [`Ticker::wake`]).
    pub(crate) fn start<T: Send + Sync + 'static>(
        self: &Arc<Self>,
        owner: Weak<T>,
        engine: impl Fn(&T) -> &Engine + Send + 'static,
    ) -> std::io::Result<()> {
        let ticker = self.clone();
        std::thread::Builder::new()
            .name("authgw-plugin-epoch".into())
            .spawn(move || ticker.run(&owner, engine))
            .map(drop)
    }

    fn run<T>(&self, owner: &Weak<T>, engine: impl Fn(&T) -> &Engine) {
        let _ = self.thread.set(std::thread::current());
        let mut seen = 0;
        let mut idle = 0;
        loop {
            std::thread::sleep(EPOCH_TICK);
            match owner.upgrade() {
                Some(owner) => engine(&owner).increment_epoch(),
                None => return,
            }
            let started = self.started.load(Ordering::Relaxed);
            if started != seen || self.running.load(Ordering::SeqCst) > 0 {
                seen = started;
                idle = 0;
                continue;
            }
            idle += 1;
            if idle < IDLE_TICKS {
                continue;
            }
            // Announce the park, then look again: a call that started after
            // the announcement sees it and unparks us (the token makes
            // `park` return at once even if it comes first).
            self.parked.store(true, Ordering::SeqCst);
            if self.running.load(Ordering::SeqCst) == 0
                && self.started.load(Ordering::SeqCst) == seen
            {
                std::thread::park();
            }
            self.parked.store(false, Ordering::SeqCst);
            idle = 0;
        }
    }
}
