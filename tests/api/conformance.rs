//! One suite, three stores: every scenario runs against the memory store, a real
//! redis-server and a real Redis Cluster of three masters.

use serde_json::json;

use crate::helpers::{Backend, Spawn, Token, on_every_store, spawn_app};

on_every_store!(
    enroll_verify_and_check,
    details_follow_the_contract,
    verify_of_a_ready_factor_is_failed_precondition_whatever_the_code,
    verify_without_a_factor_is_not_found,
    add_when_ready_is_already_exists,
    add_again_replaces_an_unverified_secret,
    remove_and_sequences_never_go_back,
    list_shows_ready_factors_only,
    a_code_is_accepted_once,
    an_older_step_after_a_newer_one_is_replay,
    lockout_after_max_failures_and_expiry,
    locked_factor_consumes_nothing,
    lockout_until_unlocked_and_admin_unlock,
    success_resets_the_failure_count,
    failures_at_enrollment_count_and_lock,
    login_check_needs_a_ready_factor,
    admin_remove,
    per_instance_totp_parameters,
    skew_of_one_step_either_way,
);

async fn enroll_verify_and_check(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = Token::user("acme", "alice")
        .role("otp.check", "acme")
        .sign();
    let added = app.add(&alice).await;
    let body = added.assert_ok();
    let secret = body["secret"].as_str().unwrap();
    assert_eq!(
        data_encoding::BASE32_NOPAD
            .decode(secret.as_bytes())
            .unwrap()
            .len(),
        20
    );
    assert_eq!(
        body["url"],
        format!(
            "otpauth://totp/tessera:alice?algorithm=SHA1&digits=6&issuer=tessera&period=30&secret={secret}"
        )
    );
    app.verify(&alice, &app.code(secret, 0)).await.assert_ok();
    // The login check with the next step's code (the current one is spent).
    app.check(&alice, "alice", &app.code(secret, 1))
        .await
        .assert_ok();
}

async fn details_follow_the_contract(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = Token::user("org-7", "alice").sign();
    let added = app.add(&alice).await;
    let details = &added.assert_ok()["details"];
    // A JSON string (uint64), never zero (it would be left out).
    let created: u64 = details["sequence"].as_str().unwrap().parse().unwrap();
    assert!(created > 0);
    assert_eq!(details["resourceOwner"], "org-7");
    assert_eq!(details["creationDate"], "2026-09-21T14:13:45Z");
    assert!(details.get("changeDate").is_none(), "{details}");
    let secret = added.body["secret"].as_str().unwrap().to_owned();
    app.clock.advance_secs(1);
    let verified = app.verify(&alice, &app.code(&secret, 0)).await;
    let details = &verified.assert_ok()["details"];
    assert!(verified.sequence() > created);
    assert_eq!(details["changeDate"], "2026-09-21T14:13:46Z");
    assert!(details.get("creationDate").is_none(), "{details}");
    assert_eq!(details["resourceOwner"], "org-7");
}

async fn verify_of_a_ready_factor_is_failed_precondition_whatever_the_code(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = Token::user("acme", "alice").sign();
    let secret = app.enroll_ready(&alice).await;
    for code in [app.code(&secret, 1), "000000".into(), "abc".into()] {
        app.verify(&alice, &code)
            .await
            .assert_error(400, 9, "COMMAND-qx4ls");
    }
}

async fn verify_without_a_factor_is_not_found(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = Token::user("acme", "alice").sign();
    app.verify(&alice, "123456")
        .await
        .assert_error(404, 5, "COMMAND-3Mif9s");
}

async fn add_when_ready_is_already_exists(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = Token::user("acme", "alice").sign();
    app.enroll_ready(&alice).await;
    app.add(&alice).await.assert_error(409, 6, "COMMAND-do9se");
}

async fn add_again_replaces_an_unverified_secret(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = Token::user("acme", "alice").sign();
    let first = app.add(&alice).await;
    let second = app.add(&alice).await;
    assert!(second.sequence() > first.sequence());
    let first = first.body["secret"].as_str().unwrap().to_owned();
    let second = second.body["secret"].as_str().unwrap().to_owned();
    assert_ne!(first, second);
    app.verify(&alice, &app.code(&first, 0))
        .await
        .assert_error(400, 3, "EVENT-8isk2");
    app.verify(&alice, &app.code(&second, 0)).await.assert_ok();
}

async fn remove_and_sequences_never_go_back(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = Token::user("acme", "alice").sign();
    app.remove_mine(&alice)
        .await
        .assert_error(404, 5, "COMMAND-Hd9sd");
    let mut sequences = vec![app.add(&alice).await.sequence()];
    let secret = app.add(&alice).await.body["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let verified = app.verify(&alice, &app.code(&secret, 0)).await;
    sequences.push(verified.sequence());
    let removed = app.remove_mine(&alice).await;
    assert!(removed.body["details"]["changeDate"].is_string());
    sequences.push(removed.sequence());
    app.remove_mine(&alice)
        .await
        .assert_error(404, 5, "COMMAND-Hd9sd");
    sequences.push(app.add(&alice).await.sequence());
    assert!(
        sequences.windows(2).all(|pair| pair[0] < pair[1]),
        "one event each, never reused after removal: {sequences:?}"
    );
}

async fn list_shows_ready_factors_only(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = Token::user("acme", "alice").sign();
    assert_eq!(app.list(&alice).await.assert_ok(), &json!({}));
    let secret = app.add(&alice).await.body["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(app.list(&alice).await.assert_ok(), &json!({}));
    app.verify(&alice, &app.code(&secret, 0)).await.assert_ok();
    assert_eq!(
        app.list(&alice).await.assert_ok(),
        &json!({"result": [{"state": "AUTH_FACTOR_STATE_READY", "otp": {}}]})
    );
}

async fn a_code_is_accepted_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = Token::user("acme", "alice")
        .role("otp.check", "acme")
        .sign();
    let secret = app.enroll_ready(&alice).await;
    // The enrollment's code is spent too: the same step cannot log in.
    app.check(&alice, "alice", &app.code(&secret, 0))
        .await
        .assert_error(400, 3, "EVENT-8isk2");
    app.clock.advance_secs(30);
    let code = app.code(&secret, 0);
    app.check(&alice, "alice", &code).await.assert_ok();
    let replay = app.check(&alice, "alice", &code).await;
    replay.assert_error(400, 3, "EVENT-8isk2");
    assert_eq!(
        replay.body["details"][1]["failedAttempts"], 1,
        "a replay counts as a failure"
    );
}

async fn an_older_step_after_a_newer_one_is_replay(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = Token::user("acme", "alice")
        .role("otp.check", "acme")
        .sign();
    let secret = app.enroll_ready(&alice).await;
    app.clock.advance_secs(60);
    app.check(&alice, "alice", &app.code(&secret, 1))
        .await
        .assert_ok();
    // Within the window, but older than the accepted step (RFC 6238 5.2).
    app.check(&alice, "alice", &app.code(&secret, 0))
        .await
        .assert_error(400, 3, "EVENT-8isk2");
    app.check(&alice, "alice", &app.code(&secret, -1))
        .await
        .assert_error(400, 3, "EVENT-8isk2");
}

async fn lockout_after_max_failures_and_expiry(backend: Backend) {
    let app = Spawn::new(backend)
        .with(|s| {
            s.lockout.max_otp_attempts = 3;
            s.lockout.lock_duration_secs = 120;
        })
        .start()
        .await;
    let alice = Token::user("acme", "alice")
        .role("otp.check", "acme")
        .sign();
    let secret = app.ready_for_login(&alice).await;
    for (failed, remaining) in [(1, "2 attempts"), (2, "1 attempt"), (3, "0 attempts")] {
        let answer = app.check(&alice, "alice", "000000").await;
        answer.assert_error(400, 3, "EVENT-8isk2");
        assert_eq!(answer.body["details"][1]["failedAttempts"], failed);
        assert!(
            answer.body["details"][1]["message"]
                .as_str()
                .unwrap()
                .ends_with(&format!("; {remaining} remaining")),
            "{answer:?}"
        );
    }
    // Locked: even the right code is refused.
    app.check(&alice, "alice", &app.code(&secret, 0))
        .await
        .assert_error(400, 9, "COMMAND-SF3fg");
    app.clock.advance_secs(119);
    app.check(&alice, "alice", &app.code(&secret, 0))
        .await
        .assert_error(400, 9, "COMMAND-SF3fg");
    app.clock.advance_secs(1);
    app.check(&alice, "alice", &app.code(&secret, 0))
        .await
        .assert_ok();
    // An expired lock starts a fresh count.
    let answer = app.check(&alice, "alice", "000000").await;
    assert_eq!(answer.body["details"][1]["failedAttempts"], 1, "{answer:?}");
}

async fn locked_factor_consumes_nothing(backend: Backend) {
    let app = Spawn::new(backend)
        .with(|s| {
            s.lockout.max_otp_attempts = 2;
            s.lockout.lock_duration_secs = 0;
        })
        .start()
        .await;
    let alice = Token::user("acme", "alice")
        .role("otp.check", "acme")
        .role("otp.admin", "acme")
        .sign();
    let secret = app.ready_for_login(&alice).await;
    app.check(&alice, "alice", "000000").await;
    app.check(&alice, "alice", "000000").await;
    let code = app.code(&secret, 0);
    app.check(&alice, "alice", &code)
        .await
        .assert_error(400, 9, "COMMAND-SF3fg");
    app.unlock(&alice, "alice").await.assert_ok();
    // The code tried while locked was not consumed.
    app.check(&alice, "alice", &code).await.assert_ok();
}

async fn lockout_until_unlocked_and_admin_unlock(backend: Backend) {
    let app = Spawn::new(backend)
        .with(|s| {
            s.lockout.max_otp_attempts = 1;
            s.lockout.lock_duration_secs = 0;
        })
        .start()
        .await;
    let alice = Token::user("acme", "alice")
        .role("otp.check", "acme")
        .sign();
    let admin = Token::user("acme", "root").role("otp.admin", "acme").sign();
    let secret = app.enroll_ready(&alice).await;
    app.unlock(&admin, "alice")
        .await
        .assert_error(400, 9, "COMMAND-4M0ds");
    app.unlock(&admin, "nobody")
        .await
        .assert_error(404, 5, "COMMAND-3Mif9s");
    app.clock.advance_secs(30);
    app.check(&alice, "alice", "111111")
        .await
        .assert_error(400, 3, "EVENT-8isk2");
    app.clock.advance_secs(86_400 * 365);
    app.check(&alice, "alice", &app.code(&secret, 0))
        .await
        .assert_error(400, 9, "COMMAND-SF3fg");
    // The check role does not unlock.
    app.unlock(&alice, "alice")
        .await
        .assert_error(403, 7, "TESSERA-perm1");
    let unlocked = app.unlock(&admin, "alice").await;
    assert_eq!(unlocked.assert_ok()["details"]["resourceOwner"], "acme");
    app.check(&alice, "alice", &app.code(&secret, 0))
        .await
        .assert_ok();
}

async fn success_resets_the_failure_count(backend: Backend) {
    let app = Spawn::new(backend)
        .with(|s| s.lockout.max_otp_attempts = 3)
        .start()
        .await;
    let alice = Token::user("acme", "alice")
        .role("otp.check", "acme")
        .sign();
    let secret = app.enroll_ready(&alice).await;
    for round in 1..=3 {
        app.clock.advance_secs(30);
        app.check(&alice, "alice", "000000")
            .await
            .assert_error(400, 3, "EVENT-8isk2");
        let second = app.check(&alice, "alice", "000001").await;
        assert_eq!(
            second.body["details"][1]["failedAttempts"], 2,
            "round {round}"
        );
        app.check(&alice, "alice", &app.code(&secret, 0))
            .await
            .assert_ok();
    }
}

async fn failures_at_enrollment_count_and_lock(backend: Backend) {
    let app = Spawn::new(backend)
        .with(|s| s.lockout.max_otp_attempts = 2)
        .start()
        .await;
    let alice = Token::user("acme", "alice").sign();
    let secret = app.add(&alice).await.body["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    app.verify(&alice, "000000")
        .await
        .assert_error(400, 3, "EVENT-8isk2");
    app.verify(&alice, "000000")
        .await
        .assert_error(400, 3, "EVENT-8isk2");
    app.verify(&alice, &app.code(&secret, 0))
        .await
        .assert_error(400, 9, "COMMAND-SF3fg");
    // The lock is the user's, not the enrollment's: a new enrollment does not lift it
    // (else enrolling again would be a way around a lock that guesses at recovery codes set).
    let fresh = app.add(&alice).await.body["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    app.verify(&alice, &app.code(&fresh, 0))
        .await
        .assert_error(400, 9, "COMMAND-SF3fg");
    let admin = Token::user("acme", "root").role("otp.admin", "acme").sign();
    app.unlock(&admin, "alice").await.assert_ok();
    app.verify(&alice, &app.code(&fresh, 0)).await.assert_ok();
}

async fn login_check_needs_a_ready_factor(backend: Backend) {
    let app = spawn_app(backend).await;
    let backend_token = Token::user("acme", "login-page")
        .role("otp.check", "acme")
        .sign();
    app.check(&backend_token, "alice", "123456")
        .await
        .assert_error(400, 9, "COMMAND-3Mif9s");
    let alice = Token::user("acme", "alice").sign();
    let secret = app.add(&alice).await.body["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    app.check(&backend_token, "alice", &app.code(&secret, 0))
        .await
        .assert_error(400, 9, "COMMAND-3Mif9s");
    app.verify(&alice, &app.code(&secret, 0)).await.assert_ok();
    app.clock.advance_secs(30);
    let checked = app
        .check(&backend_token, "alice", &app.code(&secret, 0))
        .await;
    assert_eq!(checked.assert_ok()["details"]["resourceOwner"], "acme");
}

async fn admin_remove(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = Token::user("acme", "alice").sign();
    let admin = Token::user("acme", "root").role("otp.admin", "acme").sign();
    app.enroll_ready(&alice).await;
    let path = "/management/v1/users/alice/auth_factors/otp";
    app.delete(Some(&alice), path)
        .await
        .assert_error(403, 7, "TESSERA-perm1");
    let removed = app.delete(Some(&admin), path).await;
    assert_eq!(removed.assert_ok()["details"]["resourceOwner"], "acme");
    app.delete(Some(&admin), path)
        .await
        .assert_error(404, 5, "COMMAND-Hd9sd");
    assert_eq!(app.list(&alice).await.assert_ok(), &json!({}));
}

async fn per_instance_totp_parameters(backend: Backend) {
    let app = Spawn::new(backend)
        .with(|s| {
            s.totp.algorithm = tessera::domain::HashAlgorithm::Sha256;
            s.totp.digits = 8;
            s.totp.period_secs = 60;
            s.totp.issuer = "ACME Corp".into();
        })
        .start()
        .await;
    let alice = Token::user("acme", "alice")
        .claim("preferred_username", json!("alice@acme.test"))
        .sign();
    let added = app.add(&alice).await;
    let secret = added.body["secret"].as_str().unwrap().to_owned();
    assert_eq!(
        added.body["url"],
        format!(
            "otpauth://totp/ACME%20Corp:alice%40acme.test?algorithm=SHA256&digits=8&issuer=ACME%20Corp&period=60&secret={secret}"
        )
    );
    let code = app.code(&secret, 0);
    assert_eq!(code.len(), 8);
    app.verify(&alice, &code).await.assert_ok();
}

async fn skew_of_one_step_either_way(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = Token::user("acme", "alice")
        .role("otp.check", "acme")
        .sign();
    let secret = app.add(&alice).await.body["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    app.verify(&alice, &app.code(&secret, -2))
        .await
        .assert_error(400, 3, "EVENT-8isk2");
    app.verify(&alice, &app.code(&secret, 2))
        .await
        .assert_error(400, 3, "EVENT-8isk2");
    app.verify(&alice, &app.code(&secret, -1)).await.assert_ok();
    app.check(&alice, "alice", &app.code(&secret, 1))
        .await
        .assert_ok();
}
