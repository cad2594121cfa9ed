//! The edges of the two listeners, over real sockets: slow and silent clients, malformed
//! organization headers and ids, malformed gRPC frames and messages, and JWT `crit`.

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use prost::Message;
use serde_json::json;
use tessera::api::grpc::pb::google::rpc::Status as RpcStatus;
use tessera::api::grpc::pb::tessera::otp::v1 as check;
use tessera::api::grpc::pb::tessera::otp::v1::otp_check_service_client::OtpCheckServiceClient;
use tessera::api::grpc::pb::zitadel::management::v1 as management;
use tessera::api::grpc::pb::zitadel::management::v1::management_service_client::ManagementServiceClient;
use tessera::api::grpc::pb::zitadel::v1::ErrorDetail;
use tessera::settings::Settings;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::Code;

use crate::grpc::{channel, error_detail};
use crate::helpers::{Backend, Spawn, TestApp, Token, spawn_app};

/// A guard against hangs only: the server's own timeouts end every case well before it.
const GUARD: Duration = Duration::from_secs(15);

/// Short timeouts, so that the tests see slow clients cut off.
fn slow_client_settings(settings: &mut Settings) {
    for (header, body, idle) in [
        (
            &mut settings.http.header_timeout_secs,
            &mut settings.http.body_timeout_secs,
            &mut settings.http.idle_timeout_secs,
        ),
        (
            &mut settings.grpc.header_timeout_secs,
            &mut settings.grpc.body_timeout_secs,
            &mut settings.grpc.idle_timeout_secs,
        ),
    ] {
        (*header, *body, *idle) = (2, 2, 2);
    }
}

fn frame(message: &[u8]) -> Vec<u8> {
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(message);
    framed
}

fn host(address: &str) -> String {
    address.trim_start_matches("http://").to_owned()
}

/// Reads until the server closes the connection; `true` if it did within the guard.
async fn closed_by_server(socket: &mut TcpStream) -> bool {
    let mut sink = [0u8; 4096];
    let deadline = Instant::now() + GUARD;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, socket.read(&mut sink)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

async fn a_normal_request_is_served(app: &TestApp, token: &str) {
    let listed = tokio::time::timeout(GUARD, app.list(token))
        .await
        .expect("normal requests are served meanwhile");
    listed.assert_ok();
}

#[actix_web::test]
async fn silent_and_idle_connections_are_closed_on_the_grpc_port() {
    let app = Spawn::new(Backend::Memory)
        .with(slow_client_settings)
        .start()
        .await;
    let alice = Token::user("acme", "alice").sign();
    let address = host(&app.grpc_address);
    // A TCP connection that never says anything.
    let mut silent = TcpStream::connect(&address).await.unwrap();
    // An h2 connection that opens with the preface and never starts a stream.
    let mut preface_only = TcpStream::connect(&address).await.unwrap();
    preface_only
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    a_normal_request_is_served(&app, &alice).await;
    assert!(
        closed_by_server(&mut silent).await,
        "a silent connection is held"
    );
    assert!(
        closed_by_server(&mut preface_only).await,
        "an h2 connection without a stream is held"
    );
    a_normal_request_is_served(&app, &alice).await;
}

#[actix_web::test]
async fn the_grpc_port_announces_its_stream_cap() {
    let app = Spawn::new(Backend::Memory)
        .with(|s| s.grpc.max_concurrent_streams = 7)
        .start()
        .await;
    let mut socket = TcpStream::connect(host(&app.grpc_address)).await.unwrap();
    socket
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    // The server's first frame is its SETTINGS: 9 bytes of header, then 6 bytes a setting.
    let mut header = [0u8; 9];
    socket.read_exact(&mut header).await.unwrap();
    assert_eq!(header[3], 0x4, "a SETTINGS frame");
    let length = usize::from(header[1]) << 8 | usize::from(header[2]);
    let mut payload = vec![0u8; length];
    socket.read_exact(&mut payload).await.unwrap();
    let max_streams = payload.chunks(6).find_map(|setting| {
        (u16::from_be_bytes([setting[0], setting[1]]) == 0x3)
            .then(|| u32::from_be_bytes([setting[2], setting[3], setting[4], setting[5]]))
    });
    assert_eq!(max_streams, Some(7));
}

#[actix_web::test]
async fn the_grpc_port_caps_open_connections() {
    let app = Spawn::new(Backend::Memory)
        .with(|s| {
            s.grpc.max_connections = 2;
            s.grpc.header_timeout_secs = 60;
        })
        .start()
        .await;
    let alice = Token::user("acme", "alice").sign();
    let address = host(&app.grpc_address);
    let first = TcpStream::connect(&address).await.unwrap();
    let _second = TcpStream::connect(&address).await.unwrap();
    // The third connection is not served while two are open.
    let mut client = OtpCheckServiceClient::new(channel(&app).await);
    let mut request = tonic::Request::new(check::CheckOtpRequest {
        user_id: "alice".into(),
        code: "123456".into(),
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {alice}").parse().unwrap());
    let call = tokio::spawn(async move { client.check_otp(request).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!call.is_finished(), "a connection over the cap was served");
    drop(first);
    let answered = tokio::time::timeout(GUARD, call)
        .await
        .expect("served once a connection closed")
        .unwrap();
    // Alice holds no otp.check role: what matters is that the call was answered.
    assert_eq!(answered.unwrap_err().code(), Code::PermissionDenied);
}

#[actix_web::test]
async fn the_http_port_caps_open_connections() {
    // Two workers, one connection each: actix-web stops accepting when every worker is full.
    let app = Spawn::new(Backend::Memory)
        .with(|s| {
            s.http.workers = 2;
            s.http.max_connections = 2;
            s.http.header_timeout_secs = 60;
            s.http.idle_timeout_secs = 60;
        })
        .start()
        .await;
    let alice = Token::user("acme", "alice").sign();
    let address = host(&app.address);
    let held: Vec<TcpStream> = futures::future::join_all((0..2).map(|_| async {
        let mut socket = TcpStream::connect(&address).await.unwrap();
        // A request answered keeps the connection open and idle (keep-alive).
        socket
            .write_all(
                format!(
                    "POST /auth/v1/users/me/auth_factors/_search HTTP/1.1\r\nhost: x\r\n\
                     authorization: Bearer {alice}\r\ncontent-length: 0\r\n\r\n"
                )
                .as_bytes(),
            )
            .await
            .unwrap();
        let mut answer = [0u8; 512];
        let read = socket.read(&mut answer).await.unwrap();
        assert!(answer[..read].starts_with(b"HTTP/1.1 200"));
        socket
    }))
    .await;
    let client = reqwest::Client::new();
    let url = app.url("/auth/v1/users/me/auth_factors/_search");
    let token = alice.clone();
    let call = tokio::spawn(async move { client.post(url).bearer_auth(token).send().await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!call.is_finished(), "a connection over the cap was served");
    drop(held);
    let answered = tokio::time::timeout(GUARD, call)
        .await
        .expect("served once connections closed")
        .unwrap()
        .unwrap();
    assert_eq!(answered.status().as_u16(), 200);
}

/// An unauthenticated gRPC-web request whose body trickles in: refused at its headers, before
/// the body has arrived.
#[actix_web::test]
async fn grpc_web_checks_the_token_before_reading_the_body() {
    let app = Spawn::new(Backend::Memory)
        .with(slow_client_settings)
        .start()
        .await;
    let mut socket = TcpStream::connect(host(&app.grpc_address)).await.unwrap();
    let body = frame(
        &check::CheckOtpRequest {
            user_id: "alice".into(),
            code: "123456".into(),
            ..Default::default()
        }
        .encode_to_vec(),
    );
    let head = format!(
        "POST /tessera.otp.v1.OtpCheckService/CheckOTP HTTP/1.1\r\nhost: localhost\r\n\
         content-type: application/grpc-web+proto\r\nx-grpc-web: 1\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    socket.write_all(&body[..1]).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(5), socket.read(&mut answer))
        .await
        .expect("answered while the body still trickles")
        .unwrap();
    let text = String::from_utf8_lossy(&answer[..read]).to_ascii_lowercase();
    assert!(text.contains("grpc-status: 16"), "{text}");
}

/// A body that trickles in with a valid token is cut off on the HTTP port (408, the
/// contract's shape), and normal requests are served meanwhile.
#[actix_web::test]
async fn a_trickled_body_is_cut_off_on_the_http_port() {
    let app = Spawn::new(Backend::Memory)
        .with(slow_client_settings)
        .start()
        .await;
    let alice = Token::user("acme", "alice").sign();
    let mut socket = TcpStream::connect(host(&app.address)).await.unwrap();
    let body = br#"{"code":"123456"}"#;
    let head = format!(
        "POST /auth/v1/users/me/auth_factors/otp/_verify HTTP/1.1\r\nhost: localhost\r\n\
         authorization: Bearer {alice}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n",
        body.len()
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    let trickle = async {
        for byte in body {
            if socket.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(700)).await;
        }
    };
    let started = Instant::now();
    let mut answer = Vec::new();
    let (_, ()) = futures::join!(trickle, async {
        a_normal_request_is_served(&app, &alice).await;
    });
    let _ = tokio::time::timeout(GUARD, socket.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("TESSERA-body3"), "{text}");
    assert!(started.elapsed() < GUARD);
}

/// A request's headers that never finish, and an idle keep-alive connection, are closed on
/// the HTTP port too.
#[actix_web::test]
async fn slow_headers_and_idle_connections_are_closed_on_the_http_port() {
    let app = Spawn::new(Backend::Memory)
        .with(slow_client_settings)
        .start()
        .await;
    let alice = Token::user("acme", "alice").sign();
    let mut slow_headers = TcpStream::connect(host(&app.address)).await.unwrap();
    slow_headers
        .write_all(b"POST /auth/v1/users/me/auth_factors/_search HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let mut idle = TcpStream::connect(host(&app.address)).await.unwrap();
    idle.write_all(
        format!(
            "POST /auth/v1/users/me/auth_factors/_search HTTP/1.1\r\nhost: x\r\n\
             authorization: Bearer {alice}\r\ncontent-length: 0\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    a_normal_request_is_served(&app, &alice).await;
    assert!(
        closed_by_server(&mut slow_headers).await,
        "slow headers are held"
    );
    assert!(
        closed_by_server(&mut idle).await,
        "an idle connection is held"
    );
}

/// What a refused call says: the status, and the id of its ErrorDetail.
fn refusal(answer: &crate::helpers::Answer) -> (u16, &str) {
    (
        answer.status.as_u16(),
        answer.body["details"][0]["id"].as_str().unwrap_or(""),
    )
}

#[actix_web::test]
async fn a_malformed_org_header_is_refused_and_changes_nothing() {
    let app = spawn_app(Backend::Memory).await;
    let admin = Token::user("acme", "root")
        .role("otp.check", "acme")
        .role("otp.admin", "acme")
        .sign();
    let alice = Token::user("acme", "alice").sign();
    app.ready_for_login(&alice).await;
    let malformed: [&[u8]; 3] = [b"glob\xe9x", b"org\tid", &[b'7'; 201]];
    for header in malformed {
        let value = reqwest::header::HeaderValue::from_bytes(header).unwrap();
        let calls = [
            app.client
                .post(app.url("/management/v1/users/alice/auth_factors/otp/_check"))
                .json(&json!({"code": "000000"})),
            app.client
                .post(app.url("/management/v1/users/alice/_unlock"))
                .json(&json!({})),
            app.client
                .delete(app.url("/management/v1/users/alice/auth_factors/otp")),
        ];
        for call in calls {
            let answer = app
                .send(
                    call.bearer_auth(&admin)
                        .header("x-zitadel-orgid", value.clone()),
                )
                .await;
            assert_eq!(refusal(&answer), (400, "TESSERA-org1"), "{answer:?}");
            answer.assert_error(400, 3, "TESSERA-org1");
        }
    }
    // Nothing was counted, unlocked or removed in the caller's own organization.
    let first_failure = app.check(&admin, "alice", "000000").await;
    assert_eq!(first_failure.body["details"][1]["failedAttempts"], 1);

    // The same over gRPC.
    let mut management = ManagementServiceClient::new(channel(&app).await);
    let mut checker = OtpCheckServiceClient::new(channel(&app).await);
    for header in malformed {
        let org = tonic::metadata::MetadataValue::try_from(header).unwrap();
        let checked = checker
            .check_otp(with_org(
                tonic::Request::new(check::CheckOtpRequest {
                    user_id: "alice".into(),
                    code: "000000".into(),
                    ..Default::default()
                }),
                &admin,
                &org,
            ))
            .await
            .unwrap_err();
        let unlocked = management
            .unlock_user(with_org(
                tonic::Request::new(management::UnlockUserRequest { id: "alice".into() }),
                &admin,
                &org,
            ))
            .await
            .unwrap_err();
        let removed = management
            .remove_human_auth_factor_otp(with_org(
                tonic::Request::new(management::RemoveHumanAuthFactorOtpRequest {
                    user_id: "alice".into(),
                }),
                &admin,
                &org,
            ))
            .await
            .unwrap_err();
        for status in [checked, unlocked, removed] {
            assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
            assert_eq!(error_detail(&status).0, "TESSERA-org1");
        }
    }
    let second_failure = app.check(&admin, "alice", "000000").await;
    assert_eq!(second_failure.body["details"][1]["failedAttempts"], 2);
}

fn with_org<T>(
    mut request: tonic::Request<T>,
    token: &str,
    org: &tonic::metadata::AsciiMetadataValue,
) -> tonic::Request<T> {
    let metadata = request.metadata_mut();
    metadata.insert("authorization", format!("Bearer {token}").parse().unwrap());
    metadata.insert("x-zitadel-orgid", org.clone());
    request
}

#[actix_web::test]
async fn ids_are_bounded_and_free_of_control_characters() {
    let app = spawn_app(Backend::Memory).await;
    let admin = Token::user("acme", "root").role("otp.check", "acme").sign();
    // From the path: too long, or with a control character (%09 is a tab).
    for user in ["u".repeat(201), "al%09ice".to_owned()] {
        let answer = app.check(&admin, &user, "000000").await;
        answer.assert_error(400, 3, "TESSERA-user1");
    }
    // From the token's claims: the subject and the organization.
    for token in [
        Token::user("acme", &"u".repeat(201)).sign(),
        Token::user("acme", "al\u{7}ice").sign(),
        Token::user(&"o".repeat(201), "alice").sign(),
    ] {
        app.list(&token).await.assert_error(401, 16, "AUTH-7fs1e");
    }
    // An empty user id over gRPC is INVALID_ARGUMENT, not NOT_FOUND.
    let mut checker = OtpCheckServiceClient::new(channel(&app).await);
    let mut request = tonic::Request::new(check::CheckOtpRequest {
        user_id: String::new(),
        code: "000000".into(),
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {admin}").parse().unwrap());
    let status = checker.check_otp(request).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(error_detail(&status).0, "TESSERA-user1");
}

/// A raw unary call on the gRPC port: over h2 (native gRPC) or HTTP/1.1 (gRPC-web, binary
/// or text). Returns the gRPC status and the ErrorDetail's id.
async fn raw_call(
    app: &TestApp,
    transport: &str,
    body: Vec<u8>,
    extra: &[(&str, &str)],
    token: &str,
) -> (i32, Option<String>) {
    let client = match transport {
        "grpc" => reqwest::Client::builder()
            .http2_prior_knowledge()
            .build()
            .unwrap(),
        _ => reqwest::Client::new(),
    };
    let content_type = match transport {
        "grpc" => "application/grpc",
        "grpc-web" => "application/grpc-web+proto",
        _ => "application/grpc-web-text",
    };
    let body = if transport == "grpc-web-text" {
        STANDARD.encode(body).into_bytes()
    } else {
        body
    };
    let mut request = client
        .post(format!(
            "{}/tessera.otp.v1.OtpCheckService/CheckOTP",
            app.grpc_address
        ))
        .header("content-type", content_type)
        .header("te", "trailers")
        .header("authorization", format!("Bearer {token}"))
        .body(body);
    for (name, value) in extra {
        request = request.header(*name, *value);
    }
    let response = tokio::time::timeout(GUARD, request.send())
        .await
        .expect("answered")
        .unwrap();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let (mut status, mut details) = (header("grpc-status"), header("grpc-status-details-bin"));
    let raw = response.bytes().await.unwrap();
    let body = if transport == "grpc-web-text" {
        raw.chunks(4)
            .flat_map(|group| STANDARD.decode(group).unwrap_or_default())
            .collect()
    } else {
        raw.to_vec()
    };
    // gRPC-web carries the trailers in a frame of the body (flag 0x80).
    if let Some(at) = body.iter().position(|b| *b == 0x80)
        && let Some(trailers) = body.get(at + 5..)
    {
        for line in String::from_utf8_lossy(trailers).split("\r\n") {
            if let Some((name, value)) = line.split_once(':') {
                match name.trim() {
                    "grpc-status" => status = Some(value.trim().to_owned()),
                    "grpc-status-details-bin" => details = Some(value.trim().to_owned()),
                    _ => {}
                }
            }
        }
    }
    let id = details.and_then(|d| {
        let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(d.trim_end_matches('='))
            .ok()?;
        let packed = RpcStatus::decode(bytes.as_slice()).ok()?;
        Some(
            ErrorDetail::decode(packed.details.first()?.value.as_slice())
                .ok()?
                .id,
        )
    });
    (status.expect("a grpc-status").parse().unwrap(), id)
}

#[actix_web::test]
async fn malformed_grpc_messages_are_invalid_argument_with_an_error_detail() {
    let app = spawn_app(Backend::Memory).await;
    let admin = Token::user("acme", "root").role("otp.check", "acme").sign();
    let valid = check::CheckOtpRequest {
        user_id: "alice".into(),
        code: "000000".into(),
        ..Default::default()
    }
    .encode_to_vec();
    let mut longer = frame(&valid);
    longer[4] += 10;
    let mut shorter = frame(&valid);
    shorter[4] -= 2;
    let mut two_frames = frame(&valid);
    two_frames.extend_from_slice(&frame(&valid));
    let flagged = |flag: u8| {
        let mut framed = frame(&valid);
        framed[0] = flag;
        framed
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "an invalid varint",
            frame(&[
                0x12, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
            ]),
        ),
        ("invalid UTF-8 in code", frame(&[0x12, 0x02, 0xff, 0xfe])),
        ("a wrong wire type", frame(&[0x12 & !0x07, 0x01])),
        ("a frame longer than the body", longer),
        ("a frame shorter than the body", shorter),
        ("an empty body", Vec::new()),
        ("the compressed flag without grpc-encoding", flagged(1)),
        ("flag 0x80", flagged(0x80)),
        ("flag 0x7f", flagged(0x7f)),
        ("a second message frame", two_frames),
    ];
    for transport in ["grpc", "grpc-web", "grpc-web-text"] {
        for (case, body) in &cases {
            let answer = raw_call(&app, transport, body.clone(), &[], &admin).await;
            assert_eq!(
                answer,
                (
                    Code::InvalidArgument as i32,
                    Some("TESSERA-msg1".to_owned())
                ),
                "{transport}: {case}"
            );
        }
        let oversize = frame(
            &check::CheckOtpRequest {
                user_id: "alice".into(),
                code: "1".repeat(5000),
                ..Default::default()
            }
            .encode_to_vec(),
        );
        let answer = raw_call(&app, transport, oversize, &[], &admin).await;
        assert_eq!(
            answer,
            (
                Code::ResourceExhausted as i32,
                Some("TESSERA-body2".to_owned())
            ),
            "{transport}: over the size limit"
        );
    }
    // grpc-web-text that is not base64.
    let client = reqwest::Client::new();
    let response = client
        .post(format!(
            "{}/tessera.otp.v1.OtpCheckService/CheckOTP",
            app.grpc_address
        ))
        .header("content-type", "application/grpc-web-text")
        .header("authorization", format!("Bearer {admin}"))
        .body("!!!! not base64 ****")
        .send()
        .await
        .unwrap();
    // Refused before any message: a trailers-only answer, the status in the headers.
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    assert_eq!(header("grpc-status").as_deref(), Some("3"));
    let message = header("grpc-message").unwrap_or_default();
    assert!(message.ends_with("(TESSERA-msg1)"), "{message}");
}

#[actix_web::test]
async fn a_jwt_with_a_crit_header_is_refused() {
    use jsonwebtoken::{EncodingKey, crypto::sign};
    let app = spawn_app(Backend::Memory).await;
    let claims = Token::user("acme", "alice").claims();
    let encode = |value: &serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
    };
    let key =
        EncodingKey::from_ed_pem(&std::fs::read(crate::helpers::fixture("ed25519.pem")).unwrap())
            .unwrap();
    let signed = |header: serde_json::Value| {
        let input = format!(
            "{}.{}",
            encode(&header),
            encode(&serde_json::Value::Object(claims.clone()))
        );
        let signature = sign(input.as_bytes(), &key, jsonwebtoken::Algorithm::EdDSA).unwrap();
        format!("{input}.{signature}")
    };
    // The same token without `crit` is accepted: the signature and claims are right.
    let plain = signed(json!({"alg": "EdDSA", "kid": "test-ed25519", "typ": "JWT"}));
    app.list(&plain).await.assert_ok();
    let critical = signed(json!({
        "alg": "EdDSA", "kid": "test-ed25519", "typ": "JWT",
        "crit": ["exp-policy"], "exp-policy": "strict"
    }));
    app.list(&critical)
        .await
        .assert_error(401, 16, "AUTH-7fs1e");
}
