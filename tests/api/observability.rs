//! Request ids: taken from x-request-id when sane, generated otherwise, returned on both wires.

use tessera::api::grpc::pb::zitadel::auth::v1 as auth;
use tessera::api::grpc::pb::zitadel::auth::v1::auth_service_client::AuthServiceClient;

use crate::grpc::{channel, request};
use crate::helpers::{Backend, DevBinary, Token, free_port, spawn_app};

#[actix_web::test]
async fn request_ids_over_http_and_grpc() {
    let app = spawn_app(Backend::Memory).await;
    let alice = Token::user("acme", "alice").sign();
    let search = |id: Option<&str>| {
        let mut request = app
            .client
            .post(app.url("/auth/v1/users/me/auth_factors/_search"))
            .bearer_auth(&alice);
        if let Some(id) = id {
            request = request.header("x-request-id", id);
        }
        request.send()
    };
    let given = search(Some("req-42.a:b_c")).await.unwrap();
    assert_eq!(given.headers()["x-request-id"], "req-42.a:b_c");
    let generated = search(None).await.unwrap();
    let id = generated.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(id.len(), 32);
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_ne!(
        search(None).await.unwrap().headers()["x-request-id"]
            .to_str()
            .unwrap(),
        id
    );
    // Not a sane token (spaces, quotes): replaced, so logs cannot be forged through it.
    let insane = search(Some("x\" y=1")).await.unwrap();
    assert_ne!(insane.headers()["x-request-id"], "x\" y=1");
    // Errors carry it too.
    let refused = app
        .client
        .post(app.url("/auth/v1/users/me/auth_factors/_search"))
        .header("x-request-id", "r-1")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 401);
    assert_eq!(refused.headers()["x-request-id"], "r-1");

    let mut client = AuthServiceClient::new(channel(&app).await);
    let mut call = request(auth::ListMyAuthFactorsRequest {}, Some(&alice), None);
    call.metadata_mut()
        .insert("x-request-id", "grpc-7".parse().unwrap());
    let answer = client.list_my_auth_factors(call).await.unwrap();
    assert_eq!(answer.metadata().get("x-request-id").unwrap(), "grpc-7");
    let failed = client
        .list_my_auth_factors(request(auth::ListMyAuthFactorsRequest {}, None, None))
        .await
        .unwrap_err();
    assert_eq!(
        failed
            .metadata()
            .get("x-request-id")
            .unwrap()
            .to_str()
            .unwrap()
            .len(),
        32
    );
}

/// One id per request, in the answer and in every log line the request causes, down to the
/// store's warnings (which run on an organization actor's thread), on both transports.
#[actix_web::test]
async fn the_request_id_is_on_every_log_line_the_request_causes() {
    use std::time::Duration;

    // Redis that is not there: each call logs the store's failure, then its own.
    let dev = DevBinary::start(&[
        ("TESSERA__STORE__KIND", "redis".into()),
        (
            "TESSERA__REDIS__URL",
            format!("redis://127.0.0.1:{}", free_port()),
        ),
        ("TESSERA__LOG__LEVEL", "debug".into()),
    ])
    .await;
    let base = dev.base.clone();
    let grpc_port = dev.grpc_port;
    let client = reqwest::Client::new();
    let token = dev.token("acme", "alice", &[]);

    let http = client
        .post(format!("{base}/auth/v1/users/me/auth_factors/_search"))
        .bearer_auth(&token)
        .header("x-request-id", "http-log-1")
        .send()
        .await
        .unwrap();
    assert_eq!(http.status().as_u16(), 503);
    assert_eq!(http.headers()["x-request-id"], "http-log-1");
    let channel = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{grpc_port}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = AuthServiceClient::new(channel);
    let mut call = request(auth::ListMyAuthFactorsRequest {}, Some(&token), None);
    call.metadata_mut()
        .insert("x-request-id", "grpc-log-1".parse().unwrap());
    let failed = grpc.list_my_auth_factors(call).await.unwrap_err();
    assert_eq!(failed.code(), tonic::Code::Unavailable);
    assert_eq!(failed.metadata().get("x-request-id").unwrap(), "grpc-log-1");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let logs = dev.stop();
    for id in ["http-log-1", "grpc-log-1"] {
        let lines: Vec<serde_json::Value> = logs
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .filter(|line: &serde_json::Value| line["span"]["request_id"] == id)
            .collect();
        let said = |message: &str| {
            lines
                .iter()
                .find(|line| line["message"] == message)
                .unwrap_or_else(|| panic!("{id}: no {message:?} line with the id in\n{logs}"))
        };
        let store = said("store call failed");
        assert_eq!(store["span"]["tenant"], "acme", "{store}");
        said("request failed");
    }
}

/// A replayed code is refused, counted as a failure and logged as what it is (ASVS V2.8.5),
/// with the request's id and tenant.
#[actix_web::test]
async fn a_replayed_code_is_logged_with_its_request() {
    let dev = DevBinary::start(&[]).await;
    let alice = dev.token("acme", "alice", &["otp.check"]);
    let secret = dev.enroll(&alice).await;
    let now = chrono::Utc::now().timestamp() as u64;
    let code = crate::helpers::code_with(&tessera::domain::TotpParams::default(), &secret, now, 0);
    let code = serde_json::json!({ "code": code });
    let (status, _) = dev
        .post(
            "/auth/v1/users/me/auth_factors/otp/_verify",
            &alice,
            None,
            code.clone(),
        )
        .await;
    assert_eq!(status, 200);
    let check = "/management/v1/users/alice/auth_factors/otp/_check";
    let (status, body) = dev.post(check, &alice, Some("replay-1"), code).await;
    assert_eq!(status, 400);
    assert_eq!(body["details"][1]["failedAttempts"], 1, "{body}");
    let logs = dev.stop();
    let line = logs
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|line| line["message"] == "a code that was already used came again")
        .unwrap_or_else(|| panic!("no replay line in\n{logs}"));
    assert_eq!(line["span"]["request_id"], "replay-1", "{line}");
    assert_eq!(line["span"]["tenant"], "acme", "{line}");
}

/// Why a token was refused is logged at debug level with the request's id, on both
/// transports; the client hears only AUTH-7fs1e, and the token is in no log line.
#[actix_web::test]
async fn a_refused_token_logs_its_reason_with_the_request_id_and_never_the_token() {
    let dev = DevBinary::start(&[("TESSERA__LOG__LEVEL", "debug".into())]).await;
    let valid = dev.token("acme", "alice", &[]);
    // The same claims under another token's signature.
    let other = dev.token("acme", "bob", &[]);
    let tampered = format!(
        "{}.{}",
        valid.rsplit_once('.').unwrap().0,
        other.rsplit_once('.').unwrap().1
    );
    let opaque = "an-opaque-token-with-no-introspection-set-up";
    let search = "/auth/v1/users/me/auth_factors/_search";
    let (status, body) = dev
        .post(search, &tampered, Some("refused-1"), serde_json::json!({}))
        .await;
    assert_eq!(
        (status, body["details"][0]["id"].as_str()),
        (401, Some("AUTH-7fs1e"))
    );
    let (status, _) = dev
        .post(search, opaque, Some("refused-2"), serde_json::json!({}))
        .await;
    assert_eq!(status, 401);
    let channel =
        tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{}", dev.grpc_port))
            .unwrap()
            .connect()
            .await
            .unwrap();
    let mut call = request(auth::ListMyAuthFactorsRequest {}, Some(&tampered), None);
    call.metadata_mut()
        .insert("x-request-id", "refused-3".parse().unwrap());
    let failed = AuthServiceClient::new(channel)
        .list_my_auth_factors(call)
        .await
        .unwrap_err();
    assert_eq!(failed.code(), tonic::Code::Unauthenticated);
    let logs = dev.stop();
    for (id, reason) in [
        ("refused-1", "bad_signature"),
        ("refused-2", "not_a_jws"),
        ("refused-3", "bad_signature"),
    ] {
        let refused = logs
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .find(|line| line["message"] == "token refused" && line.to_string().contains(id))
            .unwrap_or_else(|| panic!("{id}: no \"token refused\" line in\n{logs}"));
        assert_eq!(refused["reason"], reason, "{refused}");
    }
    for token in [tampered.as_str(), opaque, valid.rsplit_once('.').unwrap().1] {
        assert!(!logs.contains(token), "a token in the logs");
    }
}
