//! Criterion micro-benchmarks of the per-request CPU work, apart from I/O:
//! `cargo bench --bench micro`. The figures are in BENCHMARKS.md.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use secrecy::SecretString;
use tessera::api::wire::{DetailsJson, DetailsResponse};
use tessera::auth::{TokenVerifier, mint_dev_token};
use tessera::domain::totp::NormalizedCode;
use tessera::domain::{Details, TotpParams, UnixMicros};
use tessera::seal::KeyRing;
use tessera::settings::{Mode, Settings};

const NOW: u64 = 1_790_000_025;
const SECRET: &[u8; 20] = b"12345678901234567890";

/// HMAC over the skew window: a wrong code computes every step of `[now-1, now+1]`, the
/// worst case; a current code stops at its step (newest first).
fn code_check(c: &mut Criterion) {
    let params = TotpParams::default();
    let wrong = NormalizedCode::parse("000000", 6).unwrap();
    let current = params.code_for_step(SECRET, params.step_at(NOW)).unwrap();
    let current = NormalizedCode::parse(&current, 6).unwrap();
    c.bench_function("code check, wrong code (3 steps, SHA1)", |b| {
        b.iter(|| params.matching_step(black_box(SECRET), black_box(&wrong), NOW, 1))
    });
    c.bench_function("code check, current code (SHA1)", |b| {
        b.iter(|| params.matching_step(black_box(SECRET), black_box(&current), NOW, 1))
    });
}

fn seal_and_open(c: &mut Criterion) {
    let ring = KeyRing::parse(&SecretString::from(
        "k1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".to_owned(),
    ))
    .unwrap();
    let sealed = ring.seal(SECRET, "acme", "alice").unwrap();
    c.bench_function("seal a secret (AES-256-GCM)", |b| {
        b.iter(|| ring.seal(black_box(SECRET), "acme", "alice").unwrap())
    });
    c.bench_function("open a sealed secret (AES-256-GCM)", |b| {
        b.iter(|| ring.open(black_box(&sealed), "acme", "alice").unwrap())
    });
}

/// The bearer token of every call: the signature check (Ed25519, the dev key) against a
/// cache hit (a SHA-256 of the token and one LRU lookup).
fn token_verification(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut auth = Settings::dev_defaults()
        .unwrap()
        .parse(Mode::Dev)
        .unwrap()
        .auth;
    let now = chrono::Utc::now().timestamp();
    let roles = ["otp.check".to_owned()];
    let token = mint_dev_token(&auth, "acme", "alice", &roles, 3_600, now).unwrap();
    let header = format!("Bearer {token}");
    let cached = runtime.block_on(TokenVerifier::from_config(&auth)).unwrap();
    auth.token_cache_capacity = None;
    let uncached = runtime.block_on(TokenVerifier::from_config(&auth)).unwrap();
    c.bench_function("token, cache hit", |b| {
        b.iter(|| {
            runtime
                .block_on(cached.authenticate(Some(black_box(header.as_bytes()))))
                .unwrap()
        })
    });
    c.bench_function("token, signature check (EdDSA, no cache)", |b| {
        b.iter(|| {
            runtime
                .block_on(uncached.authenticate(Some(black_box(header.as_bytes()))))
                .unwrap()
        })
    });
}

fn details_to_json(c: &mut Criterion) {
    let details = Details::changed(
        42,
        UnixMicros::from_secs(1_790_000_025),
        Arc::from("acme-organization"),
    );
    c.bench_function("details to JSON", |b| {
        b.iter(|| {
            serde_json::to_vec(&DetailsResponse {
                details: DetailsJson::from(black_box(&details)),
            })
            .unwrap()
        })
    });
}

criterion_group!(
    micro,
    code_check,
    seal_and_open,
    token_verification,
    details_to_json
);
criterion_main!(micro);
