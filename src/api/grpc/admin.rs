//! tessera's own admin services over gRPC: the organization's OTP policy, an admin's view of
//! one user, the organization's locked users, the audit trail. Thin, like the HTTP handlers.

use tonic::{Request, Response, Status};

use super::pb::tessera::otp::v1 as admin;
use super::services::{Services, auth_factor_state, fail, org_header, take};
use super::status::{details, timestamp};
use crate::domain::audit::{AuditEvent, EventFilter, EventKind};
use crate::domain::{HashAlgorithm, Lock, OtpError, UnixMicros};
use crate::service::{EventPage, OtpSettingsRequest};

fn locked_until(lock: Lock) -> Option<prost_types::Timestamp> {
    match lock {
        Lock::Until(until) => Some(timestamp(until)),
        Lock::UntilUnlocked => None,
    }
}

#[tonic::async_trait]
impl admin::policy_service_server::PolicyService for Services {
    async fn get_otp_policy(
        &self,
        request: Request<admin::GetOtpPolicyRequest>,
    ) -> Result<Response<admin::GetOtpPolicyResponse>, Status> {
        let org = org_header(&request);
        let (caller, _) = take(request)?;
        let scope = self
            .service
            .tenant_scope(&caller, org.as_deref())
            .map_err(fail)?;
        let view = self.service.otp_policy(scope).await.map_err(fail)?;
        let settings = view.settings;
        Ok(Response::new(admin::GetOtpPolicyResponse {
            policy: Some(admin::OtpPolicy {
                details: Some(details(&view.details)),
                issuer: settings.issuer,
                algorithm: settings.algorithm.as_str().to_owned(),
                digits: u32::from(settings.digits),
                period_secs: settings.period_secs,
                skew: u32::from(settings.skew),
                lock_duration_secs: u32::try_from(settings.lock_duration_secs).unwrap_or(u32::MAX),
                show_failures: settings.show_failures,
                recovery_code_count: settings.recovery_codes,
                is_default: view.is_default,
                audit_max_events_per_user: view.retention.max_events_per_user,
                audit_max_events: view.retention.max_events,
                audit_max_age_days: view.retention.max_age_days,
            }),
        }))
    }

    async fn set_otp_policy(
        &self,
        request: Request<admin::SetOtpPolicyRequest>,
    ) -> Result<Response<admin::SetOtpPolicyResponse>, Status> {
        let org = org_header(&request);
        let (caller, message) = take(request)?;
        let algorithm = message
            .algorithm
            .map(|name| {
                name.parse::<HashAlgorithm>()
                    .map_err(|_| OtpError::PolicyInvalid(format!("unknown algorithm {name:?}")))
            })
            .transpose()
            .map_err(fail)?;
        let request = OtpSettingsRequest {
            issuer: message.issuer,
            algorithm,
            digits: message.digits,
            period_secs: message.period_secs,
            skew: message.skew,
            lock_duration_secs: message.lock_duration_secs,
            show_failures: message.show_failures,
            recovery_codes: message.recovery_code_count,
            audit_max_events_per_user: message.audit_max_events_per_user,
            audit_max_events: message.audit_max_events,
            audit_max_age_days: message.audit_max_age_days,
        };
        let scope = self
            .service
            .tenant_scope(&caller, org.as_deref())
            .map_err(fail)?;
        let written = self
            .service
            .set_otp_policy(scope, request)
            .await
            .map_err(fail)?;
        Ok(Response::new(admin::SetOtpPolicyResponse {
            details: Some(details(&written)),
        }))
    }

    async fn reset_otp_policy(
        &self,
        request: Request<admin::ResetOtpPolicyRequest>,
    ) -> Result<Response<admin::ResetOtpPolicyResponse>, Status> {
        let org = org_header(&request);
        let (caller, _) = take(request)?;
        let scope = self
            .service
            .tenant_scope(&caller, org.as_deref())
            .map_err(fail)?;
        let written = self.service.reset_otp_policy(scope).await.map_err(fail)?;
        Ok(Response::new(admin::ResetOtpPolicyResponse {
            details: Some(details(&written)),
        }))
    }
}

#[tonic::async_trait]
impl admin::user_admin_service_server::UserAdminService for Services {
    async fn get_user_factor(
        &self,
        request: Request<admin::GetUserFactorRequest>,
    ) -> Result<Response<admin::GetUserFactorResponse>, Status> {
        let org = org_header(&request);
        let (caller, message) = take(request)?;
        let scope = self
            .service
            .org_scope(&caller, org.as_deref(), &message.user_id)
            .map_err(fail)?;
        let view = self.service.user_factor(scope).await.map_err(fail)?;
        Ok(Response::new(admin::GetUserFactorResponse {
            otp: view.factor.map(|factor| admin::FactorSummary {
                state: auth_factor_state(factor.state) as i32,
                creation_date: Some(timestamp(factor.created_at)),
                last_successful_check: factor.last_success.map(timestamp),
            }),
            failed_attempts: view.failures,
            locked: view.lock.is_some(),
            locked_until: view.lock.and_then(locked_until),
            recovery_codes_remaining: view.recovery_codes,
        }))
    }

    async fn list_locked_users(
        &self,
        request: Request<admin::ListLockedUsersRequest>,
    ) -> Result<Response<admin::ListLockedUsersResponse>, Status> {
        let org = org_header(&request);
        let (caller, message) = take(request)?;
        let scope = self
            .service
            .tenant_scope(&caller, org.as_deref())
            .map_err(fail)?;
        let page = self
            .service
            .locked_users(scope, message.page_size, &message.page_token)
            .await
            .map_err(fail)?;
        Ok(Response::new(admin::ListLockedUsersResponse {
            result: page
                .users
                .into_iter()
                .map(|locked| admin::LockedUser {
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
}

fn event(event: AuditEvent) -> admin::Event {
    admin::Event {
        r#type: event.kind.as_str().to_owned(),
        user_id: event.user.map(|user| user.to_string()).unwrap_or_default(),
        sequence: event.sequence,
        creation_date: Some(timestamp(event.at)),
        request_id: event.request_id,
        actor_user_id: event.actor_user,
        actor_org_id: event.actor_org,
        client_address: event.address.unwrap_or_default(),
        id: event.id,
    }
}

fn events_response(page: EventPage) -> admin::ListEventsResponse {
    admin::ListEventsResponse {
        result: page.events.into_iter().map(event).collect(),
        next_page_token: page.next.unwrap_or_default(),
    }
}

fn micros(time: prost_types::Timestamp) -> UnixMicros {
    UnixMicros(
        time.seconds
            .saturating_mul(1_000_000)
            .saturating_add(i64::from(time.nanos / 1000)),
    )
}

#[tonic::async_trait]
impl admin::audit_service_server::AuditService for Services {
    async fn list_events(
        &self,
        request: Request<admin::ListEventsRequest>,
    ) -> Result<Response<admin::ListEventsResponse>, Status> {
        let org = org_header(&request);
        let (caller, message) = take(request)?;
        let kinds = message
            .types
            .iter()
            .map(|name| EventKind::parse(name).ok_or(OtpError::MalformedQuery))
            .collect::<Result<Vec<_>, _>>()
            .map_err(fail)?;
        let filter = EventFilter {
            user: Some(message.user_id).filter(|user| !user.is_empty()),
            kinds,
            since: message.since.map(micros),
            until: message.until.map(micros),
        };
        let scope = self
            .service
            .tenant_scope(&caller, org.as_deref())
            .map_err(fail)?;
        let page = self
            .service
            .org_events(scope, filter, message.page_size, &message.page_token)
            .await
            .map_err(fail)?;
        Ok(Response::new(events_response(page)))
    }

    async fn list_user_events(
        &self,
        request: Request<admin::ListUserEventsRequest>,
    ) -> Result<Response<admin::ListEventsResponse>, Status> {
        let org = org_header(&request);
        let (caller, message) = take(request)?;
        let scope = self
            .service
            .org_scope(&caller, org.as_deref(), &message.user_id)
            .map_err(fail)?;
        let page = self
            .service
            .user_events(scope, message.page_size, &message.page_token)
            .await
            .map_err(fail)?;
        Ok(Response::new(events_response(page)))
    }
}
