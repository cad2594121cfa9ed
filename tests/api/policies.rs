//! Organizations run themselves: ZITADEL's lockout-policy calls and tessera's OTP policy,
//! stored per organization and applied on every replica within a second; the roles that
//! reach them; and the admin views (ListHumanAuthFactors, one user's factor, the locked
//! users of an organization, page by page).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tessera::api::grpc::pb::tessera::otp::v1 as admin;
use tessera::api::grpc::pb::tessera::otp::v1::policy_service_client::PolicyServiceClient;
use tessera::api::grpc::pb::tessera::otp::v1::user_admin_service_client::UserAdminServiceClient;
use tessera::api::grpc::pb::zitadel::management::v1 as management;
use tessera::api::grpc::pb::zitadel::management::v1::management_service_client::ManagementServiceClient;
use tessera::clock::ManualClock;
use tessera::domain::UnixMicros;
use tessera::store::{MemoryStore, SharedStore};
use tonic::Code;

use crate::grpc::{assert_status, channel, request};
use crate::helpers::{
    Answer, Backend, PINNED_SECS, RedisCluster, RedisServer, Spawn, TestApp, Token, on_every_store,
};

on_every_store!(
    the_lockout_policy_follows_zitadels_calls,
    the_otp_policy_applies_to_new_enrollments_only,
    the_admin_views_show_a_users_factor,
    locked_users_are_listed_page_by_page_and_rechecked,
    a_policy_set_through_one_instance_applies_on_the_other_two_within_a_second,
);

fn admin_token() -> String {
    Token::user("acme", "root").role("otp.admin", "acme").sign()
}

fn user(name: &str) -> String {
    Token::user("acme", name).role("otp.check", "acme").sign()
}

async fn get(app: &TestApp, token: &str, path: &str) -> Answer {
    app.send(app.client.get(app.url(path)).bearer_auth(token))
        .await
}

async fn put(app: &TestApp, token: &str, path: &str, body: Value) -> Answer {
    app.send(app.client.put(app.url(path)).bearer_auth(token).json(&body))
        .await
}

const LOCKOUT: &str = "/management/v1/policies/lockout";
const OTP: &str = "/management/v1/policies/otp";

async fn the_lockout_policy_follows_zitadels_calls(backend: Backend) {
    let app = Spawn::new(backend).start().await;
    let root = admin_token();
    // The instance's, as ZITADEL answers it: uint64 as strings, isDefault twice.
    let got = get(&app, &root, LOCKOUT).await;
    let body = got.assert_ok();
    assert_eq!(body["policy"]["maxOtpAttempts"], "5", "{body}");
    assert_eq!(body["policy"]["isDefault"], true);
    assert_eq!(body["isDefault"], true);
    assert_eq!(body["policy"]["details"]["resourceOwner"], "acme");
    let default = get(&app, &root, "/management/v1/policies/default/lockout").await;
    assert_eq!(default.assert_ok()["policy"]["maxOtpAttempts"], "5");

    // Update and reset need a policy of the organization's own; add needs none.
    put(&app, &root, LOCKOUT, json!({"maxOtpAttempts": 2}))
        .await
        .assert_error(404, 5, "ORG-ADfs1");
    app.delete(Some(&root), LOCKOUT)
        .await
        .assert_error(404, 5, "ORG-D4zuz");
    let added = app
        .post(
            Some(&root),
            LOCKOUT,
            json!({"maxPasswordAttempts": 7, "maxOtpAttempts": 3}),
        )
        .await;
    let details = &added.assert_ok()["details"];
    assert_eq!(details["resourceOwner"], "acme");
    assert!(details["creationDate"].is_string(), "{details}");
    let added_sequence = added.sequence();
    app.post(Some(&root), LOCKOUT, json!({"maxOtpAttempts": 4}))
        .await
        .assert_error(409, 6, "ORG-0olDf");
    put(
        &app,
        &root,
        LOCKOUT,
        json!({"maxPasswordAttempts": "7", "max_otp_attempts": 3}),
    )
    .await
    .assert_error(400, 9, "ORG-0JFSr");

    let got = get(&app, &root, LOCKOUT).await;
    let policy = &got.assert_ok()["policy"];
    assert_eq!(policy["maxOtpAttempts"], "3");
    assert_eq!(policy["maxPasswordAttempts"], "7", "kept, though unused");
    assert_eq!(policy.get("isDefault"), None, "false is left out");
    assert_eq!(
        policy["details"]["sequence"],
        added_sequence.to_string(),
        "{policy}"
    );

    // A lowered maximum applies from the next attempt: three failures stand, the next locks.
    let alice = user("alice");
    let secret = app.ready_for_login(&alice).await;
    for _ in 0..2 {
        app.check(&alice, "alice", "000000")
            .await
            .assert_error(400, 3, "EVENT-8isk2");
    }
    let updated = put(&app, &root, LOCKOUT, json!({"maxOtpAttempts": 1})).await;
    assert!(updated.sequence() > added_sequence, "{updated:?}");
    assert!(updated.body["details"]["changeDate"].is_string());
    app.check(&alice, "alice", "000000")
        .await
        .assert_error(400, 3, "EVENT-8isk2");
    app.check(&alice, "alice", &app.code(&secret, 0))
        .await
        .assert_error(400, 9, "COMMAND-SF3fg");

    // Back to the instance's.
    let reset = app.delete(Some(&root), LOCKOUT).await;
    assert!(reset.sequence() > updated.sequence());
    assert_eq!(
        get(&app, &root, LOCKOUT).await.assert_ok()["isDefault"],
        true
    );
}

async fn the_otp_policy_applies_to_new_enrollments_only(backend: Backend) {
    let app = Spawn::new(backend).start().await;
    let root = admin_token();
    let alice = user("alice");
    let alice_secret = app.enroll_ready(&alice).await;

    let got = get(&app, &root, OTP).await;
    let policy = &got.assert_ok()["policy"];
    assert_eq!(
        (&policy["issuer"], &policy["digits"], &policy["isDefault"]),
        (&json!("tessera"), &json!(6), &json!(true))
    );

    // A field left out takes the instance's value; nothing invalid is stored.
    let bad = put(
        &app,
        &root,
        OTP,
        json!({"digits": 9, "skew": 3, "issuer": "ACME"}),
    )
    .await;
    bad.assert_error(400, 3, "TESSERA-policy1");
    let message = bad.body["message"].as_str().unwrap();
    assert!(
        message.contains("digits") && message.contains("skew"),
        "{message}"
    );
    put(&app, &root, OTP, json!({"algorithm": "MD5"}))
        .await
        .assert_error(400, 3, "TESSERA-policy1");
    let wanted =
        json!({"issuer": "ACME", "algorithm": "SHA256", "digits": 8, "showFailures": false});
    let set = put(&app, &root, OTP, wanted.clone()).await;
    let sequence = set.sequence();
    // The same again is no error and no change.
    let again = put(&app, &root, OTP, wanted).await;
    assert_eq!(again.sequence(), sequence);
    let got = get(&app, &root, OTP).await;
    let policy = &got.assert_ok()["policy"];
    assert_eq!(policy["isDefault"], false);
    assert_eq!(
        policy["periodSecs"], 30,
        "the instance's, as none was given"
    );
    assert_eq!(policy["showFailures"], false);

    // New enrollments take it; alice's factor keeps its parameters.
    let bob = user("bob");
    let added = app.add(&bob).await;
    let url = added.assert_ok()["url"].as_str().unwrap().to_owned();
    assert!(
        url.starts_with("otpauth://totp/ACME:bob?algorithm=SHA256&digits=8&issuer=ACME"),
        "{url}"
    );
    app.clock.advance_secs(30);
    app.check(&alice, "alice", &app.code(&alice_secret, 0))
        .await
        .assert_ok();
    // showFailures off: a wrong code says nothing of the attempts.
    let wrong = app.check(&alice, "alice", "000000").await;
    wrong.assert_error(400, 3, "EVENT-8isk2");
    assert_eq!(wrong.body["details"].as_array().unwrap().len(), 1);

    app.delete(Some(&root), OTP).await.assert_ok();
    app.delete(Some(&root), OTP).await.assert_ok();
    let got = get(&app, &root, OTP).await;
    assert_eq!(got.assert_ok()["policy"]["isDefault"], true);
    let carol = user("carol");
    let url = app.add(&carol).await.body["url"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        url.contains("algorithm=SHA1&digits=6&issuer=tessera"),
        "{url}"
    );
}

async fn the_admin_views_show_a_users_factor(backend: Backend) {
    let app = Spawn::new(backend)
        .with(|s| s.lockout.max_otp_attempts = 2)
        .start()
        .await;
    let root = admin_token();
    let alice = user("alice");
    let search = "/management/v1/users/alice/auth_factors/_search";
    let view = "/management/v1/users/alice/auth_factors/otp";

    let nothing = get(&app, &root, view).await;
    assert_eq!(
        nothing.assert_ok(),
        &json!({"failedAttempts": 0, "locked": false, "recoveryCodesRemaining": 0})
    );
    let secret = app.add(&alice).await.body["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    // ZITADEL lists READY factors only.
    let listed = app.post(Some(&root), search, json!({})).await;
    assert_eq!(listed.assert_ok(), &json!({}));
    let shown = get(&app, &root, view).await;
    assert_eq!(shown.body["otp"]["state"], "AUTH_FACTOR_STATE_NOT_READY");
    assert_eq!(shown.body["otp"].get("lastSuccessfulCheck"), None);

    app.verify(&alice, &app.code(&secret, 0)).await.assert_ok();
    let listed = app.post(Some(&root), search, json!({})).await;
    assert_eq!(
        listed.assert_ok(),
        &json!({"result": [{"state": "AUTH_FACTOR_STATE_READY", "otp": {}}]})
    );
    app.clock.advance_secs(30);
    app.check(&alice, "alice", "000000").await;
    let shown = get(&app, &root, view).await;
    let body = shown.assert_ok();
    assert_eq!(body["otp"]["state"], "AUTH_FACTOR_STATE_READY");
    assert_eq!(body["failedAttempts"], 1);
    assert_eq!(body["locked"], false);
    let step_start = (PINNED_SECS / 30) * 30;
    assert_eq!(
        body["otp"]["lastSuccessfulCheck"],
        tessera::api::wire::timestamp(UnixMicros::from_secs(step_start)),
        "the step of the code the verification accepted"
    );
    app.check(&alice, "alice", "000000").await;
    let shown = get(&app, &root, view).await;
    let body = shown.assert_ok();
    assert_eq!(
        (&body["locked"], &body["failedAttempts"]),
        (&json!(true), &json!(2))
    );
    assert!(body["lockedUntil"].is_string(), "{body}");

    // Admins only, in their own organization.
    let denied = get(&app, &alice, view).await;
    denied.assert_error(403, 7, "TESSERA-perm1");
    let elsewhere = Token::user("globex", "root")
        .role("otp.admin", "globex")
        .sign();
    let foreign = app
        .send(
            app.client
                .get(app.url(view))
                .bearer_auth(&elsewhere)
                .header("x-zitadel-orgid", "acme"),
        )
        .await;
    foreign.assert_error(403, 7, "TESSERA-perm1");
}

/// Every user of the listing, page after page (the index is written after the fact: the
/// first page is asked for until it shows `expected` users, a few seconds at most).
async fn all_locked(
    app: &TestApp,
    token: &str,
    page_size: usize,
    expected: usize,
) -> Vec<Vec<String>> {
    let started = Instant::now();
    loop {
        let mut pages = Vec::new();
        let mut token_of_page = String::new();
        loop {
            let path = format!(
                "/management/v1/locked_users?pageSize={page_size}&pageToken={token_of_page}"
            );
            let page = get(app, token, &path).await;
            let body = page.assert_ok().clone();
            let users: Vec<String> = body["result"]
                .as_array()
                .unwrap()
                .iter()
                .map(|entry| entry["userId"].as_str().unwrap().to_owned())
                .collect();
            pages.push(users);
            match body.get("nextPageToken") {
                Some(next) => token_of_page = next.as_str().unwrap().to_owned(),
                None => break,
            }
        }
        let total: usize = pages.iter().map(Vec::len).sum();
        if total == expected || started.elapsed() > Duration::from_secs(10) {
            return pages;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn locked_users_are_listed_page_by_page_and_rechecked(backend: Backend) {
    let app = Spawn::new(backend)
        .with(|s| {
            s.lockout.max_otp_attempts = 1;
            s.lockout.lock_duration_secs = 600;
        })
        .start()
        .await;
    let root = admin_token();
    assert_eq!(
        all_locked(&app, &root, 2, 0).await,
        vec![Vec::<String>::new()]
    );
    for name in ["u1", "u2", "u3", "u4", "u5"] {
        let token = user(name);
        app.ready_for_login(&token).await;
        app.check(&token, name, "000000").await;
    }
    let pages = all_locked(&app, &root, 2, 5).await;
    assert_eq!(
        pages,
        vec![vec!["u1", "u2"], vec!["u3", "u4"], vec!["u5"]],
        "in id order, two a page"
    );
    let page = get(&app, &root, "/management/v1/locked_users").await;
    let first = &page.assert_ok()["result"][0];
    assert_eq!(first["failedAttempts"], 1);
    assert!(first["lockedUntil"].is_string(), "{first}");

    // An unlocked user leaves the listing; an expired lock too (rechecked at the read).
    app.unlock(&root, "u3").await.assert_ok();
    let pages = all_locked(&app, &root, 10, 4).await;
    assert_eq!(pages, vec![vec!["u1", "u2", "u4", "u5"]]);
    app.clock.advance_secs(601);
    assert_eq!(
        all_locked(&app, &root, 10, 0).await,
        vec![Vec::<String>::new()]
    );

    // A bad token is the contract's error; only admins list.
    let too_long = "x".repeat(300);
    get(
        &app,
        &root,
        &format!("/management/v1/locked_users?pageToken={too_long}"),
    )
    .await
    .assert_error(400, 3, "TESSERA-page1");
    get(&app, &root, "/management/v1/locked_users?pageSize=-1")
        .await
        .assert_error(400, 3, "TESSERA-query1");
    get(&app, &user("u1"), "/management/v1/locked_users")
        .await
        .assert_error(403, 7, "TESSERA-perm1");
}

/// Three instances on one store, as three replicas.
async fn replicas(backend: Backend) -> Vec<TestApp> {
    let clock = Arc::new(ManualClock::new(UnixMicros::from_secs(PINNED_SECS)));
    let memory: SharedStore = Arc::new(MemoryStore::new());
    let redis = (backend == Backend::Redis).then(|| Arc::new(RedisServer::start()));
    let cluster = (backend == Backend::Cluster).then(|| Arc::new(RedisCluster::start(3, 0)));
    let mut apps = Vec::new();
    for _ in 0..3 {
        let mut spawn = Spawn::new(backend).clock(clock.clone());
        spawn = match (&redis, &cluster) {
            (Some(redis), _) => spawn.redis(redis.clone()),
            (_, Some(cluster)) => spawn.cluster(cluster.clone()),
            _ => spawn.store(memory.clone()),
        };
        apps.push(spawn.start().await);
    }
    apps
}

async fn enrollment_digits(app: &TestApp, token: &str) -> String {
    let added = app.add(token).await;
    let url = added.assert_ok()["url"].as_str().unwrap().to_owned();
    url.split("digits=").nth(1).unwrap()[..1].to_owned()
}

/// The bound: a policy set through one replica applies on the two others within a
/// second of its answer, while each of them had the old one loaded (no restart, no read per
/// request).
async fn a_policy_set_through_one_instance_applies_on_the_other_two_within_a_second(
    backend: Backend,
) {
    let apps = replicas(backend).await;
    let root = admin_token();
    // Every replica's actor for "acme" has loaded the instance's policy.
    for (index, app) in apps.iter().enumerate() {
        let token = user(&format!("warm-{index}"));
        assert_eq!(enrollment_digits(app, &token).await, "6");
    }
    put(&apps[0], &root, OTP, json!({"digits": 8}))
        .await
        .assert_ok();
    let answered = Instant::now();
    assert_eq!(
        enrollment_digits(&apps[0], &user("writer")).await,
        "8",
        "the writing replica applies it at once"
    );
    for (index, app) in apps.iter().enumerate().skip(1) {
        let token = user(&format!("late-{index}"));
        loop {
            if enrollment_digits(app, &token).await == "8" {
                break;
            }
            assert!(
                answered.elapsed() < Duration::from_secs(1),
                "replica {index} still enrolls with the old policy a second after the change"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // A lowered lockout likewise, and a reset.
    app_reset_applies(&apps, &root).await;
}

async fn app_reset_applies(apps: &[TestApp], root: &str) {
    apps[1].delete(Some(root), OTP).await.assert_ok();
    let answered = Instant::now();
    for (index, app) in apps.iter().enumerate() {
        let token = user(&format!("after-reset-{index}"));
        while enrollment_digits(app, &token).await != "6" {
            assert!(
                answered.elapsed() < Duration::from_secs(1),
                "replica {index}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[actix_web::test]
async fn policy_roles_are_settings() {
    let app = Spawn::new(Backend::Memory)
        .with(|s| s.auth.policy_read_role = "tenant.auditor".into())
        .start()
        .await;
    let checker = user("alice");
    let auditor = Token::user("acme", "audit")
        .role("tenant.auditor", "acme")
        .sign();
    let zitadel_reader = Token::user("acme", "zr").role("policy.read", "acme").sign();
    let writer = Token::user("acme", "pw")
        .role("policy.write", "acme")
        .sign();
    get(&app, &checker, LOCKOUT)
        .await
        .assert_error(403, 7, "TESSERA-perm1");
    get(&app, &auditor, LOCKOUT).await.assert_ok();
    get(&app, &auditor, OTP).await.assert_ok();
    // The role's name is the setting's: ZITADEL's default name no longer counts.
    get(&app, &zitadel_reader, LOCKOUT)
        .await
        .assert_error(403, 7, "TESSERA-perm1");
    app.post(Some(&auditor), LOCKOUT, json!({"maxOtpAttempts": 2}))
        .await
        .assert_error(403, 7, "TESSERA-perm1");
    app.post(Some(&writer), LOCKOUT, json!({"maxOtpAttempts": 2}))
        .await
        .assert_ok();
    put(&app, &writer, OTP, json!({"issuer": "ACME"}))
        .await
        .assert_ok();
    // A writer does not read (the roles are separate, as ZITADEL's are).
    get(&app, &writer, OTP)
        .await
        .assert_error(403, 7, "TESSERA-perm1");
    // The admin role does both.
    let root = admin_token();
    get(&app, &root, LOCKOUT).await.assert_ok();
    app.delete(Some(&root), LOCKOUT).await.assert_ok();
}

/// The configuration's `[orgs.<id>]` is a seed, written once: after a reset through the
/// API, a replica that starts with the same file does not write it again.
#[actix_web::test]
async fn the_configurations_seed_is_written_once() {
    let redis = Arc::new(RedisServer::start());
    let seeded = |redis: Arc<RedisServer>| {
        Spawn::new(Backend::Redis)
            .redis(redis)
            .settings(crate::helpers::settings_with_env(&[(
                "TESSERA__ORGS__ACME__MAX_OTP_ATTEMPTS",
                "2",
            )]))
            .start()
    };
    let first = seeded(redis.clone()).await;
    let root = admin_token();
    let got = get(&first, &root, LOCKOUT).await;
    assert_eq!(got.assert_ok()["policy"]["maxOtpAttempts"], "2");
    assert_eq!(got.body["isDefault"], false);
    first.delete(Some(&root), LOCKOUT).await.assert_ok();
    let second = seeded(redis).await;
    let got = get(&second, &root, LOCKOUT).await;
    assert_eq!(got.assert_ok()["isDefault"], true, "{:?}", got.body);
}

#[actix_web::test]
async fn the_policies_and_views_over_grpc() {
    let app = Spawn::new(Backend::Memory)
        .with(|s| s.lockout.max_otp_attempts = 1)
        .start()
        .await;
    let root = admin_token();
    let mut management = ManagementServiceClient::new(channel(&app).await);
    let got = management
        .get_lockout_policy(request(
            management::GetLockoutPolicyRequest {},
            Some(&root),
            None,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(got.is_default);
    assert_eq!(got.policy.unwrap().max_otp_attempts, 1);
    let added = management
        .add_custom_lockout_policy(request(
            management::AddCustomLockoutPolicyRequest {
                max_password_attempts: 0,
                max_otp_attempts: 4,
            },
            Some(&root),
            None,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(added.details.unwrap().creation_date.is_some());
    assert_status(
        management
            .add_custom_lockout_policy(request(
                management::AddCustomLockoutPolicyRequest {
                    max_password_attempts: 0,
                    max_otp_attempts: 4,
                },
                Some(&root),
                None,
            ))
            .await,
        Code::AlreadyExists,
        "ORG-0olDf",
    );

    management
        .reset_lockout_policy_to_default(request(
            management::ResetLockoutPolicyToDefaultRequest {},
            Some(&root),
            None,
        ))
        .await
        .unwrap();

    let mut policies = PolicyServiceClient::new(channel(&app).await);
    policies
        .set_otp_policy(request(
            admin::SetOtpPolicyRequest {
                skew: Some(0),
                issuer: Some("ACME".into()),
                ..Default::default()
            },
            Some(&root),
            None,
        ))
        .await
        .unwrap();
    let policy = policies
        .get_otp_policy(request(admin::GetOtpPolicyRequest {}, Some(&root), None))
        .await
        .unwrap()
        .into_inner()
        .policy
        .unwrap();
    assert_eq!(
        (policy.skew, policy.issuer.as_str(), policy.is_default),
        (0, "ACME", false)
    );

    let alice = user("alice");
    app.ready_for_login(&alice).await;
    app.check(&alice, "alice", "000000").await;
    let mut admins = UserAdminServiceClient::new(channel(&app).await);
    let view = admins
        .get_user_factor(request(
            admin::GetUserFactorRequest {
                user_id: "alice".into(),
            },
            Some(&root),
            None,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(view.locked && view.locked_until.is_some(), "{view:?}");
    let started = Instant::now();
    loop {
        let page = admins
            .list_locked_users(request(
                admin::ListLockedUsersRequest::default(),
                Some(&root),
                None,
            ))
            .await
            .unwrap()
            .into_inner();
        if page.result.len() == 1 {
            assert_eq!(page.result[0].user_id, "alice");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{page:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let factors = management
        .list_human_auth_factors(request(
            management::ListHumanAuthFactorsRequest {
                user_id: "alice".into(),
            },
            Some(&root),
            None,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(factors.result.len(), 1);
    assert_status(
        policies
            .reset_otp_policy(request(admin::ResetOtpPolicyRequest {}, Some(&alice), None))
            .await,
        Code::PermissionDenied,
        "TESSERA-perm1",
    );
}
