//! An organization's policies (ZITADEL's lockout policy, tessera's OTP policy) and the admin
//! views (ZITADEL's ListHumanAuthFactors, tessera's view of a user and list of locked users):
//! thin, like every handler.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Deserializer};

use super::extract::org_header;
use super::handlers::{NoFields, details};
use super::{ApiError, HttpState, json_body};
use crate::api::wire::{
    AuthFactorJson, DetailsJson, Empty, FactorSummaryJson, ListAuthFactorsResponse, LockedUserJson,
    LockedUsersResponse, LockoutPolicyJson, LockoutPolicyResponse, OtpPolicyJson,
    OtpPolicyResponse, UserFactorResponse, auth_factor_state, locked_until, timestamp,
};
use crate::domain::policy::{CustomLockout, WriteMode};
use crate::domain::{HashAlgorithm, OtpError};
use crate::service::{Authenticated, LockoutPolicyView, OtpPolicyView, OtpSettingsRequest};

type State = web::Data<HttpState>;

/// A protojson integer: a JSON number, or a string holding one (both are protojson).
fn lenient_u32<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u32>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Number {
        Number(u32),
        Text(String),
    }
    match Option::<Number>::deserialize(deserializer)? {
        None => Ok(None),
        Some(Number::Number(n)) => Ok(Some(n)),
        Some(Number::Text(text)) => text.parse().map(Some).map_err(serde::de::Error::custom),
    }
}

/// ZITADEL's Add/UpdateCustomLockoutPolicyRequest (uint32 fields), by JSON or proto name.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct LockoutRequest {
    #[serde(
        default,
        alias = "max_password_attempts",
        deserialize_with = "lenient_u32"
    )]
    max_password_attempts: Option<u32>,
    #[serde(default, alias = "max_otp_attempts", deserialize_with = "lenient_u32")]
    max_otp_attempts: Option<u32>,
}

impl LockoutRequest {
    fn policy(&self) -> CustomLockout {
        CustomLockout {
            max_otp_attempts: self.max_otp_attempts.unwrap_or(0),
            max_password_attempts: self.max_password_attempts.unwrap_or(0),
        }
    }
}

/// tessera's SetOtpPolicyRequest: a field left out takes the instance's value.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct OtpPolicyRequest {
    #[serde(default)]
    issuer: Option<String>,
    #[serde(default)]
    algorithm: Option<String>,
    #[serde(default, deserialize_with = "lenient_u32")]
    digits: Option<u32>,
    #[serde(default, alias = "period_secs", deserialize_with = "lenient_u32")]
    period_secs: Option<u32>,
    #[serde(default, deserialize_with = "lenient_u32")]
    skew: Option<u32>,
    #[serde(
        default,
        alias = "lock_duration_secs",
        deserialize_with = "lenient_u32"
    )]
    lock_duration_secs: Option<u32>,
    #[serde(default, alias = "show_failures")]
    show_failures: Option<bool>,
    #[serde(
        default,
        alias = "recovery_code_count",
        deserialize_with = "lenient_u32"
    )]
    recovery_code_count: Option<u32>,
    #[serde(
        default,
        alias = "audit_max_events_per_user",
        deserialize_with = "lenient_u32"
    )]
    audit_max_events_per_user: Option<u32>,
    #[serde(default, alias = "audit_max_events", deserialize_with = "lenient_u32")]
    audit_max_events: Option<u32>,
    #[serde(
        default,
        alias = "audit_max_age_days",
        deserialize_with = "lenient_u32"
    )]
    audit_max_age_days: Option<u32>,
}

/// The listing's query: `pageSize` and `pageToken` (AIP-158).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PageQuery {
    #[serde(default)]
    pub page_size: u32,
    #[serde(default)]
    pub page_token: String,
}

fn lockout_response(view: LockoutPolicyView, top_level_default: bool) -> HttpResponse {
    HttpResponse::Ok().json(LockoutPolicyResponse {
        policy: LockoutPolicyJson {
            details: DetailsJson::from(&view.details),
            max_password_attempts: u64::from(view.policy.max_password_attempts),
            max_otp_attempts: u64::from(view.policy.max_otp_attempts),
            is_default: view.is_default,
        },
        is_default: top_level_default.then_some(view.is_default),
    })
}

pub async fn get_lockout_policy(
    req: HttpRequest,
    state: State,
    auth: Authenticated,
) -> Result<HttpResponse, ApiError> {
    let scope = state.service.tenant_scope(&auth, org_header(&req))?;
    let view = state.service.lockout_policy(scope).await?;
    Ok(lockout_response(view, true))
}

pub async fn get_default_lockout_policy(
    req: HttpRequest,
    state: State,
    auth: Authenticated,
) -> Result<HttpResponse, ApiError> {
    let scope = state.service.tenant_scope(&auth, org_header(&req))?;
    Ok(lockout_response(
        state.service.default_lockout_policy(scope),
        false,
    ))
}

async fn write_lockout(
    req: HttpRequest,
    state: State,
    auth: Authenticated,
    body: web::Payload,
    mode: WriteMode,
) -> Result<HttpResponse, ApiError> {
    let body = json_body::<LockoutRequest>(&req, body, &state).await?;
    let scope = state.service.tenant_scope(&auth, org_header(&req))?;
    let written = state
        .service
        .write_lockout_policy(scope, mode, body.policy())
        .await?;
    Ok(details(&written))
}

pub async fn add_custom_lockout_policy(
    req: HttpRequest,
    state: State,
    auth: Authenticated,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    write_lockout(req, state, auth, body, WriteMode::Add).await
}

pub async fn update_custom_lockout_policy(
    req: HttpRequest,
    state: State,
    auth: Authenticated,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    write_lockout(req, state, auth, body, WriteMode::Update).await
}

pub async fn reset_lockout_policy(
    req: HttpRequest,
    state: State,
    auth: Authenticated,
) -> Result<HttpResponse, ApiError> {
    let scope = state.service.tenant_scope(&auth, org_header(&req))?;
    let policy = CustomLockout {
        max_otp_attempts: 0,
        max_password_attempts: 0,
    };
    let written = state
        .service
        .write_lockout_policy(scope, WriteMode::Reset, policy)
        .await?;
    Ok(details(&written))
}

fn otp_policy_response(view: OtpPolicyView) -> HttpResponse {
    let settings = view.settings;
    HttpResponse::Ok().json(OtpPolicyResponse {
        policy: OtpPolicyJson {
            details: DetailsJson::from(&view.details),
            issuer: settings.issuer,
            algorithm: settings.algorithm.as_str(),
            digits: u32::from(settings.digits),
            period_secs: settings.period_secs,
            skew: u32::from(settings.skew),
            lock_duration_secs: settings.lock_duration_secs,
            show_failures: settings.show_failures,
            recovery_code_count: settings.recovery_codes,
            is_default: view.is_default,
            audit_max_events_per_user: view.retention.max_events_per_user,
            audit_max_events: view.retention.max_events,
            audit_max_age_days: view.retention.max_age_days,
        },
    })
}

pub async fn get_otp_policy(
    req: HttpRequest,
    state: State,
    auth: Authenticated,
) -> Result<HttpResponse, ApiError> {
    let scope = state.service.tenant_scope(&auth, org_header(&req))?;
    Ok(otp_policy_response(state.service.otp_policy(scope).await?))
}

pub async fn set_otp_policy(
    req: HttpRequest,
    state: State,
    auth: Authenticated,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = json_body::<OtpPolicyRequest>(&req, body, &state).await?;
    let algorithm = body
        .algorithm
        .map(|name| {
            name.parse::<HashAlgorithm>()
                .map_err(|_| OtpError::PolicyInvalid(format!("unknown algorithm {name:?}")))
        })
        .transpose()?;
    let request = OtpSettingsRequest {
        issuer: body.issuer,
        algorithm,
        digits: body.digits,
        period_secs: body.period_secs,
        skew: body.skew,
        lock_duration_secs: body.lock_duration_secs,
        show_failures: body.show_failures,
        recovery_codes: body.recovery_code_count,
        audit_max_events_per_user: body.audit_max_events_per_user,
        audit_max_events: body.audit_max_events,
        audit_max_age_days: body.audit_max_age_days,
    };
    let scope = state.service.tenant_scope(&auth, org_header(&req))?;
    Ok(details(
        &state.service.set_otp_policy(scope, request).await?,
    ))
}

pub async fn reset_otp_policy(
    req: HttpRequest,
    state: State,
    auth: Authenticated,
) -> Result<HttpResponse, ApiError> {
    let scope = state.service.tenant_scope(&auth, org_header(&req))?;
    Ok(details(&state.service.reset_otp_policy(scope).await?))
}

pub async fn list_human_auth_factors(
    req: HttpRequest,
    state: State,
    auth: Authenticated,
    path: web::Path<String>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    json_body::<NoFields>(&req, body, &state).await?;
    let scope = state.service.org_scope(&auth, org_header(&req), &path)?;
    let result = state
        .service
        .list_human_auth_factors(scope)
        .await?
        .into_iter()
        .map(|factor| AuthFactorJson {
            state: auth_factor_state(factor.state),
            otp: Empty {},
        })
        .collect();
    Ok(HttpResponse::Ok().json(ListAuthFactorsResponse { result }))
}

pub async fn get_user_factor(
    req: HttpRequest,
    state: State,
    auth: Authenticated,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let scope = state.service.org_scope(&auth, org_header(&req), &path)?;
    let view = state.service.user_factor(scope).await?;
    Ok(HttpResponse::Ok().json(UserFactorResponse {
        otp: view.factor.map(|factor| FactorSummaryJson {
            state: auth_factor_state(factor.state),
            creation_date: timestamp(factor.created_at),
            last_successful_check: factor.last_success.map(timestamp),
        }),
        failed_attempts: view.failures,
        locked: view.lock.is_some(),
        locked_until: view.lock.and_then(locked_until),
        recovery_codes_remaining: view.recovery_codes,
    }))
}

pub async fn list_locked_users(
    req: HttpRequest,
    state: State,
    auth: Authenticated,
) -> Result<HttpResponse, ApiError> {
    let query = web::Query::<PageQuery>::from_query(req.query_string())
        .map_err(|_| OtpError::MalformedQuery)?;
    let scope = state.service.tenant_scope(&auth, org_header(&req))?;
    let page = state
        .service
        .locked_users(scope, query.page_size, &query.page_token)
        .await?;
    Ok(HttpResponse::Ok().json(LockedUsersResponse {
        result: page
            .users
            .into_iter()
            .map(|locked| LockedUserJson {
                user_id: locked.user.to_string(),
                failed_attempts: locked.failures,
                locked_until: locked_until(locked.lock),
            })
            .collect(),
        next_page_token: page
            .next_after
            .map(|user| user.to_string())
            .unwrap_or_default(),
    }))
}
