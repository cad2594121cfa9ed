//! ZITADEL's v2 user API, the TOTP part (`/v2/users/{user_id}/…`): thin, like the v1
//! handlers, and calling the same service, so that one factor has one history whichever API
//! changes it.

use actix_web::{HttpRequest, HttpResponse, web};
use secrecy::ExposeSecret;
use serde::Deserialize;

use super::extract::org_header;
use super::handlers::{CodeRequest, NoFields, details};
use super::{ApiError, HttpState, json_body};
use crate::api::grpc::pb::zitadel::user::v2::{AuthFactorState, AuthFactors};
use crate::api::grpc::{factor_filter, method_type};
use crate::api::wire::{
    AuthFactorJson, AuthenticationMethodsResponse, DetailsJson, Empty, GeneratedCodesResponse,
    ListAuthFactorsResponse, ListDetailsJson, RecoveryCodesLeftResponse, RegisterTotpResponse,
    auth_factor_state,
};
use crate::service::{Authenticated, FactorFilter};

type State = web::Data<HttpState>;

pub async fn register_totp(
    req: HttpRequest,
    state: State,
    auth: Authenticated,
    path: web::Path<String>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    json_body::<NoFields>(&req, body, &state).await?;
    let scope = state.service.user_scope(&auth, org_header(&req), &path)?;
    let enrollment = state.service.register_totp(&auth, scope).await?;
    Ok(HttpResponse::Ok().json(RegisterTotpResponse {
        details: DetailsJson::from(&enrollment.details),
        uri: enrollment.uri.expose_secret().to_owned(),
        secret: enrollment.secret.expose_secret().to_owned(),
    }))
}

pub async fn verify_totp_registration(
    req: HttpRequest,
    state: State,
    auth: Authenticated,
    path: web::Path<String>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = json_body::<CodeRequest>(&req, body, &state).await?;
    let scope = state.service.user_scope(&auth, org_header(&req), &path)?;
    let code = body.code.unwrap_or_default();
    Ok(details(
        &state.service.verify_totp_registration(scope, code).await?,
    ))
}

pub async fn remove_totp(
    req: HttpRequest,
    state: State,
    auth: Authenticated,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let scope = state.service.user_scope(&auth, org_header(&req), &path)?;
    Ok(details(&state.service.remove_totp(scope).await?))
}

pub async fn list_authentication_method_types(
    req: HttpRequest,
    state: State,
    auth: Authenticated,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let scope = state.service.user_scope(&auth, org_header(&req), &path)?;
    let methods = state.service.authentication_methods(scope).await?;
    let auth_method_types: Vec<&'static str> = methods
        .into_iter()
        .map(|method| method_type(method).as_str_name())
        .collect();
    Ok(HttpResponse::Ok().json(AuthenticationMethodsResponse {
        details: ListDetailsJson {
            total_result: auth_method_types.len() as u64,
        },
        auth_method_types,
    }))
}

/// An enum value as protojson takes it: its name, or its number.
#[derive(Deserialize)]
#[serde(untagged)]
enum EnumValue {
    Name(String),
    Number(i64),
}

impl EnumValue {
    /// The value's number; `-1` (no value of the enum) for a name or number it lacks.
    fn number(&self, by_name: impl Fn(&str) -> Option<i32>) -> i32 {
        match self {
            Self::Name(name) => by_name(name).unwrap_or(-1),
            Self::Number(number) => i32::try_from(*number).unwrap_or(-1),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ListFactorsRequest {
    #[serde(default)]
    auth_factors: Vec<EnumValue>,
    #[serde(default)]
    states: Vec<EnumValue>,
}

impl ListFactorsRequest {
    /// The same filter as over gRPC, from the generated enums' names and numbers.
    fn filter(&self) -> FactorFilter {
        let kinds: Vec<i32> = self
            .auth_factors
            .iter()
            .map(|kind| kind.number(|name| AuthFactors::from_str_name(name).map(|k| k as i32)))
            .collect();
        let states: Vec<i32> = self
            .states
            .iter()
            .map(|state| {
                state.number(|name| AuthFactorState::from_str_name(name).map(|s| s as i32))
            })
            .collect();
        factor_filter(&kinds, &states)
    }
}

pub async fn list_authentication_factors(
    req: HttpRequest,
    state: State,
    auth: Authenticated,
    path: web::Path<String>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = json_body::<ListFactorsRequest>(&req, body, &state).await?;
    let scope = state.service.user_scope(&auth, org_header(&req), &path)?;
    let factors = state
        .service
        .list_authentication_factors(scope, body.filter())
        .await?;
    let result = factors
        .into_iter()
        .map(|factor| AuthFactorJson {
            state: auth_factor_state(factor.state),
            otp: Empty {},
        })
        .collect();
    Ok(HttpResponse::Ok().json(ListAuthFactorsResponse { result }))
}

/// `count` as protojson takes an int32: a number, or a number in a string.
#[derive(Deserialize)]
#[serde(untagged)]
enum Int32 {
    Number(i64),
    Text(String),
}

impl Int32 {
    /// The value, or `-1` (a count no call accepts) when it is no int32.
    fn value(&self) -> i32 {
        let wide = match self {
            Self::Number(number) => Some(*number),
            Self::Text(text) => text.parse().ok(),
        };
        wide.and_then(|value| i32::try_from(value).ok())
            .unwrap_or(-1)
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct GenerateCodesRequest {
    #[serde(default)]
    count: Option<Int32>,
    #[serde(default)]
    totp_code: Option<String>,
}

pub async fn generate_recovery_codes(
    req: HttpRequest,
    state: State,
    auth: Authenticated,
    path: web::Path<String>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = json_body::<GenerateCodesRequest>(&req, body, &state).await?;
    let scope = state.service.user_scope(&auth, org_header(&req), &path)?;
    let count = body.count.as_ref().map_or(0, Int32::value);
    let totp_code = body.totp_code.unwrap_or_default();
    let generated = state
        .service
        .generate_recovery_codes(scope, count, totp_code)
        .await?;
    Ok(HttpResponse::Ok().json(GeneratedCodesResponse {
        details: DetailsJson::from(&generated.details),
        recovery_codes: generated
            .codes
            .iter()
            .map(|code| code.shown().to_owned())
            .collect(),
    }))
}

pub async fn remove_recovery_codes(
    req: HttpRequest,
    state: State,
    auth: Authenticated,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let scope = state.service.user_scope(&auth, org_header(&req), &path)?;
    Ok(details(&state.service.remove_recovery_codes(scope).await?))
}

/// tessera's GetRecoveryCodes: how many the user has left.
pub async fn get_recovery_codes(
    req: HttpRequest,
    state: State,
    auth: Authenticated,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let scope = state.service.user_scope(&auth, org_header(&req), &path)?;
    let remaining = state.service.recovery_codes_left(scope).await?;
    Ok(HttpResponse::Ok().json(RecoveryCodesLeftResponse { remaining }))
}
