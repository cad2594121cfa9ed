//! Tenants: one organization never reads or changes another's factors.

use serde_json::json;

use crate::helpers::{Backend, Token, spawn_app};

#[actix_web::test]
async fn me_calls_act_in_the_users_own_organization_whatever_the_header() {
    let app = spawn_app(Backend::Memory).await;
    let alice_a = Token::user("org-a", "alice").sign();
    let alice_b = Token::user("org-b", "alice").sign();
    let secret = app.enroll_ready(&alice_a).await;
    // Same user id, other organization: a different factor.
    assert_eq!(app.list(&alice_b).await.assert_ok(), &json!({}));
    app.verify(&alice_b, &app.code(&secret, 0))
        .await
        .assert_error(404, 5, "COMMAND-3Mif9s");
    // The x-zitadel-orgid header does not move a `me` call to another organization.
    let request = app
        .client
        .post(app.url("/auth/v1/users/me/auth_factors/_search"))
        .bearer_auth(&alice_b)
        .header("x-zitadel-orgid", "org-a")
        .json(&json!({}));
    assert_eq!(app.send(request).await.assert_ok(), &json!({}));
    let request = app
        .client
        .post(app.url("/auth/v1/users/me/auth_factors/otp"))
        .bearer_auth(&alice_b)
        .header("x-zitadel-orgid", "org-a");
    let added = app.send(request).await;
    assert_eq!(added.assert_ok()["details"]["resourceOwner"], "org-b");
}

#[actix_web::test]
async fn management_calls_need_the_role_for_the_target_organization() {
    let app = spawn_app(Backend::Memory).await;
    let alice_a = Token::user("org-a", "alice").sign();
    let secret = app.enroll_ready(&alice_a).await;
    app.clock.advance_secs(30);
    let code = app.code(&secret, 0);
    let path = "/management/v1/users/alice/auth_factors/otp/_check";

    // A checker of org-b, own organization: org-b has no such factor.
    let checker_b = Token::user("org-b", "svc")
        .role("otp.check", "org-b")
        .sign();
    app.check(&checker_b, "alice", &code)
        .await
        .assert_error(400, 9, "COMMAND-3Mif9s");
    // A checker of org-b naming org-a: no role there.
    let request = app
        .client
        .post(app.url(path))
        .bearer_auth(&checker_b)
        .header("x-zitadel-orgid", "org-a")
        .json(&json!({ "code": code }));
    app.send(request)
        .await
        .assert_error(403, 7, "TESSERA-perm1");
    // A role granted for org-a, held by a user of org-b, works for org-a through the header.
    let cross = Token::user("org-b", "svc")
        .role("otp.check", "org-a")
        .sign();
    let request = app
        .client
        .post(app.url(path))
        .bearer_auth(&cross)
        .header("x-zitadel-orgid", "org-a")
        .json(&json!({ "code": code }));
    let answer = app.send(request).await;
    assert_eq!(answer.assert_ok()["details"]["resourceOwner"], "org-a");
    // Without the role at all.
    let nobody = Token::user("org-a", "bob").sign();
    app.check(&nobody, "alice", &code)
        .await
        .assert_error(403, 7, "TESSERA-perm1");
}

#[actix_web::test]
async fn redis_keys_of_one_tenant_never_collide_with_another() {
    let app = spawn_app(Backend::Redis).await;
    // ("a:b", "c") and ("a", "b:c") must be two different factors.
    let first = Token::user("a:b", "c").sign();
    let second = Token::user("a", "b:c").sign();
    app.enroll_ready(&first).await;
    assert_eq!(app.list(&second).await.assert_ok(), &json!({}));
    let braces = Token::user("o}{", "{u}").sign();
    app.enroll_ready(&braces).await;
    // Users' hashes: `tessera:{<org>:<user>}` (their events: the same with `:events`).
    let keys = app
        .redis
        .as_ref()
        .unwrap()
        .cli(&["--scan", "--pattern", "tessera:{*}"])
        .unwrap();
    assert_eq!(keys.lines().count(), 2, "{keys}");
}

#[actix_web::test]
async fn a_redis_dump_holds_no_secret() {
    let app = spawn_app(Backend::Redis).await;
    let alice = Token::user("acme", "alice").sign();
    let secret = app.add(&alice).await.body["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let raw = data_encoding::BASE32_NOPAD
        .decode(secret.as_bytes())
        .unwrap();
    let redis = app.redis.as_ref().unwrap();
    let client = ::redis::Client::open(redis.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    // The user's hash (its events and the organization's feed are searched below too).
    let keys: Vec<String> = ::redis::cmd("KEYS")
        .arg("tessera:{*}")
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!(keys, vec!["tessera:{acme:alice}".to_owned()]);
    let fields: Vec<(String, Vec<u8>)> = ::redis::cmd("HGETALL")
        .arg(&keys[0])
        .query_async(&mut connection)
        .await
        .unwrap();
    let sealed = &fields.iter().find(|(name, _)| name == "k").unwrap().1;
    assert!(
        sealed.len() > raw.len(),
        "a nonce and a tag surround the ciphertext"
    );
    for (name, value) in &fields {
        assert!(
            !value.windows(raw.len()).any(|w| w == raw.as_slice()),
            "field {name} holds the raw secret"
        );
        assert!(
            !value.windows(8).any(|w| w == &secret.as_bytes()[..8]),
            "field {name} holds the base32 secret"
        );
    }
    // Every key, the events and the organization's feed included, as Redis would write it.
    let every_key: Vec<String> = ::redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut connection)
        .await
        .unwrap();
    assert!(every_key.len() > 1, "{every_key:?}");
    for key in &every_key {
        let dump: Vec<u8> = ::redis::cmd("DUMP")
            .arg(key)
            .query_async(&mut connection)
            .await
            .unwrap();
        assert!(
            !dump.windows(raw.len()).any(|w| w == raw.as_slice()),
            "{key} holds the raw secret"
        );
        assert!(
            !dump.windows(8).any(|w| w == &secret.as_bytes()[..8]),
            "{key} holds the base32 secret"
        );
    }
}

#[actix_web::test]
async fn each_organization_may_have_its_own_totp_and_lockout_policy() {
    let settings = crate::helpers::settings_with_env(&[
        ("TESSERA__ORGS__STRICT__ALGORITHM", "SHA512"),
        ("TESSERA__ORGS__STRICT__DIGITS", "8"),
        ("TESSERA__ORGS__STRICT__ISSUER", "Strict Inc"),
        ("TESSERA__ORGS__STRICT__MAX_OTP_ATTEMPTS", "1"),
        ("TESSERA__ORGS__MIXEDCASE__DIGITS", "7"),
    ]);
    let app = crate::helpers::Spawn::new(Backend::Memory)
        .settings(settings)
        .start()
        .await;
    let strict = Token::user("strict", "alice")
        .role("otp.check", "strict")
        .sign();
    let relaxed = Token::user("relaxed", "alice")
        .role("otp.check", "relaxed")
        .sign();

    let added = app.add(&strict).await;
    let secret = added.body["secret"].as_str().unwrap().to_owned();
    assert_eq!(
        added.body["url"],
        format!(
            "otpauth://totp/Strict%20Inc:alice?algorithm=SHA512&digits=8&issuer=Strict%20Inc&period=30&secret={secret}"
        )
    );
    let strict_params =
        tessera::domain::TotpParams::new(tessera::domain::HashAlgorithm::Sha512, 8, 30).unwrap();
    let code = crate::helpers::code_with(&strict_params, &secret, app.now_secs(), 0);
    app.verify(&strict, &code).await.assert_ok();
    app.clock.advance_secs(30);
    // One failure locks in "strict"...
    app.check(&strict, "alice", "00000000")
        .await
        .assert_error(400, 3, "EVENT-8isk2");
    let code = crate::helpers::code_with(&strict_params, &secret, app.now_secs(), 0);
    app.check(&strict, "alice", &code)
        .await
        .assert_error(400, 9, "COMMAND-SF3fg");
    // ...while "relaxed" has the instance's defaults.
    let added = app.add(&relaxed).await;
    assert!(
        added.body["url"]
            .as_str()
            .unwrap()
            .contains("algorithm=SHA1&digits=6&issuer=tessera")
    );
    let secret = added.body["secret"].as_str().unwrap().to_owned();
    app.verify(&relaxed, &app.code(&secret, 0))
        .await
        .assert_ok();
    app.clock.advance_secs(30);
    app.check(&relaxed, "alice", "000000")
        .await
        .assert_error(400, 3, "EVENT-8isk2");
    app.check(&relaxed, "alice", &app.code(&secret, 0))
        .await
        .assert_ok();
    // The environment gives organization keys in lower case only: a seed is written for the
    // id in lower case (ZITADEL's ids are digits), and an id of another case is another
    // organization, with the instance's policy.
    let lower = Token::user("mixedcase", "alice").sign();
    let added = app.add(&lower).await;
    assert!(
        added.body["url"].as_str().unwrap().contains("digits=7"),
        "{added:?}"
    );
    let mixed = Token::user("MixedCase", "alice").sign();
    let added = app.add(&mixed).await;
    assert!(
        added.body["url"].as_str().unwrap().contains("digits=6"),
        "{added:?}"
    );
}
