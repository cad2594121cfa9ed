//! The audit trail: every change of a user's factor and every check outcome is an event,
//! written with its change; who did it, through which request and from where; kept as the
//! organization says; and the organization's feed, assembled after the fact from its users'
//! streams, holds each event once, in its user's order, within a second.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tessera::domain::audit::{AddressRecording, Author, Retention};
use tessera::domain::factor::Attempt;
use tessera::domain::{FactorId, UnixMicros};
use tessera::domain::{LockoutPolicy, Purpose};
use tessera::store::{
    FactorStore, FeedDue, FeedNote, FeedSource, FeedSources, NewFactor, RecordFormat, RedisConfig,
    RedisMode, RedisNodes, RedisStore, Stamp, UserKey, Written,
};

use crate::helpers::{
    Answer, Backend, RedisCluster, RedisServer, Spawn, TestApp, Token, on_every_store,
};

on_every_store!(
    every_change_and_check_outcome_is_an_event_of_its_user,
    the_organization_keeps_as_many_events_as_it_says,
    a_change_whose_note_was_lost_reaches_the_feed_with_the_users_next,
    a_check_after_a_lost_note_brings_it_to_the_feed,
);

fn root() -> String {
    Token::user("acme", "root").role("otp.admin", "acme").sign()
}

fn login_page() -> String {
    Token::user("acme", "login")
        .role("otp.check", "acme")
        .sign()
}

async fn get(app: &TestApp, token: &str, path: &str) -> Answer {
    app.send(app.client.get(app.url(path)).bearer_auth(token))
        .await
}

/// Every event of a listing, page by page (`page_size` each), newest first.
async fn all_events(app: &TestApp, path: &str, page_size: usize) -> Vec<Value> {
    let mut events = Vec::new();
    let mut token = String::new();
    let separator = if path.contains('?') { '&' } else { '?' };
    loop {
        let page = get(
            app,
            &root(),
            &format!("{path}{separator}pageSize={page_size}&pageToken={token}"),
        )
        .await;
        let body = page.assert_ok().clone();
        let result = body["result"].as_array().cloned().unwrap_or_default();
        assert!(result.len() <= page_size, "{body}");
        events.extend(result);
        match body["nextPageToken"].as_str() {
            Some(next) => token = next.to_owned(),
            None => return events,
        }
    }
}

fn types(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|event| event["type"].as_str().unwrap().to_owned())
        .collect()
}

/// How long a test waits for the feed's copier (off the request's path) to catch up.
const FEED_WAIT: Duration = Duration::from_secs(5);

/// The organization's feed, once `done` holds of it (within `FEED_WAIT`).
async fn feed_when(app: &TestApp, path: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let started = Instant::now();
    loop {
        let events = all_events(app, path, 1000).await;
        if done(&events) {
            return events;
        }
        assert!(
            started.elapsed() < FEED_WAIT,
            "the feed is not yet as expected after {FEED_WAIT:?}: {events:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The organization's feed, once it holds `count` events.
async fn feed_of(app: &TestApp, path: &str, count: usize) -> Vec<Value> {
    feed_when(app, path, |events| events.len() >= count).await
}

async fn every_change_and_check_outcome_is_an_event_of_its_user(backend: Backend) {
    let app = Spawn::new(backend).start().await;
    let root = root();
    let alice = Token::user("acme", "alice").sign();
    // Two failures lock, for a minute.
    app.post(
        Some(&root),
        "/management/v1/policies/lockout",
        json!({"maxOtpAttempts": 2}),
    )
    .await
    .assert_ok();
    app.send(
        app.client
            .put(app.url("/management/v1/policies/otp"))
            .bearer_auth(&root)
            .json(&json!({"lockDurationSecs": 60})),
    )
    .await
    .assert_ok();
    let secret = app.add(&alice).await.assert_ok()["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    app.verify(&alice, "000000")
        .await
        .assert_error(400, 3, "EVENT-8isk2");
    app.verify(&alice, &app.code(&secret, 0)).await.assert_ok();
    let page = login_page();
    let next = app.code(&secret, 1);
    app.check(&page, "alice", &next).await.assert_ok();
    app.check(&page, "alice", &next)
        .await
        .assert_error(400, 3, "EVENT-8isk2");
    // The second failure in a row locks; with a request id of the caller's.
    app.send(
        app.client
            .post(app.url("/management/v1/users/alice/auth_factors/otp/_check"))
            .bearer_auth(&page)
            .header("x-request-id", "audit-req-1")
            .json(&json!({"code": "000000"})),
    )
    .await
    .assert_error(400, 3, "EVENT-8isk2");
    // The lock expires by time alone: the next attempt notices, and says so first.
    app.clock.advance_secs(61);
    app.check(&page, "alice", "000000")
        .await
        .assert_error(400, 3, "EVENT-8isk2");
    app.check(&page, "alice", "000000")
        .await
        .assert_error(400, 3, "EVENT-8isk2");
    app.unlock(&root, "alice").await.assert_ok();
    let generated = app
        .post(
            Some(&root),
            "/v2/users/alice/recovery_codes",
            json!({"count": 2}),
        )
        .await;
    let code = generated.assert_ok()["recoveryCodes"][0]
        .as_str()
        .unwrap()
        .to_owned();
    app.post(
        Some(&page),
        "/management/v1/users/alice/auth_factors/otp/_check",
        json!({"recoveryCode": code}),
    )
    .await
    .assert_ok();
    app.delete(Some(&root), "/v2/users/alice/recovery_codes")
        .await
        .assert_ok();
    app.delete(Some(&root), "/management/v1/users/alice/auth_factors/otp")
        .await
        .assert_ok();

    let expected = [
        "enrolled",
        "check_invalid",
        "verified",
        "check_accepted",
        "replay_refused",
        "check_invalid",
        "locked",
        "lock_expired",
        "check_invalid",
        "check_invalid",
        "locked",
        "unlocked",
        "recovery_codes_generated",
        "recovery_code_used",
        "recovery_codes_removed",
        "removed",
    ];
    // Page by page, newest first, straight from the user's own stream.
    let mut events = all_events(&app, "/management/v1/users/alice/events", 5).await;
    events.reverse();
    assert_eq!(types(&events), expected, "{events:#?}");
    // Sequences are those of the changes: they never go back.
    let sequences: Vec<u64> = events
        .iter()
        .map(|event| event["sequence"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(
        sequences.windows(2).all(|pair| pair[0] <= pair[1]),
        "{sequences:?}"
    );
    // Who acted, through which request, from where (loopback, truncated by default).
    let by = |event: &Value| {
        (
            event["actorUserId"].as_str().unwrap().to_owned(),
            event["actorOrgId"].as_str().unwrap().to_owned(),
        )
    };
    assert_eq!(by(&events[0]), ("alice".into(), "acme".into()));
    assert_eq!(by(&events[3]), ("login".into(), "acme".into()));
    assert_eq!(by(&events[11]), ("root".into(), "acme".into()));
    assert_eq!(events[5]["requestId"], "audit-req-1");
    assert_eq!(
        events[6]["requestId"], "audit-req-1",
        "the lock is the same change"
    );
    assert_ne!(events[4]["requestId"], events[5]["requestId"]);
    for event in &events {
        assert_eq!(event["userId"], "alice", "{event}");
        assert_eq!(event["clientAddress"], "127.0.0.0/24", "{event}");
    }
    // The lock's expiry carries the time of the attempt that noticed it.
    assert_eq!(events[7]["creationDate"], events[8]["creationDate"]);

    // The organization's feed: the same events, in the same order, after the two policy
    // changes, within a second.
    let mut feed = feed_of(&app, "/management/v1/events", expected.len() + 2).await;
    feed.reverse();
    assert_eq!(types(&feed[..2]), ["policy_changed", "policy_changed"]);
    assert!(feed[..2].iter().all(|event| event.get("userId").is_none()));
    assert_eq!(types(&feed[2..]), expected);
    // Filtered by user, type and time.
    let locks = all_events(
        &app,
        "/management/v1/events?userId=alice&type=locked,unlocked",
        1,
    )
    .await;
    assert_eq!(types(&locks), ["unlocked", "locked", "locked"]);
    let before_expiry = events[6]["creationDate"].as_str().unwrap().to_owned();
    let early = all_events(
        &app,
        &format!("/management/v1/events?userId=alice&until={before_expiry}"),
        100,
    )
    .await;
    assert_eq!(types(&early).len(), 7, "{early:#?}");
    let late = all_events(
        &app,
        &format!(
            "/management/v1/events?since={}",
            events[7]["creationDate"].as_str().unwrap()
        ),
        100,
    )
    .await;
    assert_eq!(late.len(), expected.len() - 7, "{late:#?}");
    assert!(
        all_events(&app, "/management/v1/events?userId=bob", 10)
            .await
            .is_empty()
    );

    // Only admins read the trail; bad queries are the contract's errors.
    get(&app, &alice, "/management/v1/events")
        .await
        .assert_error(403, 7, "TESSERA-perm1");
    get(&app, &alice, "/management/v1/users/alice/events")
        .await
        .assert_error(403, 7, "TESSERA-perm1");
    for query in ["type=nope", "since=yesterday", "pageSize=x"] {
        get(&app, &root, &format!("/management/v1/events?{query}"))
            .await
            .assert_error(400, 3, "TESSERA-query1");
    }
    get(&app, &root, "/management/v1/events?pageToken=abc")
        .await
        .assert_error(400, 3, "TESSERA-page1");
}

async fn the_organization_keeps_as_many_events_as_it_says(backend: Backend) {
    let app = Spawn::new(backend).start().await;
    let root = root();
    app.send(
        app.client
            .put(app.url("/management/v1/policies/otp"))
            .bearer_auth(&root)
            .json(&json!({"auditMaxEventsPerUser": 3, "auditMaxEvents": 4})),
    )
    .await
    .assert_ok();
    let policy = get(&app, &root, "/management/v1/policies/otp").await;
    assert_eq!(policy.assert_ok()["policy"]["auditMaxEventsPerUser"], 3);
    let alice = Token::user("acme", "alice").sign();
    app.ready_for_login(&alice).await;
    // One check at a time, each waited for in the feed: the feed copies from the user's
    // list, which keeps 3 here, so a copier more than 3 events behind (a loaded machine)
    // would find the oldest already trimmed (README, "The organization's feed"). The
    // retention of each is what this test is about, not the copier's pace.
    for checked in 1..=4 {
        app.check(&login_page(), "alice", "000000").await;
        feed_when(&app, "/management/v1/events", |feed| {
            types(feed)
                .iter()
                .filter(|kind| *kind == "check_invalid")
                .count()
                >= checked
        })
        .await;
    }
    let events = all_events(&app, "/management/v1/users/alice/events", 100).await;
    assert_eq!(
        types(&events),
        ["check_invalid", "check_invalid", "check_invalid"],
        "the newest 3 of the user's 6"
    );
    // The feed keeps the newest 4 of its 7 (a policy change, then the user's 6).
    feed_when(&app, "/management/v1/events", |feed| {
        feed.len() == 4 && types(feed).iter().all(|kind| kind == "check_invalid")
    })
    .await;
    // Out of bounds is refused, every problem named.
    let refused = app
        .send(
            app.client
                .put(app.url("/management/v1/policies/otp"))
                .bearer_auth(&root)
                .json(&json!({"auditMaxEventsPerUser": 0, "auditMaxAgeDays": 0})),
        )
        .await;
    refused.assert_error(400, 3, "TESSERA-policy1");
    let message = refused.body["message"].as_str().unwrap();
    assert!(
        message.contains("auditMaxEventsPerUser") && message.contains("auditMaxAgeDays"),
        "{message}"
    );
}

/// A change whose note to the feed was lost (a full queue, a replica that died before
/// copying) is in the user's stream; the user's next change copies it too, in order. (On one
/// Redis server a change's script appends to the feed itself, and there is no note to lose:
/// here the copier appends there too, as with `redis.feed_in_script = false`.)
async fn a_change_whose_note_was_lost_reaches_the_feed_with_the_users_next(backend: Backend) {
    let app = Spawn::new(backend)
        .with(|settings| settings.redis.feed_in_script = false)
        .start()
        .await;
    let alice = Token::user("acme", "alice").sign();
    app.ready_for_login(&alice).await;
    let feed = feed_of(&app, "/management/v1/events", 2).await;
    assert_eq!(types(&feed), ["verified", "enrolled"]);
    // A removal straight through the store: committed with its event, never noted.
    let store = &app.registry.deps().store;
    let stamp = Stamp {
        now: UnixMicros::from_secs(i64::try_from(app.now_secs()).unwrap()),
        actor: Arc::new(Author {
            request_id: "lost".into(),
            user: "root".into(),
            org: "acme".into(),
            address: None,
        }),
        retention: Retention::default(),
    };
    let key = UserKey {
        org: "acme".into(),
        user: "alice".into(),
    };
    let deadline = Instant::now() + Duration::from_secs(2);
    store.remove(&key, &stamp, deadline).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        all_events(&app, "/management/v1/events", 100).await.len(),
        2,
        "nothing noted the removal"
    );
    // The next change through tessera brings both, in the user's order.
    app.add(&alice).await.assert_ok();
    let feed = feed_of(&app, "/management/v1/events", 4).await;
    assert_eq!(
        types(&feed),
        ["enrolled", "removed", "verified", "enrolled"]
    );
    assert_eq!(feed[1]["requestId"], "lost");
    // Ten more straight through the store (more than one read's page), then one through
    // tessera: all eleven, in order.
    for round in 0..5u8 {
        let factor = NewFactor {
            factor_id: FactorId::from_random([round; 16]),
            params: app.params,
            sealed_secret: vec![1; 8],
        };
        store.remove(&key, &stamp, deadline).await.unwrap();
        store.add(&key, factor, &stamp, deadline).await.unwrap();
    }
    app.delete(Some(&root()), "/management/v1/users/alice/auth_factors/otp")
        .await
        .assert_ok();
    let feed = feed_of(&app, "/management/v1/events", 15).await;
    assert_eq!(feed.len(), 15, "each event once: {feed:#?}");
    let mut expected = vec!["removed"];
    expected.extend(["enrolled", "removed"].repeat(5));
    assert_eq!(types(&feed[..11]), expected, "{feed:#?}");
}

/// Three replicas on one Redis (or a cluster) change many users at once: the feed holds
/// every event of every user exactly once and in each user's order, within a second of the
/// last answer.
async fn the_feed_holds_every_event_once_in_each_users_order(backend: Backend) {
    let redis = (backend == Backend::Redis).then(|| Arc::new(RedisServer::start()));
    let cluster = (backend == Backend::Cluster).then(|| Arc::new(RedisCluster::start(3, 0)));
    let mut apps = Vec::new();
    for _ in 0..3 {
        let spawn = Spawn::new(backend);
        let spawn = match (&redis, &cluster) {
            (Some(redis), _) => spawn.redis(redis.clone()),
            (_, Some(cluster)) => spawn.cluster(cluster.clone()),
            _ => unreachable!("a shared store"),
        };
        apps.push(spawn.start().await);
    }
    let users: Vec<String> = (0..12).map(|n| format!("u{n}")).collect();
    let mut secrets = HashMap::new();
    for (index, user) in users.iter().enumerate() {
        let token = Token::user("acme", user).sign();
        secrets.insert(user.clone(), apps[index % 3].ready_for_login(&token).await);
    }
    // Wrong codes from every replica at once, several per user.
    let page = login_page();
    let mut calls = Vec::new();
    for round in 0..3 {
        for (index, user) in users.iter().enumerate() {
            let app = &apps[(index + round) % 3];
            calls.push(app.check(&page, user, "000000"));
        }
    }
    futures_util::future::join_all(calls).await;
    let per_user_expected = [
        "enrolled",
        "verified",
        "check_invalid",
        "check_invalid",
        "check_invalid",
    ];
    let total = users.len() * per_user_expected.len();
    let feed = feed_of(&apps[1], "/management/v1/events", total).await;
    assert_eq!(feed.len(), total, "each event once");
    // Each replica's lag, as Prometheus sees it: nothing waits once every replica caught up
    // (a replica may still be working through notes whose events another one copied).
    for app in &apps {
        let started = Instant::now();
        loop {
            let metrics = app.metrics_text().await;
            if metrics.contains("\ntessera_audit_feed_pending 0\n") {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(2), "{metrics}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    for user in &users {
        let mut mine: Vec<&Value> = feed
            .iter()
            .filter(|event| event["userId"] == user.as_str())
            .collect();
        mine.reverse();
        let kinds: Vec<&str> = mine.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(kinds, per_user_expected, "{user}");
        // In the user's own order: as the user's stream has them.
        let own = all_events(
            &apps[2],
            &format!("/management/v1/users/{user}/events"),
            100,
        )
        .await;
        let own_sequences: Vec<&Value> = own.iter().rev().map(|e| &e["sequence"]).collect();
        let feed_sequences: Vec<&Value> = mine.iter().map(|e| &e["sequence"]).collect();
        assert_eq!(feed_sequences, own_sequences, "{user}");
    }
}

#[actix_web::test]
async fn the_feed_holds_every_event_once_in_each_users_order_on_redis() {
    the_feed_holds_every_event_once_in_each_users_order(Backend::Redis).await;
}

#[actix_web::test]
async fn the_feed_holds_every_event_once_in_each_users_order_on_a_cluster() {
    the_feed_holds_every_event_once_in_each_users_order(Backend::Cluster).await;
}

#[actix_web::test]
async fn the_client_address_is_kept_as_configured() {
    for (recording, expected) in [
        (AddressRecording::Full, Some("127.0.0.1")),
        (AddressRecording::None, None),
    ] {
        let app = Spawn::new(Backend::Memory)
            .with(|settings| settings.audit.client_address = recording)
            .start()
            .await;
        let alice = Token::user("acme", "alice").sign();
        app.add(&alice).await.assert_ok();
        let events = all_events(&app, "/management/v1/users/alice/events", 10).await;
        assert_eq!(types(&events), ["enrolled"]);
        assert_eq!(
            events[0].get("clientAddress").and_then(Value::as_str),
            expected,
            "{recording:?}"
        );
    }
}

#[actix_web::test]
async fn the_trail_over_grpc() {
    use tessera::api::grpc::pb::tessera::otp::v1 as admin;
    use tessera::api::grpc::pb::tessera::otp::v1::audit_service_client::AuditServiceClient;

    use crate::grpc::{assert_status, channel, request};

    let app = Spawn::new(Backend::Memory).start().await;
    let alice = Token::user("acme", "alice").sign();
    app.ready_for_login(&alice).await;
    app.check(&login_page(), "alice", "000000").await;
    let mut audit = AuditServiceClient::new(channel(&app).await);
    let root = root();
    let mine = audit
        .list_user_events(request(
            admin::ListUserEventsRequest {
                user_id: "alice".into(),
                page_size: 2,
                page_token: String::new(),
            },
            Some(&root),
            None,
        ))
        .await
        .unwrap()
        .into_inner();
    let kinds: Vec<&str> = mine.result.iter().map(|e| e.r#type.as_str()).collect();
    assert_eq!(kinds, ["check_invalid", "verified"]);
    assert_eq!(mine.next_page_token, mine.result[1].id);
    assert_eq!(mine.result[0].actor_user_id, "login");
    assert!(mine.result[0].creation_date.is_some());
    let started = Instant::now();
    loop {
        let feed = audit
            .list_events(request(
                admin::ListEventsRequest {
                    user_id: "alice".into(),
                    types: vec!["enrolled".into()],
                    ..Default::default()
                },
                Some(&root),
                None,
            ))
            .await
            .unwrap()
            .into_inner();
        if feed.result.len() == 1 {
            assert_eq!(feed.result[0].user_id, "alice");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(1), "{feed:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_status(
        audit
            .list_events(request(
                admin::ListEventsRequest {
                    types: vec!["nope".into()],
                    ..Default::default()
                },
                Some(&root),
                None,
            ))
            .await,
        tonic::Code::InvalidArgument,
        "TESSERA-query1",
    );
    assert_status(
        audit
            .list_events(request(
                admin::ListEventsRequest::default(),
                Some(&alice),
                None,
            ))
            .await,
        tonic::Code::PermissionDenied,
        "TESSERA-perm1",
    );
}

/// An element of a user's list that does not read back (a hand edit, a bug) is logged and
/// skipped; it does not hold up every other organization's feed. On one server the changes'
/// own scripts meet it first: they leave it to the copier (`lua/audit.lua`'s `hand_on`) and
/// answer as usual, rather than fail after their change is made.
#[actix_web::test]
async fn a_source_that_cannot_be_copied_holds_up_no_other() {
    let app = Spawn::new(Backend::Redis).start().await;
    let redis = app.redis.as_ref().unwrap();
    redis
        .cli(&["LPUSH", "tessera:{acme:mallory}:events", "not an event"])
        .unwrap();
    let mallory = Token::user("acme", "mallory").sign();
    app.add(&mallory).await.assert_ok();
    app.verify(&mallory, "000000")
        .await
        .assert_error(400, 3, "EVENT-8isk2");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let alice = Token::user("acme", "alice").sign();
    app.add(&alice).await.assert_ok();
    let feed = feed_of(&app, "/management/v1/events?userId=alice", 1).await;
    assert_eq!(types(&feed), ["enrolled"]);
    // mallory's own listing fails rather than hide the damage (a store error, as any).
    get(&app, &root(), "/management/v1/users/mallory/events")
        .await
        .assert_error(503, 14, "TESSERA-unav1");
}

fn stamp_at(app: &TestApp, request_id: &str, retention: Retention) -> Stamp {
    Stamp {
        now: UnixMicros::from_secs(i64::try_from(app.now_secs()).unwrap()),
        actor: Arc::new(Author {
            request_id: request_id.into(),
            user: "root".into(),
            org: "acme".into(),
            address: None,
        }),
        retention,
    }
}

fn alice_key() -> UserKey {
    UserKey {
        org: "acme".into(),
        user: "alice".into(),
    }
}

/// A wrong code against alice's enrollment `factor_id`, straight through the store (never
/// noted): what the organization's feed still needs of it, as the store answered.
async fn wrong_code(app: &TestApp, factor_id: FactorId, stamp: &Stamp, max: u32) -> FeedDue {
    let attempt = Attempt {
        factor_id,
        purpose: Purpose::Enrollment,
        matched_step: None,
        policy: LockoutPolicy {
            max_attempts: max,
            lock_duration_micros: 0,
            show_failures: true,
        },
    };
    let deadline = Instant::now() + Duration::from_secs(2);
    let store = &app.registry.deps().store;
    store
        .attempt(&alice_key(), attempt, stamp, deadline)
        .await
        .unwrap()
        .feed
}

/// An enrollment for alice, straight through a store, and its id.
fn alice_factor(app: &TestApp) -> (FactorId, NewFactor) {
    let factor_id = FactorId::from_random([7; 16]);
    let factor = NewFactor {
        factor_id,
        params: app.params,
        sealed_secret: vec![1; 8],
    };
    (factor_id, factor)
}

/// Alice's events copied into acme's feed as the copier copies a note of hers carrying
/// `written`: how many it appended.
async fn copy_of_alice(app: &TestApp, written: Option<Written>) -> usize {
    let note = FeedNote {
        source: FeedSource::User(alice_key()),
        retention: Retention::default(),
        written,
    };
    let [(sources, retention)] = &FeedSources::by_org([note], 32)[..] else {
        panic!("one organization, one group");
    };
    let copied = app
        .registry
        .deps()
        .store
        .copy_to_feed(sources, *retention, Instant::now() + Duration::from_secs(2))
        .await
        .unwrap();
    assert!(copied.left_out.is_empty(), "{:?}", copied.left_out);
    copied.appended
}

/// A store on `redis` under tessera's prefix whose checks leave their events to the copier.
fn copier_only_config(redis: &RedisServer) -> RedisConfig {
    RedisConfig {
        nodes: RedisNodes::parse(RedisMode::Standalone, &redis.url().into()).unwrap(),
        password: None,
        tls_ca_file: None,
        key_prefix: "tessera".into(),
        timeout: Duration::from_secs(2),
        wait_replicas: 0,
        wait_connections: 1,
        record_format: RecordFormat::Compact,
        feed_in_script: false,
    }
}

/// The request ids of acme's feed, newest first.
async fn feed_requests(app: &TestApp) -> Vec<String> {
    all_events(app, "/management/v1/events", 100)
        .await
        .iter()
        .map(|event| event["requestId"].as_str().unwrap().to_owned())
        .collect()
}

/// What a check carried for the copier (Redis with `redis.feed_in_script = false`, or a
/// Cluster).
fn carried(due: FeedDue) -> Option<Written> {
    match due {
        FeedDue::Copy(written) => written,
        FeedDue::Nothing => panic!("the script appended to the feed itself"),
    }
}

/// A check whose change was never noted (its note lost) is in the user's list; the next
/// check's note carries its own events only, so its copy finds the gap, and the feed gets
/// both, in order.
async fn a_check_after_a_lost_note_brings_it_to_the_feed(backend: Backend) {
    let app = Spawn::new(backend).start().await;
    let alice = Token::user("acme", "alice").sign();
    let enrolled = app.add(&alice).await;
    enrolled.assert_ok();
    feed_of(&app, "/management/v1/events", 1).await;
    let factor_id = app
        .registry
        .deps()
        .store
        .load(&alice_key(), Instant::now() + Duration::from_secs(2))
        .await
        .unwrap()
        .unwrap()
        .factor_id;
    wrong_code(
        &app,
        factor_id,
        &stamp_at(&app, "lost", Retention::default()),
        0,
    )
    .await;
    app.verify(&alice, "000000")
        .await
        .assert_error(400, 3, "EVENT-8isk2");
    let feed = feed_of(&app, "/management/v1/events", 3).await;
    assert_eq!(types(&feed), ["check_invalid", "check_invalid", "enrolled"]);
    assert_eq!(feed[1]["requestId"], "lost");
    assert_ne!(feed[0]["requestId"], "lost");
}

/// On Redis with the copier (`redis.feed_in_script = false`, as behind a proxy that refuses
/// scripts over two hash tags; the path a Cluster takes), a check's note carries the events
/// its script wrote: the copy appends them without reading the user's list while the feed's
/// mark is the event before them; after a gap it reads the list; nothing is appended twice;
/// and when the user's retention trimmed some of a change's own events, the change carries
/// none.
#[actix_web::test]
async fn a_check_carries_its_events_to_the_feed() {
    let app = Spawn::new(Backend::Redis)
        .with(|settings| settings.redis.feed_in_script = false)
        .start()
        .await;
    let redis = app.redis.as_ref().unwrap();
    let store = &app.registry.deps().store;
    let key = alice_key();
    let deadline = Instant::now() + Duration::from_secs(2);
    let stamp = |request_id: &str| stamp_at(&app, request_id, Retention::default());
    let (factor_id, factor) = alice_factor(&app);
    store
        .add(&key, factor, &stamp("enroll"), deadline)
        .await
        .unwrap();
    let copy = |written| copy_of_alice(&app, written);
    assert_eq!(copy(None).await, 1, "the enrollment, read from the list");

    let first = carried(wrong_code(&app, factor_id, &stamp("first"), 0).await);
    let first = first.expect("Redis answers what the check wrote");
    assert_eq!(first.events.len(), 1);
    assert_eq!(copy(Some(first.clone())).await, 1);
    // The list gone, a carried copy still appends: it did not read the list.
    let second = carried(wrong_code(&app, factor_id, &stamp("second"), 0).await);
    redis.cli(&["DEL", "tessera:{acme:alice}:events"]).unwrap();
    assert_eq!(copy(second.clone()).await, 1, "carried, not read");
    assert_eq!(copy(second).await, 0, "never twice");
    // A note lost: the next carried copy finds a gap and reads the list past the mark.
    wrong_code(&app, factor_id, &stamp("lost"), 0).await;
    let fourth = carried(wrong_code(&app, factor_id, &stamp("fourth"), 0).await);
    assert_eq!(copy(fourth.clone()).await, 2, "the lost one and this one");
    assert_eq!(copy(fourth).await, 0, "never twice");
    // One event kept per user, a change that writes two (a failure that locks) carries none:
    // the feed must hold only what the list does.
    let keep_one = Retention {
        max_events_per_user: 1,
        ..Retention::default()
    };
    let locking = wrong_code(&app, factor_id, &stamp_at(&app, "lock", keep_one), 1).await;
    assert_eq!(carried(locking), None);
    assert_eq!(copy(None).await, 1, "the list's one event: the lock");

    let feed = all_events(&app, "/management/v1/events", 100).await;
    let requests: Vec<&str> = feed
        .iter()
        .map(|event| event["requestId"].as_str().unwrap())
        .collect();
    assert_eq!(
        requests,
        ["lock", "fourth", "lost", "second", "first", "enroll"]
    );
    assert_eq!(types(&feed)[0], "locked");
}

/// A feed that keeps 1,000 or more is trimmed by count in steps (`lua/feed.lua`'s
/// `feed_trim`): it grows to its count and a thousandth more, and the append past that takes
/// it back to exactly its count. Below 1,000 the trim is exact (the test after this one).
#[actix_web::test]
async fn a_large_feed_is_trimmed_in_steps() {
    let app = Spawn::new(Backend::Redis).start().await;
    let redis = app.redis.as_ref().unwrap();
    let store = &app.registry.deps().store;
    let keep_2000 = Retention {
        max_events: 2000,
        ..Retention::default()
    };
    let stamp = stamp_at(&app, "r", keep_2000);
    let (factor_id, factor) = alice_factor(&app);
    let deadline = Instant::now() + Duration::from_secs(2);
    store
        .add(&alice_key(), factor, &stamp, deadline)
        .await
        .unwrap();
    let length = || -> u32 {
        let answer = redis.cli(&["XLEN", "tessera:audit:{acme}"]).unwrap();
        answer.trim().parse().unwrap()
    };
    // The enrollment and 1,999 checks: 2,000 events, the feed's count.
    for _ in 0..1999 {
        wrong_code(&app, factor_id, &stamp, 0).await;
    }
    assert_eq!(length(), 2000);
    let mut lengths = Vec::new();
    for _ in 0..3 {
        wrong_code(&app, factor_id, &stamp, 0).await;
        lengths.push(length());
    }
    assert_eq!(
        lengths,
        [2001, 2002, 2000],
        "two over, then back to the count"
    );
}

/// On one Redis server (the default), a check's script appends its events to the
/// organization's feed itself, in the check's own step: the feed holds them once the check
/// is answered, and nothing is left for the copier. Events of the list that the feed lacks
/// (an enrollment that a replica left to the copier, not copied yet) come along, in order; nothing is appended twice (a copy
/// afterwards finds nothing new); when the user's retention trimmed part of the change, the
/// feed gets what the list holds; the feed's own retention holds at once; and the webhooks
/// learn that the organization has a feed.
#[actix_web::test]
async fn a_check_appends_its_events_to_the_feed_itself() {
    let app = Spawn::new(Backend::Redis).start().await;
    let redis = app.redis.as_ref().unwrap();
    let store = &app.registry.deps().store;
    let key = alice_key();
    let deadline = Instant::now() + Duration::from_secs(2);
    let stamp = |request_id: &str| stamp_at(&app, request_id, Retention::default());
    let (factor_id, factor) = alice_factor(&app);
    // Enrolled by a replica that leaves its events to the copier (`feed_in_script = false`,
    // or a release before it), and never noted: only alice's list holds it.
    let copier_only = RedisStore::connect(None, &copier_only_config(redis), None).unwrap();
    copier_only
        .add(&key, factor, &stamp("enroll"), deadline)
        .await
        .unwrap();
    assert_eq!(feed_requests(&app).await, Vec::<String>::new());

    let first = wrong_code(&app, factor_id, &stamp("first"), 0).await;
    assert_eq!(first, FeedDue::Nothing, "nothing left to copy");
    assert_eq!(feed_requests(&app).await, ["first", "enroll"]);
    assert_eq!(
        redis
            .cli(&["SISMEMBER", "tessera:{webhooks}:orgs", "acme"])
            .map(|answer| answer.trim().to_owned()),
        Some("1".to_owned()),
        "the webhooks' hint"
    );
    assert_eq!(copy_of_alice(&app, None).await, 0, "never twice");
    wrong_code(&app, factor_id, &stamp("second"), 0).await;
    assert_eq!(feed_requests(&app).await, ["second", "first", "enroll"]);

    // One event kept per user, a failure that locks writes two: the list keeps the lock only,
    // and so does the feed.
    let keep_one = Retention {
        max_events_per_user: 1,
        ..Retention::default()
    };
    wrong_code(&app, factor_id, &stamp_at(&app, "lock", keep_one), 1).await;
    let feed = all_events(&app, "/management/v1/events", 100).await;
    assert_eq!(
        types(&feed),
        ["locked", "check_invalid", "check_invalid", "enrolled"]
    );
    assert_eq!(feed[0]["requestId"], "lock");

    // The feed keeps two: the unlock (noted nowhere, brought by the check) and the check.
    store
        .unlock(&key, &stamp("unlock"), deadline)
        .await
        .unwrap();
    let keep_two = Retention {
        max_events: 2,
        ..Retention::default()
    };
    wrong_code(&app, factor_id, &stamp_at(&app, "trim", keep_two), 0).await;
    assert_eq!(feed_requests(&app).await, ["trim", "unlock"]);
}
