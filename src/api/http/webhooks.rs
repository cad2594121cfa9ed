//! Webhook endpoints and dead letters of an organization (`otp.admin`). Thin, like every
//! handler.

use actix_web::{HttpRequest, HttpResponse, web};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};

use super::extract::org_header;
use super::{ApiError, HttpState, json_body};
use crate::api::wire::timestamp;
use crate::domain::audit::EventKind;
use crate::domain::{OtpError, UnixMicros};
use crate::service::Authenticated;
use crate::store::{PendingDelivery, StoredEndpoint};

type State = web::Data<HttpState>;

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct AddWebhookRequest {
    #[serde(default)]
    url: String,
    /// Event types; none: replay refused, locked, removed, recovery code used, recovery codes
    /// generated.
    #[serde(default)]
    types: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EndpointJson {
    id: String,
    url: String,
    types: Vec<String>,
    creation_date: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
}

impl EndpointJson {
    fn of(endpoint: StoredEndpoint, secret: Option<String>) -> Self {
        Self {
            id: endpoint.id,
            url: endpoint.url,
            types: endpoint.kinds,
            creation_date: timestamp(UnixMicros(endpoint.created_at)),
            secret,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DeadLetterJson {
    endpoint_id: String,
    message_id: String,
    attempts: u32,
    first_failed_date: String,
    body: String,
}

impl From<PendingDelivery> for DeadLetterJson {
    fn from(delivery: PendingDelivery) -> Self {
        Self {
            first_failed_date: timestamp(delivery.first_failed()),
            endpoint_id: delivery.endpoint,
            message_id: delivery.message_id,
            attempts: delivery.attempt,
            body: delivery.body,
        }
    }
}

pub async fn add_webhook(
    req: HttpRequest,
    state: State,
    auth: Authenticated,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = json_body::<AddWebhookRequest>(&req, body, &state).await?;
    let kinds = body
        .types
        .iter()
        .map(|name| {
            EventKind::parse(name).ok_or_else(|| {
                OtpError::WebhookTargetRefused(format!("unknown event type {name:?}"))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let scope = state.service.tenant_scope(&auth, org_header(&req))?;
    let added = state.service.add_webhook(scope, &body.url, kinds).await?;
    let secret = added.secret.expose_secret().to_owned();
    Ok(HttpResponse::Ok().json(EndpointJson::of(added.endpoint, Some(secret))))
}

pub async fn list_webhooks(
    req: HttpRequest,
    state: State,
    auth: Authenticated,
) -> Result<HttpResponse, ApiError> {
    let scope = state.service.tenant_scope(&auth, org_header(&req))?;
    let endpoints = state.service.webhooks(scope).await?;
    let result: Vec<EndpointJson> = endpoints
        .into_iter()
        .map(|endpoint| EndpointJson::of(endpoint, None))
        .collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "result": result })))
}

pub async fn remove_webhook(
    req: HttpRequest,
    state: State,
    auth: Authenticated,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let scope = state.service.tenant_scope(&auth, org_header(&req))?;
    state.service.remove_webhook(scope, &path).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({})))
}

pub async fn list_dead_letters(
    req: HttpRequest,
    state: State,
    auth: Authenticated,
) -> Result<HttpResponse, ApiError> {
    let scope = state.service.tenant_scope(&auth, org_header(&req))?;
    let dead = state.service.dead_letters(scope).await?;
    let result: Vec<DeadLetterJson> = dead.into_iter().map(DeadLetterJson::from).collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "result": result })))
}

pub async fn replay_dead_letters(
    req: HttpRequest,
    state: State,
    auth: Authenticated,
) -> Result<HttpResponse, ApiError> {
    let scope = state.service.tenant_scope(&auth, org_header(&req))?;
    let replayed = state.service.replay_dead_letters(scope).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "replayed": replayed })))
}
