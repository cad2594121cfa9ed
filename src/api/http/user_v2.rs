//! ZITADEL's v2 user API, the TOTP part (`/v2/users/{user_id}/…`): thin, like the v1
//! handlers, and calling the same service, so that one factor has one history whichever API
//! changes it.

use actix_web::{HttpRequest, HttpResponse, web};
use secrecy::ExposeSecret;
use serde::Deserialize;

use super::extract::org_header;
use super::handlers::{CodeRequest, NoFields, details};
use super::{ApiError, HttpState, json_body};
use crate::api::wire::{
    AuthFactorJson, AuthenticationMethodsResponse, DetailsJson, Empty, ListAuthFactorsResponse,
    ListDetailsJson, RegisterTotpResponse, auth_factor_state,
};
use crate::service::{Authenticated, AuthenticationMethod, FactorFilter, FactorKind, StateQuery};

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

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ListFactorsRequest {
    #[serde(default)]
    auth_factors: Vec<EnumValue>,
    #[serde(default)]
    states: Vec<EnumValue>,
}

impl ListFactorsRequest {
    fn filter(&self) -> FactorFilter {
        let kinds: Vec<FactorKind> = self
            .auth_factors
            .iter()
            .map(|kind| match kind {
                EnumValue::Name(name) if name == "OTP" => FactorKind::Otp,
                EnumValue::Number(0) => FactorKind::Otp,
                _ => FactorKind::Other,
            })
            .collect();
        let states: Vec<StateQuery> = self
            .states
            .iter()
            .map(|state| match state {
                EnumValue::Name(name) if name == "AUTH_FACTOR_STATE_READY" => StateQuery::Ready,
                EnumValue::Number(2) => StateQuery::Ready,
                EnumValue::Name(name) if name == "AUTH_FACTOR_STATE_NOT_READY" => {
                    StateQuery::NotReady
                }
                EnumValue::Number(1) => StateQuery::NotReady,
                _ => StateQuery::Other,
            })
            .collect();
        FactorFilter::new(&kinds, &states)
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
