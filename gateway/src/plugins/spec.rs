//! What gateway.toml says about plugins: the host-wide switches
//! ([`HostConfig`]) and one entry per plugin ([`PluginSpec`]).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// One MiB, in bytes.
pub const MIB: u64 = 1 << 20;

/// Host-wide plugin settings. `Default` is what an absent table means.
#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// Pre-reserve instance slots (faster instantiation, cheap recycling).
    /// Turn off on hosts that cannot reserve the address space
    /// (`pool_slots` x `max_memory_limit` of virtual memory).
    #[serde(default = "yes")]
    pub pooling_allocator: bool,
    /// How many plugin instances may exist at once across all plugins, when
    /// the pooling allocator is on.
    #[serde(default = "default_pool_slots")]
    pub pool_slots: u32,
    /// The largest `memory_limit` a plugin may ask for; with the pooling
    /// allocator it is the size of each reserved memory slot.
    #[serde(default = "default_memory_limit")]
    pub max_memory_limit: ByteSize,
    /// Where compiled plugins are kept (wasmtime's cache, keyed by the
    /// component's bytes and the engine's configuration), so a start or a
    /// reload with unchanged plugins does not compile them again. Relative
    /// to the working directory; "" turns the cache off.
    #[serde(default = "default_cache_dir")]
    pub cache_dir: PathBuf,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            pooling_allocator: true,
            pool_slots: default_pool_slots(),
            max_memory_limit: default_memory_limit(),
            cache_dir: default_cache_dir(),
        }
    }
}

/// `plugin_host.cache_dir`'s default.
pub fn default_cache_dir() -> PathBuf {
    PathBuf::from(".cache/plugins")
}

/// One plugin: which file, its config, and its limits.
#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct PluginSpec {
    /// How routes refer to it; also the tag of its log lines and metrics.
    pub name: String,
    /// The `.wasm` component; relative paths are relative to the config file.
    pub file: PathBuf,
    /// Handed to the plugin's `configure` as JSON; absent means `{}`.
    #[serde(default)]
    pub config: serde_json::Value,
    /// Linear memory cap per instance: bytes, or "16MiB", "512KiB", "1GiB".
    #[serde(default = "default_memory_limit")]
    pub memory_limit: ByteSize,
    /// How long one `decide` may run, e.g. "5ms".
    #[serde(default = "default_deadline", deserialize_with = "duration")]
    pub deadline: Duration,
    /// Instances kept warm (each serves one request at a time).
    #[serde(default = "default_instances")]
    pub instances: usize,
    /// An instance whose linear memory reached this is retired once its
    /// answer is returned, and replaced in the background, so a guest that
    /// leaks never fails a request at `memory_limit`. Default: 75 % of
    /// `memory_limit`.
    #[serde(default)]
    pub recycle_at: Option<ByteSize>,
    /// An instance that served this many calls is retired the same way
    /// (default: no limit).
    #[serde(default)]
    pub max_calls_per_instance: Option<u64>,
}

impl PluginSpec {
    /// A spec with the default limits.
    pub fn new(name: impl Into<String>, file: impl Into<PathBuf>) -> Self {
        PluginSpec {
            name: name.into(),
            file: file.into(),
            config: serde_json::Value::Null,
            memory_limit: default_memory_limit(),
            deadline: default_deadline(),
            instances: default_instances(),
            recycle_at: None,
            max_calls_per_instance: None,
        }
    }

    /// The memory size at which an instance is retired: `recycle_at`, or
    /// 75 % of `memory_limit`.
    pub(crate) fn recycle_threshold(&self) -> usize {
        let bytes = self.recycle_at.map_or(self.memory_limit.0 / 4 * 3, |b| b.0);
        usize::try_from(bytes).unwrap_or(usize::MAX)
    }

    /// The `config` as the JSON text `configure` receives.
    pub(crate) fn config_json(&self) -> String {
        match &self.config {
            serde_json::Value::Null => "{}".into(),
            other => other.to_string(),
        }
    }

    /// Checks the values serde cannot; the error names the key.
    pub(crate) fn validate(&self, host: &HostConfig) -> Result<(), String> {
        let name_ok = !self.name.is_empty()
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !name_ok {
            return Err("name: use [a-z0-9_-], at least one character".into());
        }
        if self.instances == 0 || self.instances > MAX_INSTANCES {
            return Err(format!(
                "instances: {} is not in 1..={MAX_INSTANCES}",
                self.instances
            ));
        }
        if self.deadline.is_zero() || self.deadline > MAX_DEADLINE {
            return Err(format!(
                "deadline: {:?} is not in (0, {MAX_DEADLINE:?}]",
                self.deadline
            ));
        }
        if self.memory_limit.0 < MIB {
            return Err(format!("memory_limit: {} is below 1MiB", self.memory_limit));
        }
        if host.pooling_allocator && self.memory_limit > host.max_memory_limit {
            return Err(format!(
                "memory_limit: {} exceeds plugin_host.max_memory_limit ({}); raise that or turn off plugin_host.pooling_allocator",
                self.memory_limit, host.max_memory_limit
            ));
        }
        if let Some(at) = self.recycle_at
            && (at.0 == 0 || at > self.memory_limit)
        {
            return Err(format!(
                "recycle_at: {at} is not in (0, memory_limit = {}]",
                self.memory_limit
            ));
        }
        if self.max_calls_per_instance == Some(0) {
            return Err("max_calls_per_instance: must be at least 1".into());
        }
        Ok(())
    }
}

/// The most warm instances one plugin may keep.
pub const MAX_INSTANCES: usize = 256;
/// The longest `deadline` accepted: a plugin is on the request path.
pub const MAX_DEADLINE: Duration = Duration::from_secs(1);

fn yes() -> bool {
    true
}

fn default_pool_slots() -> u32 {
    128
}

fn default_memory_limit() -> ByteSize {
    ByteSize(16 * MIB)
}

fn default_deadline() -> Duration {
    Duration::from_millis(5)
}

fn default_instances() -> usize {
    4
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let raw = String::deserialize(d)?;
    crate::config::parse_duration(&raw).map_err(serde::de::Error::custom)
}

/// A size in bytes, written as an integer or as "16MiB", "512KiB", "1GiB".
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// Parses "16MiB", "512 KiB", "1GiB", "65536" or "65536B".
    pub fn parse(raw: &str) -> Result<ByteSize, String> {
        let raw = raw.trim();
        let split = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
        let (digits, unit) = raw.split_at(split);
        let unit_size = match unit.trim() {
            "" | "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => MIB,
            "GiB" => 1 << 30,
            _ => return Err(bad_size(raw)),
        };
        digits
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(unit_size))
            .map(ByteSize)
            .ok_or_else(|| bad_size(raw))
    }

    /// The size as `usize`, saturating (wasm32 memories are far smaller).
    pub fn as_usize(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }
}

fn bad_size(raw: &str) -> String {
    format!("invalid size {raw:?}; write bytes or e.g. \"16MiB\", \"512KiB\", \"1GiB\"")
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        match n {
            n if n >= 1 << 30 && n % (1 << 30) == 0 => write!(f, "{}GiB", n >> 30),
            n if n >= MIB && n % MIB == 0 => write!(f, "{}MiB", n >> 20),
            n if n >= 1 << 10 && n % (1 << 10) == 0 => write!(f, "{}KiB", n >> 10),
            n => write!(f, "{n}B"),
        }
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bytes(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bytes(n) => Ok(ByteSize(n)),
            Raw::Text(s) => ByteSize::parse(&s).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sizes parse from integers and binary-unit strings, and print back.
    #[test]
    fn byte_sizes() {
        assert_eq!(ByteSize::parse("16MiB"), Ok(ByteSize(16 * MIB)));
        assert_eq!(ByteSize::parse("512 KiB"), Ok(ByteSize(512 * 1024)));
        assert_eq!(ByteSize::parse("65536"), Ok(ByteSize(65536)));
        assert!(ByteSize::parse("16MB").is_err());
        assert!(ByteSize::parse("MiB").is_err());
        assert_eq!(ByteSize(16 * MIB).to_string(), "16MiB");
        assert_eq!(ByteSize(1000).to_string(), "1000B");
    }

    /// A spec from TOML gets the documented defaults; unknown keys are refused.
    #[test]
    fn spec_defaults_and_unknown_keys() {
        let spec: PluginSpec = match toml::from_str("name = \"r\"\nfile = \"r.wasm\"") {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(spec.memory_limit, ByteSize(16 * MIB));
        assert_eq!(spec.deadline, Duration::from_millis(5));
        assert_eq!(spec.instances, 4);
        assert_eq!(spec.config_json(), "{}");
        let full = "name = \"r\"\nfile = \"r.wasm\"\nmemory_limit = \"8MiB\"\ndeadline = \"2ms\"\ninstances = 2";
        let spec: PluginSpec = match toml::from_str(full) {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(
            (spec.memory_limit, spec.deadline, spec.instances),
            (ByteSize(8 * MIB), Duration::from_millis(2), 2)
        );
        let unknown = toml::from_str::<PluginSpec>("name = \"r\"\nfile = \"r\"\nmemory = 1");
        assert!(unknown.is_err_and(|e| e.to_string().contains("unknown field `memory`")));
    }

    /// Values serde accepts but the host cannot honour are refused by key.
    #[test]
    fn spec_validation_names_the_key() {
        let host = HostConfig::default();
        let mut spec = PluginSpec::new("Bad Name", "x.wasm");
        assert!(spec.validate(&host).is_err_and(|e| e.starts_with("name:")));
        spec.name = "ok".into();
        spec.instances = 0;
        assert!(
            spec.validate(&host)
                .is_err_and(|e| e.starts_with("instances:"))
        );
        spec.instances = 1;
        spec.memory_limit = ByteSize(64 * MIB);
        assert!(
            spec.validate(&host)
                .is_err_and(|e| e.contains("max_memory_limit"))
        );
        let unpooled = HostConfig {
            pooling_allocator: false,
            ..HostConfig::default()
        };
        assert_eq!(spec.validate(&unpooled), Ok(()));
    }
}
