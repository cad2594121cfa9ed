//! Thin handlers: the wire in, one service call, the wire out. The gates ran in the
//! `Authenticated` extractor before any of them.

use actix_web::{HttpRequest, HttpResponse, web};
use secrecy::ExposeSecret;
use serde::Deserialize;

use super::extract::org_header;
use super::{ApiError, HttpState, json_body};
use crate::api::wire::{
    AddOtpResponse, AuthFactorJson, CheckResponse, DetailsJson, DetailsResponse, Empty,
    ListAuthFactorsResponse, auth_factor_state,
};
use crate::domain::Details;
use crate::service::Authenticated;

type State = web::Data<HttpState>;

/// Requests with no fields of interest: any JSON object (unknown fields are ignored).
#[derive(Deserialize, Default)]
pub struct NoFields {}

#[derive(Deserialize, Default)]
pub struct CodeRequest {
    #[serde(default)]
    pub code: Option<String>,
}

/// The login check: a TOTP code, or a recovery code in its place.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct CheckRequest {
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub recovery_code: Option<String>,
}

pub(super) fn details(details: &Details) -> HttpResponse {
    HttpResponse::Ok().json(DetailsResponse {
        details: DetailsJson::from(details),
    })
}

pub async fn add_my_otp(
    req: HttpRequest,
    state: State,
    auth: Authenticated,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    json_body::<NoFields>(&req, body, &state).await?;
    let enrollment = state.service.add_my(&auth).await?;
    Ok(HttpResponse::Ok().json(AddOtpResponse {
        url: enrollment.uri.expose_secret().to_owned(),
        secret: enrollment.secret.expose_secret().to_owned(),
        details: DetailsJson::from(&enrollment.details),
    }))
}

pub async fn verify_my_otp(
    req: HttpRequest,
    state: State,
    auth: Authenticated,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = json_body::<CodeRequest>(&req, body, &state).await?;
    let code = body.code.unwrap_or_default();
    Ok(details(&state.service.verify_my(auth.own(), code).await?))
}

pub async fn remove_my_otp(state: State, auth: Authenticated) -> Result<HttpResponse, ApiError> {
    Ok(details(&state.service.remove_my(auth.own()).await?))
}

pub async fn list_my_factors(
    req: HttpRequest,
    state: State,
    auth: Authenticated,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    json_body::<NoFields>(&req, body, &state).await?;
    let result = state
        .service
        .list_my(auth.own())
        .await?
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
    auth: Authenticated,
    path: web::Path<String>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = json_body::<CheckRequest>(&req, body, &state).await?;
    let code = body.code.unwrap_or_default();
    let recovery_code = body.recovery_code.unwrap_or_default();
    let scope = state.service.org_scope(&auth, org_header(&req), &path)?;
    let checked = state.service.check(scope, code, recovery_code).await?;
    Ok(HttpResponse::Ok().json(CheckResponse {
        details: DetailsJson::from(&checked.details),
        recovery_codes_remaining: checked.recovery_codes_remaining,
    }))
}

pub async fn remove_user_otp(
    req: HttpRequest,
    state: State,
    auth: Authenticated,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let scope = state.service.org_scope(&auth, org_header(&req), &path)?;
    let removed = state.service.remove_user(scope).await?;
    Ok(details(&removed))
}

pub async fn unlock_user(
    req: HttpRequest,
    state: State,
    auth: Authenticated,
    path: web::Path<String>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    json_body::<NoFields>(&req, body, &state).await?;
    let scope = state.service.org_scope(&auth, org_header(&req), &path)?;
    let unlocked = state.service.unlock_user(scope).await?;
    Ok(details(&unlocked))
}

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

/// Prometheus text exposition (also at ZITADEL's `/debug/metrics`).
pub async fn metrics(state: State) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.service.metrics.render())
}

/// Ready when the store answers now and this replica's clock agrees with the store's (keys
/// are loaded before the listener exists).
pub async fn ready(state: State) -> HttpResponse {
    let readiness = &state.service.readiness;
    let ready = readiness.check().await;
    let body = serde_json::json!({
        "status": if ready { "ready" } else { "not ready" },
        "storeReachable": readiness.store_reachable(),
        "clockOffsetMs": readiness.offset_micros() / 1000,
        "clockInBounds": readiness.clock_in_bounds(),
    });
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}
