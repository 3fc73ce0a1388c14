//! authgw: the Auth API, edge proxy and admin CLI of the platform.
//!
//! Module map (one hop from the README's architecture section):
//! - [`config`]: gateway.toml + environment overrides.
//! - [`cli`]: the `authgw` command line.
//! - [`client_ip`]: the client's IP (peer, `X-Forwarded-For`, trusted proxies).
//! - [`client_key`]: the unit abuse limits count by (an IPv4 address, an IPv6 /64).
//! - [`server`]: assembling the gateway and serving it with graceful shutdown.
//! - [`api`]: HTTP routes, request/response shapes, problem+json mapping.
//! - [`auth`]: Auth API use cases (signup, login, refresh, logout, ...).
//! - [`recovery`]: account recovery use cases (email verification, password reset, address change).
//! - [`mail`]: account mail: templates, the outbox sender, SMTP (lettre) or `.eml` files.
//! - [`admin`]: administrative actions with their audit rows (HTTP and CLI).
//! - [`tokens`]: JWT keys, signing, verification, refresh tokens and their successors.
//! - [`secrets`]: server secrets (HMAC keys in the keys directory) and what they derive.
//! - [`plugins`]: WebAssembly policy plugins (host, pools, chain, authoring tools).
//! - [`introspection`]: who may call token introspection (HTTP Basic, hashed secrets).
//! - [`passwords`]: argon2id hashing behind a bounded queue.
//! - [`revocation`]: the in-memory revocation set and its LISTEN thread.
//! - [`proxy`]: the edge proxy's pipeline, routes, upstream client, headers.
//! - [`forward_auth`]: the proxy's decision for nginx, Traefik, Caddy and Envoy.
//! - [`cors`]: CORS from `[cors]` on the Auth API and `cors = true` routes.
//! - [`cookies`]: cookie sessions (the HttpOnly refresh and access cookies).
//! - [`csrf`]: the proof a cookie-authenticated state change owes.
//! - [`metrics`]: Prometheus metrics for the admin listener.
//! - [`tls`]: rustls for the listener, the upstreams and PostgreSQL (PEM files, provider).
//! - [`store`]: all SQL, migrations and the database access helper.
//! - [`error`]: the one domain error type.
#![forbid(unsafe_code)]

pub mod admin;
pub mod api;
pub mod auth;
pub mod cli;
pub mod client_ip;
pub mod client_key;
pub mod config;
pub mod cookies;
pub mod cores;
pub mod cors;
pub mod csrf;
pub mod error;
pub mod federation;
pub mod forward_auth;
pub mod introspection;
pub mod listener;
pub mod mail;
pub mod metrics;
pub mod mfa;
pub mod passwords;
pub mod plugins;
pub mod proxy;
pub mod recovery;
pub mod revocation;
pub mod secrets;
pub mod server;
pub mod store;
pub mod tls;
pub mod tokens;
