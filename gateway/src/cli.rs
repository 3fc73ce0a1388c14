//! The `authgw` command line. Exit codes: 0 ok, 1 runtime error, 2 usage or
//! config error; every error is one line on stderr, `error: ...`.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::config::{Config, ConfigError, LogFormat, SigningAlgorithm};
use crate::error::Error;
use crate::store::{self, migrations, roles, users};
use crate::{admin, passwords, secrets, tokens};

mod email;
mod mfa;

#[derive(Parser)]
#[command(
    name = "authgw",
    version,
    about = "Edge authentication gateway: Auth API, edge proxy and admin CLI"
)]
struct Cli {
    /// Configuration file [default: gateway.toml]
    #[arg(long, global = true, env = "AUTHGW_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP server until SIGTERM/SIGINT (SIGHUP reloads).
    Serve,
    /// Ask the running server to reload routes, plugins and keys (POST
    /// /reload on its admin listener, `admin.listen`).
    Reload,
    /// Schema migrations.
    #[command(subcommand)]
    Db(DbCommand),
    /// Administrators (the only way one comes to exist).
    #[command(subcommand)]
    Admin(AdminCommand),
    /// JWT signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Roles and grants.
    #[command(subcommand)]
    Roles(RolesCommand),
    /// Users.
    #[command(subcommand)]
    Users(UsersCommand),
    /// WebAssembly policy plugins: check and test them (no config needed).
    #[command(subcommand)]
    Plugin(crate::plugins::authoring::PluginCommand),
    /// Secrets of the clients allowed to call token introspection (no
    /// config needed).
    #[command(subcommand)]
    Introspection(IntrospectionCommand),
    /// Account mail: test the transport, list the outbox, requeue failures.
    #[command(subcommand)]
    Email(email::EmailCommand),
    /// Second factors: remove a user's lost one.
    #[command(subcommand)]
    Mfa(mfa::MfaCommand),
}

#[derive(Subcommand)]
enum IntrospectionCommand {
    /// Make a client secret: prints the secret (give it to the client) and
    /// then its SHA-256 (put it in `secret_sha256`), one per line.
    NewSecret,
    /// Print the SHA-256 of the secret read from standard input (one line).
    HashSecret,
}

#[derive(Subcommand)]
enum DbCommand {
    /// Apply pending migrations.
    Upgrade,
    /// List migrations, applied and pending, one per line.
    Status,
    /// Write the next numbered, empty migration file and print its path.
    New {
        /// Name of the migration ([a-z0-9_]).
        name: String,
        /// Migrations directory.
        #[arg(long, default_value = "migrations")]
        dir: PathBuf,
    },
}

#[derive(Args)]
struct PasswordSource {
    /// Read the password from standard input (one line) instead of prompting.
    #[arg(long)]
    password_stdin: bool,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create an administrator.
    Create {
        #[arg(long)]
        login: String,
        #[arg(long)]
        email: Option<String>,
        #[command(flatten)]
        password: PasswordSource,
    },
    /// List administrators: login, id, created_at (tab-separated).
    List,
    /// Set an administrator's password (ends its sessions).
    SetPassword {
        #[arg(long)]
        login: String,
        #[command(flatten)]
        password: PasswordSource,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Write a new signing key (it signs from the next start or reload) or a
    /// new server secret (it derives refresh successors from then on) into
    /// the keys directory. A signing key into a directory with no secret yet
    /// brings a secret too.
    Generate {
        /// What to generate
        #[arg(long, value_enum, default_value_t = KeyKind::Signing)]
        kind: KeyKind,
        /// Algorithm of a signing key [default: tokens.algorithm]
        #[arg(long, value_enum)]
        alg: Option<SigningAlgorithm>,
    },
    /// List keys and secrets: id, algorithm, file, and which one is in use
    /// (signing / deriving) or kept for the past (verify-only / re-derive).
    List,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum KeyKind {
    /// A JWT signing key (PKCS#8 PEM).
    Signing,
    /// A 32-byte HMAC secret (refresh successors, and the AES-256-GCM key
    /// that seals TOTP secrets at rest).
    Secret,
}

#[derive(Subcommand)]
enum RolesCommand {
    /// List roles: name and description (tab-separated).
    List,
    /// Create a role.
    Create {
        name: String,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Delete a role (it is removed from every user).
    Delete { name: String },
    /// Grant a role to a user.
    Grant {
        #[arg(long)]
        login: String,
        #[arg(long)]
        role: String,
    },
    /// Take a role from a user.
    Revoke {
        #[arg(long)]
        login: String,
        #[arg(long)]
        role: String,
    },
}

#[derive(Subcommand)]
enum UsersCommand {
    /// List users, tab-separated: login, id, `admin` or `user`, roles,
    /// `mfa=on|off`, `email=verified|unverified|none`.
    List {
        #[arg(long)]
        role: Option<String>,
        #[arg(long)]
        login_prefix: Option<String>,
    },
    /// A user's linked identities (social login), tab-separated: provider,
    /// subject, email.
    Identities {
        #[arg(long)]
        login: String,
    },
    /// Unlink a user's identity at a provider (audited); refused when it is
    /// the account's last way in.
    Unlink {
        #[arg(long)]
        login: String,
        #[arg(long)]
        provider: String,
    },
}

/// Why the CLI failed, which decides the exit code.
enum Failure {
    Usage(String),
    Config(ConfigError),
    Runtime(Error),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        match e {
            Error::Invalid { .. } => Failure::Usage(e.to_string()),
            e => Failure::Runtime(e),
        }
    }
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(msg)) => {
            eprintln!("error: {msg}");
            ExitCode::from(2)
        }
        Err(Failure::Config(e)) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
        Err(Failure::Runtime(e)) => {
            eprintln!("error: {}", runtime_message(&e));
            ExitCode::from(1)
        }
    }
}

fn runtime_message(e: &Error) -> String {
    match e {
        Error::Internal(detail) | Error::Unavailable(detail) => detail.clone(),
        other => other.to_string(),
    }
}

fn load_config(path: Option<PathBuf>) -> Result<Config, Failure> {
    let required = path.is_some();
    let path = path.unwrap_or_else(|| PathBuf::from("gateway.toml"));
    Config::load(&path, required).map_err(Failure::Config)
}

fn run(cli: Cli) -> Result<(), Failure> {
    if let Command::Plugin(cmd) = &cli.command {
        return plugin_cmd(cmd);
    }
    if let Command::Introspection(cmd) = &cli.command {
        return introspection_cmd(cmd);
    }
    let config = load_config(cli.config)?;
    match cli.command {
        Command::Serve => serve(config),
        Command::Reload => reload(&config),
        Command::Db(cmd) => db(&config, cmd),
        Command::Admin(cmd) => admin_cmd(&config, cmd),
        Command::Keys(cmd) => keys(&config, cmd),
        Command::Roles(cmd) => roles_cmd(&config, cmd),
        Command::Users(cmd) => users_cmd(&config, cmd),
        Command::Plugin(cmd) => plugin_cmd(&cmd),
        Command::Introspection(cmd) => introspection_cmd(&cmd),
        Command::Email(cmd) => email::run(&config, cmd),
        Command::Mfa(cmd) => mfa::run(&config, cmd),
    }
}

fn introspection_cmd(cmd: &IntrospectionCommand) -> Result<(), Failure> {
    use crate::introspection::{hash_secret, new_secret};
    match cmd {
        IntrospectionCommand::NewSecret => {
            let secret = new_secret()?;
            println!("{secret}\n{}", hash_secret(&secret));
        }
        IntrospectionCommand::HashSecret => {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .map_err(|e| Failure::Usage(format!("cannot read the secret: {e}")))?;
            let secret = line.trim_end_matches(['\r', '\n']);
            if secret.is_empty() {
                return Err(Failure::Usage("no secret on standard input".into()));
            }
            println!("{}", hash_secret(secret));
        }
    }
    Ok(())
}

fn serve(config: Config) -> Result<(), Failure> {
    // Whatever the level, the database driver stays at info: at debug it
    // logs every statement's parameters (password hashes, token hashes, the
    // bodies of queued mail with their links).
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log.level)
        .map_err(|e| Failure::Usage(format!("log.level: {e}")))?
        .add_directive(
            "tokio_postgres=info"
                .parse()
                .map_err(|e| Failure::Usage(format!("log.level: {e}")))?,
        );
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stdout().is_terminal());
    match config.log.format {
        LogFormat::Json => logs.json().flatten_event(true).init(),
        LogFormat::Text => logs.with_target(false).init(),
    }
    let runtime = crate::server::runtime(config.server.runtime)
        .map_err(|e| Failure::Runtime(Error::internal(e)))?;
    runtime.block_on(async move {
        let listen = config.server.listen;
        let admin = config.admin.enabled.then_some(config.admin.listen);
        let plain = config.server.tls.as_ref().and_then(|t| t.http_listen);
        let reusable = crate::cores::extra_workers(config.server.runtime) > 0;
        let gateway = crate::server::Gateway::build(config)?;
        let listener = crate::listener::bind_with(listen, reusable)
            .map_err(|e| Error::Internal(format!("cannot listen on {listen}: {e}")))?;
        let bound = listener.local_addr().map_err(Error::internal)?;
        let admin = match admin {
            Some(addr) => Some(crate::listener::bind(addr).map_err(|e| {
                Error::Internal(format!("cannot listen on {addr} (admin.listen): {e}"))
            })?),
            None => None,
        };
        let plain = match plain {
            Some(addr) => Some(crate::listener::bind(addr).map_err(|e| {
                Error::Internal(format!(
                    "cannot listen on {addr} (server.tls.http_listen): {e}"
                ))
            })?),
            None => None,
        };
        if let Some(a) = admin.as_ref().and_then(|l| l.local_addr().ok()) {
            tracing::info!(listen = %bound, admin = %a, routes = gateway.state().proxy.routes(), "authgw listening");
        } else {
            tracing::info!(listen = %bound, routes = gateway.state().proxy.routes(), "authgw listening");
        }
        let listeners = crate::server::Listeners {
            main: listener,
            admin,
            plain,
        };
        gateway
            .serve_listeners(listeners, crate::server::shutdown_signal())
            .await
            .map_err(Error::internal)?;
        tracing::info!("stopped");
        Ok::<(), Failure>(())
    })
}

/// POSTs /reload to the admin listener and prints the server's answer.
fn reload(config: &Config) -> Result<(), Failure> {
    use std::io::{Read, Write};
    if !config.admin.enabled {
        return Err(Failure::Usage(
            "admin.enabled is false: send SIGHUP to the server instead".into(),
        ));
    }
    if config.admin.tls {
        return Err(Failure::Usage(
            "admin.tls is on and this command speaks plain HTTP: send SIGHUP to the server, \
             or POST /reload with curl --cacert"
                .into(),
        ));
    }
    let addr = config.admin.listen;
    let unreachable = |e: std::io::Error| {
        Failure::Runtime(Error::Unavailable(format!(
            "no authgw admin listener at {addr} (admin.listen): {e}"
        )))
    };
    let mut stream = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(5))
        .map_err(unreachable)?;
    // Plugins are compiled during a reload: allow it time.
    let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(120)));
    write!(
        stream,
        "POST /reload HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .map_err(unreachable)?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply).map_err(unreachable)?;
    let (head, body) = reply.split_once("\r\n\r\n").unwrap_or((&reply, ""));
    let ok = head.starts_with("HTTP/1.1 200");
    if ok {
        println!("{}", body.trim());
        return Ok(());
    }
    let detail = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("detail").and_then(|d| d.as_str()).map(str::to_string))
        .unwrap_or_else(|| head.lines().next().unwrap_or("no answer").to_string());
    Err(Failure::Runtime(Error::Internal(format!(
        "reload refused, the previous config keeps serving: {detail}"
    ))))
}

fn connect(config: &Config) -> Result<postgres::Client, Failure> {
    Ok(store::connect(
        &config.database.url,
        config.database.connect_timeout,
    )?)
}

fn db(config: &Config, cmd: DbCommand) -> Result<(), Failure> {
    match cmd {
        DbCommand::Upgrade => {
            let applied = migrations::upgrade(&mut connect(config)?)?;
            if applied.is_empty() {
                println!("schema is up to date");
            }
            for m in applied {
                println!("applied V{}__{}", m.version, m.name);
            }
        }
        DbCommand::Status => {
            for m in migrations::status(&mut connect(config)?)? {
                let state = if m.applied { "applied" } else { "pending" };
                println!("V{}__{}\t{state}", m.version, m.name);
            }
        }
        DbCommand::New { name, dir } => {
            println!("{}", migrations::new_file(&dir, &name)?.display());
        }
    }
    Ok(())
}

/// `cli:<os user>`, the audit actor of every CLI action.
fn actor() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(|| {
            let out = std::process::Command::new("id").arg("-un").output().ok()?;
            let name = String::from_utf8(out.stdout).ok()?.trim().to_string();
            (out.status.success() && !name.is_empty()).then_some(name)
        })
        .unwrap_or_else(|| "unknown".into());
    format!("cli:{user}")
}

/// Reads a new password from stdin or an interactive prompt (asked twice,
/// not echoed), never from argv or the environment, and validates it.
fn new_password(source: &PasswordSource, login: &str) -> Result<String, Failure> {
    let password = if source.password_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| Failure::Usage(format!("cannot read the password from stdin: {e}")))?;
        line.trim_end_matches(['\n', '\r']).to_string()
    } else {
        if !std::io::stdin().is_terminal() {
            return Err(Failure::Usage(
                "no terminal to prompt for a password; pass --password-stdin".into(),
            ));
        }
        let first = rpassword::prompt_password("New password: ")
            .map_err(|e| Failure::Usage(format!("cannot read the password: {e}")))?;
        let second = rpassword::prompt_password("Repeat password: ")
            .map_err(|e| Failure::Usage(format!("cannot read the password: {e}")))?;
        if first != second {
            return Err(Failure::Usage("the passwords do not match".into()));
        }
        first
    };
    if password.is_empty() {
        return Err(Failure::Usage("the password is empty".into()));
    }
    passwords::validate_new("password", &password, login)?;
    Ok(password)
}

fn admin_cmd(config: &Config, cmd: AdminCommand) -> Result<(), Failure> {
    match cmd {
        AdminCommand::Create {
            login,
            email,
            password,
        } => {
            crate::auth::validate_login(&login)?;
            crate::auth::validate_email(email.as_deref())?;
            let password = new_password(&password, &login)?;
            let mut client = connect(config)?;
            let hash = passwords::hash(&config.passwords, &password)?;
            let user = admin::create_admin(&mut client, &actor(), &login, email.as_deref(), &hash)?;
            println!("created administrator '{}' ({})", user.login, user.id);
        }
        AdminCommand::List => {
            let filter = users::UserFilter {
                admins_only: true,
                limit: 100,
                ..Default::default()
            };
            for u in list_all(&mut connect(config)?, filter)? {
                println!("{}\t{}\t{}", u.login, u.id, u.created_at.to_rfc3339());
            }
        }
        AdminCommand::SetPassword { login, password } => {
            let password = new_password(&password, &login)?;
            let mut client = connect(config)?;
            let hash = passwords::hash(&config.passwords, &password)?;
            let lifetime = config.tokens.access_ttl + config.tokens.clock_skew;
            admin::set_admin_password(&mut client, &actor(), &login, &hash, lifetime)?;
            println!("password of '{login}' changed; its sessions have ended");
        }
    }
    Ok(())
}

fn list_all(
    client: &mut postgres::Client,
    mut filter: users::UserFilter,
) -> Result<Vec<users::User>, Failure> {
    let mut all = Vec::new();
    loop {
        let page = users::list(client, &filter)?;
        all.extend(page.items);
        match page.next_cursor {
            Some(c) => filter.cursor = Some(c),
            None => return Ok(all),
        }
    }
}

fn keys(config: &Config, cmd: KeysCommand) -> Result<(), Failure> {
    tokens::install_crypto_provider();
    let dir = &config.tokens.keys_dir;
    match cmd {
        KeysCommand::Generate {
            kind: KeyKind::Secret,
            alg: Some(_),
        } => {
            return Err(Failure::Usage(
                "--alg applies to signing keys, not to --kind secret".into(),
            ));
        }
        KeysCommand::Generate {
            kind: KeyKind::Secret,
            alg: None,
        } => {
            let path = secrets::generate(dir)?;
            let ring = secrets::SecretRing::load(dir)?;
            println!("{}\t{}", ring.current().kid(), path.display());
        }
        KeysCommand::Generate {
            kind: KeyKind::Signing,
            alg,
        } => {
            let had_secret = secrets::any_in(dir);
            let path = tokens::generate_key(dir, alg.unwrap_or(config.tokens.algorithm))?;
            let ring = tokens::Keyring::load(dir)?;
            println!("{}\t{}", ring.signing_kid(), path.display());
            if !had_secret {
                let secret = ring.secrets().current();
                println!("{}\t{}", secret.kid(), secret.path().display());
            }
        }
        KeysCommand::List => {
            let ring = match tokens::Keyring::load(dir) {
                Ok(ring) => ring,
                Err(e) if e.to_string().contains("no signing key") => return Ok(()),
                Err(e) => return Err(e.into()),
            };
            for k in ring.keys() {
                let role = if k.kid == ring.signing_kid() {
                    "signing"
                } else {
                    "verify-only"
                };
                println!("{}\t{}\t{}\t{role}", k.kid, k.alg.name(), k.path.display());
            }
            let current = ring.secrets().current().kid();
            for s in ring.secrets().all() {
                let role = if s.kid() == current {
                    "deriving"
                } else {
                    "re-derive"
                };
                println!("{}\tHMAC-SHA256\t{}\t{role}", s.kid(), s.path().display());
            }
        }
    }
    Ok(())
}

fn roles_cmd(config: &Config, cmd: RolesCommand) -> Result<(), Failure> {
    let mut client = connect(config)?;
    let actor = actor();
    match cmd {
        RolesCommand::List => {
            for r in roles::list(&mut client)? {
                println!("{}\t{}", r.name, r.description);
            }
        }
        RolesCommand::Create { name, description } => {
            roles::validate_name(&name)?;
            admin::create_role(&mut client, &actor, &name, &description)?;
            println!("created role '{name}'");
        }
        RolesCommand::Delete { name } => {
            admin::delete_role(&mut client, &actor, &name)?;
            println!("deleted role '{name}'");
        }
        RolesCommand::Grant { login, role } => {
            let user = admin::require_login(&mut client, &login)?;
            admin::set_role(&mut client, &actor, &user, &role, true)?;
            println!("granted '{role}' to '{}'", user.login);
        }
        RolesCommand::Revoke { login, role } => {
            let user = admin::require_login(&mut client, &login)?;
            admin::set_role(&mut client, &actor, &user, &role, false)?;
            println!("revoked '{role}' from '{}'", user.login);
        }
    }
    Ok(())
}

fn users_cmd(config: &Config, cmd: UsersCommand) -> Result<(), Failure> {
    let (role, login_prefix) = match cmd {
        UsersCommand::List { role, login_prefix } => (role, login_prefix),
        UsersCommand::Identities { login } => {
            let mut client = connect(config)?;
            let user = admin::require_login(&mut client, &login)?;
            for i in crate::store::identities::list(&mut client, user.id)? {
                println!(
                    "{}\t{}\t{}",
                    i.provider,
                    i.subject,
                    i.email.unwrap_or_default()
                );
            }
            return Ok(());
        }
        UsersCommand::Unlink { login, provider } => {
            let mut client = connect(config)?;
            let user = admin::require_login(&mut client, &login)?;
            admin::unlink_identity(&mut client, &actor(), user.id, &provider)?;
            println!("unlinked '{provider}' from '{}'", user.login);
            return Ok(());
        }
    };
    let filter = users::UserFilter {
        role,
        login_prefix,
        limit: 100,
        ..Default::default()
    };
    for u in list_all(&mut connect(config)?, filter)? {
        let kind = if u.is_admin { "admin" } else { "user" };
        let mfa = if u.mfa_enabled { "on" } else { "off" };
        let email = match (&u.email, u.email_verified) {
            (None, _) => "none",
            (Some(_), true) => "verified",
            (Some(_), false) => "unverified",
        };
        println!(
            "{}\t{}\t{kind}\t{}\tmfa={mfa}\temail={email}",
            u.login,
            u.id,
            u.roles.join(",")
        );
    }
    Ok(())
}

fn plugin_cmd(cmd: &crate::plugins::authoring::PluginCommand) -> Result<(), Failure> {
    use crate::plugins::authoring::{AuthoringError, run};
    run(cmd).map_err(|e| match e {
        AuthoringError::Input(msg) => Failure::Usage(msg),
        AuthoringError::Failed(msg) => Failure::Runtime(Error::Internal(msg)),
    })
}
