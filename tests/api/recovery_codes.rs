//! Recovery codes, on the three stores: generated (ZITADEL's GenerateRecoveryCodes, adding up
//! to the maximum), used once at login in place of a TOTP code, counted toward the same
//! lockout, kept when the TOTP factor goes, removed, and shown only as a count.

use serde_json::{Value, json};
use tessera::api::grpc::pb::tessera::otp::v1 as check;
use tessera::api::grpc::pb::tessera::otp::v1::otp_check_service_client::OtpCheckServiceClient;
use tessera::api::grpc::pb::tessera::otp::v1::recovery_code_service_client::RecoveryCodeServiceClient;
use tessera::api::grpc::pb::zitadel::user::v2 as user_v2;
use tessera::api::grpc::pb::zitadel::user::v2::user_service_client::UserServiceClient;
use tonic::Code;

use crate::grpc::{assert_status, channel, request};
use crate::helpers::{
    Answer, Backend, DevBinary, Spawn, TestApp, Token, on_every_store, spawn_app,
};

on_every_store!(
    codes_are_shown_once_used_once_and_counted,
    generations_add_up_to_the_maximum,
    a_ready_factor_guards_generation_with_its_code,
    wrong_recovery_codes_lock_like_wrong_totp_codes,
    the_totp_factor_goes_and_comes_without_the_codes,
    all_codes_are_removed_at_once,
    a_check_takes_exactly_one_of_code_and_recovery_code,
    only_the_user_and_admins_reach_the_codes,
    every_outcome_is_counted,
);

fn admin() -> String {
    Token::user("acme", "root").role("otp.admin", "acme").sign()
}

fn login_page() -> String {
    Token::user("acme", "login-page")
        .role("otp.check", "acme")
        .sign()
}

async fn generate(app: &TestApp, token: &str, user: &str, body: Value) -> Answer {
    app.post(
        Some(token),
        &format!("/v2/users/{user}/recovery_codes"),
        body,
    )
    .await
}

/// Generated codes, as shown.
fn codes_of(answer: &Answer) -> Vec<String> {
    answer.assert_ok()["recoveryCodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|code| code.as_str().unwrap().to_owned())
        .collect()
}

async fn redeem(app: &TestApp, user: &str, code: &str) -> Answer {
    let path = format!("/management/v1/users/{user}/auth_factors/otp/_check");
    app.post(Some(&login_page()), &path, json!({ "recoveryCode": code }))
        .await
}

async fn left(app: &TestApp, token: &str, user: &str) -> u64 {
    let path = format!("/management/v1/users/{user}/auth_factors/recovery_codes");
    let answer = app
        .send(app.client.get(app.url(&path)).bearer_auth(token))
        .await;
    answer.assert_ok()["remaining"].as_u64().unwrap()
}

async fn methods(app: &TestApp, token: &str, user: &str) -> Value {
    let path = format!("/v2/users/{user}/authentication_methods");
    let answer = app
        .send(app.client.get(app.url(&path)).bearer_auth(token))
        .await;
    answer.assert_ok()["authMethodTypes"].clone()
}

async fn codes_are_shown_once_used_once_and_counted(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = Token::user("acme", "alice").sign();
    assert_eq!(left(&app, &alice, "alice").await, 0);
    // No count: the organization's default of 10.
    let generated = generate(&app, &alice, "alice", json!({})).await;
    assert_eq!(generated.assert_ok()["details"]["resourceOwner"], "acme");
    let first_sequence = generated.sequence();
    let codes = codes_of(&generated);
    assert_eq!(codes.len(), 10);
    for code in &codes {
        assert_eq!(code.len(), 11, "{code}");
        assert_eq!(code.as_bytes()[5], b'-', "{code}");
        assert!(
            code.chars()
                .filter(|c| *c != '-')
                .all(|c| "0123456789ABCDEFGHJKMNPQRSTVWXYZ".contains(c)),
            "{code}"
        );
    }
    let mut distinct = codes.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 10);
    assert_eq!(left(&app, &alice, "alice").await, 10);
    assert_eq!(
        methods(&app, &alice, "alice").await,
        json!(["AUTHENTICATION_METHOD_TYPE_RECOVERY_CODE"])
    );

    // Typed as people type: lower case, no dash. No TOTP factor is needed.
    let typed = codes[3].to_lowercase().replace('-', "");
    let used = redeem(&app, "alice", &typed).await;
    assert_eq!(used.assert_ok()["recoveryCodesRemaining"], 9);
    assert_eq!(used.body["details"]["resourceOwner"], "acme");
    assert!(used.sequence() > first_sequence);
    // Once: the same code again is a wrong code, and counted as one.
    let again = redeem(&app, "alice", &codes[3]).await;
    again.assert_error(400, 3, "DOMAIN-6uvh0");
    assert_eq!(again.body["details"][1]["failedAttempts"], 1, "{again:?}");
    assert_eq!(left(&app, &alice, "alice").await, 9);
    // A success resets the failures.
    let next = redeem(&app, "alice", &codes[4]).await;
    assert_eq!(next.assert_ok()["recoveryCodesRemaining"], 8);
    redeem(&app, "alice", "not a code at all")
        .await
        .assert_error(400, 3, "DOMAIN-6uvh0");
    let answer = redeem(&app, "alice", &codes[4]).await;
    assert_eq!(answer.body["details"][1]["failedAttempts"], 2, "{answer:?}");
}

async fn generations_add_up_to_the_maximum(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = Token::user("acme", "alice").sign();
    let first = generate(&app, &alice, "alice", json!({ "count": 10 })).await;
    assert_eq!(codes_of(&first).len(), 10);
    // 10 + 15 would pass 20: nothing is added (ZITADEL's ALREADY_EXISTS).
    generate(&app, &alice, "alice", json!({ "count": 15 }))
        .await
        .assert_error(409, 6, "COMMAND-8f2k9");
    assert_eq!(left(&app, &alice, "alice").await, 10);
    // Up to 20 they add; the earlier codes still work.
    let second = generate(&app, &alice, "alice", json!({ "count": "10" })).await;
    assert_eq!(codes_of(&second).len(), 10);
    assert_eq!(left(&app, &alice, "alice").await, 20);
    generate(&app, &alice, "alice", json!({ "count": 1 }))
        .await
        .assert_error(409, 6, "COMMAND-8f2k9");
    redeem(&app, "alice", &codes_of(&first)[0])
        .await
        .assert_ok();
    assert_eq!(left(&app, &alice, "alice").await, 19);
    // Counts no call accepts.
    for count in [
        json!(21),
        json!(-1),
        json!("many"),
        json!(4_294_967_297_u64),
    ] {
        generate(&app, &alice, "alice", json!({ "count": count }))
            .await
            .assert_error(400, 3, "COMMAND-7c0nx");
    }
}

async fn a_ready_factor_guards_generation_with_its_code(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = Token::user("acme", "alice").sign();
    let secret = app.enroll_ready(&alice).await;
    // A stolen token alone mints no codes.
    generate(&app, &alice, "alice", json!({}))
        .await
        .assert_error(400, 3, "TESSERA-code3");
    generate(&app, &alice, "alice", json!({ "totpCode": "000000" }))
        .await
        .assert_error(400, 3, "EVENT-8isk2");
    assert_eq!(left(&app, &alice, "alice").await, 0);
    app.clock.advance_secs(30);
    let code = app.code(&secret, 0);
    let generated = generate(&app, &alice, "alice", json!({ "totpCode": code })).await;
    assert_eq!(codes_of(&generated).len(), 10);
    // The TOTP code was spent as at any login: it does not serve twice.
    generate(&app, &alice, "alice", json!({ "totpCode": code }))
        .await
        .assert_error(400, 3, "EVENT-8isk2");
    // An admin needs no code.
    let by_admin = generate(&app, &admin(), "alice", json!({ "count": 5 })).await;
    assert_eq!(codes_of(&by_admin).len(), 5);
    assert_eq!(left(&app, &alice, "alice").await, 15);
    // Too many: refused before the TOTP code is spent, which then still logs in.
    app.clock.advance_secs(30);
    let code = app.code(&secret, 0);
    generate(
        &app,
        &alice,
        "alice",
        json!({ "count": 6, "totpCode": code }),
    )
    .await
    .assert_error(409, 6, "COMMAND-8f2k9");
    app.check(&login_page(), "alice", &code).await.assert_ok();
    assert_eq!(
        methods(&app, &alice, "alice").await,
        json!([
            "AUTHENTICATION_METHOD_TYPE_TOTP",
            "AUTHENTICATION_METHOD_TYPE_RECOVERY_CODE"
        ])
    );
}

async fn wrong_recovery_codes_lock_like_wrong_totp_codes(backend: Backend) {
    let app = Spawn::new(backend)
        .with(|s| {
            s.lockout.max_otp_attempts = 3;
            s.lockout.lock_duration_secs = 120;
        })
        .start()
        .await;
    let alice = Token::user("acme", "alice").sign();
    let secret = app.enroll_ready(&alice).await;
    let codes = codes_of(&generate(&app, &admin(), "alice", json!({})).await);
    // One wrong TOTP code and two wrong recovery codes: one count, one lock.
    app.clock.advance_secs(30);
    app.check(&login_page(), "alice", "000000")
        .await
        .assert_error(400, 3, "EVENT-8isk2");
    redeem(&app, "alice", "AAAAA-AAAAA")
        .await
        .assert_error(400, 3, "DOMAIN-6uvh0");
    let locking = redeem(&app, "alice", "BBBBB-BBBBB").await;
    locking.assert_error(400, 3, "DOMAIN-6uvh0");
    assert_eq!(
        locking.body["details"][1]["failedAttempts"], 3,
        "{locking:?}"
    );
    // Locked: neither a right recovery code nor a right TOTP code gets through, and neither
    // is consumed; removing the codes is refused too.
    redeem(&app, "alice", &codes[0])
        .await
        .assert_error(400, 9, "COMMAND-SF3fg");
    app.check(&login_page(), "alice", &app.code(&secret, 0))
        .await
        .assert_error(400, 9, "COMMAND-SF3fg");
    app.delete(Some(&admin()), "/v2/users/alice/recovery_codes")
        .await
        .assert_error(404, 5, "COMMAND-d9u8q");
    // Removing and enrolling the TOTP factor again does not lift the lock.
    app.delete(Some(&alice), "/v2/users/alice/totp")
        .await
        .assert_ok();
    redeem(&app, "alice", &codes[0])
        .await
        .assert_error(400, 9, "COMMAND-SF3fg");
    assert_eq!(left(&app, &alice, "alice").await, 10);
    // The lock expires: the code that was refused works, and was not used up meanwhile.
    app.clock.advance_secs(120);
    assert_eq!(
        redeem(&app, "alice", &codes[0]).await.assert_ok()["recoveryCodesRemaining"],
        9
    );
    // Locked again, an admin unlocks (with no TOTP factor left, the lock is the codes').
    for _ in 0..3 {
        redeem(&app, "alice", "CCCCC-CCCCC").await;
    }
    redeem(&app, "alice", &codes[1])
        .await
        .assert_error(400, 9, "COMMAND-SF3fg");
    app.unlock(&admin(), "alice").await.assert_ok();
    app.unlock(&admin(), "alice")
        .await
        .assert_error(400, 9, "COMMAND-4M0ds");
    redeem(&app, "alice", &codes[1]).await.assert_ok();
}

async fn the_totp_factor_goes_and_comes_without_the_codes(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = Token::user("acme", "alice").sign();
    app.enroll_ready(&alice).await;
    let codes = codes_of(&generate(&app, &admin(), "alice", json!({})).await);
    // Removing the TOTP factor leaves the codes, which still log the user in.
    app.remove_mine(&alice).await.assert_ok();
    assert_eq!(left(&app, &alice, "alice").await, 10);
    assert_eq!(
        methods(&app, &alice, "alice").await,
        json!(["AUTHENTICATION_METHOD_TYPE_RECOVERY_CODE"])
    );
    redeem(&app, "alice", &codes[0]).await.assert_ok();
    // A new enrollment (not yet verified, then verified) leaves them too.
    let secret = app.add(&alice).await.body["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(left(&app, &alice, "alice").await, 9);
    app.verify(&alice, &app.code(&secret, 0)).await.assert_ok();
    assert_eq!(left(&app, &alice, "alice").await, 9);
    redeem(&app, "alice", &codes[1]).await.assert_ok();
    // And the verified factor still checks.
    app.clock.advance_secs(30);
    app.check(&login_page(), "alice", &app.code(&secret, 0))
        .await
        .assert_ok();
}

async fn all_codes_are_removed_at_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = Token::user("acme", "alice").sign();
    let codes = codes_of(&generate(&app, &alice, "alice", json!({ "count": 3 })).await);
    let removed = app
        .delete(Some(&alice), "/v2/users/alice/recovery_codes")
        .await;
    assert_eq!(removed.assert_ok()["details"]["resourceOwner"], "acme");
    assert_eq!(left(&app, &alice, "alice").await, 0);
    assert_eq!(methods(&app, &alice, "alice").await, Value::Null);
    app.delete(Some(&alice), "/v2/users/alice/recovery_codes")
        .await
        .assert_error(400, 3, "COMMAND-84rgg");
    // A code of a removed set: nothing to compare, and no failure counted (ZITADEL).
    redeem(&app, "alice", &codes[0])
        .await
        .assert_error(400, 3, "COMMAND-84rgg");
    let fresh = codes_of(&generate(&app, &alice, "alice", json!({ "count": 1 })).await);
    let wrong = redeem(&app, "alice", &codes[0]).await;
    assert_eq!(wrong.body["details"][1]["failedAttempts"], 1, "{wrong:?}");
    redeem(&app, "alice", &fresh[0]).await.assert_ok();
}

async fn a_check_takes_exactly_one_of_code_and_recovery_code(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = Token::user("acme", "alice").sign();
    let codes = codes_of(&generate(&app, &alice, "alice", json!({})).await);
    let path = "/management/v1/users/alice/auth_factors/otp/_check";
    app.post(
        Some(&login_page()),
        path,
        json!({ "code": "123456", "recoveryCode": codes[0] }),
    )
    .await
    .assert_error(400, 3, "TESSERA-code2");
    app.post(Some(&login_page()), path, json!({}))
        .await
        .assert_error(400, 3, "TESSERA-code1");
    app.post(Some(&login_page()), path, json!({ "recoveryCode": "" }))
        .await
        .assert_error(400, 3, "TESSERA-code1");
    // Neither refusal used the code.
    redeem(&app, "alice", &codes[0]).await.assert_ok();
}

async fn only_the_user_and_admins_reach_the_codes(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = Token::user("acme", "alice").sign();
    let bob = Token::user("acme", "bob").sign();
    generate(&app, &bob, "alice", json!({}))
        .await
        .assert_error(403, 7, "TESSERA-perm1");
    app.delete(Some(&bob), "/v2/users/alice/recovery_codes")
        .await
        .assert_error(403, 7, "TESSERA-perm1");
    // An admin of another organization, naming this one.
    let outsider = Token::user("other", "root")
        .role("otp.admin", "other")
        .sign();
    let across = app
        .send(
            app.client
                .post(app.url("/v2/users/alice/recovery_codes"))
                .bearer_auth(&outsider)
                .header("x-zitadel-orgid", "acme")
                .json(&json!({})),
        )
        .await;
    across.assert_error(403, 7, "TESSERA-perm1");
    let codes = codes_of(&generate(&app, &alice, "alice", json!({})).await);
    // The login check needs the check role; the user's own token has none.
    let path = "/management/v1/users/alice/auth_factors/otp/_check";
    app.post(Some(&alice), path, json!({ "recoveryCode": codes[0] }))
        .await
        .assert_error(403, 7, "TESSERA-perm1");
    // Another organization's alice holds none of these.
    let path = "/management/v1/users/alice/auth_factors/otp/_check";
    let elsewhere = Token::user("other", "login-page")
        .role("otp.check", "other")
        .sign();
    app.post(Some(&elsewhere), path, json!({ "recoveryCode": codes[0] }))
        .await
        .assert_error(400, 3, "COMMAND-84rgg");
    assert_eq!(left(&app, &admin(), "alice").await, 10);
    redeem(&app, "alice", &codes[0]).await.assert_ok();
}

/// Rotating the seal key keeps the codes: each is stored with the id of the key that made it.
/// A code made under a key that has left the ring no longer matches.
#[actix_web::test]
async fn codes_outlive_a_seal_key_rotation_while_their_key_stays_in_the_ring() {
    use std::sync::Arc;

    use crate::helpers::RedisServer;
    let redis = Arc::new(RedisServer::start());
    let (old, new) = ("old:", "new:");
    let entry = |id: &str, byte: u8| {
        use base64::Engine;
        format!(
            "{id}{}",
            base64::engine::general_purpose::STANDARD.encode([byte; 32])
        )
    };
    let (old_entry, new_entry) = (entry(old, 1), entry(new, 2));
    let on_ring = |ring: String| {
        Spawn::new(Backend::Redis)
            .redis(redis.clone())
            .with(move |s| s.seal.keys = ring.into())
    };
    let before = on_ring(old_entry.clone()).start().await;
    let alice = Token::user("acme", "alice").sign();
    let codes = codes_of(&generate(&before, &alice, "alice", json!({})).await);
    let rotated = on_ring(format!("{new_entry},{old_entry}")).start().await;
    redeem(&rotated, "alice", &codes[0]).await.assert_ok();
    let newer = codes_of(&generate(&rotated, &alice, "alice", json!({ "count": 1 })).await);
    redeem(&before, "alice", &newer[0])
        .await
        .assert_error(400, 3, "DOMAIN-6uvh0");
    let old_gone = on_ring(new_entry).start().await;
    redeem(&old_gone, "alice", &codes[1])
        .await
        .assert_error(400, 3, "DOMAIN-6uvh0");
    redeem(&old_gone, "alice", &newer[0]).await.assert_ok();
}

/// Redis holds no code, only keyed hashes, in the user's own hash (its cluster slot).
#[actix_web::test]
async fn redis_holds_keyed_hashes_and_never_a_code() {
    let app = spawn_app(Backend::Redis).await;
    let alice = Token::user("acme", "alice").sign();
    let codes = codes_of(&generate(&app, &alice, "alice", json!({})).await);
    let redis = app.redis.as_ref().unwrap();
    let dump = redis
        .cli(&["--no-raw", "HGETALL", "tessera:{acme:alice}"])
        .unwrap();
    // One hash per user, beside the stream of its events. The organization's feed and the
    // webhooks' set of organizations with a feed live in other slots and are written after
    // the reply, by the feed copy: only the user's slot is certain here.
    let keys = redis.cli(&["KEYS", "tessera:{acme:*"]).unwrap();
    let mut keys: Vec<&str> = keys.lines().collect();
    keys.sort();
    assert_eq!(
        keys,
        ["tessera:{acme:alice}", "tessera:{acme:alice}:events"],
        "one hash per user"
    );
    let fields: Vec<&str> = dump.lines().filter(|line| line.contains("\"r:")).collect();
    assert_eq!(fields.len(), 10, "{dump}");
    for line in &fields {
        // "r:<key id>:<64 hex digits>"
        let field = line.split('"').nth(1).unwrap();
        let parts: Vec<&str> = field.split(':').collect();
        assert_eq!(parts.len(), 3, "{field}");
        assert_eq!(parts[1], "dev-2026", "the sealing key's id: {field}");
        assert_eq!(parts[2].len(), 32, "{field}");
        assert!(parts[2].chars().all(|c| c.is_ascii_hexdigit()), "{field}");
    }
    let keys = tessera::settings::Settings::dev_defaults()
        .unwrap()
        .parse(tessera::settings::Mode::Dev)
        .unwrap()
        .seal_keys;
    for code in &codes {
        let bare = code.replace('-', "");
        for form in [code.as_str(), bare.as_str(), &bare.to_lowercase()] {
            assert!(!dump.contains(form), "{form} in {dump}");
        }
        // The name is the keyed hash of the code, bound to its owner.
        let normalized = tessera::domain::recovery::normalize(code).unwrap();
        let hash = keys
            .recovery_hash("dev-2026", "acme", "alice", &normalized)
            .unwrap();
        let field = tessera::domain::recovery::stored_field("dev-2026", &hash);
        assert!(
            dump.contains(&format!("\"{field}\"")),
            "{field} not in {dump}"
        );
    }
    assert_eq!(redis.hget("tessera:{acme:alice}", "v"), "3");
    // Still a compact hash: every name and value within Redis's listpack limit.
    let encoding = redis
        .cli(&["OBJECT", "ENCODING", "tessera:{acme:alice}"])
        .unwrap();
    assert_eq!(encoding.trim(), "listpack");
}

/// No code, typed or generated, and no hash of one reaches the logs, at debug.
#[actix_web::test]
async fn no_code_or_hash_is_logged() {
    let dev = DevBinary::start(&[("TESSERA__LOG__LEVEL", "debug".into())]).await;
    let alice = dev.token("acme", "alice", &[]);
    let checker = dev.token("acme", "login-page", &["otp.check"]);
    let (status, generated) = dev
        .post("/v2/users/alice/recovery_codes", &alice, None, json!({}))
        .await;
    assert_eq!(status, 200, "{generated}");
    let codes: Vec<String> = generated["recoveryCodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    let path = "/management/v1/users/alice/auth_factors/otp/_check";
    let (status, used) = dev
        .post(path, &checker, None, json!({ "recoveryCode": codes[0] }))
        .await;
    assert_eq!(status, 200, "{used}");
    let typed_wrong = "ZZZZZ-ZZZZ9";
    let (status, _) = dev
        .post(path, &checker, None, json!({ "recoveryCode": typed_wrong }))
        .await;
    assert_eq!(status, 400);
    let logs = dev.stop();
    assert!(
        logs.contains("a recovery code that is not one of the user's"),
        "{logs}"
    );
    // The dev binary seals with the published development key: the hashes can be made here,
    // as the server made them.
    let keys = tessera::settings::Settings::dev_defaults()
        .unwrap()
        .parse(tessera::settings::Mode::Dev)
        .unwrap()
        .seal_keys;
    for code in codes.iter().map(String::as_str).chain([typed_wrong]) {
        let bare = code.replace('-', "");
        assert!(!logs.contains(code), "{code} logged");
        assert!(!logs.contains(&bare), "{bare} logged");
        let normalized = tessera::domain::recovery::normalize(code).unwrap();
        let hash = keys
            .recovery_hash("dev-2026", "acme", "alice", &normalized)
            .unwrap();
        let field = tessera::domain::recovery::stored_field("dev-2026", &hash);
        let hex = field.rsplit(':').next().unwrap();
        assert_eq!(hex.len(), 32);
        assert!(!logs.contains(hex), "the hash of {code} logged");
    }
}

/// The same calls over gRPC: ZITADEL's v2 messages, tessera's check and count.
#[actix_web::test]
async fn the_same_over_grpc() {
    let app = spawn_app(Backend::Memory).await;
    let alice = Token::user("acme", "alice").sign();
    let mut users = UserServiceClient::new(channel(&app).await);
    let generated = users
        .generate_recovery_codes(request(
            user_v2::GenerateRecoveryCodesRequest {
                user_id: "alice".into(),
                count: 4,
                ..Default::default()
            },
            Some(&alice),
            None,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(generated.recovery_codes.len(), 4);
    assert_eq!(generated.details.unwrap().resource_owner, "acme");
    let methods = users
        .list_authentication_method_types(request(
            user_v2::ListAuthenticationMethodTypesRequest {
                user_id: "alice".into(),
                ..Default::default()
            },
            Some(&alice),
            None,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        methods.auth_method_types,
        vec![user_v2::AuthenticationMethodType::RecoveryCode as i32]
    );
    let too_many = users
        .generate_recovery_codes(request(
            user_v2::GenerateRecoveryCodesRequest {
                user_id: "alice".into(),
                count: 17,
                ..Default::default()
            },
            Some(&alice),
            None,
        ))
        .await;
    assert_status(too_many, Code::AlreadyExists, "COMMAND-8f2k9");

    let mut checks = OtpCheckServiceClient::new(channel(&app).await);
    let checked = checks
        .check_otp(request(
            check::CheckOtpRequest {
                user_id: "alice".into(),
                recovery_code: generated.recovery_codes[0].clone(),
                ..Default::default()
            },
            Some(&login_page()),
            None,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(checked.recovery_codes_remaining, Some(3));
    let replayed = checks
        .check_otp(request(
            check::CheckOtpRequest {
                user_id: "alice".into(),
                recovery_code: generated.recovery_codes[0].clone(),
                ..Default::default()
            },
            Some(&login_page()),
            None,
        ))
        .await;
    assert_status(replayed, Code::InvalidArgument, "DOMAIN-6uvh0");

    let mut counts = RecoveryCodeServiceClient::new(channel(&app).await);
    let left = counts
        .get_recovery_codes(request(
            check::GetRecoveryCodesRequest {
                user_id: "alice".into(),
            },
            Some(&alice),
            None,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(left.remaining, 3);
    users
        .remove_recovery_codes(request(
            user_v2::RemoveRecoveryCodesRequest {
                user_id: "alice".into(),
            },
            Some(&admin()),
            None,
        ))
        .await
        .unwrap();
    let none = users
        .remove_recovery_codes(request(
            user_v2::RemoveRecoveryCodesRequest {
                user_id: "alice".into(),
            },
            Some(&admin()),
            None,
        ))
        .await;
    assert_status(none, Code::InvalidArgument, "COMMAND-84rgg");
}

/// The Redis ACL the README gives tessera (its key prefix, the commands it sends and those its
/// scripts call, since scripts run with the caller's rights) is enough for every call, the
/// recovery codes included, and a command outside it is refused.
#[actix_web::test]
async fn the_acl_the_readme_names_is_enough() {
    use std::sync::Arc;

    use crate::helpers::{RedisServer, free_port};
    let redis = Arc::new(RedisServer::start_on(free_port()));
    let readme = include_str!("../../README.md");
    let rule = readme
        .lines()
        .find_map(|line| line.strip_prefix("ACL SETUSER tessera "))
        .expect("the README gives the ACL rule as `ACL SETUSER tessera …`");
    let mut args = vec!["ACL", "SETUSER", "tessera"];
    args.extend(rule.split_whitespace());
    let set = redis.cli(&args).unwrap();
    assert_eq!(set.trim(), "OK", "{set}");
    let url = format!("redis://tessera:s3cret@127.0.0.1:{}", redis.port);
    let app = Spawn::new(Backend::Redis)
        .external_redis(url)
        .with(|settings| {
            settings.webhooks.enabled = true;
            settings.webhooks.allow_private_targets = true;
            settings.webhooks.poll_ms = 20;
        })
        .start()
        .await;
    let alice = Token::user("acme", "alice").sign();
    let secret = app.enroll_ready(&alice).await;
    app.clock.advance_secs(30);
    let code = app.code(&secret, 0);
    let codes = codes_of(
        &generate(
            &app,
            &alice,
            "alice",
            json!({ "count": 2, "totpCode": code }),
        )
        .await,
    );
    redeem(&app, "alice", &codes[0]).await.assert_ok();
    redeem(&app, "alice", &codes[0])
        .await
        .assert_error(400, 3, "DOMAIN-6uvh0");
    assert_eq!(left(&app, &alice, "alice").await, 1);
    app.clock.advance_secs(30);
    app.check(&login_page(), "alice", &app.code(&secret, 0))
        .await
        .assert_ok();
    app.delete(Some(&alice), "/v2/users/alice/recovery_codes")
        .await
        .assert_ok();
    app.remove_mine(&alice).await.assert_ok();
    // An organization's policies, their change index, and the index of locked users.
    let root = Token::user("acme", "root").role("otp.admin", "acme").sign();
    app.post(
        Some(&root),
        "/management/v1/policies/lockout",
        json!({"maxOtpAttempts": 1}),
    )
    .await
    .assert_ok();
    let bob = Token::user("acme", "bob").sign();
    app.ready_for_login(&bob).await;
    app.check(&login_page(), "bob", "000000").await;
    let started = std::time::Instant::now();
    loop {
        let listed = app
            .send(
                app.client
                    .get(app.url("/management/v1/locked_users"))
                    .bearer_auth(&root),
            )
            .await;
        if listed.assert_ok()["result"][0]["userId"] == "bob" {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "{listed:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // The audit trail: the user's stream, and the organization's feed copied from it.
    let started = std::time::Instant::now();
    loop {
        let feed = app
            .send(
                app.client
                    .get(app.url("/management/v1/events?userId=bob&type=locked"))
                    .bearer_auth(&root),
            )
            .await;
        if feed.assert_ok()["result"][0]["type"] == "locked" {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "{feed:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    app.send(
        app.client
            .get(app.url("/management/v1/users/bob/events"))
            .bearer_auth(&root),
    )
    .await
    .assert_ok();
    // Webhooks: the endpoint, the feed's consumer group, a delivery.
    let (hook, seen) = crate::webhooks::receiver(0);
    app.post(
        Some(&root),
        "/management/v1/webhooks",
        json!({"url": hook, "types": ["locked"]}),
    )
    .await
    .assert_ok();
    let carol = Token::user("acme", "carol").sign();
    app.ready_for_login(&carol).await;
    app.check(&login_page(), "carol", "000000").await;
    let started = std::time::Instant::now();
    while seen.lock().unwrap().accepted.is_empty() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "no delivery under the ACL"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // The rule is not everything: a key outside the prefix and a command outside the list.
    let denied = std::process::Command::new("redis-cli")
        .args([
            "-p",
            &redis.port.to_string(),
            "--user",
            "tessera",
            "--pass",
            "s3cret",
        ])
        .args(["--no-auth-warning", "FLUSHALL"])
        .output()
        .unwrap();
    let denied = String::from_utf8_lossy(&denied.stdout);
    assert!(denied.contains("NOPERM"), "{denied}");
}

/// `tessera_recovery_code_checks_total` by outcome and `tessera_recovery_codes_total` by
/// event move by exactly what happened, the rate-limited check included.
async fn every_outcome_is_counted(backend: Backend) {
    let app = Spawn::new(backend)
        .with(|s| {
            s.lockout.max_otp_attempts = 2;
            s.lockout.lock_duration_secs = 0;
            s.limits.per_user_per_minute = 6;
        })
        .start()
        .await;
    // No codes yet; then three generated (one call), one used, one wrong, one wrong that
    // locks, one refused while locked; the sixth call of the minute is rate limited.
    redeem(&app, "alice", "AAAAA-AAAAA")
        .await
        .assert_error(400, 3, "COMMAND-84rgg");
    let codes = codes_of(&generate(&app, &admin(), "alice", json!({ "count": 3 })).await);
    redeem(&app, "alice", &codes[0]).await.assert_ok();
    for _ in 0..2 {
        redeem(&app, "alice", "AAAAA-AAAAA")
            .await
            .assert_error(400, 3, "DOMAIN-6uvh0");
    }
    redeem(&app, "alice", &codes[1])
        .await
        .assert_error(400, 9, "COMMAND-SF3fg");
    let limited = redeem(&app, "alice", &codes[1]).await;
    limited.assert_error(429, 8, "TESSERA-rate1");
    app.unlock(&admin(), "alice").await.assert_ok();
    app.delete(Some(&admin()), "/v2/users/alice/recovery_codes")
        .await
        .assert_ok();
    let text = app.metrics_text().await;
    let checks = |outcome| {
        crate::metrics::sample(
            &text,
            "tessera_recovery_code_checks_total",
            &[("outcome", outcome)],
        )
    };
    let counted: Vec<f64> = [
        "no_codes",
        "accepted",
        "invalid",
        "locked",
        "rate_limited",
        "unavailable",
    ]
    .into_iter()
    .map(checks)
    .collect();
    assert_eq!(counted, [1.0, 1.0, 2.0, 1.0, 1.0, 0.0]);
    let events =
        |event| crate::metrics::sample(&text, "tessera_recovery_codes_total", &[("event", event)]);
    assert_eq!((events("generated"), events("removed")), (3.0, 1.0));
    let locks = crate::metrics::sample(
        &text,
        "tessera_otp_lock_events_total",
        &[("event", "locked")],
    );
    assert_eq!(locks, 1.0, "a lock by recovery codes is a lock");
}
