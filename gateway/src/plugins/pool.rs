//! A loaded plugin: its instance pool, its counters, and the one entry
//! point the request path uses, [`Plugin::decide`].
//!
//! Instances are taken from the pool for one call and put back after it.
//! The pool is filled at load; when it is empty a call instantiates inline
//! (counted). An instance whose call failed is dropped and a replacement is
//! made on a background thread, so other requests are served as before. So
//! is a healthy one, after its answer, whose memory reached `recycle_at` or
//! that served `max_calls_per_instance` calls (counted as retired): a guest
//! that leaks is replaced before its limit fails a request.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::bindings::{IdentityParam, RequestParam, WitDecision};
use super::error::{FailureKind, PluginFailure};
use super::host::HostShared;
use super::instance::{Blueprint, CreateError, Instance};
use super::needs::Needs;
use super::stats::{Counters, PluginStats};

pub struct Plugin {
    blueprint: Blueprint,
    interface_version: String,
    /// What its `decide` reads, from `configure`.
    needs: Needs,
    /// The linear memory of its first instance once configured, in bytes.
    start_memory: usize,
    /// Warm instances; at most `target` are kept.
    pool: Mutex<Vec<Instance>>,
    target: usize,
    /// Replacements owed by the background refill.
    owed: AtomicUsize,
    counters: Counters,
    /// Keeps the engine's epoch ticker running while this plugin lives.
    _host: Arc<HostShared>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.blueprint.name)
            .field("interface_version", &self.interface_version)
            .field("needs", &self.needs)
            .field("instances", &self.target)
            .finish_non_exhaustive()
    }
}

impl Plugin {
    /// Makes the plugin and its `instances` warm, configured instances.
    pub(crate) fn start(
        host: Arc<HostShared>,
        blueprint: Blueprint,
        interface_version: String,
        instances: usize,
    ) -> Result<Plugin, CreateError> {
        // The first instance tells what the plugin reads; the config is the
        // same for every instance, so the answer is too.
        let (first, needs) = Instance::create(&blueprint)?;
        if first.memory_bytes() >= blueprint.recycle_at {
            return Err(CreateError::StartsTooLarge {
                memory: first.memory_bytes(),
                recycle_at: blueprint.recycle_at,
            });
        }
        let start_memory = first.memory_bytes();
        let mut warm = Vec::with_capacity(instances);
        warm.push(first);
        for _ in 1..instances {
            warm.push(Instance::create(&blueprint)?.0);
        }
        Ok(Plugin {
            blueprint,
            interface_version,
            needs,
            start_memory,
            pool: Mutex::new(warm),
            target: instances,
            owed: AtomicUsize::new(0),
            counters: Counters::default(),
            _host: host,
        })
    }

    /// The plugin's `name` from the config.
    pub fn name(&self) -> &str {
        &self.blueprint.name
    }

    /// The `authgw:policy` interface version the component exports, e.g. "0.2.0".
    pub fn interface_version(&self) -> &str {
        &self.interface_version
    }

    /// What its `decide` reads (everything, for a 0.1.0 plugin).
    pub fn needs(&self) -> &Needs {
        &self.needs
    }

    /// The linear memory a fresh instance has once configured, in bytes.
    pub fn start_memory(&self) -> usize {
        self.start_memory
    }

    /// The memory size at which an instance is retired (`recycle_at`).
    pub fn recycle_at(&self) -> usize {
        self.blueprint.recycle_at
    }

    /// The counters since load.
    pub fn stats(&self) -> PluginStats {
        self.counters.snapshot()
    }

    /// Warm instances in the pool right now.
    pub fn idle_instances(&self) -> usize {
        self.lock().len()
    }

    /// Runs `decide` on one instance. A failure has been logged and counted
    /// already; the failed instance is gone and a replacement is on its way.
    pub fn decide(
        self: &Arc<Self>,
        request: &RequestParam<'_>,
        identity: Option<&IdentityParam<'_>>,
    ) -> Result<WitDecision, PluginFailure> {
        self.counters.call();
        let popped = self.lock().pop();
        let mut instance = match popped {
            Some(instance) => instance,
            None => {
                self.counters.inline_instantiation();
                Instance::create(&self.blueprint)
                    .map(|(instance, _)| instance)
                    .map_err(|e| self.fail(FailureKind::Unavailable, format!("no instance: {e}")))?
            }
        };
        let result = instance.decide(self.blueprint.deadline_ticks, request, identity);
        let decision = match result {
            Ok(decision) => decision,
            Err((kind, detail)) => {
                drop(instance);
                self.counters.recycled();
                self.replace_one();
                return Err(self.fail(kind, detail));
            }
        };
        match instance.retirement(&self.blueprint) {
            Some(reason) => {
                drop(instance);
                self.counters.retired(reason);
                self.replace_one();
            }
            None => self.put_back(instance),
        }
        if let WitDecision::Deny(_) = decision {
            self.counters.deny();
        }
        Ok(decision)
    }

    /// Counts and logs a failure, and makes the caller's error.
    pub(crate) fn fail(&self, kind: FailureKind, detail: String) -> PluginFailure {
        self.counters.failure(kind);
        tracing::warn!(
            plugin = self.name(),
            kind = kind.as_str(),
            "plugin call failed: {detail}"
        );
        PluginFailure {
            plugin: self.blueprint.name.clone(),
            kind,
            detail,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Instance>> {
        self.pool.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn put_back(&self, instance: Instance) {
        let mut pool = self.lock();
        if pool.len() < self.target {
            pool.push(instance);
        }
    }

    /// Owes the pool one instance; the first debt starts a refill thread
    /// that pays every debt, then ends.
    fn replace_one(self: &Arc<Self>) {
        if self.owed.fetch_add(1, Ordering::AcqRel) > 0 {
            return;
        }
        let plugin = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name(format!("authgw-plugin-refill-{}", self.name()))
            .spawn(move || plugin.refill());
        if let Err(e) = spawned {
            self.owed.store(0, Ordering::Release);
            self.counters.refill_error();
            tracing::error!(plugin = self.name(), "cannot start the refill thread: {e}");
        }
    }

    fn refill(&self) {
        loop {
            match Instance::create(&self.blueprint) {
                Ok((instance, _)) => self.put_back(instance),
                Err(e) => {
                    self.counters.refill_error();
                    tracing::error!(plugin = self.name(), "cannot replace an instance: {e}");
                }
            }
            if self.owed.fetch_sub(1, Ordering::AcqRel) == 1 {
                return;
            }
        }
    }
}
