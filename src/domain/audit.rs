//! The audit trail's rules: which events a change makes, what each carries, how long they
//! are kept, and how much of the client's address is kept (it is personal data).
//!
//! An event is written with its change, in the same atomic step (each user's script appends
//! to the user's own list, `store/lua/audit.lua`'s `audit`); the functions here say which
//! events, and the scripts transcribe them. A lock that expires does so by time passing,
//! when no script runs: its `lock_expired` event is written by the next attempt's script,
//! which notices the expiry and clears the lock.

use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::factor::{AttemptDecision, Purpose};
use super::recovery::RedeemDecision;
use super::time::UnixMicros;

/// What happened. The names are stable: stored in Redis, shown by the API, filtered on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    Enrolled,
    Verified,
    CheckAccepted,
    CheckInvalid,
    ReplayRefused,
    Locked,
    LockExpired,
    Unlocked,
    Removed,
    RecoveryCodesGenerated,
    RecoveryCodeUsed,
    RecoveryCodesRemoved,
    PolicyChanged,
}

impl EventKind {
    pub const ALL: [EventKind; 13] = [
        Self::Enrolled,
        Self::Verified,
        Self::CheckAccepted,
        Self::CheckInvalid,
        Self::ReplayRefused,
        Self::Locked,
        Self::LockExpired,
        Self::Unlocked,
        Self::Removed,
        Self::RecoveryCodesGenerated,
        Self::RecoveryCodeUsed,
        Self::RecoveryCodesRemoved,
        Self::PolicyChanged,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Enrolled => "enrolled",
            Self::Verified => "verified",
            Self::CheckAccepted => "check_accepted",
            Self::CheckInvalid => "check_invalid",
            Self::ReplayRefused => "replay_refused",
            Self::Locked => "locked",
            Self::LockExpired => "lock_expired",
            Self::Unlocked => "unlocked",
            Self::Removed => "removed",
            Self::RecoveryCodesGenerated => "recovery_codes_generated",
            Self::RecoveryCodeUsed => "recovery_code_used",
            Self::RecoveryCodesRemoved => "recovery_codes_removed",
            Self::PolicyChanged => "policy_changed",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == name)
    }
}

/// The events of a committed code attempt, in order: the expiry of a lock the attempt found
/// (it clears it), the outcome, and the lock the outcome set. A decision that commits
/// nothing (locked, absent, wrong state, stale) makes none.
pub fn attempt_events(
    purpose: Purpose,
    decision: &AttemptDecision,
    lock_expired: bool,
) -> Vec<EventKind> {
    let mut events = Vec::with_capacity(3);
    let outcome = match decision {
        AttemptDecision::Accept { .. } => match purpose {
            Purpose::Enrollment => (EventKind::Verified, false),
            Purpose::Login => (EventKind::CheckAccepted, false),
        },
        AttemptDecision::Reject { replayed, lock, .. } => (
            if *replayed {
                EventKind::ReplayRefused
            } else {
                EventKind::CheckInvalid
            },
            lock.is_some(),
        ),
        _ => return events,
    };
    if lock_expired {
        events.push(EventKind::LockExpired);
    }
    events.push(outcome.0);
    if outcome.1 {
        events.push(EventKind::Locked);
    }
    events
}

/// The events of a recovery code typed at login, as `attempt_events`: a wrong code is an
/// invalid check like a wrong TOTP code.
pub fn redeem_events(decision: &RedeemDecision, lock_expired: bool) -> Vec<EventKind> {
    let (outcome, locks) = match decision {
        RedeemDecision::Accept { .. } => (EventKind::RecoveryCodeUsed, false),
        RedeemDecision::Reject { lock, .. } => (EventKind::CheckInvalid, lock.is_some()),
        RedeemDecision::Locked(_) | RedeemDecision::NoCodes => return Vec::new(),
    };
    let mut events = Vec::with_capacity(3);
    if lock_expired {
        events.push(EventKind::LockExpired);
    }
    events.push(outcome);
    if locks {
        events.push(EventKind::Locked);
    }
    events
}

/// How much of the client's address an event keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AddressRecording {
    Full,
    /// IPv4 to its /24, IPv6 to its /48: the network, not the host.
    #[default]
    Truncated,
    None,
}

impl AddressRecording {
    pub fn record(self, address: Option<IpAddr>) -> Option<String> {
        let address = address?;
        match self {
            Self::Full => Some(address.to_string()),
            Self::None => None,
            Self::Truncated => Some(match address {
                IpAddr::V4(v4) => {
                    let [a, b, c, _] = v4.octets();
                    format!("{a}.{b}.{c}.0/24")
                }
                IpAddr::V6(v6) => {
                    let s = v6.segments();
                    format!("{:x}:{:x}:{:x}::/48", s[0], s[1], s[2])
                }
            }),
        }
    }
}

/// Who made a change and through which request, as its event records them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Author {
    pub request_id: Arc<str>,
    /// The token's subject: the user themselves, or an admin.
    pub user: Arc<str>,
    /// The subject's organization.
    pub org: Arc<str>,
    /// The client address as recorded (`AddressRecording`), if any.
    pub address: Option<Arc<str>>,
}

/// How long an organization keeps events: the newest `max_events_per_user` of each user, the
/// newest `max_events` of the organization's feed, none older than `max_age_days`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Retention {
    pub max_events_per_user: u32,
    pub max_events: u32,
    pub max_age_days: u32,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            max_events_per_user: 100,
            max_events: 100_000,
            max_age_days: 90,
        }
    }
}

impl Retention {
    /// The most a user's list or an organization's feed may hold, by count, and the oldest.
    pub const MAX_EVENTS_PER_USER: u32 = 10_000;
    pub const MAX_EVENTS: u32 = 10_000_000;
    pub const MAX_AGE_DAYS: u32 = 3660;

    /// Every problem, in the API's field names.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !(1..=Self::MAX_EVENTS_PER_USER).contains(&self.max_events_per_user) {
            problems.push(format!(
                "auditMaxEventsPerUser must be 1 to {}, not {}",
                Self::MAX_EVENTS_PER_USER,
                self.max_events_per_user
            ));
        }
        if !(1..=Self::MAX_EVENTS).contains(&self.max_events) {
            problems.push(format!(
                "auditMaxEvents must be 1 to {}, not {}",
                Self::MAX_EVENTS,
                self.max_events
            ));
        }
        if !(1..=Self::MAX_AGE_DAYS).contains(&self.max_age_days) {
            problems.push(format!(
                "auditMaxAgeDays must be 1 to {}, not {}",
                Self::MAX_AGE_DAYS,
                self.max_age_days
            ));
        }
        problems
    }

    pub fn max_age_micros(&self) -> i64 {
        i64::from(self.max_age_days) * 24 * 3600 * 1_000_000
    }
}

/// One event as stored and shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// Its id where it is listed: `<sequence>-<n>` in a user's list (increasing per user),
    /// `<ms>-<n>` in the organization's feed (a stream).
    pub id: String,
    pub kind: EventKind,
    /// The user it is about; none for an organization's own (a policy change).
    pub user: Option<Arc<str>>,
    pub at: UnixMicros,
    pub sequence: u64,
    pub request_id: String,
    pub actor_user: String,
    pub actor_org: String,
    pub address: Option<String>,
}

/// What a listing of an organization's events asks for; each condition is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    pub user: Option<String>,
    /// Any of these kinds (none: all).
    pub kinds: Vec<EventKind>,
    /// At or after, by the event's time.
    pub since: Option<UnixMicros>,
    /// At or before, by the event's time.
    pub until: Option<UnixMicros>,
}

impl EventFilter {
    pub fn matches(&self, event: &AuditEvent) -> bool {
        self.user
            .as_deref()
            .is_none_or(|user| event.user.as_deref() == Some(user))
            && (self.kinds.is_empty() || self.kinds.contains(&event.kind))
            && self.since.is_none_or(|since| event.at >= since)
            && self.until.is_none_or(|until| event.at <= until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Lock;

    #[test]
    fn an_attempt_makes_its_outcome_and_the_lock_it_set() {
        let reject = |replayed, lock| AttemptDecision::Reject {
            failures: 3,
            lock,
            replayed,
        };
        assert_eq!(
            attempt_events(Purpose::Login, &AttemptDecision::Accept { step: 1 }, false),
            [EventKind::CheckAccepted]
        );
        assert_eq!(
            attempt_events(
                Purpose::Enrollment,
                &AttemptDecision::Accept { step: 1 },
                true
            ),
            [EventKind::LockExpired, EventKind::Verified]
        );
        assert_eq!(
            attempt_events(Purpose::Login, &reject(true, None), false),
            [EventKind::ReplayRefused]
        );
        assert_eq!(
            attempt_events(
                Purpose::Login,
                &reject(false, Some(Lock::Until(UnixMicros(9)))),
                false
            ),
            [EventKind::CheckInvalid, EventKind::Locked]
        );
        assert!(
            attempt_events(
                Purpose::Login,
                &AttemptDecision::Locked(Lock::UntilUnlocked),
                true
            )
            .is_empty()
        );
    }

    #[test]
    fn a_redemption_makes_its_outcome() {
        assert_eq!(
            redeem_events(&RedeemDecision::Accept { remaining: 2 }, true),
            [EventKind::LockExpired, EventKind::RecoveryCodeUsed]
        );
        assert_eq!(
            redeem_events(
                &RedeemDecision::Reject {
                    failures: 5,
                    lock: Some(Lock::UntilUnlocked)
                },
                false
            ),
            [EventKind::CheckInvalid, EventKind::Locked]
        );
        assert!(redeem_events(&RedeemDecision::NoCodes, false).is_empty());
    }

    #[test]
    fn addresses_are_kept_as_configured() {
        let v4: IpAddr = "203.0.113.77".parse().unwrap();
        let v6: IpAddr = "2001:db8:85a3:8d3:1319:8a2e:370:7348".parse().unwrap();
        assert_eq!(
            AddressRecording::Full.record(Some(v4)).unwrap(),
            "203.0.113.77"
        );
        assert_eq!(
            AddressRecording::Truncated.record(Some(v4)).unwrap(),
            "203.0.113.0/24"
        );
        assert_eq!(
            AddressRecording::Truncated.record(Some(v6)).unwrap(),
            "2001:db8:85a3::/48"
        );
        assert_eq!(AddressRecording::None.record(Some(v4)), None);
        assert_eq!(AddressRecording::Full.record(None), None);
    }

    #[test]
    fn names_read_back() {
        for kind in EventKind::ALL {
            assert_eq!(EventKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(EventKind::parse("nope"), None);
    }

    #[test]
    fn a_filter_asks_for_every_condition() {
        let event = AuditEvent {
            id: "1-0".into(),
            kind: EventKind::Locked,
            user: Some("alice".into()),
            at: UnixMicros(100),
            sequence: 1,
            request_id: "r".into(),
            actor_user: "alice".into(),
            actor_org: "acme".into(),
            address: None,
        };
        assert!(EventFilter::default().matches(&event));
        let alice = EventFilter {
            user: Some("alice".into()),
            kinds: vec![EventKind::Unlocked, EventKind::Locked],
            since: Some(UnixMicros(100)),
            until: Some(UnixMicros(100)),
        };
        assert!(alice.matches(&event));
        for other in [
            EventFilter {
                user: Some("bob".into()),
                ..alice.clone()
            },
            EventFilter {
                kinds: vec![EventKind::Removed],
                ..alice.clone()
            },
            EventFilter {
                since: Some(UnixMicros(101)),
                ..alice.clone()
            },
            EventFilter {
                until: Some(UnixMicros(99)),
                ..alice.clone()
            },
        ] {
            assert!(!other.matches(&event), "{other:?}");
        }
    }

    #[test]
    fn retention_is_bounded() {
        assert!(Retention::default().problems().is_empty());
        let none = Retention {
            max_events_per_user: 0,
            max_events: 0,
            max_age_days: 0,
        };
        assert_eq!(none.problems().len(), 3);
    }
}
