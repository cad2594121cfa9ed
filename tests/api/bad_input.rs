//! Bad input of every kind: an answer in the contract's shape, nothing lost, nothing counted
//! that should not be.

use serde_json::json;

use crate::helpers::{Backend, Spawn, Token, spawn_app};

const VERIFY: &str = "/auth/v1/users/me/auth_factors/otp/_verify";

#[actix_web::test]
async fn bodies_that_are_not_json_whatever_the_content_type() {
    let app = spawn_app(Backend::Memory).await;
    let alice = Token::user("acme", "alice").sign();
    app.add(&alice).await.assert_ok();
    for (content_type, body) in [
        ("application/json", "{bad"),
        ("text/plain", "code=123456"),
        ("application/x-www-form-urlencoded", "code=123456"),
        ("application/json", "\"just a string\""),
        ("application/json", "{\"code\": 123456}"),
        ("application/octet-stream", "\u{0}\u{1}\u{2}"),
    ] {
        let request = app
            .client
            .post(app.url(VERIFY))
            .bearer_auth(&alice)
            .header("content-type", content_type)
            .body(body);
        app.send(request)
            .await
            .assert_error(400, 3, "TESSERA-body1");
    }
    // JSON is JSON whatever the content type says (as grpc-gateway does, so curl -d works).
    let request = app
        .client
        .post(app.url(VERIFY))
        .bearer_auth(&alice)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(r#"{"code":"000000","unknownField":1}"#);
    app.send(request).await.assert_error(400, 3, "EVENT-8isk2");
}

#[actix_web::test]
async fn code_length_is_validated_before_it_counts() {
    let app = spawn_app(Backend::Memory).await;
    let alice = Token::user("acme", "alice").sign();
    let secret = app.add(&alice).await.body["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    for body in [
        json!({}),
        json!({"code": ""}),
        json!({"code": "1".repeat(201)}),
        json!({"code": null}),
    ] {
        app.post(Some(&alice), VERIFY, body)
            .await
            .assert_error(400, 3, "TESSERA-code1");
    }
    let empty = app.client.post(app.url(VERIFY)).bearer_auth(&alice);
    app.send(empty).await.assert_error(400, 3, "TESSERA-code1");
    // None of those was a failed attempt: the first wrong code is failure number one.
    let wrong = app.verify(&alice, "000000").await;
    assert_eq!(wrong.body["details"][1]["failedAttempts"], 1, "{wrong:?}");
    // 200 characters is still a (wrong) code.
    app.verify(&alice, &"1".repeat(200))
        .await
        .assert_error(400, 3, "EVENT-8isk2");
    app.verify(&alice, &app.code(&secret, 0)).await.assert_ok();
}

#[actix_web::test]
async fn malformed_codes_are_wrong_codes() {
    let app = Spawn::new(Backend::Memory)
        .with(|s| s.lockout.max_otp_attempts = 20)
        .start()
        .await;
    let alice = Token::user("acme", "alice").sign();
    let secret = app.add(&alice).await.body["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let good = app.code(&secret, 0);
    let (left, right) = good.split_at(3);
    for bad in [
        format!("{left}x{right}"),
        "１２３４５６".to_owned(),
        format!("{left}  {right}"),
        good[..5].to_owned(),
        format!("{good}0"),
        format!("{left}\t{right}"),
        format!("+{}", &good[1..]),
        format!("{} {} {}", &good[..2], &good[2..4], &good[4..]),
        "🔑🔑🔑🔑🔑🔑".to_owned(),
    ] {
        app.verify(&alice, &bad)
            .await
            .assert_error(400, 3, "EVENT-8isk2");
    }
    // Whitespace around and one space in the middle are how people type codes.
    app.verify(&alice, &format!("  {left} {right}\n"))
        .await
        .assert_ok();
}

#[actix_web::test]
async fn oversized_bodies_are_413_in_the_contract_shape() {
    let app = spawn_app(Backend::Memory).await;
    let alice = Token::user("acme", "alice").sign();
    let big = format!("{{\"code\":\"{}\"}}", "1".repeat(5000));
    let request = app
        .client
        .post(app.url(VERIFY))
        .bearer_auth(&alice)
        .body(big.clone());
    let answer = app.send(request).await;
    answer.assert_error(413, 8, "TESSERA-body2");
    // Without a Content-Length (chunked), the limit holds while reading.
    let stream = futures::stream::iter((0..64).map(|_| Ok::<_, std::io::Error>(vec![b' '; 1024])));
    let request = app
        .client
        .post(app.url(VERIFY))
        .bearer_auth(&alice)
        .body(reqwest::Body::wrap_stream(stream));
    app.send(request)
        .await
        .assert_error(413, 8, "TESSERA-body2");
}

#[actix_web::test]
async fn unknown_routes_and_methods() {
    let app = spawn_app(Backend::Memory).await;
    let alice = Token::user("acme", "alice").sign();
    let answer = app
        .send(
            app.client
                .get(app.url("/auth/v1/nothing-here"))
                .bearer_auth(&alice),
        )
        .await;
    answer.assert_error(404, 5, "TESSERA-route1");
    let answer = app
        .send(app.client.get(app.url(VERIFY)).bearer_auth(&alice))
        .await;
    answer.assert_error(405, 12, "TESSERA-route2");
}
