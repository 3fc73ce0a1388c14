//! Tools for plugin authors behind `authgw plugin check` and
//! `authgw plugin test`: load a component the way the gateway does (the
//! same limits, `--memory-limit` and `--deadline` as `memory_limit` and
//! `deadline`), report its interface version and its memory once configured,
//! and run `decide` on a table of cases, timing each call.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::chain::{Decision, chain_needs, run_chain};
use super::host::PluginHost;
use super::needs::{CallerParts, Needs, RequestParts};
use super::records::{Identity, Request};
use super::spec::{ByteSize, HostConfig, PluginSpec};

/// Why a tool failed: bad inputs (exit 2) or a plugin that does not pass
/// (exit 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthoringError {
    /// An unreadable or invalid input file; names the file and the key.
    Input(String),
    /// The plugin does not load, or cases did not pass.
    Failed(String),
}

impl std::fmt::Display for AuthoringError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthoringError::Input(m) | AuthoringError::Failed(m) => f.write_str(m),
        }
    }
}

/// One host for a one-shot tool: no pooling reservations needed; the
/// compiled-code cache at its default place (`plugin_host.cache_dir`).
fn tool_host() -> Result<PluginHost, AuthoringError> {
    tool_host_caching_in(&super::spec::default_cache_dir())
}

fn tool_host_caching_in(cache_dir: &Path) -> Result<PluginHost, AuthoringError> {
    let config = HostConfig {
        pooling_allocator: false,
        cache_dir: cache_dir.to_path_buf(),
        ..HostConfig::default()
    };
    PluginHost::new(&config).map_err(|e| AuthoringError::Failed(e.to_string()))
}

/// `plugin compile`: compiles `file` into the compiled-code cache in
/// `cache_dir`, so the gateway's next start or reload finds it there.
/// Returns whether it was there already.
pub fn compile(file: &Path, cache_dir: &Path) -> Result<bool, AuthoringError> {
    readable(file)?;
    if cache_dir.as_os_str().is_empty() {
        return Err(AuthoringError::Input(
            "--cache-dir: empty; there is nothing to warm without a cache".into(),
        ));
    }
    let host = tool_host_caching_in(cache_dir)?;
    host.compile(file).map_err(AuthoringError::Failed)?;
    Ok(host.cache_stats().is_some_and(|(hits, _)| hits > 0))
}

fn readable(file: &Path) -> Result<(), AuthoringError> {
    std::fs::metadata(file)
        .map(drop)
        .map_err(|e| AuthoringError::Input(format!("cannot read {}: {e}", file.display())))
}

/// The limits a tool runs a plugin under, as its `[[plugins]]` entry would.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ToolLimits {
    /// Linear memory cap per instance, as `memory_limit` [default: 16MiB]
    #[arg(long, value_name = "SIZE", value_parser = ByteSize::parse)]
    pub memory_limit: Option<ByteSize>,
    /// How long one `decide` may run, as `deadline` [default: 5ms]
    #[arg(long, value_name = "DURATION", value_parser = crate::config::parse_duration)]
    pub deadline: Option<Duration>,
}

/// The spec a tool loads `file` with: `config` (`{}` when None), one
/// instance, and `limits` over the gateway's defaults. A limit out of range
/// is an input error naming the option.
fn tool_spec(
    file: &Path,
    config: Option<&Path>,
    limits: &ToolLimits,
) -> Result<PluginSpec, AuthoringError> {
    let mut spec = PluginSpec::new("under-test", file);
    if let Some(path) = config {
        spec.config = read_config(path)?;
    }
    spec.instances = 1;
    if let Some(memory) = limits.memory_limit {
        spec.memory_limit = memory;
    }
    if let Some(deadline) = limits.deadline {
        spec.deadline = deadline;
    }
    // The tool host has no pooling reservation, so no max_memory_limit.
    let host = HostConfig {
        pooling_allocator: false,
        ..HostConfig::default()
    };
    spec.validate(&host).map_err(|e| match e.split_once(": ") {
        Some((key, why)) => AuthoringError::Input(format!("--{}: {why}", key.replace('_', "-"))),
        None => AuthoringError::Input(e),
    })?;
    Ok(spec)
}

/// What `plugin check` found.
#[derive(Debug, Clone)]
pub struct CheckReport {
    /// The exported interface, e.g. `authgw:policy/policy@0.2.0`.
    pub interface: String,
    pub memory_limit: ByteSize,
    /// The linear memory of an instance once configured.
    pub start_memory: usize,
    /// Where an instance is retired (75 % of the limit).
    pub recycle_at: usize,
}

/// `plugin check`: compiles `file`, type-checks it against the world, then
/// instantiates it and calls `configure` with `config` (`{}` when None)
/// under `limits`, as the gateway does at load: a plugin that cannot start
/// under its limits, or refuses its config, fails the check.
pub fn check(
    file: &Path,
    config: Option<&Path>,
    limits: &ToolLimits,
) -> Result<CheckReport, AuthoringError> {
    readable(file)?;
    let spec = tool_spec(file, config, limits)?;
    let host = tool_host()?;
    let failed = |e: String| AuthoringError::Failed(format!("{}: {e}", file.display()));
    let component = host.compile(file).map_err(AuthoringError::Failed)?;
    let (_, version) = host.check(&component).map_err(failed)?;
    let interface = format!("{}@{version}", super::bindings::POLICY_EXPORT);
    let memory_limit = spec.memory_limit;
    let set = host
        .load(&[spec], Path::new("."))
        .map_err(|e| AuthoringError::Failed(e.to_string()))?;
    let plugin = set
        .iter()
        .next()
        .ok_or_else(|| AuthoringError::Failed("the plugin did not load".into()))?;
    Ok(CheckReport {
        interface,
        memory_limit,
        start_memory: plugin.start_memory(),
        recycle_at: plugin.recycle_at(),
    })
}

/// A cases file: `[[case]]` tables.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CasesFile {
    case: Vec<Case>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    #[serde(default = "default_method")]
    method: String,
    path: String,
    query: Option<String>,
    host: Option<String>,
    #[serde(default = "default_route")]
    route: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    /// The subject of a verified TLS client certificate the request came
    /// with (`"CN=ops,O=cinema"`); absent: none.
    client_cert: Option<String>,
    /// Absent: an anonymous request.
    identity: Option<CaseIdentity>,
    expect: Expect,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseIdentity {
    #[serde(default = "default_user_id")]
    user_id: String,
    #[serde(default = "default_login")]
    login: String,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    is_admin: bool,
    #[serde(default = "default_session_id")]
    session_id: String,
    #[serde(default = "default_expires_at")]
    expires_at: i64,
    /// How the session authenticated (the token's `amr`): `["pwd"]` (a
    /// password login) unless given; `["pwd", "otp"]` after a TOTP code.
    #[serde(default = "default_amr")]
    amr: Vec<String>,
    /// When (the token's `auth_time`); 0: the token does not say.
    #[serde(default = "default_auth_time")]
    auth_time: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    decision: Expected,
    /// Deny only: the status.
    status: Option<u16>,
    /// Deny only: the reason, exactly.
    reason: Option<String>,
    /// Deny only: the problem `code` the client gets (`policy_denied` when
    /// the plugin gave none, or one that is not a valid code).
    code: Option<String>,
    /// Allow only: headers that must be set, with these values.
    #[serde(default)]
    set_headers: BTreeMap<String, String>,
    /// Allow only: headers that must be removed.
    #[serde(default)]
    remove_headers: Vec<String>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Expected {
    Allow,
    Deny,
}

fn default_method() -> String {
    "GET".into()
}
fn default_route() -> String {
    "test".into()
}
fn default_user_id() -> String {
    "00000000-0000-4000-8000-000000000001".into()
}
fn default_login() -> String {
    "tester".into()
}
fn default_session_id() -> String {
    "00000000-0000-4000-8000-000000000002".into()
}
fn default_expires_at() -> i64 {
    4_102_444_800 // 2100-01-01
}
fn default_amr() -> Vec<String> {
    vec!["pwd".into()]
}
fn default_auth_time() -> i64 {
    1_767_225_600 // 2026-01-01
}

/// How many cases passed and failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TestSummary {
    pub passed: usize,
    pub failed: usize,
}

/// `plugin test`: loads `file` with the JSON `config` (`{}` when None), runs
/// every case of `cases` (TOML), and writes one `pass`/`FAIL` line per case
/// and a closing `N passed, M failed` line to `out`.
pub fn test(
    file: &Path,
    config: Option<&Path>,
    cases: &Path,
    options: &TestOptions,
    out: &mut dyn Write,
) -> Result<TestSummary, AuthoringError> {
    readable(file)?;
    let spec = tool_spec(file, config, &options.limits)?;
    let cases = read_cases(cases)?;
    let host = tool_host()?;
    let set = host
        .load(&[spec], Path::new("."))
        .map_err(|e| AuthoringError::Failed(e.to_string()))?;
    let plugins: Vec<Arc<_>> = set.iter().cloned().collect();
    // What the gateway would pass this plugin, and no more.
    let needs = chain_needs(&plugins);
    let mut summary = TestSummary {
        passed: 0,
        failed: 0,
    };
    let io = |e: std::io::Error| AuthoringError::Failed(format!("cannot write the report: {e}"));
    let repeat = options.repeat.max(1);
    let mut all = Vec::with_capacity(cases.len() * repeat);
    for case in &cases {
        let (request, identity) = case.inputs(&needs);
        let mut times = Vec::with_capacity(repeat);
        let mut verdict = Ok(());
        for _ in 0..repeat {
            let started = Instant::now();
            let result = run_chain(&plugins, &request, identity.as_ref());
            times.push(started.elapsed());
            verdict = match result {
                Ok(decision) => case.expect.compare(&decision),
                Err(failure) => Err(failure.to_string()),
            };
            if verdict.is_err() {
                break;
            }
        }
        let timing = timing(&mut times);
        all.extend(times);
        match verdict {
            Ok(()) => {
                summary.passed += 1;
                writeln!(out, "pass: {} ({timing})", case.name).map_err(io)?;
            }
            Err(why) => {
                summary.failed += 1;
                writeln!(out, "FAIL: {}: {why}", case.name).map_err(io)?;
            }
        }
    }
    writeln!(
        out,
        "call time over {} calls: {}",
        all.len(),
        timing(&mut all)
    )
    .map_err(io)?;
    writeln!(out, "{} passed, {} failed", summary.passed, summary.failed).map_err(io)?;
    Ok(summary)
}

/// `--memory-limit`, `--deadline` and `--repeat` of `plugin test`.
#[derive(clap::Args, Debug, Clone)]
pub struct TestOptions {
    #[command(flatten)]
    pub limits: ToolLimits,
    /// Run each case this many times; the report gives the median and p99
    /// call time
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub repeat: usize,
}

impl Default for TestOptions {
    fn default() -> Self {
        TestOptions {
            limits: ToolLimits::default(),
            repeat: 1,
        }
    }
}

/// "median 2.1 µs, p99 3.4 µs" of `times` (sorted in place).
fn timing(times: &mut [Duration]) -> String {
    times.sort_unstable();
    let at = |q: f64| {
        let i = ((times.len() as f64 * q).ceil() as usize).clamp(1, times.len().max(1)) - 1;
        times.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e6)
    };
    format!("median {:.1} µs, p99 {:.1} µs", at(0.5), at(0.99))
}

fn read_config(path: &Path) -> Result<serde_json::Value, AuthoringError> {
    let raw = std::fs::read_to_string(path)
        .map_err(|e| AuthoringError::Input(format!("cannot read {}: {e}", path.display())))?;
    serde_json::from_str(&raw)
        .map_err(|e| AuthoringError::Input(format!("{}: invalid JSON: {e}", path.display())))
}

fn read_cases(path: &Path) -> Result<Vec<Case>, AuthoringError> {
    let origin = path.display();
    let raw = std::fs::read_to_string(path)
        .map_err(|e| AuthoringError::Input(format!("cannot read {origin}: {e}")))?;
    let de = toml::Deserializer::parse(&raw)
        .map_err(|e| AuthoringError::Input(format!("{origin}: {}", e.message().trim())))?;
    let file: CasesFile = serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        AuthoringError::Input(format!("{origin}: {key}: {}", e.inner().message().trim()))
    })?;
    for (i, case) in file.case.iter().enumerate() {
        case.expect
            .validate()
            .map_err(|e| AuthoringError::Input(format!("{origin}: case[{i}].expect: {e}")))?;
    }
    Ok(file.case)
}

impl Case {
    fn inputs(&self, needs: &Needs) -> (Request, Option<Identity>) {
        let method = self.method.to_ascii_uppercase();
        let parts = RequestParts {
            method: &method,
            path: &self.path,
            query: self.query.as_deref(),
            host: self.host.as_deref(),
            route: &self.route,
            client_cert: self.client_cert.as_deref(),
        };
        let headers = self
            .headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()));
        let request = needs.request(parts, headers);
        let identity = self.identity.as_ref().map(|id| {
            needs.identity(CallerParts {
                user_id: &id.user_id,
                login: &id.login,
                session_id: &id.session_id,
                roles: &id.roles,
                is_admin: id.is_admin,
                expires_at: id.expires_at,
                amr: &id.amr,
                auth_time: (id.auth_time > 0).then_some(id.auth_time),
            })
        });
        (request, identity)
    }
}

impl Expect {
    fn validate(&self) -> Result<(), String> {
        let allow_keys = !self.set_headers.is_empty() || !self.remove_headers.is_empty();
        let deny_keys = self.status.is_some() || self.reason.is_some() || self.code.is_some();
        match self.decision {
            Expected::Allow if deny_keys => {
                Err("status/reason/code only go with decision = \"deny\"".into())
            }
            Expected::Deny if allow_keys => {
                Err("set_headers/remove_headers only go with decision = \"allow\"".into())
            }
            _ => Ok(()),
        }
    }

    /// Ok when `got` meets the expectation, else what differs.
    fn compare(&self, got: &Decision) -> Result<(), String> {
        match (self.decision, got) {
            (
                Expected::Allow,
                Decision::Allow {
                    set_headers,
                    remove_headers,
                },
            ) => {
                for (name, want) in &self.set_headers {
                    let name = name.to_ascii_lowercase();
                    match set_headers.iter().find(|(n, _)| *n == name) {
                        Some((_, value)) if value == want => {}
                        Some((_, value)) => {
                            return Err(format!("header {name}: expected {want:?}, got {value:?}"));
                        }
                        None => return Err(format!("header {name}: expected {want:?}, not set")),
                    }
                }
                for name in &self.remove_headers {
                    let name = name.to_ascii_lowercase();
                    if !remove_headers.contains(&name) {
                        return Err(format!("header {name}: expected removed, was not"));
                    }
                }
                Ok(())
            }
            (
                Expected::Deny,
                Decision::Deny {
                    status,
                    reason,
                    code,
                },
            ) => {
                if self.status.is_some_and(|want| want != *status) {
                    return Err(format!(
                        "expected deny {}, got deny {status} ({reason})",
                        self.status.unwrap_or_default()
                    ));
                }
                if let Some(want) = &self.reason
                    && want != reason
                {
                    return Err(format!("expected reason {want:?}, got {reason:?}"));
                }
                let code = code.as_deref().unwrap_or("policy_denied");
                match &self.code {
                    Some(want) if want != code => {
                        Err(format!("expected code {want:?}, got {code:?}"))
                    }
                    _ => Ok(()),
                }
            }
            (Expected::Allow, Decision::Deny { status, reason, .. }) => {
                Err(format!("expected allow, got deny {status} ({reason})"))
            }
            (Expected::Deny, Decision::Allow { .. }) => Err("expected deny, got allow".into()),
        }
    }
}

/// `authgw plugin ...`
#[derive(clap::Subcommand, Debug)]
pub enum PluginCommand {
    /// Load a plugin, type-check it against the authgw:policy world,
    /// instantiate and configure it under its limits, and print the interface
    /// version it exports and the memory it starts with.
    Check {
        /// The component (.wasm, built for wasm32-wasip2).
        file: std::path::PathBuf,
        /// The plugin's config, JSON, handed to `configure` [default: {}]
        #[arg(long, value_name = "FILE")]
        config: Option<std::path::PathBuf>,
        #[command(flatten)]
        limits: ToolLimits,
    },
    /// Compile a plugin into the compiled-code cache, so that the gateway's
    /// next start or reload with it does not compile it again.
    Compile {
        /// The component (.wasm).
        file: std::path::PathBuf,
        /// The cache, as `plugin_host.cache_dir` in gateway.toml
        #[arg(long, value_name = "DIR", default_value = ".cache/plugins")]
        cache_dir: std::path::PathBuf,
    },
    /// Run the plugin's `decide` on the cases of a TOML file and compare the
    /// decisions with the expected ones (see docs/plugins.md).
    Test {
        /// The component (.wasm).
        file: std::path::PathBuf,
        /// The plugin's config, JSON [default: {}]
        #[arg(long, value_name = "FILE")]
        config: Option<std::path::PathBuf>,
        /// The cases, TOML (`[[case]]` tables).
        #[arg(long, value_name = "FILE")]
        cases: std::path::PathBuf,
        #[command(flatten)]
        options: TestOptions,
    },
}

/// Runs a `plugin` subcommand, printing its report on stdout.
pub fn run(cmd: &PluginCommand) -> Result<(), AuthoringError> {
    match cmd {
        PluginCommand::Check {
            file,
            config,
            limits,
        } => {
            let report = check(file, config.as_deref(), limits)?;
            println!("ok: {} exports {}", file.display(), report.interface);
            println!(
                "configured under memory_limit {}: starts with {} of linear memory (instances are retired at {})",
                report.memory_limit,
                ByteSize(report.start_memory as u64),
                ByteSize(report.recycle_at as u64)
            );
            Ok(())
        }
        PluginCommand::Compile { file, cache_dir } => {
            let cached = compile(file, cache_dir)?;
            let how = if cached {
                "already in the cache"
            } else {
                "compiled into the cache"
            };
            println!("ok: {} {how} at {}", file.display(), cache_dir.display());
            Ok(())
        }
        PluginCommand::Test {
            file,
            config,
            cases,
            options,
        } => {
            let summary = test(
                file,
                config.as_deref(),
                cases,
                options,
                &mut std::io::stdout().lock(),
            )?;
            if summary.failed > 0 {
                return Err(AuthoringError::Failed(format!(
                    "{} of {} cases failed",
                    summary.failed,
                    summary.failed + summary.passed
                )));
            }
            Ok(())
        }
    }
}
