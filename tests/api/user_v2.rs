//! ZITADEL's v2 user API (the TOTP part) beside the v1 calls: one factor, two APIs, one
//! history; who may act on whom; the listings' filters; and the same calls over gRPC.

use serde_json::{Value, json};
use tessera::api::grpc::pb::zitadel::user::v2 as user_v2;
use tessera::api::grpc::pb::zitadel::user::v2::user_service_client::UserServiceClient;
use tonic::Code;

use crate::grpc::{assert_status, channel, request};
use crate::helpers::{Answer, Backend, TestApp, Token, spawn_app};

fn user_path(user: &str, rest: &str) -> String {
    format!("/v2/users/{user}{rest}")
}

async fn get(app: &TestApp, token: &str, path: &str) -> Answer {
    app.send(app.client.get(app.url(path)).bearer_auth(token))
        .await
}

async fn register(app: &TestApp, token: &str, user: &str) -> Answer {
    app.post(Some(token), &user_path(user, "/totp"), json!({}))
        .await
}

async fn verify(app: &TestApp, token: &str, user: &str, code: &str) -> Answer {
    app.post(
        Some(token),
        &user_path(user, "/totp/verify"),
        json!({ "code": code }),
    )
    .await
}

async fn factors(app: &TestApp, token: &str, user: &str, query: Value) -> Value {
    let path = user_path(user, "/authentication_factors/_search");
    app.post(Some(token), &path, query)
        .await
        .assert_ok()
        .clone()
}

async fn methods(app: &TestApp, token: &str, user: &str) -> Value {
    get(app, token, &user_path(user, "/authentication_methods"))
        .await
        .assert_ok()
        .clone()
}

async fn v1_and_v2_share_one_factor_and_one_history(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = Token::user("acme", "alice").sign();
    // Registered through v2, visible (not yet ready) through both.
    let registered = register(&app, &alice, "alice").await;
    let body = registered.assert_ok();
    let secret = body["secret"].as_str().unwrap().to_owned();
    assert!(body["uri"].as_str().unwrap().starts_with("otpauth://totp/"));
    assert_eq!(body["details"]["resourceOwner"], "acme");
    let first = registered.sequence();
    assert_eq!(app.list(&alice).await.assert_ok(), &json!({}));
    assert_eq!(
        factors(
            &app,
            &alice,
            "alice",
            json!({"states": ["AUTH_FACTOR_STATE_NOT_READY"]})
        )
        .await,
        json!({"result": [{"state": "AUTH_FACTOR_STATE_NOT_READY", "otp": {}}]})
    );
    assert_eq!(methods(&app, &alice, "alice").await, json!({"details": {}}));
    // Verified through v1: READY through v2, later in the same sequence.
    let verified = app.verify(&alice, &app.code(&secret, 0)).await;
    verified.assert_ok();
    assert!(verified.sequence() > first);
    assert_eq!(
        methods(&app, &alice, "alice").await,
        json!({"details": {"totalResult": "1"}, "authMethodTypes": ["AUTHENTICATION_METHOD_TYPE_TOTP"]})
    );
    assert_eq!(
        factors(&app, &alice, "alice", json!({})).await,
        json!({"result": [{"state": "AUTH_FACTOR_STATE_READY", "otp": {}}]})
    );
    // Once READY, a second registration is ZITADEL's AlreadyExists, through either API.
    register(&app, &alice, "alice")
        .await
        .assert_error(409, 6, "COMMAND-do9se");
    app.add(&alice).await.assert_error(409, 6, "COMMAND-do9se");
    // Removed through v2: gone for v1, and the sequence goes on.
    let removed = app.delete(Some(&alice), &user_path("alice", "/totp")).await;
    removed.assert_ok();
    assert!(removed.sequence() > verified.sequence());
    app.remove_mine(&alice)
        .await
        .assert_error(404, 5, "COMMAND-Hd9sd");
    app.delete(Some(&alice), &user_path("alice", "/totp"))
        .await
        .assert_error(404, 5, "COMMAND-Hd9sd");
}

#[actix_web::test]
async fn v1_and_v2_share_one_factor_on_memory() {
    v1_and_v2_share_one_factor_and_one_history(Backend::Memory).await;
}

#[actix_web::test]
async fn v1_and_v2_share_one_factor_on_redis() {
    v1_and_v2_share_one_factor_and_one_history(Backend::Redis).await;
}

#[actix_web::test]
async fn a_second_registration_before_verification_replaces_the_first() {
    let app = spawn_app(Backend::Memory).await;
    let alice = Token::user("acme", "alice").sign();
    let first = register(&app, &alice, "alice").await;
    let first_secret = first.assert_ok()["secret"].as_str().unwrap().to_owned();
    let second = register(&app, &alice, "alice").await;
    let second_secret = second.assert_ok()["secret"].as_str().unwrap().to_owned();
    assert_ne!(first_secret, second_secret);
    verify(&app, &alice, "alice", &app.code(&first_secret, 0))
        .await
        .assert_error(400, 3, "EVENT-8isk2");
    verify(&app, &alice, "alice", &app.code(&second_secret, 0))
        .await
        .assert_ok();
}

/// A user acts on their own id; an admin of the organization on anyone in it; nobody else.
#[actix_web::test]
async fn who_may_act_on_whom() {
    let app = spawn_app(Backend::Memory).await;
    let alice = Token::user("acme", "alice").sign();
    let bob = Token::user("acme", "bob").sign();
    let admin = Token::user("acme", "ops").role("otp.admin", "acme").sign();
    let checker = Token::user("acme", "login")
        .role("otp.check", "acme")
        .sign();
    let outsider = Token::user("globex", "alice")
        .role("otp.admin", "globex")
        .sign();

    let secret = register(&app, &alice, "alice").await.assert_ok()["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    // Another user of the same organization, or one holding only the check role: refused.
    for token in [&bob, &checker] {
        for answer in [
            register(&app, token, "alice").await,
            verify(&app, token, "alice", "123456").await,
            get(&app, token, &user_path("alice", "/authentication_methods")).await,
            app.delete(Some(token), &user_path("alice", "/totp")).await,
        ] {
            answer.assert_error(403, 7, "TESSERA-perm1");
        }
    }
    // A user of the same id in another organization acts on their own, not on acme's.
    assert_eq!(
        methods(&app, &outsider, "alice").await,
        json!({"details": {}})
    );
    let into_acme = app
        .send(
            app.client
                .get(app.url(&user_path("alice", "/authentication_methods")))
                .bearer_auth(&outsider)
                .header("x-zitadel-orgid", "acme"),
        )
        .await;
    into_acme.assert_error(403, 7, "TESSERA-perm1");
    // The admin of acme verifies alice's factor for her, lists it, and may unlock her.
    verify(&app, &admin, "alice", &app.code(&secret, 0))
        .await
        .assert_ok();
    assert_eq!(
        methods(&app, &admin, "alice").await["authMethodTypes"],
        json!(["AUTHENTICATION_METHOD_TYPE_TOTP"])
    );
    app.post(Some(&admin), &user_path("alice", "/unlock"), json!({}))
        .await
        .assert_error(400, 9, "COMMAND-4M0ds");
    // Nobody unlocks themselves: a lock the user could lift would be no lock.
    app.post(Some(&alice), &user_path("alice", "/unlock"), json!({}))
        .await
        .assert_error(403, 7, "TESSERA-perm1");
    // The admin registers for a user who has none; the account is the user id.
    let for_bob = register(&app, &admin, "bob").await;
    assert!(
        for_bob.assert_ok()["uri"]
            .as_str()
            .unwrap()
            .contains(":bob?")
    );
}

/// Locked by wrong codes at login, unlocked through v2 by an admin.
#[actix_web::test]
async fn an_admin_unlocks_through_v2_what_wrong_codes_locked() {
    let app = spawn_app(Backend::Memory).await;
    let alice = Token::user("acme", "alice").sign();
    let checker = Token::user("acme", "login")
        .role("otp.check", "acme")
        .sign();
    let admin = Token::user("acme", "ops").role("otp.admin", "acme").sign();
    let secret = app.ready_for_login(&alice).await;
    for _ in 0..5 {
        app.check(&checker, "alice", "000000").await;
    }
    app.check(&checker, "alice", &app.code(&secret, 0))
        .await
        .assert_error(400, 9, "COMMAND-SF3fg");
    let unlocked = app
        .post(Some(&admin), &user_path("alice", "/unlock"), json!({}))
        .await;
    assert_eq!(unlocked.assert_ok()["details"]["resourceOwner"], "acme");
    app.check(&checker, "alice", &app.code(&secret, 0))
        .await
        .assert_ok();
}

#[actix_web::test]
async fn the_factor_listing_filters_by_kind_and_state() {
    let app = spawn_app(Backend::Memory).await;
    let alice = Token::user("acme", "alice").sign();
    register(&app, &alice, "alice").await.assert_ok();
    let not_ready = json!({"result": [{"state": "AUTH_FACTOR_STATE_NOT_READY", "otp": {}}]});
    for (query, expected) in [
        // No states asked: READY only.
        (json!({}), json!({})),
        (
            json!({"states": ["AUTH_FACTOR_STATE_NOT_READY"]}),
            not_ready.clone(),
        ),
        // protojson takes enum numbers too.
        (
            json!({"states": [1], "authFactors": [0]}),
            not_ready.clone(),
        ),
        (
            json!({"states": ["AUTH_FACTOR_STATE_READY", "AUTH_FACTOR_STATE_NOT_READY"], "authFactors": ["OTP"]}),
            not_ready.clone(),
        ),
        (
            json!({"states": ["AUTH_FACTOR_STATE_NOT_READY"], "authFactors": ["U2F"]}),
            json!({}),
        ),
        (json!({"states": ["AUTH_FACTOR_STATE_REMOVED"]}), json!({})),
    ] {
        assert_eq!(
            factors(&app, &alice, "alice", query.clone()).await,
            expected,
            "{query}"
        );
    }
    app.post(
        Some(&alice),
        &user_path("alice", "/authentication_factors/_search"),
        json!({"states": "not a list"}),
    )
    .await
    .assert_error(400, 3, "TESSERA-body1");
}

/// The same calls over native gRPC, with ZITADEL's v2 messages and enums.
#[actix_web::test]
async fn the_v2_calls_over_native_grpc() {
    let app = spawn_app(Backend::Memory).await;
    let alice = Token::user("acme", "alice").sign();
    let admin = Token::user("acme", "ops").role("otp.admin", "acme").sign();
    let bob = Token::user("acme", "bob").sign();
    let mut client = UserServiceClient::new(channel(&app).await);
    let user_id = || "alice".to_owned();

    let registered = client
        .register_totp(request(
            user_v2::RegisterTotpRequest { user_id: user_id() },
            Some(&alice),
            None,
        ))
        .await
        .unwrap()
        .into_inner();
    let details = registered.details.unwrap();
    assert_eq!(details.resource_owner, "acme");
    assert!(details.creation_date.is_some() && details.sequence > 0);
    assert!(registered.uri.contains(&registered.secret));

    let not_ready = client
        .list_authentication_factors(request(
            user_v2::ListAuthenticationFactorsRequest {
                user_id: user_id(),
                auth_factors: vec![user_v2::AuthFactors::Otp as i32],
                states: vec![user_v2::AuthFactorState::NotReady as i32],
            },
            Some(&alice),
            None,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(not_ready.result.len(), 1);
    assert_eq!(
        not_ready.result[0].state,
        user_v2::AuthFactorState::NotReady as i32
    );
    assert!(matches!(
        not_ready.result[0].r#type,
        Some(user_v2::auth_factor::Type::Otp(_))
    ));

    let verified = client
        .verify_totp_registration(request(
            user_v2::VerifyTotpRegistrationRequest {
                user_id: user_id(),
                code: app.code(&registered.secret, 0),
            },
            Some(&alice),
            None,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(verified.details.unwrap().sequence > details.sequence);

    let methods = client
        .list_authentication_method_types(request(
            user_v2::ListAuthenticationMethodTypesRequest {
                user_id: user_id(),
                domain_query: None,
            },
            Some(&admin),
            None,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        methods.auth_method_types,
        vec![user_v2::AuthenticationMethodType::Totp as i32]
    );
    assert_eq!(methods.details.unwrap().total_result, 1);

    assert_status(
        client
            .remove_totp(request(
                user_v2::RemoveTotpRequest { user_id: user_id() },
                Some(&bob),
                None,
            ))
            .await,
        Code::PermissionDenied,
        "TESSERA-perm1",
    );
    assert_status(
        client
            .unlock_user(request(
                user_v2::UnlockUserRequest { user_id: user_id() },
                Some(&admin),
                None,
            ))
            .await,
        Code::FailedPrecondition,
        "COMMAND-4M0ds",
    );
    client
        .remove_totp(request(
            user_v2::RemoveTotpRequest { user_id: user_id() },
            Some(&admin),
            Some("acme"),
        ))
        .await
        .unwrap();
    assert_status(
        client
            .remove_totp(request(
                user_v2::RemoveTotpRequest { user_id: user_id() },
                Some(&alice),
                None,
            ))
            .await,
        Code::NotFound,
        "COMMAND-Hd9sd",
    );
    // A malformed user id is refused before any work.
    assert_status(
        client
            .register_totp(request(
                user_v2::RegisterTotpRequest {
                    user_id: String::new(),
                },
                Some(&admin),
                None,
            ))
            .await,
        Code::InvalidArgument,
        "TESSERA-user1",
    );
}
