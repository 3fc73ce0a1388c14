//! Assembling the gateway from its config and serving it. The server takes
//! its listener and a shutdown future, so tests start and stop it in-process.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;

use std::path::PathBuf;

use crate::api::{self, AppState};
use crate::auth::Auth;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::listener::{self, Settings};
use crate::metrics::{Metrics, Snapshot};
use crate::passwords::Hasher;
use crate::plugins::PluginHost;
use crate::proxy::{self, Proxy};
use crate::revocation::{self, RevocationSet};
use crate::store::{self, Db};
use crate::tls::server::Acceptor;
use crate::tokens::{Keyring, Tokens};

/// A gateway ready to serve: state built, revocation listener running.
pub struct Gateway {
    state: AppState,
    /// `[server.tls]`: the listener's TLS (and the admin listener's with
    /// `admin.tls`); reload swaps its certificates.
    tls: Option<Arc<Acceptor>>,
    /// The main listener's connections (open, parked), for `/metrics`.
    connections: Arc<listener::Stats>,
    stop: Arc<AtomicBool>,
    reloader: Arc<Reloader>,
    /// The mail transport, until serving starts its sender.
    mail_transport: std::sync::Mutex<Option<crate::mail::Transport>>,
}

impl Gateway {
    /// Loads keys and plugins, builds the routes and the pool (without
    /// requiring the database to be up) and starts the revocation listener.
    /// A plugin that fails to load or configure is an error naming it.
    pub fn build(config: Config) -> Result<Self> {
        let tls = match &config.server.tls {
            Some(tls) => Some(
                Acceptor::new(tls, &base_dir(&config))
                    .map_err(|e| Error::Internal(e.to_string()))?,
            ),
            None => None,
        };
        let keyring = Keyring::load(&config.tokens.keys_dir)?;
        let tokens = Tokens::with_cache(keyring, &config.tokens, config.proxy.token_cache_bytes);
        let db = Db::new(
            &config.database.url,
            config.database.pool_size,
            config.database.connect_timeout,
        )?;
        let hasher = Hasher::new(&config.passwords)?;
        let plugin_host =
            PluginHost::new(&config.plugin_host).map_err(|e| Error::Internal(e.to_string()))?;
        let runtime = proxy::Runtime::build(&config, &plugin_host, &base_dir(&config))
            .map_err(Error::Internal)?;
        let revocations = RevocationSet::new();
        let stop = Arc::new(AtomicBool::new(false));
        revocation::spawn_listener(
            revocation::ListenerSettings {
                url: config.database.url.clone(),
                connect_timeout: config.database.connect_timeout,
                max_staleness: config.revocation.max_staleness,
            },
            revocations.clone(),
            stop.clone(),
        )
        .map_err(Error::internal)?;
        if !config.auth.cookie_secure {
            tracing::warn!(
                "auth.cookie_secure = false: session cookies without Secure, for development on http://localhost only"
            );
        }
        let mail = crate::mail::Composer::new(&config.email, &base_dir(&config))
            .map_err(|e| Error::Internal(format!("email.templates_dir: {e}")))?;
        let mail_transport =
            crate::mail::Transport::from_config(&config.email, &base_dir(&config), |k| {
                std::env::var(k).ok()
            })
            .map_err(|e| Error::Internal(format!("{}: {}", e.key, e.reason)))?;
        let federation = Arc::new(crate::federation::Federation::new(&config)?);
        federation.spawn_discovery();
        let auth = Arc::new(Auth {
            config: Arc::new(config),
            db,
            hasher,
            tokens,
            revocations,
            mail: Arc::new(mail),
        });
        let metrics = Arc::new(Metrics::new());
        let proxy = Arc::new(Proxy::new(auth.clone(), runtime, metrics.clone()));
        let reloader = Arc::new(Reloader {
            source: auth.config.source.clone(),
            auth: auth.clone(),
            proxy: proxy.clone(),
            tls: tls.clone(),
            plugin_host,
            federation: federation.clone(),
            one_at_a_time: std::sync::Mutex::new(()),
        });
        Ok(Self {
            tls,
            state: AppState::new(auth, proxy, metrics, federation),
            connections: Arc::default(),
            stop,
            reloader,
            mail_transport: std::sync::Mutex::new(Some(mail_transport)),
        })
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Reloads routes, plugins and keys (see [`Reloader`]).
    pub fn reloader(&self) -> Arc<Reloader> {
        self.reloader.clone()
    }

    /// Serves on `listener` until `shutdown` resolves, then stops accepting
    /// and lets in-flight requests finish for at most `server.shutdown_timeout`.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        self.serve_with_admin(listener, None, shutdown).await
    }

    /// [`Gateway::serve`], plus the admin listener (`/metrics`, `POST
    /// /reload`) on `admin` when given, and SIGHUP reloading.
    pub async fn serve_with_admin(
        self,
        listener: TcpListener,
        admin: Option<TcpListener>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        self.serve_listeners(
            Listeners {
                main: listener,
                admin,
                plain: None,
            },
            shutdown,
        )
        .await
    }

    /// Serves every listener until `shutdown`: the main one (TLS with
    /// `[server.tls]`), the admin one, and the plain-HTTP one beside TLS
    /// (`server.tls.http_listen`: health and redirects only).
    pub async fn serve_listeners(
        self,
        listeners: Listeners,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let Listeners {
            main: listener,
            admin,
            plain,
        } = listeners;
        let config = self.state.auth.config.clone();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let app = api::router(self.state.clone())
            .layer(trace_layer())
            .layer(panic_layer());
        // The proxy's requests, the forward-auth calls and /check past the
        // router, behind the same two layers (api::proxy_shortcut).
        let state = Arc::new(self.state.clone());
        let shortcut = api::proxy_shortcut(&self.state, move |what, req| {
            let state = state.clone();
            let direct = tower::ServiceBuilder::new()
                .layer(panic_layer())
                .layer(trace_layer())
                .service_fn(move |req: axum::extract::Request| {
                    let state = state.clone();
                    async move {
                        Ok::<_, std::convert::Infallible>(match what {
                            api::Direct::Proxy => state.proxy.handle(req).await,
                            api::Direct::Decision(endpoint) => {
                                api::authz::answer(&state, endpoint, req)
                            }
                            api::Direct::Check => api::check((*state).clone(), req).await,
                            // Boxed: this arm's future holds the proxy's
                            // and the CORS layer's, and inline it would
                            // make every request's future the larger, to
                            // be moved (memcpy) as it is (9,000
                            // instructions a proxied request, callgrind).
                            api::Direct::Cors => match &state.cors {
                                Some(cors) => {
                                    let proxy = state.proxy.clone();
                                    Box::pin(crate::cors::proxied(cors, proxy, req)).await
                                }
                                None => state.proxy.handle(req).await,
                            },
                        })
                    }
                });
            let call = tower::ServiceExt::oneshot(direct, req);
            Box::pin(async move {
                match call.await {
                    Ok(response) => response.map(axum::body::Body::new),
                    Err(never) => match never {},
                }
            })
        });
        let housekeeping = tokio::spawn(housekeeping(self.state.auth.db.clone()));
        let transport = self.mail_transport.lock().map_or(None, |mut t| t.take());
        let mail_sender = transport.map(|transport| {
            tokio::spawn(
                crate::mail::sender::Sender {
                    db: self.state.auth.db.clone(),
                    transport,
                    config: config.email.clone(),
                    metrics: self.state.metrics.clone(),
                    bell: self.state.auth.mail.bell(),
                }
                .run(),
            )
        });
        let purger = tokio::spawn(api::purge_every(
            Arc::downgrade(&self.state.limiter),
            api::PURGE_EVERY,
        ));
        let hangups = tokio::spawn(reload_on_sighup(self.reloader.clone()));
        let admin_task = admin.map(|listener| {
            let router = admin_router(
                self.state.clone(),
                self.reloader.clone(),
                self.connections.clone(),
            );
            let mut rx = stop_rx.clone();
            let mut settings =
                Settings::new(&config.server, Duration::from_secs(1), Arc::default());
            if config.admin.tls {
                settings.tls = self.tls.clone();
            }
            tokio::spawn(listener::serve(
                listener,
                router,
                async move {
                    let _ = rx.wait_for(|stop| *stop).await;
                },
                settings,
            ))
        });
        let https_port = listener.local_addr()?.port();
        let plain_task = plain.map(|listener| {
            let redirect = config.server.tls.as_ref().is_none_or(|t| t.http_redirect);
            let router = api::plain_http::router(self.state.clone(), https_port, redirect);
            let mut rx = stop_rx.clone();
            tokio::spawn(listener::serve(
                listener,
                router,
                async move {
                    let _ = rx.wait_for(|stop| *stop).await;
                },
                Settings::new(&config.server, Duration::from_secs(1), Arc::default()),
            ))
        });
        let mut settings = Settings::new(
            &config.server,
            config.server.shutdown_timeout,
            self.connections.clone(),
        );
        settings.tls = self.tls.clone();
        settings.shortcut = Some(shortcut);
        // Thread-per-core: the other CPUs' workers, on sockets of their own.
        let (listener, sockets) =
            crate::cores::siblings(listener, crate::cores::extra_workers(config.server.runtime))?;
        let (tell_workers, workers_told) = tokio::sync::watch::channel(false);
        let workers = crate::cores::spawn(sockets, &app, &settings, &workers_told)?;
        // Told with the main listener's shutdown; should the main listener
        // return first (an error), this future and its sender are dropped,
        // which tells them too.
        let shutdown = async move {
            shutdown.await;
            let _ = tell_workers.send(true);
        };
        let result = listener::serve(listener, app, shutdown, settings).await;
        for worker in workers {
            if let Err(e) = worker.finished().await {
                tracing::error!(error = %e, "a worker's listener failed");
            }
        }
        let _ = stop_tx.send(true);
        for task in [admin_task, plain_task].into_iter().flatten() {
            let _ = task.await;
        }
        hangups.abort();
        housekeeping.abort();
        purger.abort();
        if let Some(sender) = mail_sender {
            sender.abort();
        }
        self.stop.store(true, Ordering::SeqCst);
        result
    }
}

/// The runtime `authgw serve` runs on (`server.runtime`). On one CPU the
/// current-thread scheduler does the same work as a one-worker
/// multi-thread one without its cross-thread machinery (measured in
/// docs/benchmarks.md, issue 18); the blocking pool (password hashing, the
/// database) is the same in both.
pub fn runtime(flavor: crate::config::RuntimeFlavor) -> std::io::Result<tokio::runtime::Runtime> {
    use crate::config::RuntimeFlavor;
    let cpus = crate::cores::cpus();
    let (current, scheduler) = match flavor {
        RuntimeFlavor::Auto if cpus == 1 => (true, "current-thread"),
        RuntimeFlavor::MultiThread => (false, "multi-thread"),
        RuntimeFlavor::CurrentThread => (true, "current-thread"),
        // The first worker; serve_listeners starts the others.
        RuntimeFlavor::Auto | RuntimeFlavor::ThreadPerCore => (true, "thread-per-core"),
    };
    tracing::info!(cpus, scheduler, "async runtime");
    if current {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Runtime::new()
    }
}

/// One span per request of the main listener, with its method and path
/// only: query strings may carry cursors; never bodies or headers.
fn request_span(req: &axum::http::Request<axum::body::Body>) -> tracing::Span {
    tracing::info_span!("request", method = %req.method(), path = %req.uri().path())
}

type RequestTrace = tower_http::trace::TraceLayer<
    tower_http::classify::SharedClassifier<tower_http::classify::ServerErrorsAsFailures>,
    fn(&axum::http::Request<axum::body::Body>) -> tracing::Span,
>;

/// The main listener's trace layer ([`request_span`]), for the router and
/// the proxy's shortcut alike.
fn trace_layer() -> RequestTrace {
    tower_http::trace::TraceLayer::new_for_http().make_span_with(request_span as _)
}

/// A handler that panics answers a 500 problem (router and shortcut alike).
fn panic_layer() -> tower_http::catch_panic::CatchPanicLayer<HandlerPanicked> {
    tower_http::catch_panic::CatchPanicLayer::custom(HandlerPanicked)
}

#[derive(Clone, Copy)]
struct HandlerPanicked;

impl tower_http::catch_panic::ResponseForPanic for HandlerPanicked {
    type ResponseBody = axum::body::Body;

    fn response_for_panic(
        &mut self,
        _: Box<dyn std::any::Any + Send + 'static>,
    ) -> axum::http::Response<Self::ResponseBody> {
        axum::response::IntoResponse::into_response(Error::Internal("handler panicked".into()))
    }
}

/// The sockets a gateway serves: the main listener, and optionally the
/// admin one and the plain-HTTP one beside TLS.
pub struct Listeners {
    pub main: TcpListener,
    pub admin: Option<TcpListener>,
    /// `server.tls.http_listen`: `/healthz`, `/readyz` and redirects.
    pub plain: Option<TcpListener>,
}

/// The directory relative plugin and TLS paths start from: the config file's.
fn base_dir(config: &Config) -> PathBuf {
    config.base_dir()
}

/// Reloads routes, plugins and keys from the config file, all or nothing:
/// everything new is built first, and only then swapped in. Requests in
/// flight finish with what they started with; an invalid config is refused
/// with a log line and the old one keeps serving. Listen addresses, the
/// database and password settings need a restart.
pub struct Reloader {
    source: Option<PathBuf>,
    auth: Arc<Auth>,
    proxy: Arc<Proxy>,
    tls: Option<Arc<Acceptor>>,
    plugin_host: PluginHost,
    federation: Arc<crate::federation::Federation>,
    one_at_a_time: std::sync::Mutex<()>,
}

impl Reloader {
    /// Reads the config file again and applies it. Blocking (plugins are
    /// compiled): call it off the async workers.
    pub fn reload(&self) -> std::result::Result<String, String> {
        let Some(path) = &self.source else {
            return Err("no config file to reload: the gateway was started without one".into());
        };
        let config = Config::load(path, true).map_err(|e| e.to_string())?;
        self.apply(&config)
    }

    /// Applies `config`'s routes, plugins and keys.
    pub fn apply(&self, config: &Config) -> std::result::Result<String, String> {
        let _guard = self.one_at_a_time.lock();
        let runtime = proxy::Runtime::build(config, &self.plugin_host, &base_dir(config))?;
        let keyring = Keyring::load(&config.tokens.keys_dir).map_err(|e| e.to_string())?;
        let tls = match (&self.tls, &config.server.tls) {
            (Some(acceptor), Some(tls)) => Some((
                acceptor,
                Acceptor::prepare(tls, &base_dir(config)).map_err(|e| e.to_string())?,
            )),
            (None, None) => None,
            (Some(_), None) | (None, Some(_)) => {
                return Err("[server.tls] added or removed: that needs a restart".into());
            }
        };
        let summary = format!(
            "reloaded: {} routes, {} plugins, {} keys{}",
            runtime.routes.len(),
            config.plugins.len(),
            keyring.keys().len(),
            if tls.is_some() {
                ", TLS certificates"
            } else {
                ""
            }
        );
        self.proxy.replace(runtime);
        self.auth.tokens.replace_keyring(keyring);
        // Providers' endpoints and keys are read again (in the background).
        self.federation.spawn_discovery();
        if let Some((acceptor, prepared)) = tls {
            acceptor.install(prepared);
        }
        Ok(summary)
    }

    /// [`Reloader::reload`] on the blocking pool, logged either way.
    pub async fn reload_logged(self: Arc<Self>) -> std::result::Result<String, String> {
        let result = tokio::task::spawn_blocking(move || self.reload())
            .await
            .map_err(|e| format!("reload task failed: {e}"))
            .and_then(|r| r);
        match &result {
            Ok(summary) => tracing::info!("{summary}"),
            Err(e) => {
                tracing::error!(error = %e, "reload refused; the previous config keeps serving")
            }
        }
        result
    }
}

#[cfg(unix)]
/// Reloads on every SIGHUP. The handler is installed when this is called,
/// not when the task first runs: a SIGHUP right after start must not find
/// the default action (terminate) still in place.
fn reload_on_sighup(reloader: Arc<Reloader>) -> impl Future<Output = ()> + Send {
    use tokio::signal::unix::{SignalKind, signal};
    let hangups = signal(SignalKind::hangup());
    async move {
        let Ok(mut hangups) = hangups else {
            tracing::warn!("cannot listen for SIGHUP; use POST /reload on the admin listener");
            return;
        };
        while hangups.recv().await.is_some() {
            let _ = reloader.clone().reload_logged().await;
        }
    }
}

#[cfg(not(unix))]
fn reload_on_sighup(_reloader: Arc<Reloader>) -> impl Future<Output = ()> + Send {
    std::future::ready(())
}

/// The admin listener's routes: Prometheus metrics and reload.
fn admin_router(
    state: AppState,
    reloader: Arc<Reloader>,
    connections: Arc<listener::Stats>,
) -> axum::Router {
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    use axum::routing::{get, post};
    let metrics = move || {
        let state = state.clone();
        async move {
            let auth = &state.auth;
            let body = state.metrics.render(&Snapshot {
                revocations: auth.revocations.len(),
                revocation_sync_age: auth.revocations.sync_age(),
                pool_in_use: auth.db.in_use(),
                hash_queue: auth.hasher.queue_depth(),
                hasher: auth.hasher.stats(),
                plugins: state.proxy.plugin_stats(),
                connections_open: connections.open(),
                connections_parked: connections.parked(),
                connections_rejected: connections.rejected(),
                tls_handshake_failures: connections.tls_failed(),
            });
            (
                [(
                    header::CONTENT_TYPE,
                    "text/plain; version=0.0.4; charset=utf-8",
                )],
                body,
            )
        }
    };
    let reload = move || {
        let reloader = reloader.clone();
        async move {
            match reloader.reload_logged().await {
                Ok(summary) => (StatusCode::OK, format!("{summary}\n")).into_response(),
                Err(e) => crate::api::problem::respond(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "reload_refused",
                    e,
                ),
            }
        }
    };
    axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/reload", post(reload))
}

/// Deletes revocations past their expiry, refresh tokens a week past
/// theirs, failed-password counters a day past their last failure, mailed
/// tokens a day after they died and sent mail a week after it went, every
/// ten minutes; a failure is logged and retried next time.
async fn housekeeping(db: Db) {
    let mut tick = tokio::time::interval(Duration::from_secs(600));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let purged = db
            .run(|c| {
                let revocations = store::revocations::purge_expired(c)?;
                let tokens = store::sessions::purge_expired(c, Duration::from_secs(7 * 86_400))?;
                let failures = store::failures::purge_stale(c, Duration::from_secs(86_400))?;
                store::email_tokens::purge(c)?;
                store::outbox::purge_sent(c, Duration::from_secs(7 * 86_400))?;
                store::mfa::purge_expired(c)?;
                store::identities::purge_expired(c)?;
                Ok((revocations, tokens, failures))
            })
            .await;
        match purged {
            Ok((revocations, tokens, failures)) => {
                tracing::debug!(revocations, tokens, failures, "housekeeping")
            }
            Err(e) => tracing::debug!(error = %e, "housekeeping skipped"),
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
