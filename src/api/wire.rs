//! JSON shapes as grpc-gateway writes them: lowerCamelCase, 64-bit integers as strings,
//! RFC 3339 UTC timestamps, unset and zero fields left out.

use chrono::{DateTime, SecondsFormat};
use serde::{Serialize, Serializer};

use crate::domain::{Details, FactorState, FailedAttempts, OtpError, UnixMicros};

/// protojson's Timestamp: 0, 3 or 6 fractional digits, whichever is exact.
pub fn timestamp(at: UnixMicros) -> String {
    let Some(time) = DateTime::from_timestamp_micros(at.0) else {
        return String::new();
    };
    let format = match at.0.rem_euclid(1_000_000) {
        0 => SecondsFormat::Secs,
        micros if micros % 1_000 == 0 => SecondsFormat::Millis,
        _ => SecondsFormat::Micros,
    };
    time.to_rfc3339_opts(format, true)
}

fn as_string<S: Serializer>(value: &u64, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

#[derive(Serialize, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DetailsJson {
    #[serde(serialize_with = "as_string", skip_serializing_if = "is_zero")]
    pub sequence: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub creation_date: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change_date: Option<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub resource_owner: String,
}

impl From<&Details> for DetailsJson {
    fn from(details: &Details) -> Self {
        Self {
            sequence: details.sequence,
            creation_date: details.creation_date.map(timestamp),
            change_date: details.change_date.map(timestamp),
            resource_owner: details.resource_owner.to_string(),
        }
    }
}

/// A response that carries only `details` (Verify, Remove, Unlock, the login check).
#[derive(Serialize)]
pub struct DetailsResponse {
    pub details: DetailsJson,
}

/// The login check's answer: with a recovery code, the codes left too.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckResponse {
    pub details: DetailsJson,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovery_codes_remaining: Option<u32>,
}

/// v2 GenerateRecoveryCodes's answer: the codes, shown once.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GeneratedCodesResponse {
    pub details: DetailsJson,
    pub recovery_codes: Vec<String>,
}

/// tessera's GetRecoveryCodes: how many are left, never which.
#[derive(Serialize)]
pub struct RecoveryCodesLeftResponse {
    pub remaining: u32,
}

#[derive(Serialize)]
pub struct AddOtpResponse {
    pub url: String,
    pub secret: String,
    pub details: DetailsJson,
}

#[derive(Serialize)]
pub struct AuthFactorJson {
    pub state: &'static str,
    /// The oneof member is written even though its message is empty.
    pub otp: Empty,
}

#[derive(Serialize)]
pub struct Empty {}

#[derive(Serialize)]
pub struct ListAuthFactorsResponse {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub result: Vec<AuthFactorJson>,
}

/// v2 RegisterTOTP's answer: the URI is `uri` here, `url` in v1.
#[derive(Serialize)]
pub struct RegisterTotpResponse {
    pub details: DetailsJson,
    pub uri: String,
    pub secret: String,
}

/// v2 `ListDetails`: only the total is set, as ZITADEL's answer shows it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListDetailsJson {
    #[serde(serialize_with = "as_string", skip_serializing_if = "is_zero")]
    pub total_result: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthenticationMethodsResponse {
    pub details: ListDetailsJson,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub auth_method_types: Vec<&'static str>,
}

/// ZITADEL's `zitadel.policy.v1.LockoutPolicy`: its attempts are uint64, strings in JSON.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LockoutPolicyJson {
    pub details: DetailsJson,
    #[serde(serialize_with = "as_string", skip_serializing_if = "is_zero")]
    pub max_password_attempts: u64,
    #[serde(serialize_with = "as_string", skip_serializing_if = "is_zero")]
    pub max_otp_attempts: u64,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub is_default: bool,
}

/// GetLockoutPolicy's and GetDefaultLockoutPolicy's answer (the latter without the
/// deprecated top-level `isDefault`).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LockoutPolicyResponse {
    pub policy: LockoutPolicyJson,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_default: Option<bool>,
}

/// tessera's `OtpPolicy`. Every field is written, zeros and false included: the policy is
/// read to be compared and copied, and a missing field would read as "not set".
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OtpPolicyJson {
    pub details: DetailsJson,
    pub issuer: String,
    pub algorithm: &'static str,
    pub digits: u32,
    pub period_secs: u32,
    pub skew: u32,
    pub lock_duration_secs: u64,
    pub show_failures: bool,
    pub recovery_code_count: u32,
    pub is_default: bool,
    pub audit_max_events_per_user: u32,
    pub audit_max_events: u32,
    pub audit_max_age_days: u32,
}

#[derive(Serialize)]
pub struct OtpPolicyResponse {
    pub policy: OtpPolicyJson,
}

/// tessera's admin view of one user's TOTP factor.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FactorSummaryJson {
    pub state: &'static str,
    pub creation_date: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_successful_check: Option<String>,
}

/// tessera's GetUserFactor: counts and `locked` always written.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UserFactorResponse {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otp: Option<FactorSummaryJson>,
    pub failed_attempts: u32,
    pub locked: bool,
    /// Absent while locked: until an admin unlocks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locked_until: Option<String>,
    pub recovery_codes_remaining: u32,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LockedUserJson {
    pub user_id: String,
    pub failed_attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locked_until: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LockedUsersResponse {
    pub result: Vec<LockedUserJson>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub next_page_token: String,
}

/// When a lock ends, as the views write it: none for "until an admin unlocks".
pub fn locked_until(lock: crate::domain::Lock) -> Option<String> {
    match lock {
        crate::domain::Lock::Until(until) => Some(timestamp(until)),
        crate::domain::Lock::UntilUnlocked => None,
    }
}

pub fn auth_factor_state(state: FactorState) -> &'static str {
    match state {
        FactorState::NotReady => "AUTH_FACTOR_STATE_NOT_READY",
        FactorState::Ready => "AUTH_FACTOR_STATE_READY",
    }
}

/// The message of a `CredentialsCheckError`: how many attempts remain.
pub fn attempts_message(err: &OtpError, attempts: &FailedAttempts) -> String {
    let noun = if attempts.remaining == 1 {
        "attempt"
    } else {
        "attempts"
    };
    format!("{err}; {} {noun} remaining", attempts.remaining)
}

/// `google.rpc.Status` in JSON, with ZITADEL's `ErrorDetail` (and `CredentialsCheckError`).
#[derive(Serialize)]
pub struct StatusJson {
    pub code: i32,
    pub message: String,
    pub details: Vec<ErrorDetailJson>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorDetailJson {
    #[serde(rename = "@type")]
    pub type_url: &'static str,
    pub id: &'static str,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_attempts: Option<u32>,
}

impl From<&OtpError> for StatusJson {
    fn from(err: &OtpError) -> Self {
        let mut details = vec![ErrorDetailJson {
            type_url: "type.googleapis.com/zitadel.v1.ErrorDetail",
            id: err.id(),
            message: err.to_string(),
            failed_attempts: None,
        }];
        if let Some(attempts) = err.failed_attempts() {
            details.push(ErrorDetailJson {
                type_url: "type.googleapis.com/zitadel.v1.CredentialsCheckError",
                id: err.id(),
                message: attempts_message(err, &attempts),
                failed_attempts: Some(attempts.failed),
            });
        }
        Self {
            code: err.grpc_code() as i32,
            message: err.client_message(),
            details,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn timestamps_as_protojson() {
        assert_eq!(
            timestamp(UnixMicros(1_683_880_200_000_000)),
            "2023-05-12T08:30:00Z"
        );
        assert_eq!(
            timestamp(UnixMicros(1_683_880_200_123_000)),
            "2023-05-12T08:30:00.123Z"
        );
        assert_eq!(
            timestamp(UnixMicros(1_683_880_200_123_456)),
            "2023-05-12T08:30:00.123456Z"
        );
    }

    #[test]
    fn details_leave_out_unset_fields_and_quote_the_sequence() {
        let details = Details::changed(
            2,
            UnixMicros(1_683_880_200_000_000),
            Arc::from("69629023906488334"),
        );
        let json = serde_json::to_value(DetailsJson::from(&details)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"sequence": "2", "changeDate": "2023-05-12T08:30:00Z", "resourceOwner": "69629023906488334"})
        );
    }

    #[test]
    fn error_shape() {
        let json = serde_json::to_value(StatusJson::from(&OtpError::InvalidCode(None))).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"code": 3, "message": "Invalid code (EVENT-8isk2)", "details": [
                {"@type": "type.googleapis.com/zitadel.v1.ErrorDetail", "id": "EVENT-8isk2", "message": "Invalid code"}
            ]})
        );
        let shown = OtpError::InvalidCode(Some(FailedAttempts {
            failed: 2,
            remaining: 3,
        }));
        let json = serde_json::to_value(StatusJson::from(&shown)).unwrap();
        assert_eq!(json["details"][1]["failedAttempts"], 2);
        assert_eq!(
            json["details"][1]["@type"],
            "type.googleapis.com/zitadel.v1.CredentialsCheckError"
        );
    }

    #[test]
    fn empty_list_is_an_empty_object_and_oneof_is_written() {
        let empty = ListAuthFactorsResponse { result: vec![] };
        assert_eq!(serde_json::to_string(&empty).unwrap(), "{}");
        let one = ListAuthFactorsResponse {
            result: vec![AuthFactorJson {
                state: auth_factor_state(FactorState::Ready),
                otp: Empty {},
            }],
        };
        assert_eq!(
            serde_json::to_string(&one).unwrap(),
            r#"{"result":[{"state":"AUTH_FACTOR_STATE_READY","otp":{}}]}"#
        );
    }
}

/// One audit event as the event listings show it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventJson {
    /// Its id in the stream listed: the next page's token when it is a page's last.
    pub id: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(serialize_with = "as_string")]
    pub sequence: u64,
    pub creation_date: String,
    pub request_id: String,
    pub actor_user_id: String,
    pub actor_org_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_address: Option<String>,
}

impl From<crate::domain::audit::AuditEvent> for EventJson {
    fn from(event: crate::domain::audit::AuditEvent) -> Self {
        Self {
            kind: event.kind.as_str(),
            user_id: event.user.map(|user| user.to_string()),
            sequence: event.sequence,
            creation_date: timestamp(event.at),
            request_id: event.request_id,
            actor_user_id: event.actor_user,
            actor_org_id: event.actor_org,
            client_address: event.address,
            id: event.id,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventsResponse {
    pub result: Vec<EventJson>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub next_page_token: String,
}
