//! gRPC on its own port: native gRPC over HTTP/2 (h2c, or h2 over TLS) and gRPC-web
//! (`application/grpc-web`, `+proto`, `-text`) over HTTP/1.1 through tonic-web, with CORS for
//! configured origins only; plus `grpc.health.v1.Health` and server reflection (so grpcurl
//! needs no proto files). Connections are accepted and bounded by `listener.rs`; every API
//! call passes `gate.rs`.

mod admin;
pub mod codec;
pub mod gate;
pub mod listener;
pub mod pb;
mod services;
mod status;

use std::future::Future;
use std::sync::Arc;

use http::{HeaderName, HeaderValue, Method};
use tower_http::cors::{AllowOrigin, CorsLayer};

use self::pb::tessera::otp::v1::audit_service_server::AuditServiceServer;
use self::pb::tessera::otp::v1::otp_check_service_server::OtpCheckServiceServer;
use self::pb::tessera::otp::v1::policy_service_server::PolicyServiceServer;
use self::pb::tessera::otp::v1::recovery_code_service_server::RecoveryCodeServiceServer;
use self::pb::tessera::otp::v1::user_admin_service_server::UserAdminServiceServer;
use self::pb::zitadel::auth::v1::auth_service_server::AuthServiceServer;
use self::pb::zitadel::management::v1::management_service_server::ManagementServiceServer;
use self::pb::zitadel::user::v2::user_service_server::UserServiceServer;
pub use self::services::Services;
pub(crate) use self::services::{factor_filter, method_type};
pub use self::status::status;
use crate::service::OtpService;

#[derive(Debug, thiserror::Error)]
pub enum GrpcError {
    #[error("gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

pub struct GrpcOptions {
    pub max_message_bytes: usize,
    pub cors_allowed_origins: Vec<String>,
    /// How long a call's message may take to arrive once its headers have.
    pub body_timeout: std::time::Duration,
    pub max_concurrent_streams: u32,
    pub limits: listener::ConnectionLimits,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

/// Stops the accept loop when the server stops.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Browsers may call from these origins only; with none configured, no CORS headers at all.
fn cors(origins: &[String]) -> CorsLayer {
    let allowed: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|origin| HeaderValue::from_str(origin).ok())
        .collect();
    let header = |name: &'static str| HeaderName::from_static(name);
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(allowed))
        .allow_methods([Method::POST, Method::OPTIONS])
        .allow_headers([
            header("authorization"),
            header("content-type"),
            header("x-grpc-web"),
            header("x-user-agent"),
            header("x-zitadel-orgid"),
            header("grpc-timeout"),
        ])
        .expose_headers([
            header("grpc-status"),
            header("grpc-message"),
            header("grpc-status-details-bin"),
            header("retry-after"),
        ])
}

/// Serves until `shutdown` completes.
pub async fn serve(
    service: Arc<OtpService>,
    listener: tokio::net::TcpListener,
    options: GrpcOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), GrpcError> {
    let service_readiness = service.readiness.clone();
    let service_for_gate = service.clone();
    let services = Services::new(service);
    let limit = options.max_message_bytes;
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<AuthServiceServer<Services>>().await;
    health
        .set_serving::<ManagementServiceServer<Services>>()
        .await;
    health
        .set_serving::<OtpCheckServiceServer<Services>>()
        .await;
    health.set_serving::<UserServiceServer<Services>>().await;
    health
        .set_serving::<RecoveryCodeServiceServer<Services>>()
        .await;
    health.set_serving::<PolicyServiceServer<Services>>().await;
    health
        .set_serving::<UserAdminServiceServer<Services>>()
        .await;
    health.set_serving::<AuditServiceServer<Services>>().await;
    // gRPC health follows readiness (store reachable, clock in bounds).
    let readiness = service_readiness;
    tokio::spawn(async move {
        let mut serving = true;
        loop {
            let ready = readiness.is_ready();
            if ready != serving {
                serving = ready;
                let status = if ready {
                    tonic_health::ServingStatus::Serving
                } else {
                    tonic_health::ServingStatus::NotServing
                };
                for service in [
                    "",
                    "zitadel.auth.v1.AuthService",
                    "zitadel.management.v1.ManagementService",
                    "tessera.otp.v1.OtpCheckService",
                    "zitadel.user.v2.UserService",
                    "tessera.otp.v1.RecoveryCodeService",
                    "tessera.otp.v1.PolicyService",
                    "tessera.otp.v1.UserAdminService",
                    "tessera.otp.v1.AuditService",
                ] {
                    health.set_service_status(service, status).await;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    });
    // Both versions of reflection: v1 for current clients, v1alpha for grpcurl before 1.8.8,
    // Evans and several GUI clients, which ask for nothing else.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;
    let gate = gate::GateLayer::new(service_for_gate, limit, options.body_timeout);
    let (incoming, accepting) = listener::incoming(listener, options.tls, options.limits);
    let _stop_accepting = AbortOnDrop(accepting);
    tonic::transport::Server::builder()
        .accept_http1(true)
        .max_concurrent_streams(options.max_concurrent_streams)
        .layer(cors(&options.cors_allowed_origins))
        .layer(tonic_web::GrpcWebLayer::new())
        .layer(gate)
        .add_service(
            AuthServiceServer::new(services.clone())
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit.max(64 * 1024)),
        )
        .add_service(
            ManagementServiceServer::new(services.clone()).max_decoding_message_size(limit),
        )
        .add_service(OtpCheckServiceServer::new(services.clone()).max_decoding_message_size(limit))
        .add_service(
            RecoveryCodeServiceServer::new(services.clone()).max_decoding_message_size(limit),
        )
        .add_service(PolicyServiceServer::new(services.clone()).max_decoding_message_size(limit))
        .add_service(
            UserAdminServiceServer::new(services.clone())
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit.max(256 * 1024)),
        )
        .add_service(
            AuditServiceServer::new(services.clone())
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit.max(1024 * 1024)),
        )
        .add_service(
            UserServiceServer::new(services)
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit.max(64 * 1024)),
        )
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    Ok(())
}
