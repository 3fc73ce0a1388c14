//! What the second factor costs a login's second step, measured against a
//! peer in the same run: authgw's TOTP check (the secret opened from its
//! AES-256-GCM seal, then the code compared with the three steps of the
//! drift window, as `check_proof` does before its one UPDATE) against
//! totp-rs's `check` of the same code with the same window on a secret it
//! holds in the clear. The difference is the price of the secret at rest.
//!
//! Run with `cargo bench --bench mfa` (or `scripts/bench.sh criterion mfa`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use gateway::mfa::{seal, totp};
use gateway::secrets::SecretRing;
use uuid::Uuid;

fn totp_check(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    gateway::secrets::generate(dir.path()).unwrap();
    let ring = SecretRing::load(dir.path()).unwrap();
    let user = Uuid::new_v4();
    let secret = [7u8; totp::SECRET_LEN];
    let sealed = seal::seal(&ring, user, &secret).unwrap();
    let now = 1_767_225_600u64;
    let step = totp::step_at(now);
    let code = totp::code(&secret, step);
    let peer = totp_rs::Totp::from_url(totp::otpauth_uri(
        "authgw",
        "alice",
        &data_encoding::BASE32_NOPAD.encode(&secret),
    ))
    .unwrap();

    let mut group = c.benchmark_group("totp_check");
    group.bench_function("authgw_sealed", |b| {
        b.iter(|| {
            let plain = seal::open(&ring, user, black_box(&sealed)).unwrap();
            totp::verify(&plain, black_box(&code), step, None).unwrap()
        })
    });
    group.bench_function("authgw_verify_only", |b| {
        b.iter(|| totp::verify(black_box(&secret), black_box(&code), step, None).unwrap())
    });
    group.bench_function("totp_rs_check", |b| {
        b.iter(|| peer.check(black_box(&code), now).unwrap())
    });
    group.finish();
}

criterion_group!(benches, totp_check);
criterion_main!(benches);
