//! The audit trail's listings: one user's events, and the organization's feed, filtered.
//! Thin, like every handler.

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::DateTime;
use serde::Deserialize;

use super::extract::org_header;
use super::policies::PageQuery;
use super::{ApiError, HttpState};
use crate::api::wire::{EventJson, EventsResponse};
use crate::domain::audit::{EventFilter, EventKind};
use crate::domain::{OtpError, UnixMicros};
use crate::service::{Authenticated, EventPage};

type State = web::Data<HttpState>;

/// The organization's listing's query: `userId`, `type` (one or more, comma-separated),
/// `since` and `until` (RFC 3339), `pageSize`, `pageToken`.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct EventQuery {
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default, rename = "type")]
    kinds: Option<String>,
    #[serde(default)]
    since: Option<String>,
    #[serde(default)]
    until: Option<String>,
    #[serde(default)]
    page_size: u32,
    #[serde(default)]
    page_token: String,
}

impl EventQuery {
    fn filter(&self) -> Result<EventFilter, OtpError> {
        let time = |text: &Option<String>| -> Result<Option<UnixMicros>, OtpError> {
            text.as_deref()
                .map(|text| {
                    DateTime::parse_from_rfc3339(text)
                        .map(|time| UnixMicros(time.timestamp_micros()))
                        .map_err(|_| OtpError::MalformedQuery)
                })
                .transpose()
        };
        let kinds = self
            .kinds
            .as_deref()
            .map(|kinds| {
                kinds
                    .split(',')
                    .map(|name| EventKind::parse(name.trim()).ok_or(OtpError::MalformedQuery))
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?
            .unwrap_or_default();
        Ok(EventFilter {
            user: self.user_id.clone(),
            kinds,
            since: time(&self.since)?,
            until: time(&self.until)?,
        })
    }
}

fn events_response(page: EventPage) -> HttpResponse {
    HttpResponse::Ok().json(EventsResponse {
        result: page.events.into_iter().map(EventJson::from).collect(),
        next_page_token: page.next.unwrap_or_default(),
    })
}

pub async fn list_events(
    req: HttpRequest,
    state: State,
    auth: Authenticated,
) -> Result<HttpResponse, ApiError> {
    let query = web::Query::<EventQuery>::from_query(req.query_string())
        .map_err(|_| OtpError::MalformedQuery)?;
    let filter = query.filter()?;
    let scope = state.service.tenant_scope(&auth, org_header(&req))?;
    let page = state
        .service
        .org_events(scope, filter, query.page_size, &query.page_token)
        .await?;
    Ok(events_response(page))
}

pub async fn list_user_events(
    req: HttpRequest,
    state: State,
    auth: Authenticated,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let query = web::Query::<PageQuery>::from_query(req.query_string())
        .map_err(|_| OtpError::MalformedQuery)?;
    let scope = state.service.org_scope(&auth, org_header(&req), &path)?;
    let page = state
        .service
        .user_events(scope, query.page_size, &query.page_token)
        .await?;
    Ok(events_response(page))
}
