//! The store's edges, each on real redis-server processes: data that Redis loses, writes that
//! must reach a replica before they are acknowledged, scripts that arrive after their request
//! gave up, and connections left dormant by a restart.

use std::sync::Arc;
use std::time::Duration;

use tessera::clock::ManualClock;
use tessera::domain::UnixMicros;

use crate::helpers::{Backend, PINNED_SECS, RedisServer, Spawn, TestApp, Token, free_port};

const ALICE_KEY: &str = "tessera:{acme:alice}";

fn checker(org: &str, user: &str) -> String {
    Token::user(org, user).role("otp.check", org).sign()
}

fn admin(org: &str) -> String {
    Token::user(org, "root").role("otp.admin", org).sign()
}

/// Two instances on one redis-server, one clock.
async fn two_instances(redis: &Arc<RedisServer>) -> (TestApp, TestApp) {
    let clock = Arc::new(ManualClock::new(UnixMicros::from_secs(PINNED_SECS)));
    let a = Spawn::new(Backend::Redis)
        .redis(redis.clone())
        .clock(clock.clone())
        .start()
        .await;
    let b = Spawn::new(Backend::Redis)
        .redis(redis.clone())
        .clock(clock)
        .start()
        .await;
    (a, b)
}

/// Redis forgets a user (a restart without persistence, a failover that drops writes,
/// eviction, FLUSHALL) while another replica still caches the old enrollment: the old secret's
/// codes never commit, and the new secret's codes are not refused there.
#[actix_web::test]
async fn a_replaced_secret_is_never_accepted_after_redis_loses_data() {
    let redis = Arc::new(RedisServer::start());
    let (a, b) = two_instances(&redis).await;
    let alice = checker("acme", "alice");
    let old = a.ready_for_login(&alice).await;
    // B caches the old enrollment.
    b.check(&alice, "alice", &b.code(&old, 0)).await.assert_ok();
    redis.cli(&["FLUSHALL"]).unwrap();
    let new = a.enroll_ready(&alice).await;
    a.clock.advance_secs(30);
    b.check(&alice, "alice", &b.code(&new, 0)).await.assert_ok();
    a.clock.advance_secs(30);
    b.check(&alice, "alice", &b.code(&old, 0))
        .await
        .assert_error(400, 3, "EVENT-8isk2");
    assert_eq!(redis.hget(ALICE_KEY, "n"), "1", "one failure: the old code");
}

/// Sequences never go back, not even when Redis loses the user's key.
#[actix_web::test]
async fn the_sequence_does_not_go_back_after_redis_loses_data() {
    let redis = Arc::new(RedisServer::start());
    let (a, _b) = two_instances(&redis).await;
    let alice = checker("acme", "alice");
    let added = a.add(&alice).await.sequence();
    let secret = a.add(&alice).await;
    let before = secret.sequence();
    assert!(before > added);
    redis.cli(&["FLUSHALL"]).unwrap();
    let after = a.add(&alice).await.sequence();
    assert!(
        after > before,
        "{after} after {before}: the sequence went back"
    );
}

/// With `wait_replicas = 1` and the replica frozen, no change is acknowledged: enrollment,
/// verification, an accepted check, a new lock, removal and unlock each answer UNAVAILABLE.
/// A wrong code below the lock changes nothing that must survive, and is answered.
#[actix_web::test]
async fn every_acknowledged_change_waits_for_the_replica() {
    let primary = Arc::new(RedisServer::start());
    let replica = primary.start_replica();
    let app = Spawn::new(Backend::Redis)
        .redis(primary.clone())
        .with(|s| {
            s.redis.wait_replicas = 1;
            s.store.timeout_ms = 400;
            s.lockout.max_otp_attempts = 2;
        })
        .start()
        .await;
    let admin = admin("acme");
    let pending = checker("acme", "pending");
    let added = app.add(&pending).await;
    let pending_secret = added.body["secret"].as_str().unwrap().to_owned();
    let ready = checker("acme", "ready");
    let ready_secret = app.ready_for_login(&ready).await;
    let locking = checker("acme", "locking");
    app.ready_for_login(&locking).await;
    app.check(&locking, "locking", "000000")
        .await
        .assert_error(400, 3, "EVENT-8isk2");
    let removed = checker("acme", "removed");
    app.ready_for_login(&removed).await;
    let unlocked = checker("acme", "unlocked");
    app.ready_for_login(&unlocked).await;
    for _ in 0..2 {
        app.check(&unlocked, "unlocked", "000000").await;
    }
    let newcomer = checker("acme", "newcomer");
    let wrong = checker("acme", "wrong");
    app.ready_for_login(&wrong).await;

    replica.pause();
    let unavailable =
        |answer: crate::helpers::Answer| answer.assert_error(503, 14, "TESSERA-unav1");
    unavailable(app.add(&newcomer).await);
    unavailable(app.verify(&pending, &app.code(&pending_secret, 0)).await);
    unavailable(
        app.check(&ready, "ready", &app.code(&ready_secret, 0))
            .await,
    );
    unavailable(app.check(&locking, "locking", "000000").await);
    unavailable(
        app.delete(
            Some(&admin),
            "/management/v1/users/removed/auth_factors/otp",
        )
        .await,
    );
    unavailable(app.unlock(&admin, "unlocked").await);
    app.check(&wrong, "wrong", "000000")
        .await
        .assert_error(400, 3, "EVENT-8isk2");
    replica.resume();
}

/// A write waiting for a frozen replica holds nothing that other requests need: checks that
/// need no wait (wrong codes below the lock), for users of the same organization, are answered
/// while it waits. The write is acknowledged once the replica has it.
#[actix_web::test]
async fn checks_that_need_no_wait_flow_while_a_write_waits() {
    let primary = Arc::new(RedisServer::start());
    let replica = primary.start_replica();
    let app = Arc::new(
        Spawn::new(Backend::Redis)
            .redis(primary.clone())
            .with(|s| {
                s.redis.wait_replicas = 1;
                // Long enough that only the replica's return can end the waits below.
                s.store.timeout_ms = 60_000;
                s.tenants.call_timeout_ms = 60_000;
                s.lockout.max_otp_attempts = 0;
            })
            .start()
            .await,
    );
    let admin = admin("acme");
    let accepted = checker("acme", "accepted");
    let accepted_secret = app.ready_for_login(&accepted).await;
    let removed = checker("acme", "removed");
    app.ready_for_login(&removed).await;
    let others: Vec<(String, String)> = (0..5)
        .map(|n| {
            let user = format!("other-{n}");
            (checker("acme", &user), user)
        })
        .collect();
    for (token, _) in &others {
        app.ready_for_login(token).await;
    }

    replica.pause();
    let code = app.code(&accepted_secret, 0);
    let accepting = {
        let app = app.clone();
        actix_rt::spawn(async move { app.check(&accepted, "accepted", &code).await })
    };
    let removing = {
        let app = app.clone();
        actix_rt::spawn(async move {
            app.delete(
                Some(&admin),
                "/management/v1/users/removed/auth_factors/otp",
            )
            .await
        })
    };
    // Let both writes reach their WAIT.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for round in 0..4 {
        for (token, user) in &others {
            let answer =
                tokio::time::timeout(Duration::from_secs(10), app.check(token, user, "000000"))
                    .await
                    .unwrap_or_else(|_| {
                        panic!("round {round}: a wrong code for {user} queued behind a WAIT")
                    });
            answer.assert_error(400, 3, "EVENT-8isk2");
        }
    }
    assert!(!accepting.is_finished() && !removing.is_finished());
    replica.resume();
    accepting.await.unwrap().assert_ok();
    removing.await.unwrap().assert_ok();
}

/// Redis frozen (`SIGSTOP`) while codes are tried: every attempt is answered UNAVAILABLE, and
/// none of them commits when Redis runs again, whatever this replica's clock says (the
/// deadline is taken in Redis's clock, never from the domain's `now`).
async fn stalled_attempts_never_commit_later(clock_offset_secs: i64) {
    let redis = Arc::new(RedisServer::start());
    let now = chrono::Utc::now().timestamp() + clock_offset_secs;
    // In the middle of a step, so the codes below stay current.
    let now = now - now.rem_euclid(30) + 15;
    let clock = Arc::new(ManualClock::new(UnixMicros::from_secs(now)));
    let app = Spawn::new(Backend::Redis)
        .redis(redis.clone())
        .clock(clock)
        .with(|s| {
            s.store.timeout_ms = 300;
            s.lockout.max_otp_attempts = 5;
        })
        .start()
        .await;
    let alice = checker("acme", "alice");
    let secret = app.ready_for_login(&alice).await;
    redis.pause();
    for _ in 0..6 {
        app.check(&alice, "alice", "000000")
            .await
            .assert_error(503, 14, "TESSERA-unav1");
    }
    redis.resume();
    // What queued during the stall runs now; readiness answers on a connection that queued
    // behind it, so once it is ready again, the queue has been served.
    wait_ready(&app).await;
    assert_eq!(
        redis.hget(ALICE_KEY, "n"),
        "0",
        "a stalled attempt committed"
    );
    assert_eq!(redis.hget(ALICE_KEY, "u"), "", "a stalled attempt locked");
    app.check(&alice, "alice", &app.code(&secret, 0))
        .await
        .assert_ok();
}

#[actix_web::test]
async fn stalled_attempts_never_commit_later_with_the_replica_clock_behind() {
    stalled_attempts_never_commit_later(-86_400).await;
}

#[actix_web::test]
async fn stalled_attempts_never_commit_later_with_the_replica_clock_ahead() {
    stalled_attempts_never_commit_later(86_400).await;
}

/// The ids of the clients connected now, but for redis-cli's own.
fn client_ids(redis: &RedisServer) -> std::collections::BTreeSet<String> {
    redis
        .cli(&["CLIENT", "LIST"])
        .unwrap()
        .lines()
        .filter(|line| !line.contains("cmd=client|list"))
        .filter_map(|line| line.split(' ').next().map(str::to_owned))
        .collect()
}

async fn wait_ready(app: &TestApp) {
    for _ in 0..150 {
        if app.ready().await.status().is_success() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("tessera did not become ready again");
}

/// Every thread that talks to Redis holds a connection: organizations are spread over the
/// actor threads, probes over the HTTP workers. Returns each organization's token.
async fn connections_on_every_thread(app: &TestApp) -> Vec<(String, String)> {
    let mut users = Vec::new();
    for n in 0..6 {
        let org = format!("org-{n}");
        let token = checker(&org, "alice");
        app.enroll_ready(&token).await;
        users.push((org, token));
    }
    for _ in 0..10 {
        assert!(app.ready().await.status().is_success());
    }
    users
}

/// No request and no probe answers UNAVAILABLE: no thread keeps a dead connection for its
/// next request to find.
async fn nothing_answers_503(app: &TestApp, users: &[(String, String)], enrolled: bool) {
    for (org, token) in users {
        let listed = app.list(token).await;
        assert_eq!(listed.status.as_u16(), 200, "{org}: {listed:?}");
        let added = app.add(token).await;
        if enrolled {
            added.assert_error(409, 6, "COMMAND-do9se");
        } else {
            added.assert_ok();
        }
    }
    for _ in 0..30 {
        let probe = app.ready().await;
        assert_eq!(probe.status().as_u16(), 200);
    }
}

/// After Redis restarts, once readiness says ready again, nothing answers UNAVAILABLE.
async fn no_request_answers_503_once_ready_after_a_restart(down_for: Duration) {
    let port = free_port();
    let mut redis = RedisServer::start_on(port);
    let app = Spawn::new(Backend::Redis)
        .external_redis(redis.url())
        .start()
        .await;
    let users = connections_on_every_thread(&app).await;
    redis.kill();
    tokio::time::sleep(down_for).await;
    let _redis = RedisServer::start_on(port);
    wait_ready(&app).await;
    // Redis kept nothing: the factors are gone and may be enrolled again.
    nothing_answers_503(&app, &users, false).await;
}

#[actix_web::test]
async fn no_request_answers_503_once_ready_after_a_quick_restart() {
    no_request_answers_503_once_ready_after_a_restart(Duration::ZERO).await;
}

#[actix_web::test]
async fn no_request_answers_503_once_ready_after_a_long_restart() {
    // Long enough for every connection to notice and give up reconnecting.
    no_request_answers_503_once_ready_after_a_restart(Duration::from_secs(4)).await;
}

/// A server that closes idle clients (`timeout` in redis.conf, common on managed Redis)
/// leaves every quiet thread's connection closed: the next request must not find out.
#[actix_web::test]
async fn no_request_answers_503_after_redis_closes_idle_connections() {
    let redis = Arc::new(RedisServer::start());
    let app = Spawn::new(Backend::Redis)
        .redis(redis.clone())
        .start()
        .await;
    let users = connections_on_every_thread(&app).await;
    let before = client_ids(&redis);
    redis.cli(&["CONFIG", "SET", "timeout", "1"]).unwrap();
    // Redis checks idle clients about once a second.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = client_ids(&redis);
    // The replica's poll for policy changes (every `tenants.policy_refresh_ms`) keeps the
    // connection it runs on busy: at most that one survives, every quiet one is closed.
    let survivors = before.intersection(&after).count();
    assert!(
        before.len() >= 2 && survivors <= 1,
        "idle connections were not closed: {before:?} then {after:?}"
    );
    nothing_answers_503(&app, &users, true).await;
}
