//! Assembling the gateway from its config and serving it. The server takes
//! its listener and a shutdown future, so tests start and stop it in-process.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::ServiceExt;

use crate::api::{self, AppState};
use crate::auth::Auth;
use crate::config::Config;
use crate::error::Result;
use crate::passwords::Hasher;
use crate::revocation::{self, RevocationSet};
use crate::store::{self, Db};
use crate::tokens::{Keyring, Tokens};

/// A gateway ready to serve: state built, revocation listener running.
pub struct Gateway {
    state: AppState,
    stop: Arc<AtomicBool>,
}

impl Gateway {
    /// Loads keys, builds the pool (without requiring the database to be up)
    /// and starts the revocation listener.
    pub fn build(config: Config) -> Result<Self> {
        let keyring = Keyring::load(&config.tokens.keys_dir)?;
        let tokens = Tokens::new(keyring, &config.tokens);
        let db = Db::new(
            &config.database.url,
            config.database.pool_size,
            config.database.connect_timeout,
        )?;
        let hasher = Hasher::new(&config.passwords)?;
        let revocations = RevocationSet::new();
        let stop = Arc::new(AtomicBool::new(false));
        revocation::spawn_listener(
            config.database.url.clone(),
            config.database.connect_timeout,
            revocations.clone(),
            stop.clone(),
        )
        .map_err(crate::error::Error::internal)?;
        let auth = Arc::new(Auth {
            config: Arc::new(config),
            db,
            hasher,
            tokens,
            revocations,
        });
        Ok(Self {
            state: AppState::new(auth),
            stop,
        })
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves on `listener` until `shutdown` resolves, then stops accepting
    /// and lets in-flight requests finish for at most `server.shutdown_timeout`.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let drain = self.state.auth.config.server.shutdown_timeout;
        let app = api::router(self.state.clone())
            .layer(tower_http::trace::TraceLayer::new_for_http().make_span_with(
                |req: &axum::http::Request<axum::body::Body>| {
                    // Path only: query strings may carry cursors, never log bodies or headers.
                    tracing::info_span!("request", method = %req.method(), path = %req.uri().path())
                },
            ))
            .layer(tower_http::catch_panic::CatchPanicLayer::custom(|_| {
                axum::response::IntoResponse::into_response(crate::error::Error::Internal(
                    "handler panicked".into(),
                ))
            }));
        let header_timeout = self.state.auth.config.server.header_read_timeout;
        let housekeeping = tokio::spawn(housekeeping(self.state.auth.db.clone()));
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // Slow clients may not hold a connection open without sending headers.
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout);
        let graceful = GracefulShutdown::new();
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let service = app
                .clone()
                .map_request(move |mut req: axum::http::Request<_>| {
                    req.extensions_mut().insert(ConnectInfo(peer));
                    req
                });
            let connection = builder
                .serve_connection_with_upgrades(
                    TokioIo::new(stream),
                    TowerToHyperService::new(service),
                )
                .into_owned();
            let connection = graceful.watch(connection);
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
            });
        }
        drop(listener);
        tracing::info!("shutting down: draining in-flight requests");
        let result = tokio::select! {
            () = graceful.shutdown() => Ok(()),
            () = tokio::time::sleep(drain) => {
                tracing::warn!(?drain, "shutdown timeout reached; dropping remaining connections");
                Ok(())
            }
        };
        housekeeping.abort();
        self.stop.store(true, Ordering::SeqCst);
        result
    }
}

/// Deletes revocations past their expiry and refresh tokens a week past
/// theirs, every ten minutes; a failure is logged and retried next time.
async fn housekeeping(db: Db) {
    let mut tick = tokio::time::interval(Duration::from_secs(600));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let purged = db
            .run(|c| {
                let revocations = store::revocations::purge_expired(c)?;
                let tokens = store::sessions::purge_expired(c, Duration::from_secs(7 * 86_400))?;
                Ok((revocations, tokens))
            })
            .await;
        match purged {
            Ok((revocations, tokens)) => tracing::debug!(revocations, tokens, "housekeeping"),
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
