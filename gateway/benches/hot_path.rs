//! The token-check hot path, measured against peers in the same run:
//! - verification per algorithm (EdDSA against ES256 and RS256);
//! - the revocation-set lookup added to a verification (10 000 live entries);
//! - `/api/v1/auth/check` over HTTP against `/healthz` on the same server
//!   (what JWT checking adds to a request; no database is involved in either),
//!   and beside them one forward-auth decision (`/api/v1/authz/auth-request`,
//!   nginx's shape: the cached token and the cinema rules of the role-rules
//!   plugin), over HTTP and in process (`forward_auth::answer`, and the
//!   decision alone, `Proxy::decide`, with a bearer GET and with a POST on
//!   the access cookie, which owes the CSRF proof);
//! - argon2id hashing with the OWASP parameters (what a login costs);
//! - ES256 verification cold against the verified-token cache (hit, miss),
//!   and the revocation lookup alone;
//! - the canonical request target (`proxy::path::canonicalize`) of a typical
//!   (already canonical) path and a hostile one, against the plain copy of
//!   the raw path the proxy made before and the route lookup;
//! - the next refresh token: derived from the presented one under the server
//!   secret (HMAC-SHA-256, issue 19) against the random UUID v4 drawn before,
//!   both with the SHA-256 the table stores.
//!
//! Run with `scripts/bench.sh`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use gateway::forward_auth::{self, Endpoint};
use gateway::proxy::{Access, Purpose};

mod common;

use common::dist;
use criterion::{Criterion, criterion_group, criterion_main};
use gateway::config::{Config, PasswordConfig, SigningAlgorithm, TokenConfig};
use gateway::revocation::RevocationSet;
use gateway::store::revocations::{Kind, Revocation};
use gateway::tokens::{self, Keyring, Tokens};
use uuid::Uuid;

fn tokens_for(alg: SigningAlgorithm) -> (tempfile::TempDir, Tokens) {
    let dir = tempfile::tempdir().unwrap();
    tokens::install_crypto_provider();
    tokens::generate_key(dir.path(), alg).unwrap();
    let ring = Keyring::load(dir.path()).unwrap();
    (dir, Tokens::new(ring, &TokenConfig::default()))
}

const ALGORITHMS: [(&str, SigningAlgorithm); 3] = [
    ("EdDSA", SigningAlgorithm::EdDsa),
    ("ES256", SigningAlgorithm::Es256),
    ("RS256", SigningAlgorithm::Rs256),
];

fn roles() -> Vec<String> {
    vec!["subscriber".into(), "adult".into()]
}

/// A password session's grant for alice with `roles`.
fn grant(sub: Uuid, sid: Uuid, roles: &[String]) -> tokens::Grant<'_> {
    tokens::Grant {
        sub,
        login: "alice",
        roles,
        adm: false,
        sid,
        email_verified: true,
        amr: &*PWD,
        auth_time: chrono::Utc::now().timestamp(),
    }
}

/// A password login's `amr`.
static PWD: std::sync::LazyLock<[String; 1]> = std::sync::LazyLock::new(|| ["pwd".to_string()]);

fn verify_by_algorithm(c: &mut Criterion) {
    let mut group = c.benchmark_group("verify");
    for (name, alg) in ALGORITHMS {
        let (_dir, t) = tokens_for(alg);
        let token = t
            .issue(&grant(Uuid::new_v4(), Uuid::new_v4(), &roles()))
            .unwrap();
        group.bench_function(name, |b| b.iter(|| t.verify(black_box(&token)).unwrap()));
    }
    group.finish();
    let mut group = c.benchmark_group("issue");
    for (name, alg) in ALGORITHMS {
        let (_dir, t) = tokens_for(alg);
        let (sub, sid) = (Uuid::new_v4(), Uuid::new_v4());
        group.bench_function(name, |b| {
            b.iter(|| t.issue(&grant(sub, sid, &roles())).unwrap())
        });
    }
    group.finish();
}

fn revocation_overhead(c: &mut Criterion) {
    let (_dir, t) = tokens_for(SigningAlgorithm::EdDsa);
    let token = t
        .issue(&grant(Uuid::new_v4(), Uuid::new_v4(), &roles()))
        .unwrap();
    let set = RevocationSet::new();
    let until = chrono::Utc::now() + chrono::Duration::minutes(15);
    let entries: Vec<Revocation> = (0..10_000)
        .map(|i| Revocation {
            kind: if i % 2 == 0 {
                Kind::Session
            } else {
                Kind::User
            },
            subject: Uuid::new_v4(),
            expires_at: until,
        })
        .collect();
    set.insert(&entries);
    let mut group = c.benchmark_group("check_path");
    group.bench_function("verify only", |b| {
        b.iter(|| t.verify(black_box(&token)).unwrap())
    });
    group.bench_function("verify + revocation set (10k entries)", |b| {
        b.iter(|| {
            let claims = t.verify(black_box(&token)).unwrap();
            assert!(!set.is_revoked(claims.sub, claims.sid));
        })
    });
    group.finish();
}

fn http_check_vs_healthz(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let keys = tempfile::tempdir().unwrap();
    tokens::install_crypto_provider();
    tokens::generate_key(keys.path(), SigningAlgorithm::EdDsa).unwrap();
    let mut config = Config::default();
    // No database: /check and /healthz never touch it.
    config.database.url = "postgresql://postgres@127.0.0.1:1/none".into();
    config.tokens.keys_dir = keys.path().to_path_buf();
    // One forward-auth route, decision-only, with the quickstart's cinema
    // rules; the benchmark's client (127.0.0.1) is the trusted proxy.
    config.server.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    let mut cinema = gateway::plugins::PluginSpec::new("cinema", dist("role-rules"));
    cinema.config = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../plugins/role-rules/examples/cinema.json"),
        )
        .unwrap(),
    )
    .unwrap();
    cinema.deadline = Duration::from_secs(1);
    config.plugins = vec![cinema];
    // The access cookie the CSRF-proof case below authenticates with.
    config.proxy.token_cookie = Some("at".into());
    config.routes = Config::parse(
        "[[routes]]\nname = \"films\"\nprefix = \"/films\"\nauth = \"optional\"\nplugins = [\"cinema\"]\n",
        "bench.toml",
    )
    .unwrap()
    .routes;
    let (base, token, state) = rt.block_on(async {
        let gateway = gateway::server::Gateway::build(config).unwrap();
        let token = gateway
            .state()
            .auth
            .tokens
            .issue(&grant(Uuid::new_v4(), Uuid::new_v4(), &roles()))
            .unwrap();
        let state = gateway.state().clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(gateway.serve(listener, std::future::pending()));
        (base, token, state)
    });
    let http = reqwest::Client::new();
    let mut group = c.benchmark_group("http");
    group.bench_function("GET /healthz", |b| {
        b.to_async(&rt).iter(|| async {
            let r = http.get(format!("{base}/healthz")).send().await.unwrap();
            assert_eq!(r.status(), 200);
        })
    });
    group.bench_function("GET /api/v1/auth/check", |b| {
        b.to_async(&rt).iter(|| async {
            let r = http
                .get(format!("{base}/api/v1/auth/check"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        })
    });
    group.bench_function("GET /api/v1/authz/auth-request (cinema)", |b| {
        b.to_async(&rt).iter(|| async {
            let r = http
                .get(format!("{base}/api/v1/authz/auth-request"))
                .bearer_auth(&token)
                .header("x-original-uri", "/films/premium/1")
                .header("x-original-method", "GET")
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        })
    });
    group.finish();

    // The same decision in process: no socket, no HTTP.
    let nginx_asks = || {
        let mut req = Request::get("/api/v1/authz/auth-request")
            .header("authorization", format!("Bearer {token}"))
            .header("x-original-uri", "/films/premium/1")
            .header("x-original-method", "GET")
            .header("host", "cinema.example")
            .body(Body::empty())
            .unwrap();
        req.extensions_mut()
            .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
        req
    };
    let mut group = c.benchmark_group("decision (in process)");
    group.bench_function("forward_auth::answer (auth-request, cinema)", |b| {
        b.iter(|| {
            let r = forward_auth::answer(
                &state.proxy,
                &state.auth.config,
                &state.metrics,
                Endpoint::AuthRequest,
                nginx_asks(),
            );
            assert_eq!(r.status(), 200);
        })
    });
    let runtime = state.proxy.runtime();
    let original = Request::get("/films/premium/1")
        .header("authorization", format!("Bearer {token}"))
        .body(())
        .unwrap();
    let decide = |req: &Request<()>| {
        let mut access = Access::default();
        state
            .proxy
            .decide(
                &runtime,
                black_box(req),
                Some("cinema.example"),
                false,
                Purpose::Decision,
                &mut access,
            )
            .unwrap();
    };
    group.bench_function("Proxy::decide (route, cached token, cinema)", |b| {
        b.iter(|| decide(&original))
    });
    // The same decision for a state change on the access cookie: the CSRF
    // proof (same origin, X-Requested-With) checked before the token.
    let mut on_cookie = Request::post("/films/premium/1")
        .header("cookie", format!("theme=dark; at={token}"))
        .header("host", "cinema.example")
        .header("origin", "http://cinema.example")
        .header("x-requested-with", "authgw")
        .body(())
        .unwrap();
    on_cookie
        .extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
    group.bench_function(
        "Proxy::decide (POST on the access cookie, CSRF proof)",
        |b| b.iter(|| decide(&on_cookie)),
    );
    group.finish();
}

fn argon2(c: &mut Criterion) {
    let config = PasswordConfig::default();
    let phc = gateway::passwords::hash(&config, "correct horse battery staple").unwrap();
    let mut group = c.benchmark_group("argon2id (m=19456 KiB, t=2, p=1)");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    group.bench_function("hash", |b| {
        b.iter(|| {
            gateway::passwords::hash(&config, black_box("correct horse battery staple")).unwrap()
        })
    });
    group.bench_function("verify", |b| {
        b.iter(|| {
            assert!(gateway::passwords::verify(
                black_box("correct horse battery staple"),
                &phc
            ))
        })
    });
    group.finish();
}

/// What the proxy pays per request for the token (ES256, as in the system
/// benchmark of scripts/bench.sh): `Tokens::verify` (cold: signature and
/// claims) against `Tokens::verify_cached` on a hit (a token seen before) and
/// on a miss (a new token: verify, then insert); and the revocation lookup
/// that follows either, alone, in an empty set and in one of 10 000 entries.
fn token_cache_and_revocation(c: &mut Criterion) {
    let (_dir, t) = tokens_for(SigningAlgorithm::Es256);
    let (sub, sid) = (Uuid::new_v4(), Uuid::new_v4());
    let token = t.issue(&grant(sub, sid, &roles())).unwrap();
    let mut group = c.benchmark_group("token_verify (ES256)");
    group.bench_function("cold (signature + claims)", |b| {
        b.iter(|| t.verify(black_box(&token)).unwrap())
    });
    t.verify_cached(&token).unwrap();
    group.bench_function("cached (hit)", |b| {
        b.iter(|| t.verify_cached(black_box(&token)).unwrap())
    });
    group.bench_function("cached (miss: verify + insert)", |b| {
        b.iter_batched(
            || t.issue(&grant(sub, sid, &roles())).unwrap(),
            |fresh| t.verify_cached(black_box(&fresh)).unwrap(),
            criterion::BatchSize::SmallInput,
        )
    });
    group.finish();

    let empty = RevocationSet::new();
    let full = RevocationSet::new();
    let until = chrono::Utc::now() + chrono::Duration::minutes(15);
    let entries: Vec<Revocation> = (0..10_000)
        .map(|i| Revocation {
            kind: if i % 2 == 0 {
                Kind::Session
            } else {
                Kind::User
            },
            subject: Uuid::new_v4(),
            expires_at: until,
        })
        .collect();
    full.insert(&entries);
    let revoked_sid = entries[0].subject;
    let mut group = c.benchmark_group("revocation lookup");
    group.bench_function("empty set", |b| {
        b.iter(|| assert!(!empty.is_revoked(black_box(sub), black_box(sid))))
    });
    group.bench_function("10k entries, not revoked", |b| {
        b.iter(|| assert!(!full.is_revoked(black_box(sub), black_box(sid))))
    });
    group.bench_function("10k entries, revoked session", |b| {
        b.iter(|| assert!(full.is_revoked(black_box(sub), black_box(revoked_sid))))
    });
    group.finish();
}

/// What making the path canonical adds to a proxied request, against two
/// peers in the same run: the `to_string` copy of the raw path the proxy
/// made before (and still makes, for the access log), and the route lookup
/// in a table of the quickstart's shape.
fn canonical_path(c: &mut Criterion) {
    use axum::http::Method;
    use gateway::proxy::path::canonicalize;
    use gateway::proxy::{Lookup, Route, RouteTable};
    let config = Config::parse(
        r#"
        [[routes]]
        name = "films"
        prefix = "/films"
        upstream = "http://127.0.0.1:1"
        [[routes]]
        name = "premium"
        prefix = "/films/premium"
        upstream = "http://127.0.0.1:1"
        [[routes]]
        name = "vault"
        prefix = "/vault"
        upstream = "http://127.0.0.1:1"
        "#,
        "bench.toml",
    )
    .unwrap();
    let table = RouteTable::new(
        config
            .routes
            .into_iter()
            .map(|r| Route::new(r, Vec::new(), std::path::Path::new("."), 1).unwrap())
            .collect(),
    );
    let typical = "/films/premium/42/watch";
    let hostile = "/films/x/..//%70remium/./%2e%2E/premium/42/watch";
    let mut group = c.benchmark_group("canonical path");
    group.bench_function("raw to_string (peer)", |b| {
        b.iter(|| black_box(typical).to_string())
    });
    group.bench_function("route lookup (peer)", |b| {
        b.iter(|| {
            matches!(
                table.find(
                    black_box(Some("cinema.example")),
                    black_box(typical),
                    &Method::GET
                ),
                Lookup::Found(_)
            )
        })
    });
    group.bench_function("canonicalize typical", |b| {
        b.iter(|| canonicalize(black_box(typical)).unwrap().escaped_slash)
    });
    group.bench_function("canonicalize hostile", |b| {
        b.iter(|| canonicalize(black_box(hostile)).unwrap().path.len())
    });
    group.finish();
}

fn refresh_successor(c: &mut Criterion) {
    let (dir, _t) = tokens_for(SigningAlgorithm::EdDsa);
    let ring = Keyring::load(dir.path()).unwrap();
    let presented = tokens::RefreshToken::parse(&Uuid::new_v4().to_string()).unwrap();
    let mut group = c.benchmark_group("refresh_token");
    group.bench_function("random v4 + sha256 (before, peer)", |b| {
        b.iter(tokens::new_refresh_token)
    });
    group.bench_function("derived successor + sha256", |b| {
        b.iter(|| black_box(&presented).successor(ring.secrets().current()))
    });
    group.finish();
}

criterion_group!(
    benches,
    refresh_successor,
    canonical_path,
    token_cache_and_revocation,
    verify_by_algorithm,
    revocation_overhead,
    http_check_vs_healthz,
    argon2
);
criterion_main!(benches);
