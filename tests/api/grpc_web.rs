//! gRPC-web built byte for byte over plain HTTP/1.1 (binary and text), the parity of the
//! three transports, bad input on the gRPC port, and CORS.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use prost::Message;
use serde_json::json;
use tessera::api::grpc::pb::google::rpc::Status as RpcStatus;
use tessera::api::grpc::pb::tessera::otp::v1 as check;
use tessera::api::grpc::pb::zitadel::auth::v1 as auth;
use tessera::api::grpc::pb::zitadel::auth::v1::auth_service_client::AuthServiceClient;
use tessera::api::grpc::pb::zitadel::v1::{ErrorDetail, ObjectDetails};
use tonic::Code;

use crate::grpc::{channel, request};
use crate::helpers::{Backend, Spawn, TestApp, Token, spawn_app};

/// One gRPC message in a length-prefixed frame (flag 0: data, uncompressed).
fn frame(message: &[u8]) -> Vec<u8> {
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(message);
    framed
}

/// A gRPC-web answer, taken apart: the message frame and the trailers (from the trailer
/// frame in the body, or from the headers of a trailers-only answer).
#[derive(Debug)]
struct WebAnswer {
    http_status: u16,
    grpc_status: i32,
    grpc_message: String,
    details: Option<Vec<u8>>,
    message: Option<Vec<u8>>,
}

impl WebAnswer {
    fn error_id(&self) -> Option<String> {
        let packed = RpcStatus::decode(self.details.as_deref()?).ok()?;
        let first = packed.details.first()?;
        Some(ErrorDetail::decode(first.value.as_slice()).ok()?.id)
    }
}

/// base64 as gRPC-web-text sends it: each frame encoded (and padded) on its own, so the body
/// is decoded four characters at a time.
fn decode_text(body: &[u8]) -> Vec<u8> {
    body.chunks(4)
        .flat_map(|group| STANDARD.decode(group).unwrap())
        .collect()
}

fn decode_details(value: &str) -> Vec<u8> {
    STANDARD
        .decode(value)
        .or_else(|_| STANDARD_NO_PAD.decode(value))
        .unwrap()
}

async fn grpc_web(
    app: &TestApp,
    method: &str,
    message: Vec<u8>,
    token: Option<&str>,
    text: bool,
) -> WebAnswer {
    let content_type = if text {
        "application/grpc-web-text"
    } else {
        "application/grpc-web+proto"
    };
    let body = if text {
        STANDARD.encode(frame(&message)).into_bytes()
    } else {
        frame(&message)
    };
    let mut req = app
        .client
        .post(format!("{}/{method}", app.grpc_address))
        .header("content-type", content_type)
        .header("accept", content_type)
        .header("x-grpc-web", "1")
        .body(body);
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    let response = req.send().await.unwrap();
    assert_eq!(
        response.version(),
        reqwest::Version::HTTP_11,
        "plain HTTP/1.1"
    );
    let http_status = response.status().as_u16();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let mut grpc_status = header("grpc-status");
    let mut grpc_message = header("grpc-message");
    let mut details = header("grpc-status-details-bin");
    let raw = response.bytes().await.unwrap().to_vec();
    let body = if text { decode_text(&raw) } else { raw };
    let mut rest = body.as_slice();
    let mut message_frame = None;
    while let Some((&flag, tail)) = rest.split_first() {
        let len = u32::from_be_bytes(tail[..4].try_into().unwrap()) as usize;
        let payload = &tail[4..4 + len];
        if flag & 0x80 != 0 {
            for line in std::str::from_utf8(payload)
                .unwrap()
                .split("\r\n")
                .filter(|l| !l.is_empty())
            {
                let (name, value) = line.split_once(':').unwrap();
                let value = value.trim().to_owned();
                match name.trim().to_ascii_lowercase().as_str() {
                    "grpc-status" => grpc_status = Some(value),
                    "grpc-message" => grpc_message = Some(value),
                    "grpc-status-details-bin" => details = Some(value),
                    _ => {}
                }
            }
        } else {
            message_frame = Some(payload.to_vec());
        }
        rest = &tail[4 + len..];
    }
    WebAnswer {
        http_status,
        grpc_status: grpc_status
            .expect("grpc-status in the headers or the trailer frame")
            .parse()
            .unwrap(),
        grpc_message: percent_encoding::percent_decode_str(&grpc_message.unwrap_or_default())
            .decode_utf8_lossy()
            .into_owned(),
        details: details.map(|d| decode_details(&d)),
        message: message_frame,
    }
}

const VERIFY: &str = "zitadel.auth.v1.AuthService/VerifyMyAuthFactorOTP";
const ADD: &str = "zitadel.auth.v1.AuthService/AddMyAuthFactorOTP";

#[actix_web::test]
async fn grpc_web_binary_and_text_byte_for_byte() {
    let app = spawn_app(Backend::Memory).await;
    for text in [false, true] {
        let bob = Token::user("acme", if text { "bob-text" } else { "bob-binary" }).sign();
        let added = grpc_web(
            &app,
            ADD,
            auth::AddMyAuthFactorOtpRequest {}.encode_to_vec(),
            Some(&bob),
            text,
        )
        .await;
        assert_eq!(
            (added.http_status, added.grpc_status),
            (200, 0),
            "{added:?}"
        );
        let added =
            auth::AddMyAuthFactorOtpResponse::decode(added.message.unwrap().as_slice()).unwrap();
        assert_eq!(added.details.as_ref().unwrap().resource_owner, "acme");

        let wrong = grpc_web(
            &app,
            VERIFY,
            auth::VerifyMyAuthFactorOtpRequest {
                code: "000000".into(),
            }
            .encode_to_vec(),
            Some(&bob),
            text,
        )
        .await;
        assert_eq!(wrong.grpc_status, Code::InvalidArgument as i32, "{wrong:?}");
        assert_eq!(wrong.grpc_message, "Invalid code (EVENT-8isk2)");
        assert_eq!(wrong.error_id().as_deref(), Some("EVENT-8isk2"));

        let code = app.code(&added.secret, 0);
        let verified = grpc_web(
            &app,
            VERIFY,
            auth::VerifyMyAuthFactorOtpRequest { code }.encode_to_vec(),
            Some(&bob),
            text,
        )
        .await;
        assert_eq!(verified.grpc_status, 0, "{verified:?}");
        let details =
            auth::VerifyMyAuthFactorOtpResponse::decode(verified.message.unwrap().as_slice())
                .unwrap()
                .details
                .unwrap();
        let added_sequence = added.details.as_ref().unwrap().sequence;
        assert!(details.sequence >= added_sequence + 2, "{details:?}");
    }
    let anonymous = grpc_web(
        &app,
        VERIFY,
        auth::VerifyMyAuthFactorOtpRequest { code: "1".into() }.encode_to_vec(),
        None,
        false,
    )
    .await;
    assert_eq!(anonymous.grpc_status, Code::Unauthenticated as i32);
    assert_eq!(anonymous.error_id().as_deref(), Some("AUTH-hdr0m"));
}

/// What a transport answered, reduced to what the contract fixes.
#[derive(Debug, PartialEq)]
struct Outcome {
    code: i32,
    id: Option<String>,
    details: Option<(u64, Option<i64>, Option<i64>, String)>,
    states: Option<Vec<i32>>,
}

fn from_json_details(details: &serde_json::Value) -> (u64, Option<i64>, Option<i64>, String) {
    let date = |name: &str| {
        details[name].as_str().map(|d| {
            chrono::DateTime::parse_from_rfc3339(d)
                .unwrap()
                .timestamp_micros()
        })
    };
    (
        details["sequence"].as_str().unwrap().parse().unwrap(),
        date("creationDate"),
        date("changeDate"),
        details["resourceOwner"].as_str().unwrap().to_owned(),
    )
}

fn from_pb_details(details: ObjectDetails) -> (u64, Option<i64>, Option<i64>, String) {
    let micros = |t: prost_types::Timestamp| t.seconds * 1_000_000 + i64::from(t.nanos) / 1_000;
    (
        details.sequence,
        details.creation_date.map(micros),
        details.change_date.map(micros),
        details.resource_owner,
    )
}

/// What a successful call carries: details, factor states (List), the secret (Add).
type Answered = (Option<ObjectDetails>, Option<Vec<i32>>, Option<String>);

#[derive(Clone, Copy, Debug)]
enum Transport {
    Json,
    Grpc,
    GrpcWeb,
}

enum Op<'a> {
    Add(Option<&'a str>),
    Verify(Option<&'a str>, String),
    List(Option<&'a str>),
    Remove(Option<&'a str>),
}

async fn perform(app: &TestApp, transport: Transport, op: Op<'_>) -> (Outcome, Option<String>) {
    match transport {
        Transport::Json => {
            let answer = match &op {
                Op::Add(t) => {
                    app.post(*t, "/auth/v1/users/me/auth_factors/otp", json!({}))
                        .await
                }
                Op::Verify(t, code) => {
                    app.post(
                        *t,
                        "/auth/v1/users/me/auth_factors/otp/_verify",
                        json!({ "code": code }),
                    )
                    .await
                }
                Op::List(t) => {
                    app.post(*t, "/auth/v1/users/me/auth_factors/_search", json!({}))
                        .await
                }
                Op::Remove(t) => app.delete(*t, "/auth/v1/users/me/auth_factors/otp").await,
            };
            let body = &answer.body;
            let ok = answer.status.is_success();
            let outcome = Outcome {
                code: if ok {
                    0
                } else {
                    body["code"].as_i64().unwrap() as i32
                },
                id: (!ok).then(|| body["details"][0]["id"].as_str().unwrap().to_owned()),
                details: body
                    .get("details")
                    .filter(|d| d.is_object())
                    .map(from_json_details),
                states: matches!(op, Op::List(_))
                    .then(|| {
                        body.get("result").map_or(vec![], |r| {
                            r.as_array()
                                .unwrap()
                                .iter()
                                .map(|f| {
                                    if f["state"] == "AUTH_FACTOR_STATE_READY" {
                                        2
                                    } else {
                                        1
                                    }
                                })
                                .collect()
                        })
                    })
                    .filter(|_| ok),
            };
            (outcome, body["secret"].as_str().map(str::to_owned))
        }
        Transport::Grpc => {
            let mut client = AuthServiceClient::new(channel(app).await);
            let result: Result<Answered, tonic::Status> = match op {
                Op::Add(t) => client
                    .add_my_auth_factor_otp(request(auth::AddMyAuthFactorOtpRequest {}, t, None))
                    .await
                    .map(|r| r.into_inner())
                    .map(|r| (r.details, None, Some(r.secret))),
                Op::Verify(t, code) => client
                    .verify_my_auth_factor_otp(request(
                        auth::VerifyMyAuthFactorOtpRequest { code },
                        t,
                        None,
                    ))
                    .await
                    .map(|r| (r.into_inner().details, None, None)),
                Op::List(t) => client
                    .list_my_auth_factors(request(auth::ListMyAuthFactorsRequest {}, t, None))
                    .await
                    .map(|r| {
                        (
                            None,
                            Some(r.into_inner().result.iter().map(|f| f.state).collect()),
                            None,
                        )
                    }),
                Op::Remove(t) => client
                    .remove_my_auth_factor_otp(request(
                        auth::RemoveMyAuthFactorOtpRequest {},
                        t,
                        None,
                    ))
                    .await
                    .map(|r| (r.into_inner().details, None, None)),
            };
            match result {
                Ok((details, states, secret)) => (
                    Outcome {
                        code: 0,
                        id: None,
                        details: details.map(from_pb_details),
                        states,
                    },
                    secret,
                ),
                Err(status) => (
                    Outcome {
                        code: status.code() as i32,
                        id: Some(crate::grpc::error_detail(&status).0),
                        details: None,
                        states: None,
                    },
                    None,
                ),
            }
        }
        Transport::GrpcWeb => {
            let (method, message, token) = match &op {
                Op::Add(t) => (ADD, auth::AddMyAuthFactorOtpRequest {}.encode_to_vec(), *t),
                Op::Verify(t, code) => (
                    VERIFY,
                    auth::VerifyMyAuthFactorOtpRequest { code: code.clone() }.encode_to_vec(),
                    *t,
                ),
                Op::List(t) => ("zitadel.auth.v1.AuthService/ListMyAuthFactors", vec![], *t),
                Op::Remove(t) => (
                    "zitadel.auth.v1.AuthService/RemoveMyAuthFactorOTP",
                    vec![],
                    *t,
                ),
            };
            let answer = grpc_web(app, method, message, token, false).await;
            if answer.grpc_status != 0 {
                let id = answer.error_id();
                return (
                    Outcome {
                        code: answer.grpc_status,
                        id,
                        details: None,
                        states: None,
                    },
                    None,
                );
            }
            let bytes = answer.message.unwrap_or_default();
            let (details, states, secret) = match op {
                Op::Add(_) => {
                    let r = auth::AddMyAuthFactorOtpResponse::decode(bytes.as_slice()).unwrap();
                    (r.details, None, Some(r.secret))
                }
                Op::Verify(..) => (
                    auth::VerifyMyAuthFactorOtpResponse::decode(bytes.as_slice())
                        .unwrap()
                        .details,
                    None,
                    None,
                ),
                Op::List(_) => {
                    let r = auth::ListMyAuthFactorsResponse::decode(bytes.as_slice()).unwrap();
                    (None, Some(r.result.iter().map(|f| f.state).collect()), None)
                }
                Op::Remove(_) => (
                    auth::RemoveMyAuthFactorOtpResponse::decode(bytes.as_slice())
                        .unwrap()
                        .details,
                    None,
                    None,
                ),
            };
            (
                Outcome {
                    code: 0,
                    id: None,
                    details: details.map(from_pb_details),
                    states,
                },
                secret,
            )
        }
    }
}

/// The same scenario over JSON, gRPC and gRPC-web, each on its own instance with the same
/// pinned clock: every status, id and details field must be the same.
#[actix_web::test]
async fn json_grpc_and_grpc_web_answer_alike() {
    let alice = Token::user("acme", "alice").sign();
    let mallory = Token::user("globex", "alice").sign();
    let mut runs = Vec::new();
    for transport in [Transport::Json, Transport::Grpc, Transport::GrpcWeb] {
        let app = spawn_app(Backend::Memory).await;
        let mut outcomes = Vec::new();
        let (added, secret) = perform(&app, transport, Op::Add(Some(&alice))).await;
        outcomes.push(added);
        let secret = secret.unwrap();
        outcomes.push(
            perform(&app, transport, Op::Verify(Some(&alice), "000000".into()))
                .await
                .0,
        );
        outcomes.push(
            perform(
                &app,
                transport,
                Op::Verify(Some(&alice), app.code(&secret, 0)),
            )
            .await
            .0,
        );
        outcomes.push(
            perform(
                &app,
                transport,
                Op::Verify(Some(&alice), app.code(&secret, 1)),
            )
            .await
            .0,
        );
        outcomes.push(perform(&app, transport, Op::List(Some(&alice))).await.0);
        // The same user id in another tenant sees nothing of alice's factor.
        outcomes.push(perform(&app, transport, Op::List(Some(&mallory))).await.0);
        outcomes.push(
            perform(
                &app,
                transport,
                Op::Verify(Some(&mallory), app.code(&secret, 1)),
            )
            .await
            .0,
        );
        outcomes.push(perform(&app, transport, Op::Remove(Some(&alice))).await.0);
        outcomes.push(perform(&app, transport, Op::Remove(Some(&alice))).await.0);
        outcomes.push(perform(&app, transport, Op::List(None)).await.0);
        runs.push((transport, outcomes));
    }
    // Sequences come from each store's clock: the runs agree on their order, not their values.
    for (_, outcomes) in &mut runs {
        let mut sequences: Vec<u64> = outcomes
            .iter()
            .filter_map(|o| o.details.as_ref().map(|d| d.0))
            .collect();
        sequences.sort_unstable();
        for outcome in outcomes.iter_mut() {
            if let Some(details) = &mut outcome.details {
                details.0 = sequences.iter().position(|s| *s == details.0).unwrap() as u64 + 1;
            }
        }
    }
    let (_, json) = &runs[0];
    assert_eq!(json[0].details.as_ref().unwrap().0, 1);
    assert_eq!(json[1].id.as_deref(), Some("EVENT-8isk2"));
    assert_eq!(json[3].id.as_deref(), Some("COMMAND-qx4ls"));
    assert_eq!(json[4].states, Some(vec![2]));
    assert_eq!(json[5].states, Some(vec![]));
    assert_eq!(json[6].id.as_deref(), Some("COMMAND-3Mif9s"));
    assert_eq!(json[8].id.as_deref(), Some("COMMAND-Hd9sd"));
    assert_eq!(json[9].code, 16);
    for (transport, outcomes) in &runs[1..] {
        for (step, (expected, actual)) in json.iter().zip(outcomes).enumerate() {
            assert_eq!(
                expected, actual,
                "{transport:?} differs from JSON at step {step}"
            );
        }
    }
}

#[actix_web::test]
async fn bad_input_on_the_grpc_port() {
    let app = spawn_app(Backend::Memory).await;
    let alice = Token::user("acme", "alice").sign();
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let raw = |path: &str, body: Vec<u8>| {
        h2.post(format!("{}/{path}", app.grpc_address))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("authorization", format!("Bearer {alice}"))
            .body(body)
            .send()
    };
    let grpc_status = |response: &reqwest::Response| {
        response
            .headers()
            .get("grpc-status")
            .map(|v| v.to_str().unwrap().parse::<i32>().unwrap())
    };
    // An unknown method.
    let response = raw("zitadel.auth.v1.AuthService/NoSuchMethod", frame(&[]))
        .await
        .unwrap();
    assert_eq!(grpc_status(&response), Some(Code::Unimplemented as i32));
    // A frame that announces 50 bytes and carries 3.
    let response = raw(VERIFY, vec![0, 0, 0, 0, 50, 1, 2, 3]).await.unwrap();
    let status = grpc_status(&response).expect("a gRPC status for a truncated frame");
    assert_ne!(status, 0);
    // Garbage where a protobuf message should be.
    let response = raw(VERIFY, frame(&[0xff, 0xff, 0xff, 0xff])).await.unwrap();
    let status = grpc_status(&response).expect("a gRPC status for an undecodable message");
    assert_ne!(status, 0);
    // A message over the configured maximum (4096 bytes by default).
    let mut client = AuthServiceClient::new(channel(&app).await);
    let big = auth::VerifyMyAuthFactorOtpRequest {
        code: "1".repeat(5000),
    };
    let answer = client
        .verify_my_auth_factor_otp(request(big, Some(&alice), None))
        .await
        .unwrap_err();
    assert_eq!(answer.code(), Code::ResourceExhausted, "{answer:?}");
    assert_eq!(crate::grpc::error_detail(&answer).0, "TESSERA-body2");
    // Bytes that are not HTTP at all: the connection is dropped, the server lives on.
    let address = app.grpc_address.trim_start_matches("http://").to_owned();
    let mut socket = tokio::net::TcpStream::connect(&address).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut socket, b"\x16\x03\x01 garbage \x00\xff\r\n\r\n")
        .await
        .unwrap();
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio::io::AsyncReadExt::read_to_end(&mut socket, &mut sink),
    )
    .await;
    client
        .list_my_auth_factors(request(
            auth::ListMyAuthFactorsRequest {},
            Some(&alice),
            None,
        ))
        .await
        .expect("still serving");
}

#[actix_web::test]
async fn cors_only_for_configured_origins() {
    let app = Spawn::new(Backend::Memory)
        .with(|s| s.grpc.cors_allowed_origins = vec!["https://login.example.com".into()])
        .start()
        .await;
    let preflight = |origin: &str| {
        app.client
            .request(
                reqwest::Method::OPTIONS,
                format!("{}/{VERIFY}", app.grpc_address),
            )
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "content-type,x-grpc-web,authorization",
            )
            .send()
    };
    let allowed = preflight("https://login.example.com").await.unwrap();
    assert_eq!(
        allowed
            .headers()
            .get("access-control-allow-origin")
            .unwrap(),
        "https://login.example.com"
    );
    let refused = preflight("https://evil.example.com").await.unwrap();
    assert!(
        refused
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
}

/// ZITADEL's v2 user API over gRPC-web, binary and text: register, verify, and a refusal in
/// the contract's shape.
#[actix_web::test]
async fn the_v2_user_api_over_grpc_web() {
    use tessera::api::grpc::pb::zitadel::user::v2 as user_v2;
    let app = spawn_app(Backend::Memory).await;
    for (text, user) in [(false, "carol-binary"), (true, "carol-text")] {
        let carol = Token::user("acme", user).sign();
        let registered = grpc_web(
            &app,
            "zitadel.user.v2.UserService/RegisterTOTP",
            user_v2::RegisterTotpRequest {
                user_id: user.into(),
            }
            .encode_to_vec(),
            Some(&carol),
            text,
        )
        .await;
        assert_eq!((registered.http_status, registered.grpc_status), (200, 0));
        let registered =
            user_v2::RegisterTotpResponse::decode(registered.message.unwrap().as_slice()).unwrap();
        assert_eq!(registered.details.as_ref().unwrap().resource_owner, "acme");
        let verified = grpc_web(
            &app,
            "zitadel.user.v2.UserService/VerifyTOTPRegistration",
            user_v2::VerifyTotpRegistrationRequest {
                user_id: user.into(),
                code: app.code(&registered.secret, 0),
            }
            .encode_to_vec(),
            Some(&carol),
            text,
        )
        .await;
        assert_eq!(verified.grpc_status, 0, "{verified:?}");
        let refused = grpc_web(
            &app,
            "zitadel.user.v2.UserService/RemoveTOTP",
            user_v2::RemoveTotpRequest {
                user_id: "someone-else".into(),
            }
            .encode_to_vec(),
            Some(&carol),
            text,
        )
        .await;
        assert_eq!(refused.grpc_status, Code::PermissionDenied as i32);
        assert_eq!(refused.error_id().as_deref(), Some("TESSERA-perm1"));
        // Recovery codes: generated by an admin (no TOTP code), one used at the login check.
        let admin = Token::user("acme", "root")
            .role("otp.admin", "acme")
            .role("otp.check", "acme")
            .sign();
        let generated = grpc_web(
            &app,
            "zitadel.user.v2.UserService/GenerateRecoveryCodes",
            user_v2::GenerateRecoveryCodesRequest {
                user_id: user.into(),
                count: 2,
                ..Default::default()
            }
            .encode_to_vec(),
            Some(&admin),
            text,
        )
        .await;
        assert_eq!(generated.grpc_status, 0, "{generated:?}");
        let generated =
            user_v2::GenerateRecoveryCodesResponse::decode(generated.message.unwrap().as_slice())
                .unwrap();
        assert_eq!(generated.recovery_codes.len(), 2);
        let used = grpc_web(
            &app,
            "tessera.otp.v1.OtpCheckService/CheckOTP",
            check::CheckOtpRequest {
                user_id: user.into(),
                recovery_code: generated.recovery_codes[1].clone(),
                ..Default::default()
            }
            .encode_to_vec(),
            Some(&admin),
            text,
        )
        .await;
        assert_eq!(used.grpc_status, 0, "{used:?}");
        let used = check::CheckOtpResponse::decode(used.message.unwrap().as_slice()).unwrap();
        assert_eq!(used.recovery_codes_remaining, Some(1));
    }
}
