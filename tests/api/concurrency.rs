//! Races across three server instances that share one store (memory, redis-server, Redis
//! Cluster): the store's scripts, not the actors, are what make a code single-use and bound
//! the failures.

use std::collections::BTreeSet;
use std::sync::Arc;

use futures::future::join_all;
use proptest::prelude::{Just, Strategy, prop_oneof};
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use tessera::clock::ManualClock;
use tessera::domain::UnixMicros;
use tessera::store::{MemoryStore, SharedStore};

use crate::helpers::{
    Backend, PINNED_SECS, RedisCluster, RedisServer, Spawn, TestApp, Token, on_every_store,
};

/// Three instances on one store (one memory store, one redis-server or one cluster), with
/// one clock: what one accepts or counts, the others see.
async fn instances(backend: Backend, max_attempts: u32) -> Vec<TestApp> {
    let clock = Arc::new(ManualClock::new(UnixMicros::from_secs(PINNED_SECS)));
    let memory: SharedStore = Arc::new(MemoryStore::new());
    let redis = (backend == Backend::Redis).then(|| Arc::new(RedisServer::start()));
    let cluster = (backend == Backend::Cluster).then(|| Arc::new(RedisCluster::start(3, 0)));
    let mut apps = Vec::new();
    for _ in 0..3 {
        let mut spawn = Spawn::new(backend)
            .with(|s| s.lockout.max_otp_attempts = max_attempts)
            .clock(clock.clone());
        spawn = match (&redis, &cluster) {
            (Some(redis), _) => spawn.redis(redis.clone()),
            (_, Some(cluster)) => spawn.cluster(cluster.clone()),
            _ => spawn.store(memory.clone()),
        };
        apps.push(spawn.start().await);
    }
    apps
}

async fn a_valid_code_raced_across_instances_is_accepted_once(backend: Backend) {
    let apps = instances(backend, 5).await;
    let alice = Token::user("acme", "alice")
        .role("otp.check", "acme")
        .sign();
    let secret = apps[0].ready_for_login(&alice).await;
    let code = apps[0].code(&secret, 0);
    let answers = join_all((0..100).map(|i| apps[i % 3].check(&alice, "alice", &code))).await;
    let accepted = answers.iter().filter(|a| a.status.is_success()).count();
    assert_eq!(accepted, 1, "{answers:?}");
    for answer in answers.iter().filter(|a| !a.status.is_success()) {
        let id = answer.body["details"][0]["id"].as_str().unwrap();
        assert!(id == "EVENT-8isk2" || id == "COMMAND-SF3fg", "{answer:?}");
    }
}

async fn concurrent_wrong_codes_never_exceed_the_maximum(backend: Backend) {
    let apps = instances(backend, 5).await;
    let alice = Token::user("acme", "alice")
        .role("otp.check", "acme")
        .sign();
    apps[0].ready_for_login(&alice).await;
    let answers = join_all((0..60).map(|i| apps[i % 3].check(&alice, "alice", "000000"))).await;
    let ids: Vec<&str> = answers
        .iter()
        .map(|a| a.body["details"][0]["id"].as_str().unwrap())
        .collect();
    let evaluated = ids.iter().filter(|id| **id == "EVENT-8isk2").count();
    let locked = ids.iter().filter(|id| **id == "COMMAND-SF3fg").count();
    assert_eq!(evaluated, 5, "{ids:?}");
    assert_eq!(locked, 55, "{ids:?}");
    // Each evaluated failure saw its own count: 1..=5, no count handed out twice.
    let counts: BTreeSet<i64> = answers
        .iter()
        .filter_map(|a| {
            a.body["details"]
                .get(1)
                .map(|d| d["failedAttempts"].as_i64().unwrap())
        })
        .collect();
    assert_eq!(counts, (1..=5).collect());
}

async fn sequences_are_distinct_under_concurrent_changes(backend: Backend) {
    let apps = instances(backend, 5).await;
    let (a, b) = (&apps[0], &apps[1]);
    let alice = Token::user("acme", "alice").sign();
    let answers = join_all((0..20).map(|i| {
        let app = if i % 2 == 0 { &a } else { &b };
        app.add(&alice)
    }))
    .await;
    let sequences: BTreeSet<u64> = answers.iter().map(|a| a.sequence()).collect();
    assert_eq!(sequences.len(), 20, "each add is its own event");
    // "Last added wins" across instances: only the secret with the highest sequence verifies.
    let mut by_sequence: Vec<_> = answers.iter().collect();
    by_sequence.sort_by_key(|a| a.sequence());
    let secret = by_sequence[19].body["secret"].as_str().unwrap();
    let other = by_sequence[18].body["secret"].as_str().unwrap();
    b.verify(&alice, &b.code(other, 0))
        .await
        .assert_error(400, 3, "EVENT-8isk2");
    a.verify(&alice, &a.code(secret, 0)).await.assert_ok();
}

async fn a_change_through_one_instance_is_honoured_by_the_other(backend: Backend) {
    let apps = instances(backend, 5).await;
    let (a, b) = (&apps[0], &apps[1]);
    let alice = Token::user("acme", "alice")
        .role("otp.check", "acme")
        .sign();
    // b caches the first enrollment while it is still pending.
    let first = a.add(&alice).await.body["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    b.verify(&alice, "000000")
        .await
        .assert_error(400, 3, "EVENT-8isk2");
    // a re-enrolls; b's cached secret is stale and must not verify.
    let second = a.add(&alice).await.body["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    b.verify(&alice, &b.code(&first, 0))
        .await
        .assert_error(400, 3, "EVENT-8isk2");
    b.verify(&alice, &b.code(&second, 0)).await.assert_ok();
    // a removes; b answers from the store, not from its cache.
    a.remove_mine(&alice).await.assert_ok();
    b.clock.advance_secs(30);
    b.check(&alice, "alice", &b.code(&second, 0))
        .await
        .assert_error(400, 9, "COMMAND-3Mif9s");
}

async fn a_recovery_code_raced_across_instances_is_used_once(backend: Backend) {
    // Lockout off: every answer but one must be "invalid", none "locked".
    let apps = instances(backend, 0).await;
    let alice = Token::user("acme", "alice").sign();
    let generated = apps[1]
        .post(
            Some(&alice),
            "/v2/users/alice/recovery_codes",
            serde_json::json!({ "count": 2 }),
        )
        .await;
    let codes = generated.assert_ok()["recoveryCodes"].clone();
    let code = codes[0].as_str().unwrap();
    let checker = Token::user("acme", "login-page")
        .role("otp.check", "acme")
        .sign();
    let path = "/management/v1/users/alice/auth_factors/otp/_check";
    let body = serde_json::json!({ "recoveryCode": code });
    let answers =
        join_all((0..50).map(|i| apps[i % 3].post(Some(&checker), path, body.clone()))).await;
    let accepted: Vec<_> = answers.iter().filter(|a| a.status.is_success()).collect();
    assert_eq!(accepted.len(), 1, "{answers:?}");
    assert_eq!(accepted[0].body["recoveryCodesRemaining"], 1);
    for answer in answers.iter().filter(|a| !a.status.is_success()) {
        answer.assert_error(400, 3, "DOMAIN-6uvh0");
    }
    // The other code is untouched.
    let other = serde_json::json!({ "recoveryCode": codes[1] });
    let used = apps[2].post(Some(&checker), path, other).await;
    assert_eq!(used.assert_ok()["recoveryCodesRemaining"], 0);
}

on_every_store!(
    a_valid_code_raced_across_instances_is_accepted_once,
    a_recovery_code_raced_across_instances_is_used_once,
    concurrent_wrong_codes_never_exceed_the_maximum,
    sequences_are_distinct_under_concurrent_changes,
    a_change_through_one_instance_is_honoured_by_the_other,
    three_instances_answer_every_history_as_one_does,
);

/// One step of a random history, sent through one of the three instances.
#[derive(Debug, Clone, Copy)]
enum Step {
    Add,
    VerifyRight,
    VerifyWrong,
    CheckRight,
    CheckWrong,
    Remove,
    Unlock,
    AdvanceClock,
}

fn step() -> impl Strategy<Value = Step> {
    // Weighted towards the steps that move a factor forward, so that most histories enroll,
    // verify, log in, lock and start again rather than stall on errors.
    prop_oneof![
        2 => Just(Step::Add),
        3 => Just(Step::VerifyRight),
        1 => Just(Step::VerifyWrong),
        4 => Just(Step::CheckRight),
        2 => Just(Step::CheckWrong),
        1 => Just(Step::Remove),
        1 => Just(Step::Unlock),
        4 => Just(Step::AdvanceClock),
    ]
}

/// What a step answered, as a client can compare it: the status, and the error's code and
/// message or which fields a success carried (a secret or sequence differs between setups).
fn comparable(answer: &crate::helpers::Answer) -> (u16, String) {
    let body = &answer.body;
    let shape = if answer.status.is_success() {
        let mut fields: Vec<&str> = body
            .as_object()
            .map(|fields| fields.keys().map(String::as_str).collect())
            .unwrap_or_default();
        fields.sort_unstable();
        fields.join(",")
    } else {
        format!("{} {}", body["code"], body["message"])
    };
    (answer.status.as_u16(), shape)
}

/// The model check of the whole stack: random histories of every operation, each step
/// through a random one of three instances on the shared store (so each instance's actor
/// cache goes stale as the others change the factor), answer exactly as the same history on
/// one instance with the memory store, the reference. A stale cached "no" that was not
/// confirmed by a fresh read, a cache that missed a change, or a store that decides
/// differently shows as a different answer. Sequences grow strictly in every answer, and
/// nothing fails with anything but the contract's client errors. (The store's rule alone,
/// without the stack, is held to the domain's by `differential.rs`.) A deterministic
/// proptest runner, so a failure names a history that can be replayed.
async fn three_instances_answer_every_history_as_one_does(backend: Backend) {
    const HISTORIES: usize = 40;
    let apps = instances(backend, 3).await;
    let reference = Spawn::new(Backend::Memory)
        .with(|s| s.lockout.max_otp_attempts = 3)
        .clock(Arc::new(ManualClock::new(UnixMicros::from_secs(
            PINNED_SECS,
        ))))
        .start()
        .await;
    let admin = Token::user("acme", "root").role("otp.admin", "acme").sign();
    let histories = proptest::collection::vec((0usize..3, step()), 1..40);
    let mut runner = TestRunner::deterministic();
    for n in 0..HISTORIES {
        let history = histories.new_tree(&mut runner).unwrap().current();
        let user = format!("user-{n}");
        let token = Token::user("acme", &user).role("otp.check", "acme").sign();
        // Per setup: the secret of the last enrollment and the highest sequence answered.
        let mut secrets: [Option<String>; 2] = [None, None];
        let mut highest = [0u64; 2];
        for (index, &(instance, step)) in history.iter().enumerate() {
            let mut answers = Vec::with_capacity(2);
            for (setup, app) in [&apps[instance], &reference].into_iter().enumerate() {
                let right = || {
                    secrets[setup]
                        .as_deref()
                        .map_or_else(|| "000000".to_owned(), |s| app.code(s, 0))
                };
                let answer = match step {
                    Step::Add => app.add(&token).await,
                    Step::VerifyRight => app.verify(&token, &right()).await,
                    Step::VerifyWrong => app.verify(&token, "000000").await,
                    Step::CheckRight => app.check(&token, &user, &right()).await,
                    Step::CheckWrong => app.check(&token, &user, "000000").await,
                    Step::Remove => app.remove_mine(&token).await,
                    Step::Unlock => app.unlock(&admin, &user).await,
                    Step::AdvanceClock => {
                        app.clock.advance_secs(30);
                        continue;
                    }
                };
                let context =
                    format!("history {history:?}, step {index}, setup {setup}: {answer:?}");
                assert!(
                    answer.status.is_success() || answer.status.is_client_error(),
                    "{context}"
                );
                if answer.status.is_success() {
                    if let Some(added) = answer.body["secret"].as_str() {
                        secrets[setup] = Some(added.to_owned());
                    }
                    if answer.body.get("details").is_some() {
                        let sequence = answer.sequence();
                        assert!(
                            sequence > highest[setup],
                            "{context}: not above {}",
                            highest[setup]
                        );
                        highest[setup] = sequence;
                    }
                }
                answers.push(comparable(&answer));
            }
            if let [spread, one] = answers.as_slice() {
                assert_eq!(
                    spread, one,
                    "history {history:?}, step {index}: three instances on {backend:?} answered \
                     unlike one instance on the memory store"
                );
            }
        }
    }
}
