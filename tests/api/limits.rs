//! governor limits: 429 with Retry-After, in the contract's shape, and never a failed attempt.

use crate::helpers::{Backend, Spawn, Token};

#[actix_web::test]
async fn per_user_limit_answers_429_and_counts_no_failure() {
    let app = Spawn::new(Backend::Redis)
        .with(|s| s.limits.per_user_per_minute = 3)
        .start()
        .await;
    let alice = Token::user("acme", "alice").sign();
    let bob = Token::user("acme", "bob").sign();
    app.add(&alice).await.assert_ok();
    app.verify(&alice, "000000")
        .await
        .assert_error(400, 3, "EVENT-8isk2");
    app.verify(&alice, "000001")
        .await
        .assert_error(400, 3, "EVENT-8isk2");
    let limited = app.verify(&alice, "000002").await;
    limited.assert_error(429, 8, "TESSERA-rate1");
    let retry_after: u64 = limited.retry_after.as_deref().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    // The limited attempt was no failure: the store counts two.
    let redis = app.redis.as_ref().unwrap();
    assert_eq!(
        redis
            .cli(&["HGET", "tessera:{acme:alice}", "n"])
            .unwrap()
            .trim(),
        "2"
    );
    // Another user of the same organization is not affected.
    app.add(&bob).await.assert_ok();
}

#[actix_web::test]
async fn per_org_limit_isolates_organizations() {
    let app = Spawn::new(Backend::Memory)
        .with(|s| s.limits.per_org_per_second = 2)
        .start()
        .await;
    let acme = Token::user("acme", "alice").sign();
    let other = Token::user("globex", "alice").sign();
    app.list(&acme).await.assert_ok();
    app.list(&acme).await.assert_ok();
    app.list(&acme).await.assert_error(429, 8, "TESSERA-rate1");
    app.list(&other).await.assert_ok();
}

#[actix_web::test]
async fn per_address_limit_cannot_be_dodged_with_forwarded_headers() {
    let app = Spawn::new(Backend::Memory)
        .with(|s| s.limits.per_address_per_second = 2)
        .start()
        .await;
    let alice = Token::user("acme", "alice").sign();
    app.search_forwarded(&alice, "10.0.0.1").await.assert_ok();
    app.search_forwarded(&alice, "10.0.0.2").await.assert_ok();
    // No trusted proxy configured: the header is ignored, the peer (127.0.0.1) is limited.
    let limited = app.search_forwarded(&alice, "10.0.0.3").await;
    limited.assert_error(429, 8, "TESSERA-rate1");
    assert!(limited.retry_after.is_some());
}

#[actix_web::test]
async fn a_trusted_proxy_forwards_the_client_address() {
    let app = Spawn::new(Backend::Memory)
        .with(|s| {
            s.limits.per_address_per_second = 1;
            s.http.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
        })
        .start()
        .await;
    let alice = Token::user("acme", "alice").sign();
    app.search_forwarded(&alice, "203.0.113.1")
        .await
        .assert_ok();
    app.search_forwarded(&alice, "203.0.113.2")
        .await
        .assert_ok();
    app.search_forwarded(&alice, "203.0.113.1")
        .await
        .assert_error(429, 8, "TESSERA-rate1");
    // A client prepending garbage neither escapes nor lands in the proxy's shared bucket.
    app.search_forwarded(&alice, "not-an-ip, 203.0.113.1")
        .await
        .assert_error(429, 8, "TESSERA-rate1");
    app.search_forwarded(&alice, "not-an-ip, 203.0.113.3")
        .await
        .assert_ok();
    // A client prepending its own entry does not escape: the proxy's (rightmost) entry counts.
    app.search_forwarded(&alice, "198.51.100.7, 203.0.113.2")
        .await
        .assert_error(429, 8, "TESSERA-rate1");
}
