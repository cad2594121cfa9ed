//! actix-web: routes, the shared state, and the few helpers every handler uses
//! (client address, bearer token, bounded JSON body, errors in the contract's shape).

mod audit;
mod extract;
mod handlers;
mod policies;
mod user_v2;
mod webhooks;

pub use extract::{ClientCertified, on_connect};
pub use handlers::{CodeRequest, NoFields, metrics};

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::http::{Method, header};
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

use super::wire::StatusJson;
use crate::domain::{GrpcCode, OtpError};
use crate::metrics::RpcSeries;
use crate::service::OtpService;

/// Shared by every worker.
pub struct HttpState {
    pub service: Arc<OtpService>,
    pub body_limit: usize,
    /// How long a request's body may take to arrive once its handler reads it.
    pub body_timeout: std::time::Duration,
}

/// A body read up to the limit (413 past it) within the body timeout (408 past it), parsed
/// as JSON whatever its content type.
async fn json_body<T: DeserializeOwned + Default>(
    req: &HttpRequest,
    mut payload: web::Payload,
    state: &HttpState,
) -> Result<T, ApiError> {
    let limit = state.body_limit;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(OtpError::BodyTooLarge.into());
    }
    let read = async {
        let mut body = web::BytesMut::new();
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|_| OtpError::MalformedBody)?;
            if body.len() + chunk.len() > limit {
                return Err(OtpError::BodyTooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    };
    let body = tokio::time::timeout(state.body_timeout, read)
        .await
        .map_err(|_| OtpError::BodyTimeout)??;
    Ok(parse_json_body(&body)?)
}

/// A request body as grpc-gateway reads it: JSON whatever the content type says, an empty
/// (or blank) body an empty request, unknown fields ignored. (Also the fuzz target's entry.)
pub fn parse_json_body<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, OtpError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|_| OtpError::MalformedBody)
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
            OtpError::BodyTimeout => 408,
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
        let mut response = response.json(StatusJson::from(&self.0));
        // For the request metrics: the gRPC code behind the HTTP status.
        response.extensions_mut().insert(self.0.grpc_code());
        response
    }
}

/// Every request's id (the caller's `x-request-id` when sane, else a fresh one): in the
/// request's extensions before the root span is made (`telemetry::RequestSpans` puts it
/// there, so every log line of the request carries it), and in the response.
pub fn with_request_id<S, B>(
    req: actix_web::dev::ServiceRequest,
    service: &S,
) -> impl std::future::Future<Output = Result<actix_web::dev::ServiceResponse<B>, actix_web::Error>>
+ use<S, B>
where
    S: actix_web::dev::Service<
            actix_web::dev::ServiceRequest,
            Response = actix_web::dev::ServiceResponse<B>,
            Error = actix_web::Error,
        >,
{
    use actix_web::HttpMessage;
    let id = crate::telemetry::RequestId::from_header(
        req.headers().get("x-request-id").map(|v| v.as_bytes()),
    );
    let value = header::HeaderValue::from_str(&id.0).ok();
    req.extensions_mut().insert(id);
    let call = service.call(req);
    async move {
        let mut response = call.await?;
        if let Some(value) = value {
            response
                .headers_mut()
                .insert(header::HeaderName::from_static("x-request-id"), value);
        }
        Ok(response)
    }
}

async fn route_not_found() -> HttpResponse {
    ApiError(OtpError::RouteNotFound).error_response()
}

async fn method_not_allowed() -> HttpResponse {
    ApiError(OtpError::MethodNotAllowed).error_response()
}

/// A resource whose calls are counted and timed under their RPC names (by HTTP method),
/// with the gRPC code of the answer. Per resource, so the name is known without asking the
/// router again.
fn observed(
    path: &str,
    rpcs: &'static [(Method, &'static str)],
) -> actix_web::Resource<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    use actix_web::dev::Service;
    // Each method's series, resolved on its first call (per worker: the app is built once
    // on each), the last for a method the resource does not serve.
    let series: std::rc::Rc<[std::cell::OnceCell<RpcSeries>]> = (0..=rpcs.len())
        .map(|_| std::cell::OnceCell::new())
        .collect();
    web::resource(path.to_owned())
        .default_service(web::to(method_not_allowed))
        .wrap_fn(move |req, service| {
            let started = std::time::Instant::now();
            let index = rpcs
                .iter()
                .position(|(method, _)| method == req.method())
                .unwrap_or(rpcs.len());
            let rpc = rpcs.get(index).map_or("other_method", |(_, rpc)| *rpc);
            tracing::Span::current().record("rpc", rpc);
            if let Some(cell) = series.get(index)
                && cell.get().is_none()
                && let Some(state) = req.app_data::<web::Data<HttpState>>()
            {
                let _ = cell.set(state.service.metrics.rpc_series("http", rpc));
            }
            let series = series.clone();
            let call = service.call(req);
            async move {
                let response = call.await?;
                if let Some(series) = series.get(index).and_then(std::cell::OnceCell::get) {
                    let code = match response.response().extensions().get::<GrpcCode>() {
                        Some(code) => *code as i32,
                        None if response.status().is_success() => 0,
                        None => 2,
                    };
                    series.observe(code, started.elapsed().as_secs_f64());
                }
                Ok(response)
            }
        })
}

/// The Auth API, the management calls, the probes and the metrics.
pub fn routes(config: &mut web::ServiceConfig) {
    use handlers::*;
    let plain =
        |path: &str| web::resource(path.to_owned()).default_service(web::to(method_not_allowed));
    config
        .service(
            observed(
                "/auth/v1/users/me/auth_factors/otp",
                &[
                    (Method::POST, "AddMyAuthFactorOTP"),
                    (Method::DELETE, "RemoveMyAuthFactorOTP"),
                ],
            )
            .route(web::post().to(add_my_otp))
            .route(web::delete().to(remove_my_otp)),
        )
        .service(
            observed(
                "/auth/v1/users/me/auth_factors/otp/_verify",
                &[(Method::POST, "VerifyMyAuthFactorOTP")],
            )
            .route(web::post().to(verify_my_otp)),
        )
        .service(
            observed(
                "/auth/v1/users/me/auth_factors/_search",
                &[(Method::POST, "ListMyAuthFactors")],
            )
            .route(web::post().to(list_my_factors)),
        )
        .service(
            observed(
                "/management/v1/users/{user_id}/auth_factors/otp/_check",
                &[(Method::POST, "CheckOTP")],
            )
            .route(web::post().to(check_otp)),
        )
        .service(
            observed(
                "/management/v1/users/{user_id}/auth_factors/otp",
                &[
                    (Method::DELETE, "RemoveHumanAuthFactorOTP"),
                    (Method::GET, "GetUserFactor"),
                ],
            )
            .route(web::delete().to(remove_user_otp))
            .route(web::get().to(policies::get_user_factor)),
        )
        .service(
            observed(
                "/management/v1/users/{user_id}/_unlock",
                &[(Method::POST, "UnlockUser")],
            )
            .route(web::post().to(unlock_user)),
        )
        .service(
            observed(
                "/v2/users/{user_id}/totp",
                &[
                    (Method::POST, "RegisterTOTP"),
                    (Method::DELETE, "RemoveTOTP"),
                ],
            )
            .route(web::post().to(user_v2::register_totp))
            .route(web::delete().to(user_v2::remove_totp)),
        )
        .service(
            observed(
                "/v2/users/{user_id}/totp/verify",
                &[(Method::POST, "VerifyTOTPRegistration")],
            )
            .route(web::post().to(user_v2::verify_totp_registration)),
        )
        .service(
            observed(
                "/v2/users/{user_id}/unlock",
                &[(Method::POST, "UnlockUserV2")],
            )
            // The v1 handler: the same call, admins only, the user's own lock included (a
            // lock its owner could lift would stop nobody).
            .route(web::post().to(unlock_user)),
        )
        .service(
            observed(
                "/v2/users/{user_id}/authentication_methods",
                &[(Method::GET, "ListAuthenticationMethodTypes")],
            )
            .route(web::get().to(user_v2::list_authentication_method_types)),
        )
        .service(
            observed(
                "/v2/users/{user_id}/authentication_factors/_search",
                &[(Method::POST, "ListAuthenticationFactors")],
            )
            .route(web::post().to(user_v2::list_authentication_factors)),
        )
        .service(
            observed(
                "/v2/users/{user_id}/recovery_codes",
                &[
                    (Method::POST, "GenerateRecoveryCodes"),
                    (Method::DELETE, "RemoveRecoveryCodes"),
                ],
            )
            .route(web::post().to(user_v2::generate_recovery_codes))
            .route(web::delete().to(user_v2::remove_recovery_codes)),
        )
        .service(
            observed(
                "/management/v1/users/{user_id}/auth_factors/recovery_codes",
                &[(Method::GET, "GetRecoveryCodes")],
            )
            .route(web::get().to(user_v2::get_recovery_codes)),
        )
        .service(
            observed(
                "/management/v1/policies/lockout",
                &[
                    (Method::GET, "GetLockoutPolicy"),
                    (Method::POST, "AddCustomLockoutPolicy"),
                    (Method::PUT, "UpdateCustomLockoutPolicy"),
                    (Method::DELETE, "ResetLockoutPolicyToDefault"),
                ],
            )
            .route(web::get().to(policies::get_lockout_policy))
            .route(web::post().to(policies::add_custom_lockout_policy))
            .route(web::put().to(policies::update_custom_lockout_policy))
            .route(web::delete().to(policies::reset_lockout_policy)),
        )
        .service(
            observed(
                "/management/v1/policies/default/lockout",
                &[(Method::GET, "GetDefaultLockoutPolicy")],
            )
            .route(web::get().to(policies::get_default_lockout_policy)),
        )
        .service(
            observed(
                "/management/v1/policies/otp",
                &[
                    (Method::GET, "GetOtpPolicy"),
                    (Method::PUT, "SetOtpPolicy"),
                    (Method::DELETE, "ResetOtpPolicy"),
                ],
            )
            .route(web::get().to(policies::get_otp_policy))
            .route(web::put().to(policies::set_otp_policy))
            .route(web::delete().to(policies::reset_otp_policy)),
        )
        .service(
            observed(
                "/management/v1/users/{user_id}/auth_factors/_search",
                &[(Method::POST, "ListHumanAuthFactors")],
            )
            .route(web::post().to(policies::list_human_auth_factors)),
        )
        .service(
            observed(
                "/management/v1/locked_users",
                &[(Method::GET, "ListLockedUsers")],
            )
            .route(web::get().to(policies::list_locked_users)),
        )
        .service(
            observed(
                "/management/v1/webhooks",
                &[(Method::POST, "AddWebhook"), (Method::GET, "ListWebhooks")],
            )
            .route(web::post().to(webhooks::add_webhook))
            .route(web::get().to(webhooks::list_webhooks)),
        )
        .service(
            observed(
                "/management/v1/webhooks/dead_letters",
                &[(Method::GET, "ListDeadLetters")],
            )
            .route(web::get().to(webhooks::list_dead_letters)),
        )
        .service(
            observed(
                "/management/v1/webhooks/dead_letters/_replay",
                &[(Method::POST, "ReplayDeadLetters")],
            )
            .route(web::post().to(webhooks::replay_dead_letters)),
        )
        .service(
            observed(
                "/management/v1/webhooks/{id}",
                &[(Method::DELETE, "RemoveWebhook")],
            )
            .route(web::delete().to(webhooks::remove_webhook)),
        )
        .service(
            observed("/management/v1/events", &[(Method::GET, "ListEvents")])
                .route(web::get().to(audit::list_events)),
        )
        .service(
            observed(
                "/management/v1/users/{user_id}/events",
                &[(Method::GET, "ListUserEvents")],
            )
            .route(web::get().to(audit::list_user_events)),
        )
        .service(plain("/debug/healthz").route(web::get().to(healthz)))
        .service(plain("/debug/ready").route(web::get().to(ready)))
        .service(plain("/metrics").route(web::get().to(metrics)))
        .service(plain("/debug/metrics").route(web::get().to(metrics)))
        .default_service(web::to(route_not_found));
}
