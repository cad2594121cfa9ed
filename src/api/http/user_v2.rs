//! ZITADEL's v2 user API, the TOTP part (`/v2/users/{user_id}/…`): thin, like the v1
//! handlers, and calling the same service, so that one factor has one history whichever API
//! changes it.

use actix_web::{HttpRequest, HttpResponse, web};
use secrecy::ExposeSecret;
use serde::Deserialize;

use super::extract::org_header;
use super::handlers::{CodeRequest, NoFields, details};
use super::{ApiError, HttpState, json_body};
use crate::api::grpc::factor_filter;
use crate::api::grpc::pb::zitadel::user::v2::{AuthFactorState, AuthFactors};
use crate::api::wire::{
    AuthFactorJson, AuthenticationMethodsResponse, DetailsJson, Empty, ListAuthFactorsResponse,
    ListDetailsJson, RegisterTotpResponse, auth_factor_state,
};
use crate::service::{Authenticated, AuthenticationMethod, FactorFilter};

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
        .iter()
        .map(|method| match method {
            AuthenticationMethod::Totp => "AUTHENTICATION_METHOD_TYPE_TOTP",
        })
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
