//! /metrics after a known scenario: every counter moved by exactly the expected amount, and
//! no label carries a user, a code, a token or an organization.

use std::collections::BTreeMap;

use serde_json::json;
use tessera::api::grpc::pb::zitadel::auth::v1 as auth;
use tessera::api::grpc::pb::zitadel::auth::v1::auth_service_client::AuthServiceClient;

use crate::grpc::{channel, request};
use crate::helpers::{Backend, Spawn, Token};

/// The value of the sample `name` whose labels are exactly `labels` (0 when absent).
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let wanted: BTreeMap<&str, &str> = labels.iter().copied().collect();
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, labels) = match series.split_once('{') {
                Some((metric, rest)) => (metric, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            let have: BTreeMap<&str, &str> = labels
                .split(',')
                .filter(|pair| !pair.is_empty())
                .filter_map(|pair| pair.split_once('='))
                .map(|(k, v)| (k, v.trim_matches('"')))
                .collect();
            (have == wanted).then(|| value.parse::<f64>().unwrap())
        })
        .next()
        .unwrap_or(0.0)
}

#[actix_web::test]
async fn counters_move_by_exactly_the_scenario() {
    let app = Spawn::new(Backend::Memory)
        .with(|s| s.lockout.max_otp_attempts = 2)
        .start()
        .await;
    let alice = Token::user("acme", "alice")
        .role("otp.check", "acme")
        .sign();
    let admin = Token::user("acme", "root").role("otp.admin", "acme").sign();

    let secret = app.add(&alice).await.body["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    app.verify(&alice, "000000").await; // enroll: invalid
    let code = app.code(&secret, 0);
    app.verify(&alice, &code).await.assert_ok(); // enroll: verified
    app.check(&alice, "alice", &code).await; // login: replayed (failure 1)
    app.check(&alice, "alice", "111111").await; // login: invalid (failure 2: locks)
    app.check(&alice, "alice", &app.code(&secret, 1)).await; // login: locked
    app.unlock(&admin, "alice").await.assert_ok();
    app.check(&alice, "alice", &app.code(&secret, 1))
        .await
        .assert_ok(); // login: checked
    app.post(None, "/auth/v1/users/me/auth_factors/_search", json!({}))
        .await;
    let basic = app
        .client
        .post(app.url("/auth/v1/users/me/auth_factors/_search"))
        .header("authorization", "Basic x");
    app.send(basic).await;
    app.post(
        Some("not-a-token"),
        "/auth/v1/users/me/auth_factors/_search",
        json!({}),
    )
    .await;
    let mut grpc = AuthServiceClient::new(channel(&app).await);
    grpc.list_my_auth_factors(request(
        auth::ListMyAuthFactorsRequest {},
        Some(&alice),
        None,
    ))
    .await
    .unwrap();

    // A gRPC call is counted when the server drops its answer's body, which may come just
    // after the client has read the trailers: scrape until it is in (or give up and let the
    // assertion below say what is missing).
    let grpc_list_ok = |text: &str| {
        sample(
            text,
            "tessera_requests_total",
            &[
                ("transport", "grpc"),
                ("rpc", "ListMyAuthFactors"),
                ("code", "OK"),
            ],
        )
    };
    let mut text = String::new();
    for _ in 0..100 {
        let response = app.client.get(app.url("/metrics")).send().await.unwrap();
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/plain; version=0.0.4")
        );
        text = response.text().await.unwrap();
        if grpc_list_ok(&text) > 0.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let attempts = |purpose: &str, outcome: &str| {
        sample(
            &text,
            "tessera_otp_attempts_total",
            &[("purpose", purpose), ("outcome", outcome)],
        )
    };
    assert_eq!(attempts("enroll", "invalid"), 1.0);
    assert_eq!(attempts("enroll", "verified"), 1.0);
    assert_eq!(attempts("login", "replayed"), 1.0);
    assert_eq!(attempts("login", "invalid"), 1.0);
    assert_eq!(attempts("login", "locked"), 1.0);
    assert_eq!(attempts("login", "checked"), 1.0);
    let locks = |event: &str| sample(&text, "tessera_otp_lock_events_total", &[("event", event)]);
    assert_eq!((locks("locked"), locks("unlocked")), (1.0, 1.0));
    let requests = |transport: &str, rpc: &str, code: &str| {
        sample(
            &text,
            "tessera_requests_total",
            &[("transport", transport), ("rpc", rpc), ("code", code)],
        )
    };
    assert_eq!(requests("http", "AddMyAuthFactorOTP", "OK"), 1.0);
    assert_eq!(
        requests("http", "VerifyMyAuthFactorOTP", "INVALID_ARGUMENT"),
        1.0
    );
    assert_eq!(requests("http", "VerifyMyAuthFactorOTP", "OK"), 1.0);
    assert_eq!(requests("http", "CheckOTP", "INVALID_ARGUMENT"), 2.0);
    assert_eq!(requests("http", "CheckOTP", "FAILED_PRECONDITION"), 1.0);
    assert_eq!(requests("http", "CheckOTP", "OK"), 1.0);
    assert_eq!(requests("http", "UnlockUser", "OK"), 1.0);
    assert_eq!(
        requests("http", "ListMyAuthFactors", "UNAUTHENTICATED"),
        3.0
    );
    assert_eq!(grpc_list_ok(&text), 1.0);
    let durations = sample(
        &text,
        "tessera_request_duration_seconds_count",
        &[("transport", "http"), ("rpc", "CheckOTP")],
    );
    assert_eq!(durations, 4.0);
    let tokens = |reason: &str| {
        sample(
            &text,
            "tessera_token_verification_failures_total",
            &[("reason", reason)],
        )
    };
    assert_eq!(
        (tokens("missing"), tokens("not_bearer"), tokens("invalid")),
        (1.0, 1.0, 1.0)
    );
    // Five attempts reached the store (the locked one was refused before it, from a fresh read).
    assert_eq!(
        sample(
            &text,
            "tessera_store_duration_seconds_count",
            &[("op", "attempt")]
        ),
        5.0
    );
    assert_eq!(
        sample(&text, "tessera_store_errors_total", &[("op", "attempt")]),
        0.0
    );
    assert_eq!(sample(&text, "tessera_org_actors", &[]), 1.0);
    assert_eq!(
        sample(&text, "tessera_org_calls_in_flight", &[]),
        0.0,
        "every call answered"
    );
    // Nothing that identifies a user, a tenant or a secret is a label.
    for needle in ["alice", "acme", &secret, &code, &alice] {
        assert!(!text.contains(needle), "{needle} appears in /metrics");
    }
    // ZITADEL's path serves the same.
    let debug = app
        .client
        .get(app.url("/debug/metrics"))
        .send()
        .await
        .unwrap();
    assert!(
        debug
            .text()
            .await
            .unwrap()
            .contains("tessera_otp_attempts_total")
    );
}

#[actix_web::test]
async fn metrics_on_a_port_of_their_own() {
    let settings =
        crate::helpers::settings_with_env(&[("TESSERA__HTTP__METRICS_ADDR", "127.0.0.1:0")]);
    let config = settings.parse(tessera::settings::Mode::Dev).unwrap();
    let app = tessera::app::Application::build(config).await.unwrap();
    let port = app.metrics_port().expect("a metrics port");
    assert_ne!(port, app.port());
    actix_rt::spawn(app.run_until_stopped());
    let client = reqwest::Client::new();
    let text = client
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("# TYPE tessera_requests_total counter")
            || text.contains("tessera_otp_attempts_total")
    );
    // Only /metrics there: the API stays on its own port.
    let api = client
        .post(format!(
            "http://127.0.0.1:{port}/auth/v1/users/me/auth_factors/_search"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(api.status().as_u16(), 404);
}

/// Whether the organization actor found the user's factor in its cache: a replica that never
/// saw the user reads the store (a miss) and remembers the factor for the next check (a hit).
/// The cold path of a large deployment is the misses; this is the count that shows them.
#[actix_web::test]
async fn factor_cache_lookups_count_hits_and_misses() {
    use std::sync::Arc;
    use tessera::store::{MemoryStore, SharedStore};

    let memory: SharedStore = Arc::new(MemoryStore::new());
    let enrolling = Spawn::new(Backend::Memory)
        .store(memory.clone())
        .start()
        .await;
    let checking = Spawn::new(Backend::Memory).store(memory).start().await;
    let alice = Token::user("acme", "alice")
        .role("otp.check", "acme")
        .sign();
    let secret = enrolling.add(&alice).await.body["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    enrolling
        .verify(&alice, &enrolling.code(&secret, 0))
        .await
        .assert_ok();

    let lookups = |text: &str, result: &str| {
        sample(
            text,
            "tessera_factor_cache_lookups_total",
            &[("result", result)],
        )
    };
    let before = checking.metrics_text().await;
    assert_eq!(
        (lookups(&before, "hit"), lookups(&before, "miss")),
        (0.0, 0.0)
    );
    assert!(
        before.contains("tessera_factor_cache_lookups_total{result=\"miss\"} 0"),
        "both series start at zero, so rate() sees the first miss"
    );

    checking.check(&alice, "alice", "000000").await;
    let first = checking.metrics_text().await;
    assert_eq!(
        (lookups(&first, "hit"), lookups(&first, "miss")),
        (0.0, 1.0)
    );
    checking.check(&alice, "alice", "111111").await;
    let second = checking.metrics_text().await;
    assert_eq!(
        (lookups(&second, "hit"), lookups(&second, "miss")),
        (1.0, 1.0)
    );
}
