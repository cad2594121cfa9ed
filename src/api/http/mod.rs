//! actix-web: routes, the shared state, and the few helpers every handler uses
//! (client address, bearer token, bounded JSON body, errors in the contract's shape).

mod handlers;

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

use super::gateway::Gateway;
use super::wire::StatusJson;
use crate::domain::OtpError;

/// Shared by every worker.
pub struct HttpState {
    pub gateway: Arc<Gateway>,
    pub body_limit: usize,
}

/// A body read up to the limit (413 past it) and parsed as JSON whatever its content type,
/// as grpc-gateway does; an empty body is an empty request.
async fn json_body<T: DeserializeOwned + Default>(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<T, ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(OtpError::BodyTooLarge.into());
    }
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| OtpError::MalformedBody)?;
        if body.len() + chunk.len() > limit {
            return Err(OtpError::BodyTooLarge.into());
        }
        body.extend_from_slice(&chunk);
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&body).map_err(|_| OtpError::MalformedBody.into())
}

/// An `OtpError` on its way out as HTTP.
#[derive(Debug)]
pub struct ApiError(pub OtpError);

impl From<OtpError> for ApiError {
    fn from(err: OtpError) -> Self {
        Self(err)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        let status = match self.0 {
            OtpError::BodyTooLarge => 413,
            OtpError::MethodNotAllowed => 405,
            ref other => other.grpc_code().http_status(),
        };
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        if let OtpError::RateLimited { retry_after_secs } = self.0 {
            response.insert_header((header::RETRY_AFTER, retry_after_secs.to_string()));
        }
        response.json(StatusJson::from(&self.0))
    }
}

async fn route_not_found() -> HttpResponse {
    ApiError(OtpError::RouteNotFound).error_response()
}

async fn method_not_allowed() -> HttpResponse {
    ApiError(OtpError::MethodNotAllowed).error_response()
}

/// The Auth API, the management calls and the probes.
pub fn routes(config: &mut web::ServiceConfig) {
    use handlers::*;
    let resource =
        |path: &str| web::resource(path.to_owned()).default_service(web::to(method_not_allowed));
    config
        .service(
            resource("/auth/v1/users/me/auth_factors/otp")
                .route(web::post().to(add_my_otp))
                .route(web::delete().to(remove_my_otp)),
        )
        .service(
            resource("/auth/v1/users/me/auth_factors/otp/_verify")
                .route(web::post().to(verify_my_otp)),
        )
        .service(
            resource("/auth/v1/users/me/auth_factors/_search")
                .route(web::post().to(list_my_factors)),
        )
        .service(
            resource("/management/v1/users/{user_id}/auth_factors/otp/_check")
                .route(web::post().to(check_otp)),
        )
        .service(
            resource("/management/v1/users/{user_id}/auth_factors/otp")
                .route(web::delete().to(remove_user_otp)),
        )
        .service(
            resource("/management/v1/users/{user_id}/_unlock").route(web::post().to(unlock_user)),
        )
        .service(resource("/debug/healthz").route(web::get().to(healthz)))
        .service(resource("/debug/ready").route(web::get().to(ready)))
        .default_service(web::to(route_not_found));
}
