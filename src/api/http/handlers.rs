//! Thin handlers: gates (address limit, token), the body, one actor message, the answer.

use std::sync::Arc;

use actix_web::{HttpRequest, HttpResponse, web};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::{ApiError, HttpState, json_body};
use crate::api::wire::{
    AddOtpResponse, AuthFactorJson, DetailsJson, DetailsResponse, Empty, ListAuthFactorsResponse,
    auth_factor_state,
};
use crate::domain::{Details, OtpError, Purpose};
use crate::tenant::{Enroll, ListFactors, RemoveFactor, SubmitCode, UnlockFactor};

type State = web::Data<HttpState>;

/// Requests with no fields of interest: any JSON object (unknown fields are ignored).
#[derive(Deserialize, Default)]
struct NoFields {}

#[derive(Deserialize, Default)]
struct CodeRequest {
    #[serde(default)]
    code: Option<String>,
}

impl CodeRequest {
    /// The contract's validation: 1..200 characters (not a failed attempt).
    fn into_code(self) -> Result<SecretString, OtpError> {
        match self.code {
            Some(code) if (1..=200).contains(&code.chars().count()) => Ok(SecretString::from(code)),
            _ => Err(OtpError::CodeLength),
        }
    }
}

fn details(details: &Details) -> HttpResponse {
    HttpResponse::Ok().json(DetailsResponse {
        details: DetailsJson::from(details),
    })
}

fn org_header(req: &HttpRequest) -> Option<&str> {
    req.headers()
        .get("x-zitadel-orgid")
        .and_then(|v| v.to_str().ok())
}

pub async fn add_my_otp(
    req: HttpRequest,
    state: State,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let caller = state.caller(&req).await?;
    json_body::<NoFields>(&req, body, state.body_limit).await?;
    let account = caller
        .login_name
        .clone()
        .unwrap_or_else(|| caller.user.to_string());
    let msg = Enroll {
        user: caller.user.clone(),
        account,
        now: state.clock.now(),
    };
    let enrollment = state.org(&caller.org)?.call(msg).await??;
    Ok(HttpResponse::Ok().json(AddOtpResponse {
        url: enrollment.uri.expose_secret().to_owned(),
        secret: enrollment.secret.expose_secret().to_owned(),
        details: DetailsJson::from(&enrollment.details),
    }))
}

pub async fn verify_my_otp(
    req: HttpRequest,
    state: State,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let caller = state.caller(&req).await?;
    let code = json_body::<CodeRequest>(&req, body, state.body_limit)
        .await?
        .into_code()?;
    let msg = SubmitCode {
        user: caller.user.clone(),
        code,
        purpose: Purpose::Enrollment,
        now: state.clock.now(),
    };
    Ok(details(&state.org(&caller.org)?.call(msg).await??))
}

pub async fn remove_my_otp(req: HttpRequest, state: State) -> Result<HttpResponse, ApiError> {
    let caller = state.caller(&req).await?;
    let msg = RemoveFactor {
        user: caller.user.clone(),
        now: state.clock.now(),
    };
    Ok(details(&state.org(&caller.org)?.call(msg).await??))
}

pub async fn list_my_factors(
    req: HttpRequest,
    state: State,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let caller = state.caller(&req).await?;
    json_body::<NoFields>(&req, body, state.body_limit).await?;
    let factors = state
        .org(&caller.org)?
        .call(ListFactors {
            user: caller.user.clone(),
        })
        .await??;
    let result = factors
        .into_iter()
        .map(|factor| AuthFactorJson {
            state: auth_factor_state(factor.state),
            otp: Empty {},
        })
        .collect();
    Ok(HttpResponse::Ok().json(ListAuthFactorsResponse { result }))
}

pub async fn check_otp(
    req: HttpRequest,
    state: State,
    path: web::Path<String>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let caller = state.caller(&req).await?;
    let org = caller.management_org(org_header(&req), &state.check_role)?;
    let code = json_body::<CodeRequest>(&req, body, state.body_limit)
        .await?
        .into_code()?;
    let msg = SubmitCode {
        user: Arc::from(path.into_inner()),
        code,
        purpose: Purpose::Login,
        now: state.clock.now(),
    };
    Ok(details(&state.org(&org)?.call(msg).await??))
}

pub async fn remove_user_otp(
    req: HttpRequest,
    state: State,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let caller = state.caller(&req).await?;
    let org = caller.management_org(org_header(&req), &state.admin_role)?;
    let msg = RemoveFactor {
        user: Arc::from(path.into_inner()),
        now: state.clock.now(),
    };
    Ok(details(&state.org(&org)?.call(msg).await??))
}

pub async fn unlock_user(
    req: HttpRequest,
    state: State,
    path: web::Path<String>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let caller = state.caller(&req).await?;
    let org = caller.management_org(org_header(&req), &state.admin_role)?;
    json_body::<NoFields>(&req, body, state.body_limit).await?;
    let msg = UnlockFactor {
        user: Arc::from(path.into_inner()),
        now: state.clock.now(),
    };
    Ok(details(&state.org(&org)?.call(msg).await??))
}

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

/// Ready once the store answers (keys are loaded before the listener exists).
pub async fn ready(state: State) -> HttpResponse {
    match state.store.ping().await {
        Ok(()) => HttpResponse::Ok().json(serde_json::json!({"status": "ready"})),
        Err(err) => {
            tracing::warn!(error = %err, "not ready: store unreachable");
            HttpResponse::ServiceUnavailable()
                .json(serde_json::json!({"status": "store unreachable"}))
        }
    }
}
