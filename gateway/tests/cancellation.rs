//! Cancellation: a client that goes away mid-request must not free the slot
//! its work still holds. Alone in its test binary, so the memory it reads
//! is its own server's.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use gateway::store::Db;
use tokio::io::AsyncWriteExt;

/// A field of /proc/self/status in KiB (VmRSS, VmHWM).
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap()
}

/// `n` connections each send a login and reset the connection, at
/// staggered moments: before, during and after their hash. Returns once
/// no hash is queued or running.
async fn login_and_reset(app: &TestApp, n: u64) {
    let clients = (0..n).map(|i| {
        let addr = app.addr;
        tokio::spawn(async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            let body = format!(r#"{{"login":"ghost{i}","password":"guess number {i}"}}"#);
            let req = format!(
                "POST /api/v1/auth/login HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            s.write_all(req.as_bytes()).await.unwrap();
            tokio::time::sleep(Duration::from_millis((i % 25) * 20)).await;
            s.set_zero_linger().unwrap();
            drop(s); // RST
        })
    });
    for c in futures::future::join_all(clients).await {
        c.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while app.metric("authgw_password_hash_queue").await > 0.0
        || app.metric("authgw_password_hashes_running").await > 0.0
    {
        assert!(Instant::now() < deadline, "hashing never drained");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// 200 connections each send a login and reset the connection, at
/// staggered moments (before, during and after their hash). Hashes
/// computing at once never exceed the hasher's slots (the most ever at
/// once, from /metrics), and memory stays flat: a second round of 200 adds
/// next to nothing, and the first stays within what `slots` hashing
/// threads hold (each argon2id hash takes 19 MiB while it runs).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn disconnecting_clients_never_exceed_the_hashing_bound() {
    let app = spawn_app_with(|c| {
        c.passwords.max_concurrent = 2;
        c.passwords.max_queue = 1000;
    })
    .await;
    assert_eq!(app.login("warm-up", "password").await.status, 401);
    let rss_start = status_kib("VmRSS:");
    login_and_reset(&app, 200).await;
    let slots = app.metric("authgw_password_hash_slots").await;
    let max = app.metric("authgw_password_hashes_running_max").await;
    let total = app.metric("authgw_password_hashes_total").await;
    assert_eq!(slots, 2.0);
    assert!(
        max <= slots,
        "{max} hashes ran at once; the bound is {slots}"
    );
    // Not vacuous: clients were cut off while hashes ran.
    assert!(total >= 10.0, "only {total} hashes ran");
    let rss_first = status_kib("VmRSS:");
    login_and_reset(&app, 200).await;
    let rss_second = status_kib("VmRSS:");
    let max = app.metric("authgw_password_hashes_running_max").await;
    assert!(
        max <= slots,
        "{max} hashes ran at once; the bound is {slots}"
    );
    eprintln!(
        "VmRSS KiB: {rss_start} at start, {rss_first} after 200, {rss_second} after 400; \
         {total} hashes in the first round"
    );
    let first = rss_first.saturating_sub(rss_start);
    assert!(
        first < 384 * 1024,
        "RSS grew by {first} KiB in the first round"
    );
    let second = rss_second.saturating_sub(rss_first);
    assert!(
        second < 32 * 1024,
        "RSS grew by {second} KiB in the second round"
    );
    // The server still answers.
    assert_eq!(app.login("ghost", "password").await.status, 401);
}

/// A database call whose caller is cancelled keeps its permit until its
/// query is done: the next call waits for it, instead of taking the permit
/// and then failing (503) on a pool whose connection is still in use.
#[tokio::test]
async fn cancelled_database_call_keeps_its_permit() {
    let db = TestDb::migrated();
    let pool = Db::new(&db.url, 1, Duration::from_millis(300)).unwrap();
    let slow = pool.clone();
    let task = tokio::spawn(async move {
        slow.run(|c| {
            c.batch_execute("SELECT pg_sleep(1)")?;
            Ok(())
        })
        .await
    });
    tokio::time::sleep(Duration::from_millis(250)).await;
    task.abort();
    let next = pool
        .run(|c| Ok(c.query_one("SELECT 1", &[])?.get::<_, i32>(0)))
        .await;
    assert_eq!(next.ok(), Some(1));
}
