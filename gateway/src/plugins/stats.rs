//! Per-plugin counters, read at scrape time.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::error::FailureKind;
use super::instance::Retirement;

#[derive(Default)]
pub(crate) struct Counters {
    calls: AtomicU64,
    denies: AtomicU64,
    failures: [AtomicU64; FailureKind::ALL.len()],
    recycled: AtomicU64,
    retired: [AtomicU64; Retirement::ALL.len()],
    inline_instantiations: AtomicU64,
    refill_errors: AtomicU64,
}

/// A snapshot of one plugin's counters (all since load).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PluginStats {
    /// `decide` calls started.
    pub calls: u64,
    /// Calls that returned a deny.
    pub denies: u64,
    /// Failed calls, by kind (every [`FailureKind`], in [`FailureKind::ALL`] order).
    pub failures: Vec<(FailureKind, u64)>,
    /// Instances thrown away after a failure (each is replaced).
    pub recycled: u64,
    /// Healthy instances retired after a call, by reason (each is replaced).
    pub retired: Vec<(Retirement, u64)>,
    /// Instances made on the request path because the pool was empty.
    pub inline_instantiations: u64,
    /// Background replacements that failed (the pool runs short; calls then
    /// instantiate inline).
    pub refill_errors: u64,
}

impl PluginStats {
    /// The instances retired for `reason`.
    pub fn retired_for(&self, reason: Retirement) -> u64 {
        self.retired
            .iter()
            .find(|(r, _)| *r == reason)
            .map_or(0, |(_, n)| *n)
    }

    /// The failures of one kind.
    pub fn failures_of(&self, kind: FailureKind) -> u64 {
        self.failures
            .iter()
            .find(|(k, _)| *k == kind)
            .map_or(0, |(_, n)| *n)
    }
}

fn index(kind: FailureKind) -> usize {
    FailureKind::ALL
        .iter()
        .position(|k| *k == kind)
        .unwrap_or_default()
}

impl Counters {
    pub(crate) fn call(&self) {
        self.calls.fetch_add(1, Relaxed);
    }

    pub(crate) fn deny(&self) {
        self.denies.fetch_add(1, Relaxed);
    }

    pub(crate) fn failure(&self, kind: FailureKind) {
        self.failures[index(kind)].fetch_add(1, Relaxed);
    }

    pub(crate) fn recycled(&self) {
        self.recycled.fetch_add(1, Relaxed);
    }

    pub(crate) fn retired(&self, reason: Retirement) {
        let i = Retirement::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or_default();
        self.retired[i].fetch_add(1, Relaxed);
    }

    pub(crate) fn inline_instantiation(&self) {
        self.inline_instantiations.fetch_add(1, Relaxed);
    }

    pub(crate) fn refill_error(&self) {
        self.refill_errors.fetch_add(1, Relaxed);
    }

    pub(crate) fn snapshot(&self) -> PluginStats {
        PluginStats {
            calls: self.calls.load(Relaxed),
            denies: self.denies.load(Relaxed),
            failures: FailureKind::ALL
                .iter()
                .map(|k| (*k, self.failures[index(*k)].load(Relaxed)))
                .collect(),
            recycled: self.recycled.load(Relaxed),
            retired: Retirement::ALL
                .iter()
                .zip(&self.retired)
                .map(|(r, n)| (*r, n.load(Relaxed)))
                .collect(),
            inline_instantiations: self.inline_instantiations.load(Relaxed),
            refill_errors: self.refill_errors.load(Relaxed),
        }
    }
}
