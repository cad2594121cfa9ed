//! The gRPC services: thin, like the HTTP handlers, and calling the same gateway.

use std::sync::Arc;

use secrecy::ExposeSecret;
use tonic::{Request, Response, Status};

use super::pb::tessera::otp::v1 as check;
use super::pb::zitadel::auth::v1 as auth;
use super::pb::zitadel::management::v1 as management;
use super::pb::zitadel::user::v1 as user;
use super::status::{details, status};
use crate::api::gateway::{Gateway, Origin};
use crate::auth::Caller;
use crate::domain::{FactorState, OtpError};
use crate::metrics::code_name;
use crate::telemetry::RequestId;

#[derive(Clone)]
pub struct Services {
    gateway: Arc<Gateway>,
}

impl Services {
    pub fn new(gateway: Arc<Gateway>) -> Self {
        Self { gateway }
    }

    async fn caller<T>(&self, request: &Request<T>) -> Result<Arc<Caller>, Status> {
        let metadata = request.metadata();
        let origin = Origin {
            peer: request.remote_addr().map(|addr| addr.ip()),
            forwarded_for: metadata
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect(),
            authorization: metadata.get("authorization").map(|v| v.as_bytes()),
        };
        self.gateway.caller(&origin).await.map_err(|e| status(&e))
    }
}

impl Services {
    /// Runs a call in its span (RPC, request id, tenant), counts and times it under its RPC
    /// name with its gRPC code, and returns the request id in the answer's metadata.
    async fn observed<T>(
        &self,
        rpc: &'static str,
        request_id: RequestId,
        call: impl std::future::Future<Output = Result<Response<T>, Status>>,
    ) -> Result<Response<T>, Status> {
        use tracing::Instrument;
        let span = tracing::info_span!(
            "gRPC request",
            rpc,
            request_id = %request_id.0,
            tenant = tracing::field::Empty,
            grpc.code = tracing::field::Empty,
        );
        let started = std::time::Instant::now();
        let mut result = call.instrument(span.clone()).await;
        let code = result
            .as_ref()
            .map_or_else(|status| status.code() as i32, |_| 0);
        span.record("grpc.code", code);
        let elapsed = started.elapsed().as_secs_f64();
        self.gateway
            .metrics
            .observe_request("grpc", rpc, code_name(code), elapsed);
        if let Ok(value) = request_id.0.parse::<tonic::metadata::MetadataValue<_>>() {
            let metadata = match &mut result {
                Ok(response) => response.metadata_mut(),
                Err(status) => status.metadata_mut(),
            };
            metadata.insert("x-request-id", value);
        }
        result
    }
}

fn org_header<T>(request: &Request<T>) -> Option<String> {
    request
        .metadata()
        .get("x-zitadel-orgid")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn fail(err: OtpError) -> Status {
    status(&err)
}

fn auth_factor_state(state: FactorState) -> user::AuthFactorState {
    match state {
        FactorState::NotReady => user::AuthFactorState::NotReady,
        FactorState::Ready => user::AuthFactorState::Ready,
    }
}

#[tonic::async_trait]
impl auth::auth_service_server::AuthService for Services {
    async fn list_my_auth_factors(
        &self,
        request: Request<auth::ListMyAuthFactorsRequest>,
    ) -> Result<Response<auth::ListMyAuthFactorsResponse>, Status> {
        let request_id =
            RequestId::from_header(request.metadata().get("x-request-id").map(|v| v.as_bytes()));
        self.observed("ListMyAuthFactors", request_id, async move {
            let caller = self.caller(&request).await?;
            let factors = self.gateway.list_my(&caller).await.map_err(fail)?;
            let result = factors
                .into_iter()
                .map(|factor| user::AuthFactor {
                    state: auth_factor_state(factor.state) as i32,
                    r#type: Some(user::auth_factor::Type::Otp(user::AuthFactorOtp {})),
                })
                .collect();
            Ok(Response::new(auth::ListMyAuthFactorsResponse { result }))
        })
        .await
    }

    async fn add_my_auth_factor_otp(
        &self,
        request: Request<auth::AddMyAuthFactorOtpRequest>,
    ) -> Result<Response<auth::AddMyAuthFactorOtpResponse>, Status> {
        let request_id =
            RequestId::from_header(request.metadata().get("x-request-id").map(|v| v.as_bytes()));
        self.observed("AddMyAuthFactorOTP", request_id, async move {
            let caller = self.caller(&request).await?;
            let enrollment = self.gateway.add_my(&caller).await.map_err(fail)?;
            Ok(Response::new(auth::AddMyAuthFactorOtpResponse {
                url: enrollment.uri.expose_secret().to_owned(),
                secret: enrollment.secret.expose_secret().to_owned(),
                details: Some(details(&enrollment.details)),
            }))
        })
        .await
    }

    async fn verify_my_auth_factor_otp(
        &self,
        request: Request<auth::VerifyMyAuthFactorOtpRequest>,
    ) -> Result<Response<auth::VerifyMyAuthFactorOtpResponse>, Status> {
        let request_id =
            RequestId::from_header(request.metadata().get("x-request-id").map(|v| v.as_bytes()));
        self.observed("VerifyMyAuthFactorOTP", request_id, async move {
            let caller = self.caller(&request).await?;
            let code = request.into_inner().code;
            let verified = self.gateway.verify_my(&caller, code).await.map_err(fail)?;
            Ok(Response::new(auth::VerifyMyAuthFactorOtpResponse {
                details: Some(details(&verified)),
            }))
        })
        .await
    }

    async fn remove_my_auth_factor_otp(
        &self,
        request: Request<auth::RemoveMyAuthFactorOtpRequest>,
    ) -> Result<Response<auth::RemoveMyAuthFactorOtpResponse>, Status> {
        let request_id =
            RequestId::from_header(request.metadata().get("x-request-id").map(|v| v.as_bytes()));
        self.observed("RemoveMyAuthFactorOTP", request_id, async move {
            let caller = self.caller(&request).await?;
            let removed = self.gateway.remove_my(&caller).await.map_err(fail)?;
            Ok(Response::new(auth::RemoveMyAuthFactorOtpResponse {
                details: Some(details(&removed)),
            }))
        })
        .await
    }
}

#[tonic::async_trait]
impl management::management_service_server::ManagementService for Services {
    async fn remove_human_auth_factor_otp(
        &self,
        request: Request<management::RemoveHumanAuthFactorOtpRequest>,
    ) -> Result<Response<management::RemoveHumanAuthFactorOtpResponse>, Status> {
        let request_id =
            RequestId::from_header(request.metadata().get("x-request-id").map(|v| v.as_bytes()));
        self.observed("RemoveHumanAuthFactorOTP", request_id, async move {
            let caller = self.caller(&request).await?;
            let org = org_header(&request);
            let user = request.into_inner().user_id;
            let removed = self
                .gateway
                .remove_user(&caller, org.as_deref(), &user)
                .await
                .map_err(fail)?;
            Ok(Response::new(
                management::RemoveHumanAuthFactorOtpResponse {
                    details: Some(details(&removed)),
                },
            ))
        })
        .await
    }

    async fn unlock_user(
        &self,
        request: Request<management::UnlockUserRequest>,
    ) -> Result<Response<management::UnlockUserResponse>, Status> {
        let request_id =
            RequestId::from_header(request.metadata().get("x-request-id").map(|v| v.as_bytes()));
        self.observed("UnlockUser", request_id, async move {
            let caller = self.caller(&request).await?;
            let org = org_header(&request);
            let user = request.into_inner().id;
            let unlocked = self
                .gateway
                .unlock_user(&caller, org.as_deref(), &user)
                .await
                .map_err(fail)?;
            Ok(Response::new(management::UnlockUserResponse {
                details: Some(details(&unlocked)),
            }))
        })
        .await
    }
}

#[tonic::async_trait]
impl check::otp_check_service_server::OtpCheckService for Services {
    async fn check_otp(
        &self,
        request: Request<check::CheckOtpRequest>,
    ) -> Result<Response<check::CheckOtpResponse>, Status> {
        let request_id =
            RequestId::from_header(request.metadata().get("x-request-id").map(|v| v.as_bytes()));
        self.observed("CheckOTP", request_id, async move {
            let caller = self.caller(&request).await?;
            let org = org_header(&request);
            let check::CheckOtpRequest { user_id, code } = request.into_inner();
            let checked = self
                .gateway
                .check(&caller, org.as_deref(), &user_id, code)
                .await
                .map_err(fail)?;
            Ok(Response::new(check::CheckOtpResponse {
                details: Some(details(&checked)),
            }))
        })
        .await
    }
}
