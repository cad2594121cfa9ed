//! Redis down or slow: UNAVAILABLE within a bounded time, never a success, never a hang;
//! the server recovers by itself when Redis returns.

use std::sync::Arc;
use std::time::Duration;

use crate::helpers::{Backend, RedisServer, Spawn, Token};

#[actix_web::test]
async fn redis_down_is_503_and_recovery_is_automatic() {
    let port = crate::helpers::free_port();
    let mut redis = RedisServer::start_on(port);
    // The app holds the URL, not the handle, so the test can stop and restart the server.
    let app = Spawn::new(Backend::Redis)
        .external_redis(redis.url())
        .start()
        .await;
    let alice = Token::user("acme", "alice")
        .role("otp.check", "acme")
        .sign();
    let secret = app.enroll_ready(&alice).await;
    redis.kill();
    app.clock.advance_secs(30);
    let code = app.code(&secret, 0);
    for _ in 0..3 {
        let answer =
            tokio::time::timeout(Duration::from_secs(10), app.check(&alice, "alice", &code))
                .await
                .expect("fails closed within a bounded time");
        answer.assert_error(503, 14, "TESSERA-unav1");
    }
    let ready = app.ready().await;
    assert_eq!(ready.status().as_u16(), 503);
    // Redis returns (empty: it keeps nothing on disk here); tessera reconnects on its own.
    let _redis = RedisServer::start_on(port);
    let mut recovered = false;
    for _ in 0..50 {
        if app.list(&alice).await.status.is_success() {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(recovered, "tessera reconnects without a restart");
    let ready = app.ready().await;
    assert_eq!(ready.status().as_u16(), 200);
    app.add(&alice).await.assert_ok();
}

#[actix_web::test]
async fn slow_redis_times_out_as_503() {
    let redis = Arc::new(RedisServer::start());
    let app = Spawn::new(Backend::Redis)
        .with(|s| s.store.timeout_ms = 300)
        .redis(redis.clone())
        .start()
        .await;
    let alice = Token::user("acme", "alice")
        .role("otp.check", "acme")
        .sign();
    let secret = app.ready_for_login(&alice).await;
    let code = app.code(&secret, 0);
    // Block the server for two seconds from another connection.
    let blocker = {
        let redis = redis.clone();
        std::thread::spawn(move || redis.cli(&["DEBUG", "SLEEP", "2"]))
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let answer = app.check(&alice, "alice", &code).await;
    answer.assert_error(503, 14, "TESSERA-unav1");
    blocker.join().unwrap();
    // Once Redis answers again the same code still works: the timed-out call may or may not
    // have committed, but it never answered success, and a code is still accepted once.
    let after = app.check(&alice, "alice", &code).await;
    let id = after.body["details"][0]["id"].clone();
    assert!(
        after.status.is_success() || id == "EVENT-8isk2",
        "{after:?}"
    );
}
