//! Faults under load, on real redis-server processes: Redis frozen, Redis killed and
//! restarted (with and without persistence), and a failover right after changes that were
//! acknowledged. Each scenario asserts invariants, never timings; a generous guard only
//! catches hangs.
//!
//! The invariants: no code is accepted twice; no stale enrollment is accepted; an attempt
//! answered UNAVAILABLE because its script reached Redis after the deadline never commits;
//! once readiness says ready, no request answers UNAVAILABLE; nothing acknowledged is undone.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::future::join_all;
use tessera::clock::ManualClock;
use tessera::domain::UnixMicros;

use crate::helpers::{
    Backend, PINNED_SECS, RedisCluster, RedisServer, Spawn, TempDir, TestApp, Token, free_port,
};

/// A guard against hangs only: every request is bounded by the server's own deadlines.
const HANG: Duration = Duration::from_secs(30);

struct User {
    name: String,
    token: String,
    secret: String,
}

impl User {
    fn key(&self) -> String {
        format!("tessera:{{acme:{}}}", self.name)
    }
}

async fn ready_users(app: &TestApp, count: usize) -> Vec<User> {
    let mut users = Vec::new();
    for n in 0..count {
        let name = format!("user-{n}");
        let token = Token::user("acme", &name).role("otp.check", "acme").sign();
        let secret = app.enroll_ready(&token).await;
        users.push(User {
            name,
            token,
            secret,
        });
    }
    app.clock.advance_secs(30);
    users
}

/// One answer, with what the test needs to judge it.
#[derive(Debug)]
struct Seen {
    user: String,
    /// The step of a right code, or `None` for a wrong one.
    step: Option<u64>,
    status: u16,
    /// Sent after readiness had said ready again.
    after_ready: bool,
    /// The error's id, if any.
    id: Option<String>,
}

/// Every user at once, each one request after the other: the current step's code, the same
/// code again (a replay), a wrong code.
async fn wave(app: &TestApp, users: &[User], ready: &AtomicBool) -> Vec<Seen> {
    let step = app.params.step_at(app.now_secs());
    let per_user = users.iter().map(|user| async move {
        let code = app.code(&user.secret, 0);
        let mut seen = Vec::new();
        for (code, step) in [
            (code.clone(), Some(step)),
            (code, Some(step)),
            ("000000".into(), None),
        ] {
            let after_ready = ready.load(Ordering::SeqCst);
            let answer = tokio::time::timeout(HANG, app.check(&user.token, &user.name, &code))
                .await
                .expect("answered within the guard");
            seen.push(Seen {
                user: user.name.clone(),
                step,
                status: answer.status.as_u16(),
                after_ready,
                id: answer.body["details"][0]["id"].as_str().map(str::to_owned),
            });
        }
        seen
    });
    join_all(per_user).await.into_iter().flatten().collect()
}

fn accepted(seen: &[Seen]) -> usize {
    seen.iter().filter(|s| s.status == 200).count()
}

/// No code is accepted twice, and nothing sent after readiness came back is UNAVAILABLE.
fn assert_invariants(seen: &[Seen]) {
    let mut accepted: HashMap<(&str, u64), usize> = HashMap::new();
    for s in seen {
        if s.status == 200 {
            let step = s.step.expect("a wrong code was accepted");
            *accepted.entry((s.user.as_str(), step)).or_default() += 1;
        }
        assert!(
            !(s.after_ready && s.status == 503),
            "UNAVAILABLE after readiness said ready: {s:?}"
        );
        let expected = match s.status {
            200 => s.id.is_none(),
            // A wrong or replayed code; a factor that Redis lost (no READY factor).
            400 => ["EVENT-8isk2", "COMMAND-3Mif9s"].contains(&s.id.as_deref().unwrap_or("")),
            503 => s.id.as_deref() == Some("TESSERA-unav1"),
            _ => false,
        };
        assert!(expected, "an answer outside the contract: {s:?}");
    }
    for ((user, step), times) in accepted {
        assert_eq!(
            times, 1,
            "{user}'s code of step {step} accepted {times} times"
        );
    }
}

/// Waits for the first ready probe, then marks everything sent from now on.
async fn first_ready_probe(apps: &[&TestApp], ready: &AtomicBool) {
    let guard = Instant::now() + HANG;
    for app in apps {
        while !app.ready().await.status().is_success() {
            assert!(Instant::now() < guard, "never ready again");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    ready.store(true, Ordering::SeqCst);
}

/// Redis frozen for 2 s, twice: once between waves, so that every attempt of the frozen
/// wave reaches Redis only after its deadline; once in the middle of a wave, where a reply
/// may be lost after its commit (the one window that remains, see the README).
#[actix_web::test]
async fn redis_paused_under_load() {
    let redis = Arc::new(RedisServer::start());
    let app = Spawn::new(Backend::Redis)
        .redis(redis.clone())
        .with(|s| {
            s.store.timeout_ms = 300;
            // Every failure counted, none locking: the count tells what committed.
            s.lockout.max_otp_attempts = 0;
        })
        .start()
        .await;
    let users = ready_users(&app, 20).await;
    let ready = AtomicBool::new(false);
    let mut seen = Vec::new();
    for _ in 0..2 {
        seen.extend(wave(&app, &users, &ready).await);
        app.clock.advance_secs(30);
    }
    let committed_step = app.params.step_at(app.now_secs()) - 1;

    redis.pause();
    let frozen = Instant::now();
    let stalled = wave(&app, &users, &ready).await;
    assert!(stalled.iter().all(|s| s.status == 503), "{stalled:?}");
    tokio::time::sleep(Duration::from_secs(2).saturating_sub(frozen.elapsed())).await;
    redis.resume();
    first_ready_probe(&[&app], &ready).await;
    for user in &users {
        // As the last wave before the stall left it: its replay and its wrong code.
        assert_eq!(redis.hget(&user.key(), "n"), "2", "{}", user.name);
        assert_eq!(
            redis.hget(&user.key(), "l"),
            committed_step.to_string(),
            "{}",
            user.name
        );
    }
    seen.extend(stalled);
    app.clock.advance_secs(30);

    ready.store(false, Ordering::SeqCst);
    let (mid_wave, ()) = futures::join!(wave(&app, &users, &ready), async {
        tokio::time::sleep(Duration::from_millis(30)).await;
        redis.pause();
        tokio::time::sleep(Duration::from_secs(2)).await;
        redis.resume();
    });
    seen.extend(mid_wave);
    first_ready_probe(&[&app], &ready).await;
    for _ in 0..2 {
        app.clock.advance_secs(30);
        let after = wave(&app, &users, &ready).await;
        assert_eq!(accepted(&after), users.len());
        seen.extend(after);
    }
    assert_invariants(&seen);
}

/// Two instances on one redis-server that the test kills and restarts on the same port, in
/// the middle of a wave.
async fn redis_killed_and_restarted_under_load(persistence: &[&str], persists: bool) {
    let dir = TempDir::new("restart");
    let port = free_port();
    let start = || {
        let mut args = vec!["--dir", dir.0.to_str().unwrap()];
        args.extend_from_slice(persistence);
        RedisServer::start_with(port, &args)
    };
    let mut redis = start();
    let clock = Arc::new(ManualClock::new(UnixMicros::from_secs(PINNED_SECS)));
    let spawn = || {
        Spawn::new(Backend::Redis)
            .external_redis(format!("redis://127.0.0.1:{port}"))
            .clock(clock.clone())
            .with(|s| {
                s.store.timeout_ms = 300;
                s.lockout.max_otp_attempts = 0;
            })
            .start()
    };
    let (a, b) = (spawn().await, spawn().await);
    let users = ready_users(&a, 20).await;
    let ready = AtomicBool::new(false);
    // B checks, so B caches every enrollment.
    let mut seen = wave(&b, &users, &ready).await;
    let spent: Vec<String> = users.iter().map(|u| b.code(&u.secret, 0)).collect();
    b.clock.advance_secs(30);

    let (in_flight, ()) = futures::join!(wave(&b, &users, &ready), async {
        tokio::time::sleep(Duration::from_millis(30)).await;
        redis.kill();
    });
    seen.extend(in_flight);
    redis = start();
    first_ready_probe(&[&a, &b], &ready).await;
    b.clock.advance_secs(30);

    // Codes accepted before the restart stay spent (or their factor is gone).
    for (user, code) in users.iter().zip(&spent) {
        let again = b.check(&user.token, &user.name, code).await;
        assert_ne!(again.status.as_u16(), 200, "{}: {again:?}", user.name);
        assert_ne!(again.status.as_u16(), 503, "{}: {again:?}", user.name);
    }
    if persists {
        let after = wave(&b, &users, &ready).await;
        assert_eq!(accepted(&after), users.len());
        seen.extend(after);
    } else {
        // Redis forgot everyone: A enrolls them again with new secrets, while B still caches
        // the old ones. B never accepts an old secret's code, and accepts the new ones.
        let old: Vec<&User> = users.iter().collect();
        let mut renewed = Vec::new();
        for user in &old {
            let secret = a.enroll_ready(&user.token).await;
            renewed.push(User {
                name: user.name.clone(),
                token: user.token.clone(),
                secret,
            });
        }
        b.clock.advance_secs(30);
        for user in &old {
            let stale = b
                .check(&user.token, &user.name, &b.code(&user.secret, 0))
                .await;
            stale.assert_error(400, 3, "EVENT-8isk2");
        }
        b.clock.advance_secs(30);
        let after = wave(&b, &renewed, &ready).await;
        assert_eq!(accepted(&after), users.len());
        seen.extend(after);
    }
    assert_invariants(&seen);
    drop(redis);
}

#[actix_web::test]
async fn redis_killed_and_restarted_under_load_with_aof_always() {
    redis_killed_and_restarted_under_load(
        &["--appendonly", "yes", "--appendfsync", "always"],
        true,
    )
    .await;
}

#[actix_web::test]
async fn redis_killed_and_restarted_under_load_without_persistence() {
    redis_killed_and_restarted_under_load(&[], false).await;
}

/// `count` users whose keys the same master serves: one kill fails them all over.
fn users_on_one_master(cluster: &mut RedisCluster, count: usize) -> (u16, Vec<String>) {
    let mut by_master: HashMap<u16, Vec<String>> = HashMap::new();
    for n in 0.. {
        let user = format!("user-{n}");
        let port = cluster.master_of(&format!("tessera:{{acme:{user}}}")).port;
        let users = by_master.entry(port).or_default();
        users.push(user);
        if users.len() == count {
            return (port, users.clone());
        }
    }
    unreachable!()
}

/// Three changes (an accepted code, an unlock, a removal), each for its own user.
struct Changes {
    accepting: String,
    accepting_secret: String,
    spent: String,
    unlocked: String,
    unlocked_secret: String,
    removed: String,
}

fn checker(name: &str) -> String {
    Token::user("acme", name).role("otp.check", "acme").sign()
}

impl Changes {
    /// Enrolls the three users; `unlocked` is locked (two failures, until an admin unlocks).
    async fn prepare(app: &TestApp, names: &[String]) -> Self {
        let accepting_secret = app.ready_for_login(&checker(&names[0])).await;
        let unlocked_secret = app.ready_for_login(&checker(&names[1])).await;
        app.ready_for_login(&checker(&names[2])).await;
        for _ in 0..2 {
            app.check(&checker(&names[1]), &names[1], "000000").await;
        }
        Self {
            spent: String::new(),
            accepting: names[0].clone(),
            accepting_secret,
            unlocked: names[1].clone(),
            unlocked_secret,
            removed: names[2].clone(),
        }
    }

    /// Makes the three changes at once; returns whether each was acknowledged.
    async fn make(&mut self, app: &TestApp, admin: &str) -> [bool; 3] {
        self.spent = app.code(&self.accepting_secret, 0);
        let removal = format!("/management/v1/users/{}/auth_factors/otp", self.removed);
        let token = checker(&self.accepting);
        let (checked, unlocked, removed) = futures::join!(
            app.check(&token, &self.accepting, &self.spent),
            app.unlock(admin, &self.unlocked),
            app.delete(Some(admin), &removal),
        );
        [checked, unlocked, removed].map(|answer| {
            assert!(
                [200, 503].contains(&answer.status.as_u16()),
                "neither done nor UNAVAILABLE: {answer:?}"
            );
            answer.status.as_u16() == 200
        })
    }

    /// After the failover: each acknowledged change is still there.
    async fn assert_kept(&self, app: &TestApp, acknowledged: [bool; 3]) {
        let [accepted, unlocked, removed] = acknowledged;
        let again = app
            .check(&checker(&self.accepting), &self.accepting, &self.spent)
            .await;
        assert_ne!(
            again.status.as_u16(),
            200,
            "a spent code was accepted again"
        );
        if accepted {
            again.assert_error(400, 3, "EVENT-8isk2");
        }
        if unlocked {
            let code = app.code(&self.unlocked_secret, 0);
            let answer = app
                .check(&checker(&self.unlocked), &self.unlocked, &code)
                .await;
            assert_ne!(
                answer.body["details"][0]["id"], "COMMAND-SF3fg",
                "an acknowledged unlock was undone: {answer:?}"
            );
        }
        if removed {
            let listed = app.list(&checker(&self.removed)).await;
            // An empty list is left out of the JSON, as any unset field.
            let count = listed.assert_ok()["result"].as_array().map(Vec::len);
            assert_eq!(count.unwrap_or(0), 0, "an acknowledged removal was undone");
        }
    }
}

/// With `wait_replicas = 1`, an accepted code, an unlock and a removal, then the master that
/// holds them is killed: after the failover, none that was acknowledged is undone. Once with
/// a healthy replica (all are acknowledged), once with the master's link to its replica cut
/// (the replica frozen so that it cannot reconnect): a change acknowledged then would exist
/// on the dying master alone.
#[actix_web::test]
async fn a_failover_right_after_acknowledged_changes_undoes_none() {
    let mut cluster = RedisCluster::start(3, 1);
    let (master, names) = users_on_one_master(&mut cluster, 6);
    let app = Spawn::new(Backend::Cluster)
        .external_redis(cluster.seeds())
        .with(|s| {
            s.redis.wait_replicas = 1;
            s.store.timeout_ms = 600;
            s.lockout.max_otp_attempts = 2;
            s.lockout.lock_duration_secs = 0;
        })
        .start()
        .await;
    let admin = Token::user("acme", "root").role("otp.admin", "acme").sign();
    let mut healthy = Changes::prepare(&app, &names[..3]).await;
    let mut cut = Changes::prepare(&app, &names[3..]).await;

    let acknowledged = healthy.make(&app, &admin).await;
    assert_eq!(acknowledged, [true; 3], "a healthy replica acknowledges");
    let replica = cluster.replica_of(master);
    replica.pause();
    let primary = cluster.nodes.iter().find(|n| n.port == master).unwrap();
    primary.cli(&["CLIENT", "KILL", "TYPE", "replica"]).unwrap();
    let acknowledged_cut = cut.make(&app, &admin).await;
    cluster
        .nodes
        .iter_mut()
        .find(|node| node.port == master)
        .unwrap()
        .kill();
    replica.resume();

    // Until the replica is promoted, answers are UNAVAILABLE (fail closed).
    let guard = Instant::now() + HANG;
    loop {
        let answer = app.list(&checker(&healthy.accepting)).await;
        if answer.status.as_u16() == 200 {
            break;
        }
        answer.assert_error(503, 14, "TESSERA-unav1");
        assert!(Instant::now() < guard, "the replica was never promoted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.clock.advance_secs(30);
    healthy.assert_kept(&app, acknowledged).await;
    cut.assert_kept(&app, acknowledged_cut).await;
}
