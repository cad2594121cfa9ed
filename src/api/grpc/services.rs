//! The gRPC services: thin, like the HTTP handlers, and calling the same service. The gate
//! (`gate.rs`) has authenticated the caller, read the message and opened the call's span.

use std::sync::Arc;

use secrecy::ExposeSecret;
use tonic::{Request, Response, Status};

use super::pb::tessera::otp::v1 as check;
use super::pb::zitadel::auth::v1 as auth;
use super::pb::zitadel::management::v1 as management;
use super::pb::zitadel::object::v2 as object_v2;
use super::pb::zitadel::policy::v1 as policy;
use super::pb::zitadel::user::v1 as user;
use super::pb::zitadel::user::v2 as user_v2;
use super::status::{details, details_v2, status};
use crate::domain::policy::{CustomLockout, WriteMode};
use crate::domain::{FactorState, OtpError};
use crate::service::{
    Authenticated, AuthenticationMethod, FactorFilter, FactorKind, LockoutPolicyView, OtpService,
    StateQuery,
};

#[derive(Clone)]
pub struct Services {
    pub(super) service: Arc<OtpService>,
}

impl Services {
    pub fn new(service: Arc<OtpService>) -> Self {
        Self { service }
    }
}

/// The caller the gate proved, and the request's message.
pub(super) fn take<T>(request: Request<T>) -> Result<(Arc<Authenticated>, T), Status> {
    let auth = request
        .extensions()
        .get::<Arc<Authenticated>>()
        .cloned()
        // Every API call passes the gate; a call without its proof is refused, not served.
        .ok_or_else(|| status(&OtpError::AuthHeaderMissing))?;
    Ok((auth, request.into_inner()))
}

/// `x-zitadel-orgid` as received; the service parses it.
pub(super) fn org_header<T>(request: &Request<T>) -> Option<Vec<u8>> {
    request
        .metadata()
        .get("x-zitadel-orgid")
        .map(|v| v.as_bytes().to_vec())
}

pub(super) fn fail(err: OtpError) -> Status {
    status(&err)
}

pub(super) fn auth_factor_state(state: FactorState) -> user::AuthFactorState {
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
        let (caller, _) = take(request)?;
        let factors = self.service.list_my(caller.own()).await.map_err(fail)?;
        let result = factors
            .into_iter()
            .map(|factor| user::AuthFactor {
                state: auth_factor_state(factor.state) as i32,
                r#type: Some(user::auth_factor::Type::Otp(user::AuthFactorOtp {})),
            })
            .collect();
        Ok(Response::new(auth::ListMyAuthFactorsResponse { result }))
    }

    async fn add_my_auth_factor_otp(
        &self,
        request: Request<auth::AddMyAuthFactorOtpRequest>,
    ) -> Result<Response<auth::AddMyAuthFactorOtpResponse>, Status> {
        let (caller, _) = take(request)?;
        let enrollment = self.service.add_my(&caller).await.map_err(fail)?;
        Ok(Response::new(auth::AddMyAuthFactorOtpResponse {
            url: enrollment.uri.expose_secret().to_owned(),
            secret: enrollment.secret.expose_secret().to_owned(),
            details: Some(details(&enrollment.details)),
        }))
    }

    async fn verify_my_auth_factor_otp(
        &self,
        request: Request<auth::VerifyMyAuthFactorOtpRequest>,
    ) -> Result<Response<auth::VerifyMyAuthFactorOtpResponse>, Status> {
        let (caller, message) = take(request)?;
        let verified = self
            .service
            .verify_my(caller.own(), message.code)
            .await
            .map_err(fail)?;
        Ok(Response::new(auth::VerifyMyAuthFactorOtpResponse {
            details: Some(details(&verified)),
        }))
    }

    async fn remove_my_auth_factor_otp(
        &self,
        request: Request<auth::RemoveMyAuthFactorOtpRequest>,
    ) -> Result<Response<auth::RemoveMyAuthFactorOtpResponse>, Status> {
        let (caller, _) = take(request)?;
        let removed = self.service.remove_my(caller.own()).await.map_err(fail)?;
        Ok(Response::new(auth::RemoveMyAuthFactorOtpResponse {
            details: Some(details(&removed)),
        }))
    }
}

#[tonic::async_trait]
impl management::management_service_server::ManagementService for Services {
    async fn remove_human_auth_factor_otp(
        &self,
        request: Request<management::RemoveHumanAuthFactorOtpRequest>,
    ) -> Result<Response<management::RemoveHumanAuthFactorOtpResponse>, Status> {
        let org = org_header(&request);
        let (caller, message) = take(request)?;
        let scope = self
            .service
            .org_scope(&caller, org.as_deref(), &message.user_id)
            .map_err(fail)?;
        let removed = self.service.remove_user(scope).await.map_err(fail)?;
        Ok(Response::new(
            management::RemoveHumanAuthFactorOtpResponse {
                details: Some(details(&removed)),
            },
        ))
    }

    async fn unlock_user(
        &self,
        request: Request<management::UnlockUserRequest>,
    ) -> Result<Response<management::UnlockUserResponse>, Status> {
        let org = org_header(&request);
        let (caller, message) = take(request)?;
        let scope = self
            .service
            .org_scope(&caller, org.as_deref(), &message.id)
            .map_err(fail)?;
        let unlocked = self.service.unlock_user(scope).await.map_err(fail)?;
        Ok(Response::new(management::UnlockUserResponse {
            details: Some(details(&unlocked)),
        }))
    }

    async fn list_human_auth_factors(
        &self,
        request: Request<management::ListHumanAuthFactorsRequest>,
    ) -> Result<Response<management::ListHumanAuthFactorsResponse>, Status> {
        let org = org_header(&request);
        let (caller, message) = take(request)?;
        let scope = self
            .service
            .org_scope(&caller, org.as_deref(), &message.user_id)
            .map_err(fail)?;
        let factors = self
            .service
            .list_human_auth_factors(scope)
            .await
            .map_err(fail)?;
        Ok(Response::new(management::ListHumanAuthFactorsResponse {
            result: factors
                .into_iter()
                .map(|factor| user::AuthFactor {
                    state: auth_factor_state(factor.state) as i32,
                    r#type: Some(user::auth_factor::Type::Otp(user::AuthFactorOtp {})),
                })
                .collect(),
        }))
    }

    async fn get_lockout_policy(
        &self,
        request: Request<management::GetLockoutPolicyRequest>,
    ) -> Result<Response<management::GetLockoutPolicyResponse>, Status> {
        let org = org_header(&request);
        let (caller, _) = take(request)?;
        let scope = self
            .service
            .tenant_scope(&caller, org.as_deref())
            .map_err(fail)?;
        let view = self.service.lockout_policy(scope).await.map_err(fail)?;
        Ok(Response::new(management::GetLockoutPolicyResponse {
            is_default: view.is_default,
            policy: Some(lockout_policy(&view)),
        }))
    }

    async fn get_default_lockout_policy(
        &self,
        request: Request<management::GetDefaultLockoutPolicyRequest>,
    ) -> Result<Response<management::GetDefaultLockoutPolicyResponse>, Status> {
        let org = org_header(&request);
        let (caller, _) = take(request)?;
        let scope = self
            .service
            .tenant_scope(&caller, org.as_deref())
            .map_err(fail)?;
        let view = self.service.default_lockout_policy(scope);
        Ok(Response::new(management::GetDefaultLockoutPolicyResponse {
            policy: Some(lockout_policy(&view)),
        }))
    }

    async fn add_custom_lockout_policy(
        &self,
        request: Request<management::AddCustomLockoutPolicyRequest>,
    ) -> Result<Response<management::AddCustomLockoutPolicyResponse>, Status> {
        let org = org_header(&request);
        let (caller, message) = take(request)?;
        let policy = CustomLockout {
            max_otp_attempts: message.max_otp_attempts,
            max_password_attempts: message.max_password_attempts,
        };
        let written = self
            .write_lockout(&caller, org, WriteMode::Add, policy)
            .await?;
        Ok(Response::new(management::AddCustomLockoutPolicyResponse {
            details: Some(details(&written)),
        }))
    }

    async fn update_custom_lockout_policy(
        &self,
        request: Request<management::UpdateCustomLockoutPolicyRequest>,
    ) -> Result<Response<management::UpdateCustomLockoutPolicyResponse>, Status> {
        let org = org_header(&request);
        let (caller, message) = take(request)?;
        let policy = CustomLockout {
            max_otp_attempts: message.max_otp_attempts,
            max_password_attempts: message.max_password_attempts,
        };
        let written = self
            .write_lockout(&caller, org, WriteMode::Update, policy)
            .await?;
        Ok(Response::new(
            management::UpdateCustomLockoutPolicyResponse {
                details: Some(details(&written)),
            },
        ))
    }

    async fn reset_lockout_policy_to_default(
        &self,
        request: Request<management::ResetLockoutPolicyToDefaultRequest>,
    ) -> Result<Response<management::ResetLockoutPolicyToDefaultResponse>, Status> {
        let org = org_header(&request);
        let (caller, _) = take(request)?;
        let policy = CustomLockout {
            max_otp_attempts: 0,
            max_password_attempts: 0,
        };
        let written = self
            .write_lockout(&caller, org, WriteMode::Reset, policy)
            .await?;
        Ok(Response::new(
            management::ResetLockoutPolicyToDefaultResponse {
                details: Some(details(&written)),
            },
        ))
    }
}

impl Services {
    async fn write_lockout(
        &self,
        caller: &Authenticated,
        org: Option<Vec<u8>>,
        mode: WriteMode,
        policy: CustomLockout,
    ) -> Result<crate::domain::Details, Status> {
        let scope = self
            .service
            .tenant_scope(caller, org.as_deref())
            .map_err(fail)?;
        self.service
            .write_lockout_policy(scope, mode, policy)
            .await
            .map_err(fail)
    }
}

fn lockout_policy(view: &LockoutPolicyView) -> policy::LockoutPolicy {
    policy::LockoutPolicy {
        details: Some(details(&view.details)),
        max_password_attempts: u64::from(view.policy.max_password_attempts),
        max_otp_attempts: u64::from(view.policy.max_otp_attempts),
        is_default: view.is_default,
    }
}

#[tonic::async_trait]
impl check::otp_check_service_server::OtpCheckService for Services {
    async fn check_otp(
        &self,
        request: Request<check::CheckOtpRequest>,
    ) -> Result<Response<check::CheckOtpResponse>, Status> {
        let org = org_header(&request);
        let (caller, message) = take(request)?;
        let scope = self
            .service
            .org_scope(&caller, org.as_deref(), &message.user_id)
            .map_err(fail)?;
        let checked = self
            .service
            .check(scope, message.code, message.recovery_code)
            .await
            .map_err(fail)?;
        Ok(Response::new(check::CheckOtpResponse {
            details: Some(details(&checked.details)),
            recovery_codes_remaining: checked.recovery_codes_remaining,
        }))
    }
}

#[tonic::async_trait]
impl check::recovery_code_service_server::RecoveryCodeService for Services {
    async fn get_recovery_codes(
        &self,
        request: Request<check::GetRecoveryCodesRequest>,
    ) -> Result<Response<check::GetRecoveryCodesResponse>, Status> {
        let org = org_header(&request);
        let (caller, message) = take(request)?;
        let scope = self
            .service
            .user_scope(&caller, org.as_deref(), &message.user_id)
            .map_err(fail)?;
        let remaining = self
            .service
            .recovery_codes_left(scope)
            .await
            .map_err(fail)?;
        Ok(Response::new(check::GetRecoveryCodesResponse { remaining }))
    }
}

/// The v2 enum value of a way of authenticating; its name is what JSON shows.
pub(crate) fn method_type(method: AuthenticationMethod) -> user_v2::AuthenticationMethodType {
    match method {
        AuthenticationMethod::Totp => user_v2::AuthenticationMethodType::Totp,
        AuthenticationMethod::RecoveryCode => user_v2::AuthenticationMethodType::RecoveryCode,
    }
}

/// The filter of a v2 ListAuthenticationFactors from its enum values (as numbers, which is
/// what JSON's names become too): values this release does not know match nothing.
pub(crate) fn factor_filter(auth_factors: &[i32], states: &[i32]) -> FactorFilter {
    let kinds: Vec<FactorKind> = auth_factors
        .iter()
        .map(|kind| match user_v2::AuthFactors::try_from(*kind) {
            Ok(user_v2::AuthFactors::Otp) => FactorKind::Otp,
            _ => FactorKind::Other,
        })
        .collect();
    let states: Vec<StateQuery> = states
        .iter()
        .map(|state| match user_v2::AuthFactorState::try_from(*state) {
            Ok(user_v2::AuthFactorState::Ready) => StateQuery::Ready,
            Ok(user_v2::AuthFactorState::NotReady) => StateQuery::NotReady,
            _ => StateQuery::Other,
        })
        .collect();
    FactorFilter::new(&kinds, &states)
}

/// ZITADEL's v2 user API, the TOTP part: the same service calls as v1, so one factor has one
/// history whichever API changes it.
#[tonic::async_trait]
impl user_v2::user_service_server::UserService for Services {
    async fn register_totp(
        &self,
        request: Request<user_v2::RegisterTotpRequest>,
    ) -> Result<Response<user_v2::RegisterTotpResponse>, Status> {
        let org = org_header(&request);
        let (caller, message) = take(request)?;
        let scope = self
            .service
            .user_scope(&caller, org.as_deref(), &message.user_id)
            .map_err(fail)?;
        let enrollment = self
            .service
            .register_totp(&caller, scope)
            .await
            .map_err(fail)?;
        Ok(Response::new(user_v2::RegisterTotpResponse {
            details: Some(details_v2(&enrollment.details)),
            uri: enrollment.uri.expose_secret().to_owned(),
            secret: enrollment.secret.expose_secret().to_owned(),
        }))
    }

    async fn verify_totp_registration(
        &self,
        request: Request<user_v2::VerifyTotpRegistrationRequest>,
    ) -> Result<Response<user_v2::VerifyTotpRegistrationResponse>, Status> {
        let org = org_header(&request);
        let (caller, message) = take(request)?;
        let scope = self
            .service
            .user_scope(&caller, org.as_deref(), &message.user_id)
            .map_err(fail)?;
        let verified = self
            .service
            .verify_totp_registration(scope, message.code)
            .await
            .map_err(fail)?;
        Ok(Response::new(user_v2::VerifyTotpRegistrationResponse {
            details: Some(details_v2(&verified)),
        }))
    }

    async fn remove_totp(
        &self,
        request: Request<user_v2::RemoveTotpRequest>,
    ) -> Result<Response<user_v2::RemoveTotpResponse>, Status> {
        let org = org_header(&request);
        let (caller, message) = take(request)?;
        let scope = self
            .service
            .user_scope(&caller, org.as_deref(), &message.user_id)
            .map_err(fail)?;
        let removed = self.service.remove_totp(scope).await.map_err(fail)?;
        Ok(Response::new(user_v2::RemoveTotpResponse {
            details: Some(details_v2(&removed)),
        }))
    }

    /// Admins only, the user's own lock included (see the HTTP handler).
    async fn unlock_user(
        &self,
        request: Request<user_v2::UnlockUserRequest>,
    ) -> Result<Response<user_v2::UnlockUserResponse>, Status> {
        let org = org_header(&request);
        let (caller, message) = take(request)?;
        let scope = self
            .service
            .org_scope(&caller, org.as_deref(), &message.user_id)
            .map_err(fail)?;
        let unlocked = self.service.unlock_user(scope).await.map_err(fail)?;
        Ok(Response::new(user_v2::UnlockUserResponse {
            details: Some(details_v2(&unlocked)),
        }))
    }

    async fn list_authentication_method_types(
        &self,
        request: Request<user_v2::ListAuthenticationMethodTypesRequest>,
    ) -> Result<Response<user_v2::ListAuthenticationMethodTypesResponse>, Status> {
        let org = org_header(&request);
        let (caller, message) = take(request)?;
        let scope = self
            .service
            .user_scope(&caller, org.as_deref(), &message.user_id)
            .map_err(fail)?;
        let methods = self
            .service
            .authentication_methods(scope)
            .await
            .map_err(fail)?;
        let auth_method_types: Vec<i32> = methods
            .into_iter()
            .map(|method| method_type(method) as i32)
            .collect();
        Ok(Response::new(
            user_v2::ListAuthenticationMethodTypesResponse {
                details: Some(object_v2::ListDetails {
                    total_result: auth_method_types.len() as u64,
                    ..Default::default()
                }),
                auth_method_types,
            },
        ))
    }

    async fn list_authentication_factors(
        &self,
        request: Request<user_v2::ListAuthenticationFactorsRequest>,
    ) -> Result<Response<user_v2::ListAuthenticationFactorsResponse>, Status> {
        let org = org_header(&request);
        let (caller, message) = take(request)?;
        let scope = self
            .service
            .user_scope(&caller, org.as_deref(), &message.user_id)
            .map_err(fail)?;
        let filter = factor_filter(&message.auth_factors, &message.states);
        let factors = self
            .service
            .list_authentication_factors(scope, filter)
            .await
            .map_err(fail)?;
        let result = factors
            .into_iter()
            .map(|factor| user_v2::AuthFactor {
                state: match factor.state {
                    FactorState::NotReady => user_v2::AuthFactorState::NotReady,
                    FactorState::Ready => user_v2::AuthFactorState::Ready,
                } as i32,
                r#type: Some(user_v2::auth_factor::Type::Otp(user_v2::AuthFactorOtp {})),
            })
            .collect();
        Ok(Response::new(user_v2::ListAuthenticationFactorsResponse {
            result,
        }))
    }

    async fn generate_recovery_codes(
        &self,
        request: Request<user_v2::GenerateRecoveryCodesRequest>,
    ) -> Result<Response<user_v2::GenerateRecoveryCodesResponse>, Status> {
        let org = org_header(&request);
        let (caller, message) = take(request)?;
        let scope = self
            .service
            .user_scope(&caller, org.as_deref(), &message.user_id)
            .map_err(fail)?;
        let generated = self
            .service
            .generate_recovery_codes(scope, message.count, message.totp_code)
            .await
            .map_err(fail)?;
        Ok(Response::new(user_v2::GenerateRecoveryCodesResponse {
            details: Some(details_v2(&generated.details)),
            recovery_codes: generated
                .codes
                .iter()
                .map(|code| code.shown().to_owned())
                .collect(),
        }))
    }

    async fn remove_recovery_codes(
        &self,
        request: Request<user_v2::RemoveRecoveryCodesRequest>,
    ) -> Result<Response<user_v2::RemoveRecoveryCodesResponse>, Status> {
        let org = org_header(&request);
        let (caller, message) = take(request)?;
        let scope = self
            .service
            .user_scope(&caller, org.as_deref(), &message.user_id)
            .map_err(fail)?;
        let removed = self
            .service
            .remove_recovery_codes(scope)
            .await
            .map_err(fail)?;
        Ok(Response::new(user_v2::RemoveRecoveryCodesResponse {
            details: Some(details_v2(&removed)),
        }))
    }
}
