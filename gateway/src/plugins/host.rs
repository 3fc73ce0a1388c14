//! The process-wide plugin host: one wasmtime `Engine` (with the pooling
//! allocator unless turned off), its epoch ticker thread, the `Linker` with
//! WASI and the `host` interface, and loading plugins from specs.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::bindings::{self, POLICY_EXPORT, SUPPORTED_VERSIONS, v0_1, v0_2, v0_3};
use super::epoch::{EPOCH_TICK, Ticker};
use super::error::PluginError;
use super::instance::{Blueprint, Pre, one_line};
use super::pool::Plugin;
use super::sandbox::State;
use super::spec::{HostConfig, PluginSpec};

/// Core instances, memories and tables one plugin component may have.
const CORE_INSTANCES_PER_COMPONENT: u32 = 16;
const MEMORIES_PER_COMPONENT: u32 = 2;
const TABLES_PER_COMPONENT: u32 = 4;

/// The engine and linker every plugin of this host shares.
pub(crate) struct HostShared {
    pub(crate) engine: Engine,
    linker: Linker<State>,
    config: HostConfig,
    pub(crate) ticker: Arc<Ticker>,
    /// The compiled-code cache the engine uses (shares its counters).
    cache: Option<wasmtime::Cache>,
}

impl Drop for HostShared {
    /// A parked ticker learns that its engine is gone.
    fn drop(&mut self) {
        self.ticker.wake();
    }
}

/// The plugin host. Cheap to clone; the epoch ticker thread stops once the
/// host and every plugin it loaded are dropped.
#[derive(Clone)]
pub struct PluginHost {
    shared: Arc<HostShared>,
}

impl std::fmt::Debug for PluginHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginHost")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl PluginHost {
    /// Builds the engine and starts the epoch ticker.
    pub fn new(cfg: &HostConfig) -> Result<Self, PluginError> {
        let cache = if cfg.cache_dir.as_os_str().is_empty() {
            None
        } else {
            Some(compile_cache(&cfg.cache_dir)?)
        };
        let mut config = engine_config(cfg)?;
        config.cache(cache.clone());
        let engine = Engine::new(&config).map_err(|e| {
            PluginError::Host(format!("cannot create the engine: {}", one_line(&e)))
        })?;
        let linker = host_linker(&engine)
            .map_err(|e| PluginError::Host(format!("cannot link WASI: {}", one_line(&e))))?;
        let shared = Arc::new(HostShared {
            engine,
            linker,
            config: cfg.clone(),
            ticker: Arc::default(),
            cache,
        });
        shared
            .ticker
            .start(Arc::downgrade(&shared), |s: &HostShared| &s.engine)
            .map_err(|e| PluginError::Host(format!("cannot start the epoch ticker: {e}")))?;
        Ok(PluginHost { shared })
    }

    /// The shared engine (for inspection tools).
    pub fn engine(&self) -> &Engine {
        &self.shared.engine
    }

    /// Compilations served from the compiled-code cache and compilations
    /// done, since this host started; `None` without a cache.
    pub fn cache_stats(&self) -> Option<(usize, usize)> {
        self.shared
            .cache
            .as_ref()
            .map(|c| (c.cache_hits(), c.cache_misses()))
    }

    /// Compiles every plugin once, checks it against the WIT world, and
    /// pre-warms its pool with configured instances. Relative `file`s are
    /// resolved against `base_dir`. The first error names its plugin.
    pub fn load(&self, specs: &[PluginSpec], base_dir: &Path) -> Result<PluginSet, PluginError> {
        let mut compiled: HashMap<PathBuf, Component> = HashMap::new();
        let mut seen = HashSet::new();
        let mut plugins = Vec::with_capacity(specs.len());
        for spec in specs {
            if !seen.insert(spec.name.as_str()) {
                return Err(PluginError::plugin(&spec.name, "defined twice"));
            }
            spec.validate(&self.shared.config)
                .map_err(|e| PluginError::plugin(&spec.name, e))?;
            let path = base_dir.join(&spec.file);
            let component = match compiled.get(&path) {
                Some(c) => c.clone(),
                None => {
                    let c = self
                        .compile(&path)
                        .map_err(|e| PluginError::plugin(&spec.name, e))?;
                    compiled.insert(path.clone(), c.clone());
                    c
                }
            };
            let plugin = self
                .start(spec, &component)
                .map_err(|e| PluginError::plugin(&spec.name, format!("{}: {e}", path.display())))?;
            plugins.push(Arc::new(plugin));
        }
        Ok(PluginSet { plugins })
    }

    /// Reads and compiles one component file, from the compiled-code cache
    /// when it holds this component for this engine configuration.
    pub fn compile(&self, path: &Path) -> Result<Component, String> {
        let bytes =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let (hits, started) = (self.cache_stats().map(|(h, _)| h), Instant::now());
        let component = Component::from_binary(&self.shared.engine, &bytes).map_err(|e| {
            format!(
                "{} is not a WebAssembly component: {}",
                path.display(),
                one_line(&e)
            )
        })?;
        tracing::info!(
            file = %path.display(),
            from_cache = hits.is_some() && self.cache_stats().map(|(h, _)| h) > hits,
            ms = format_args!("{:.1}", started.elapsed().as_secs_f64() * 1000.0),
            "plugin compiled"
        );
        Ok(component)
    }

    /// Type-checks a compiled component against the `plugin` world: its
    /// imports must be satisfiable and it must export the policy interface.
    /// Returns the interface version it exports.
    pub(crate) fn check(&self, component: &Component) -> Result<(Pre, String), String> {
        let version = policy_version(&self.shared.engine, component)?;
        if !SUPPORTED_VERSIONS.contains(&version.as_str()) {
            return Err(format!(
                "exports {POLICY_EXPORT}@{version}; this gateway loads versions {}",
                SUPPORTED_VERSIONS.join(", ")
            ));
        }
        let pre = self.shared.linker.instantiate_pre(component).map_err(|e| {
            format!(
                "imports something this host does not provide: {}",
                one_line(&e)
            )
        })?;
        let not_implemented = |e: wasmtime::Error| {
            format!(
                "does not implement {POLICY_EXPORT}@{version}: {}",
                one_line(&e)
            )
        };
        let pre = match version.as_str() {
            bindings::INTERFACE_VERSION => {
                Pre::Current(bindings::PluginPre::new(pre).map_err(not_implemented)?)
            }
            bindings::V0_3_VERSION => {
                Pre::V0_3(v0_3::PluginPre::new(pre).map_err(not_implemented)?)
            }
            bindings::V0_2_VERSION => {
                Pre::V0_2(v0_2::PluginPre::new(pre).map_err(not_implemented)?)
            }
            _ => Pre::V0_1(v0_1::PluginPre::new(pre).map_err(not_implemented)?),
        };
        Ok((pre, version))
    }

    fn start(&self, spec: &PluginSpec, component: &Component) -> Result<Plugin, String> {
        let (pre, version) = self.check(component)?;
        let blueprint = Blueprint {
            name: Arc::from(spec.name.as_str()),
            pre,
            memory_limit: spec.memory_limit.as_usize(),
            recycle_at: spec.recycle_threshold(),
            max_calls: spec.max_calls_per_instance,
            config_json: spec.config_json(),
            deadline_ticks: deadline_ticks(spec.deadline),
            ticker: self.shared.ticker.clone(),
        };
        Plugin::start(self.shared.clone(), blueprint, version, spec.instances)
            .map_err(|e| e.to_string())
    }
}

/// Ticks for a deadline: rounded up, plus one for the tick in progress, so
/// a call always gets at least its deadline.
fn deadline_ticks(deadline: Duration) -> u64 {
    let tick = EPOCH_TICK.as_nanos();
    let ticks = deadline.as_nanos().div_ceil(tick);
    u64::try_from(ticks).unwrap_or(u64::MAX).saturating_add(1)
}

/// The version in the component's `authgw:policy/policy@X` export.
pub(crate) fn policy_version(engine: &Engine, component: &Component) -> Result<String, String> {
    let ty = component.component_type();
    let exports: Vec<String> = ty
        .exports(engine)
        .map(|(name, _)| name.to_string())
        .collect();
    let prefix = format!("{POLICY_EXPORT}@");
    exports
        .iter()
        .find_map(|name| name.strip_prefix(&prefix))
        .map(str::to_string)
        .ok_or_else(|| {
            let list = if exports.is_empty() {
                "nothing".to_string()
            } else {
                exports.join(", ")
            };
            format!(
                "does not export {POLICY_EXPORT} (it exports {list}); is it built for the authgw:policy/plugin world?"
            )
        })
}

fn engine_config(cfg: &HostConfig) -> Result<Config, PluginError> {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    let slot = cfg.max_memory_limit.0;
    // Small explicit reservations instead of 4 GiB + guard per memory: many
    // hosts may live in one process (tests), and plugins are small.
    config.memory_reservation(slot);
    config.memory_guard_size(64 * 1024);
    config.memory_reservation_for_growth(0);
    if cfg.pooling_allocator {
        if cfg.pool_slots == 0 {
            return Err(PluginError::Host(
                "plugin_host.pool_slots must be at least 1".into(),
            ));
        }
        let slots = cfg.pool_slots;
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(slots)
            .total_core_instances(slots.saturating_mul(CORE_INSTANCES_PER_COMPONENT))
            .total_memories(slots.saturating_mul(MEMORIES_PER_COMPONENT))
            .total_tables(slots.saturating_mul(TABLES_PER_COMPONENT))
            .total_stacks(0)
            .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
            .max_memories_per_component(MEMORIES_PER_COMPONENT)
            .max_tables_per_component(TABLES_PER_COMPONENT)
            .max_memory_size(cfg.max_memory_limit.as_usize());
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    Ok(config)
}

/// wasmtime's compiled-code cache in `dir` (made absolute against the
/// working directory, created if missing).
fn compile_cache(dir: &Path) -> Result<wasmtime::Cache, PluginError> {
    let bad =
        |e: String| PluginError::Host(format!("plugin_host.cache_dir {}: {e}", dir.display()));
    let absolute = std::path::absolute(dir).map_err(|e| bad(e.to_string()))?;
    let mut config = wasmtime::CacheConfig::new();
    config.with_directory(absolute);
    // No background recompression at zstd level 20 of entries used 256
    // times: it took a few hundred MiB in whichever process did it (seen as
    // RSS jumps of 200+ MiB in tests/cancellation.rs), for a cache of a few
    // megabytes per plugin. Entries stay at the baseline level.
    config.with_optimized_compression_usage_counter_threshold(u64::MAX);
    wasmtime::Cache::new(config).map_err(|e| bad(one_line(&e)))
}

fn host_linker(engine: &Engine) -> wasmtime::Result<Linker<State>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    super::nonblocking::shadow_blocking_io(&mut linker)?;
    bindings::Plugin::add_to_linker::<State, wasmtime::component::HasSelf<State>>(
        &mut linker,
        |s| s,
    )?;
    v0_3::Plugin::add_to_linker::<State, wasmtime::component::HasSelf<State>>(&mut linker, |s| s)?;
    v0_2::Plugin::add_to_linker::<State, wasmtime::component::HasSelf<State>>(&mut linker, |s| s)?;
    v0_1::Plugin::add_to_linker::<State, wasmtime::component::HasSelf<State>>(&mut linker, |s| s)?;
    Ok(linker)
}

/// The plugins of one configuration, by name.
#[derive(Debug, Clone, Default)]
pub struct PluginSet {
    plugins: Vec<Arc<Plugin>>,
}

impl PluginSet {
    /// The plugin called `name`.
    pub fn get(&self, name: &str) -> Option<Arc<Plugin>> {
        self.plugins.iter().find(|p| p.name() == name).cloned()
    }

    /// The names, in config order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.plugins.iter().map(|p| p.name())
    }

    /// Every plugin, in config order (for metrics).
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Plugin>> {
        self.plugins.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.plugins.is_empty()
    }

    pub fn len(&self) -> usize {
        self.plugins.len()
    }
}
