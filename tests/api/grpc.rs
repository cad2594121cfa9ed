//! gRPC: a generated client over h2c, and every error of the contract as a status with the
//! `zitadel.v1.ErrorDetail` packed into `grpc-status-details-bin`.

use prost::Message;
use tessera::api::grpc::pb::google::rpc::Status as RpcStatus;
use tessera::api::grpc::pb::tessera::otp::v1::CheckOtpRequest;
use tessera::api::grpc::pb::tessera::otp::v1::otp_check_service_client::OtpCheckServiceClient;
use tessera::api::grpc::pb::zitadel::auth::v1 as auth;
use tessera::api::grpc::pb::zitadel::auth::v1::auth_service_client::AuthServiceClient;
use tessera::api::grpc::pb::zitadel::management::v1 as management;
use tessera::api::grpc::pb::zitadel::management::v1::management_service_client::ManagementServiceClient;
use tessera::api::grpc::pb::zitadel::v1::{CredentialsCheckError, ErrorDetail};
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

use crate::helpers::{Backend, Spawn, TestApp, Token, spawn_app};

pub async fn channel(app: &TestApp) -> Channel {
    Channel::from_shared(app.grpc_address.clone())
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// A request with `authorization: Bearer <token>` (and `x-zitadel-orgid` when given).
pub fn request<T>(message: T, token: Option<&str>, org: Option<&str>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    if let Some(org) = org {
        request
            .metadata_mut()
            .insert("x-zitadel-orgid", org.parse().unwrap());
    }
    request
}

/// The ErrorDetail id (and CredentialsCheckError failed attempts) packed in a status.
pub fn error_detail(status: &Status) -> (String, Option<i32>) {
    let packed = RpcStatus::decode(status.details())
        .expect("grpc-status-details-bin is a google.rpc.Status");
    assert_eq!(packed.code, status.code() as i32);
    assert_eq!(packed.message, status.message());
    let first = packed.details.first().expect("an ErrorDetail");
    assert_eq!(first.type_url, "type.googleapis.com/zitadel.v1.ErrorDetail");
    let detail = ErrorDetail::decode(first.value.as_slice()).unwrap();
    assert!(
        status.message().ends_with(&format!("({})", detail.id)),
        "{status:?}"
    );
    let failed = packed.details.get(1).map(|any| {
        assert_eq!(
            any.type_url,
            "type.googleapis.com/zitadel.v1.CredentialsCheckError"
        );
        CredentialsCheckError::decode(any.value.as_slice())
            .unwrap()
            .failed_attempts
    });
    (detail.id, failed)
}

#[track_caller]
pub fn assert_status<T: std::fmt::Debug>(
    result: Result<T, Status>,
    code: Code,
    id: &str,
) -> Status {
    let status = result.expect_err("an error status");
    assert_eq!(status.code(), code, "{status:?}");
    assert_eq!(error_detail(&status).0, id, "{status:?}");
    status
}

#[actix_web::test]
async fn the_auth_api_over_native_grpc() {
    let app = spawn_app(Backend::Memory).await;
    let alice = Token::user("acme", "alice")
        .role("otp.check", "acme")
        .sign();
    let mut client = AuthServiceClient::new(channel(&app).await);

    let listed = client
        .list_my_auth_factors(request(
            auth::ListMyAuthFactorsRequest {},
            Some(&alice),
            None,
        ))
        .await;
    assert!(listed.unwrap().into_inner().result.is_empty());
    let added = client
        .add_my_auth_factor_otp(request(
            auth::AddMyAuthFactorOtpRequest {},
            Some(&alice),
            None,
        ))
        .await
        .unwrap()
        .into_inner();
    let details = added.details.unwrap();
    assert!(details.sequence > 0);
    let added_sequence = details.sequence;
    assert_eq!(details.resource_owner, "acme");
    assert_eq!(
        details.creation_date.unwrap().seconds,
        crate::helpers::PINNED_SECS
    );
    assert!(details.change_date.is_none());
    assert!(added.url.starts_with("otpauth://totp/tessera:alice?"));

    let wrong = client
        .verify_my_auth_factor_otp(request(
            auth::VerifyMyAuthFactorOtpRequest {
                code: "000000".into(),
            },
            Some(&alice),
            None,
        ))
        .await;
    let status = assert_status(wrong, Code::InvalidArgument, "EVENT-8isk2");
    assert_eq!(error_detail(&status).1, Some(1));
    assert_eq!(status.message(), "Invalid code (EVENT-8isk2)");

    let verified = client
        .verify_my_auth_factor_otp(request(
            auth::VerifyMyAuthFactorOtpRequest {
                code: app.code(&added.secret, 0),
            },
            Some(&alice),
            None,
        ))
        .await
        .unwrap()
        .into_inner()
        .details
        .unwrap();
    // Above the add and the failed attempt, each an event of its own.
    assert!(verified.sequence >= added_sequence + 2, "{verified:?}");
    assert_eq!(
        verified.change_date.unwrap().seconds,
        crate::helpers::PINNED_SECS
    );

    let listed = client
        .list_my_auth_factors(request(
            auth::ListMyAuthFactorsRequest {},
            Some(&alice),
            None,
        ))
        .await
        .unwrap()
        .into_inner()
        .result;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].state, 2, "AUTH_FACTOR_STATE_READY");
    assert!(matches!(
        listed[0].r#type,
        Some(tessera::api::grpc::pb::zitadel::user::v1::auth_factor::Type::Otp(_))
    ));

    app.clock.advance_secs(30);
    let mut checker = OtpCheckServiceClient::new(channel(&app).await);
    let check = |code: String| {
        request(
            CheckOtpRequest {
                user_id: "alice".into(),
                code,
                ..Default::default()
            },
            Some(&alice),
            None,
        )
    };
    checker
        .check_otp(check(app.code(&added.secret, 0)))
        .await
        .unwrap();
    assert_status(
        checker.check_otp(check(app.code(&added.secret, 0))).await,
        Code::InvalidArgument,
        "EVENT-8isk2",
    );

    let removed = client
        .remove_my_auth_factor_otp(request(
            auth::RemoveMyAuthFactorOtpRequest {},
            Some(&alice),
            None,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(removed.details.unwrap().change_date.is_some());
}

#[actix_web::test]
async fn every_contract_error_over_grpc() {
    let app = Spawn::new(Backend::Memory)
        .with(|s| {
            s.lockout.max_otp_attempts = 2;
            s.limits.per_org_per_second = 0;
        })
        .start()
        .await;
    let alice = Token::user("acme", "alice").sign();
    let admin = Token::user("acme", "root")
        .role("otp.admin", "acme")
        .role("otp.check", "acme")
        .sign();
    let mut client = AuthServiceClient::new(channel(&app).await);
    let mut admin_client = ManagementServiceClient::new(channel(&app).await);
    let mut checker = OtpCheckServiceClient::new(channel(&app).await);
    let verify = |token: Option<&str>, code: &str| {
        request(
            auth::VerifyMyAuthFactorOtpRequest { code: code.into() },
            token,
            None,
        )
    };

    assert_status(
        client.verify_my_auth_factor_otp(verify(None, "1")).await,
        Code::Unauthenticated,
        "AUTH-hdr0m",
    );
    let mut basic = Request::new(auth::VerifyMyAuthFactorOtpRequest { code: "1".into() });
    basic
        .metadata_mut()
        .insert("authorization", "Basic abc".parse().unwrap());
    assert_status(
        client.verify_my_auth_factor_otp(basic).await,
        Code::Unauthenticated,
        "AUTH-toLo1",
    );
    assert_status(
        client
            .verify_my_auth_factor_otp(verify(Some("x.y.z"), "1"))
            .await,
        Code::Unauthenticated,
        "AUTH-7fs1e",
    );
    assert_status(
        client
            .verify_my_auth_factor_otp(verify(Some(&alice), "123456"))
            .await,
        Code::NotFound,
        "COMMAND-3Mif9s",
    );
    assert_status(
        client
            .verify_my_auth_factor_otp(verify(Some(&alice), ""))
            .await,
        Code::InvalidArgument,
        "TESSERA-code1",
    );
    assert_status(
        client
            .remove_my_auth_factor_otp(request(
                auth::RemoveMyAuthFactorOtpRequest {},
                Some(&alice),
                None,
            ))
            .await,
        Code::NotFound,
        "COMMAND-Hd9sd",
    );
    let check = |user: &str, code: &str, token: &str| {
        request(
            CheckOtpRequest {
                user_id: user.into(),
                code: code.into(),
                ..Default::default()
            },
            Some(token),
            None,
        )
    };
    assert_status(
        checker.check_otp(check("alice", "123456", &alice)).await,
        Code::PermissionDenied,
        "TESSERA-perm1",
    );
    assert_status(
        checker.check_otp(check("alice", "123456", &admin)).await,
        Code::FailedPrecondition,
        "COMMAND-3Mif9s",
    );

    let secret = app.enroll_ready(&alice).await;
    assert_status(
        client
            .add_my_auth_factor_otp(request(
                auth::AddMyAuthFactorOtpRequest {},
                Some(&alice),
                None,
            ))
            .await,
        Code::AlreadyExists,
        "COMMAND-do9se",
    );
    assert_status(
        client
            .verify_my_auth_factor_otp(verify(Some(&alice), &app.code(&secret, 1)))
            .await,
        Code::FailedPrecondition,
        "COMMAND-qx4ls",
    );
    let unlock = || {
        request(
            management::UnlockUserRequest { id: "alice".into() },
            Some(&admin),
            None,
        )
    };
    assert_status(
        admin_client.unlock_user(unlock()).await,
        Code::FailedPrecondition,
        "COMMAND-4M0ds",
    );
    app.clock.advance_secs(30);
    checker
        .check_otp(check("alice", "000000", &admin))
        .await
        .unwrap_err();
    checker
        .check_otp(check("alice", "000000", &admin))
        .await
        .unwrap_err();
    assert_status(
        checker
            .check_otp(check("alice", &app.code(&secret, 0), &admin))
            .await,
        Code::FailedPrecondition,
        "COMMAND-SF3fg",
    );
    let unlocked = admin_client
        .unlock_user(unlock())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(unlocked.details.unwrap().resource_owner, "acme");
    checker
        .check_otp(check("alice", &app.code(&secret, 0), &admin))
        .await
        .unwrap();
    let remove = |org: Option<&str>| {
        request(
            management::RemoveHumanAuthFactorOtpRequest {
                user_id: "alice".into(),
            },
            Some(&admin),
            org,
        )
    };
    assert_status(
        admin_client
            .remove_human_auth_factor_otp(remove(Some("globex")))
            .await,
        Code::PermissionDenied,
        "TESSERA-perm1",
    );
    admin_client
        .remove_human_auth_factor_otp(remove(None))
        .await
        .unwrap();
    assert_status(
        admin_client
            .remove_human_auth_factor_otp(remove(None))
            .await,
        Code::NotFound,
        "COMMAND-Hd9sd",
    );
}

#[actix_web::test]
async fn rate_limits_over_grpc_carry_retry_after() {
    let app = Spawn::new(Backend::Memory)
        .with(|s| s.limits.per_org_per_second = 1)
        .start()
        .await;
    let alice = Token::user("acme", "alice").sign();
    let mut client = AuthServiceClient::new(channel(&app).await);
    let list = || request(auth::ListMyAuthFactorsRequest {}, Some(&alice), None);
    client.list_my_auth_factors(list()).await.unwrap();
    let status = assert_status(
        client.list_my_auth_factors(list()).await,
        Code::ResourceExhausted,
        "TESSERA-rate1",
    );
    let retry_after: u64 = status
        .metadata()
        .get("retry-after")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
}

#[actix_web::test]
async fn health_and_reflection() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let app = spawn_app(Backend::Memory).await;
    let mut health = HealthClient::new(channel(&app).await);
    for service in [
        "",
        "zitadel.auth.v1.AuthService",
        "tessera.otp.v1.OtpCheckService",
    ] {
        let answer = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(answer.status, ServingStatus::Serving as i32, "{service:?}");
    }
    let mut reflection = ServerReflectionClient::new(channel(&app).await);
    let ask = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection
        .server_reflection_info(futures::stream::iter([ask]))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("{answer:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for wanted in [
        "zitadel.auth.v1.AuthService",
        "zitadel.management.v1.ManagementService",
        "tessera.otp.v1.OtpCheckService",
        "grpc.health.v1.Health",
    ] {
        assert!(names.iter().any(|n| n == wanted), "{wanted} in {names:?}");
    }
}

/// grpcurl before 1.8.8, Evans and several GUI clients ask for reflection v1alpha only.
#[actix_web::test]
async fn reflection_v1alpha_lists_the_same_services_as_v1() {
    use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;

    let app = spawn_app(Backend::Memory).await;
    let mut reflection = ServerReflectionClient::new(channel(&app).await);
    let asks = [
        MessageRequest::ListServices(String::new()),
        MessageRequest::FileContainingSymbol("tessera.otp.v1.OtpCheckService".into()),
    ]
    .map(|message| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(message),
    });
    let mut answers = reflection
        .server_reflection_info(futures::stream::iter(asks))
        .await
        .expect("the v1alpha reflection service answers")
        .into_inner();
    let answer = answers.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("{answer:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for wanted in [
        "zitadel.auth.v1.AuthService",
        "zitadel.user.v2.UserService",
        "tessera.otp.v1.OtpCheckService",
        "grpc.health.v1.Health",
    ] {
        assert!(names.iter().any(|n| n == wanted), "{wanted} in {names:?}");
    }
    let answer = answers.message().await.unwrap().unwrap();
    let Some(MessageResponse::FileDescriptorResponse(files)) = answer.message_response else {
        panic!("{answer:?}");
    };
    assert!(
        !files.file_descriptor_proto.is_empty(),
        "the file that declares the service"
    );
}
