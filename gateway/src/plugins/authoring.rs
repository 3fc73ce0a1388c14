//! Tools for plugin authors behind `authgw plugin check` and
//! `authgw plugin test`: load a component the way the gateway does, report
//! its interface version, and run `decide` on a table of cases.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;

use super::bindings::{Identity, Request};
use super::chain::{Decision, chain_needs, run_chain};
use super::host::PluginHost;
use super::needs::{CallerParts, Needs, RequestParts};
use super::spec::{HostConfig, PluginSpec};

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

/// One host for a one-shot tool: no pooling reservations needed.
fn tool_host() -> Result<PluginHost, AuthoringError> {
    let config = HostConfig {
        pooling_allocator: false,
        ..HostConfig::default()
    };
    PluginHost::new(&config).map_err(|e| AuthoringError::Failed(e.to_string()))
}

fn readable(file: &Path) -> Result<(), AuthoringError> {
    std::fs::metadata(file)
        .map(drop)
        .map_err(|e| AuthoringError::Input(format!("cannot read {}: {e}", file.display())))
}

/// `plugin check`: compiles `file` and type-checks it against the world;
/// returns the exported interface, e.g. `authgw:policy/policy@0.2.0`.
pub fn check(file: &Path) -> Result<String, AuthoringError> {
    readable(file)?;
    let host = tool_host()?;
    let failed = |e: String| AuthoringError::Failed(format!("{}: {e}", file.display()));
    let component = host.compile(file).map_err(AuthoringError::Failed)?;
    let (_, version) = host.check(&component).map_err(failed)?;
    Ok(format!("{}@{version}", super::bindings::POLICY_EXPORT))
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
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    decision: Expected,
    /// Deny only: the status.
    status: Option<u16>,
    /// Deny only: the reason, exactly.
    reason: Option<String>,
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
    out: &mut dyn Write,
) -> Result<TestSummary, AuthoringError> {
    readable(file)?;
    let config = match config {
        Some(path) => read_config(path)?,
        None => serde_json::Value::Null,
    };
    let cases = read_cases(cases)?;
    let host = tool_host()?;
    let mut spec = PluginSpec::new("under-test", file);
    spec.config = config;
    spec.instances = 1;
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
    for case in &cases {
        let (request, identity) = case.inputs(&needs);
        let verdict = match run_chain(&plugins, &request, identity.as_ref()) {
            Ok(decision) => case.expect.compare(&decision),
            Err(failure) => Err(failure.to_string()),
        };
        match verdict {
            Ok(()) => {
                summary.passed += 1;
                writeln!(out, "pass: {}", case.name).map_err(io)?;
            }
            Err(why) => {
                summary.failed += 1;
                writeln!(out, "FAIL: {}: {why}", case.name).map_err(io)?;
            }
        }
    }
    writeln!(out, "{} passed, {} failed", summary.passed, summary.failed).map_err(io)?;
    Ok(summary)
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
            })
        });
        (request, identity)
    }
}

impl Expect {
    fn validate(&self) -> Result<(), String> {
        let allow_keys = !self.set_headers.is_empty() || !self.remove_headers.is_empty();
        let deny_keys = self.status.is_some() || self.reason.is_some();
        match self.decision {
            Expected::Allow if deny_keys => {
                Err("status/reason only go with decision = \"deny\"".into())
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
            (Expected::Deny, Decision::Deny { status, reason }) => {
                if self.status.is_some_and(|want| want != *status) {
                    return Err(format!(
                        "expected deny {}, got deny {status} ({reason})",
                        self.status.unwrap_or_default()
                    ));
                }
                match &self.reason {
                    Some(want) if want != reason => {
                        Err(format!("expected reason {want:?}, got {reason:?}"))
                    }
                    _ => Ok(()),
                }
            }
            (Expected::Allow, Decision::Deny { status, reason }) => {
                Err(format!("expected allow, got deny {status} ({reason})"))
            }
            (Expected::Deny, Decision::Allow { .. }) => Err("expected deny, got allow".into()),
        }
    }
}

/// `authgw plugin ...`
#[derive(clap::Subcommand, Debug)]
pub enum PluginCommand {
    /// Load a plugin, type-check it against the authgw:policy world and print
    /// the interface version it exports.
    Check {
        /// The component (.wasm, built for wasm32-wasip2).
        file: std::path::PathBuf,
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
    },
}

/// Runs a `plugin` subcommand, printing its report on stdout.
pub fn run(cmd: &PluginCommand) -> Result<(), AuthoringError> {
    match cmd {
        PluginCommand::Check { file } => {
            let interface = check(file)?;
            println!("ok: {} exports {interface}", file.display());
            Ok(())
        }
        PluginCommand::Test {
            file,
            config,
            cases,
        } => {
            let summary = test(
                file,
                config.as_deref(),
                cases,
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
