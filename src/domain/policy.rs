//! The rules one organization's factors follow: TOTP parameters for new enrollments, the
//! verification window, the lockout and how many recovery codes a generation makes.
//!
//! The instance's defaults come from the settings; an organization may replace two parts of
//! them through the API, each one whole, as ZITADEL's custom policies do: the lockout
//! (`CustomLockout`, ZITADEL's lockout policy) and the rest (`OtpSettings`, tessera's own).
//! `StoredPolicies` is what the store holds for an organization; `effective` lays it over the
//! defaults. `decide_write` is the rule every change of a part follows (`write_policy.lua`
//! transcribes it).

use serde::{Deserialize, Serialize};

use super::audit::Retention;
use super::factor::LockoutPolicy;
use super::recovery::MAX_CODES;
use super::time::UnixMicros;
use super::totp::{HashAlgorithm, TotpParams};

/// Only `new` builds a policy, so every policy in the program is one the rules allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtpPolicy {
    params: TotpParams,
    skew: u8,
    issuer: String,
    lockout: LockoutPolicy,
    recovery_codes: u32,
    retention: Retention,
}

impl OtpPolicy {
    /// A skew of 0 to 2 steps either side (each one more widens the window a guess can hit);
    /// an issuer that is not empty and has no `:`, which separates issuer from account in
    /// the otpauth URI; 1 to `MAX_CODES` recovery codes per generation. Every problem, in the
    /// settings' words.
    pub fn new(
        params: TotpParams,
        skew: u8,
        issuer: String,
        lockout: LockoutPolicy,
        recovery_codes: u32,
    ) -> Result<Self, Vec<String>> {
        let mut problems = Vec::new();
        if skew > 2 {
            problems.push("skew above 2 widens the guessing window; use 0, 1 or 2".to_owned());
        }
        if issuer.is_empty() || issuer.contains(':') {
            problems.push("the issuer must be non-empty and free of ':'".to_owned());
        }
        if !(1..=MAX_CODES).contains(&recovery_codes) {
            problems.push(format!(
                "recovery_codes must be 1 to {MAX_CODES} (the most a user may hold), not \
                 {recovery_codes}"
            ));
        }
        if problems.is_empty() {
            Ok(Self {
                params,
                skew,
                issuer,
                lockout,
                recovery_codes,
                retention: Retention::default(),
            })
        } else {
            Err(problems)
        }
    }

    pub fn params(&self) -> TotpParams {
        self.params
    }

    /// Steps accepted either side of the current one.
    pub fn skew(&self) -> u8 {
        self.skew
    }

    /// The issuer authenticator apps show.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn lockout(&self) -> LockoutPolicy {
        self.lockout
    }

    /// How many recovery codes a generation makes when the caller names no count.
    pub fn recovery_codes(&self) -> u32 {
        self.recovery_codes
    }

    /// How long the organization keeps its audit events.
    pub fn retention(&self) -> Retention {
        self.retention
    }

    /// The same policy keeping events for `retention`, if it is within bounds.
    pub fn with_retention(mut self, retention: Retention) -> Result<Self, Vec<String>> {
        let problems = retention.problems();
        if !problems.is_empty() {
            return Err(problems);
        }
        self.retention = retention;
        Ok(self)
    }
}

/// An organization's own lockout policy (ZITADEL's `LockoutPolicy`). The password attempts
/// are kept for clients that send them (ZITADEL's Terraform resource does) and used nowhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomLockout {
    pub max_otp_attempts: u32,
    pub max_password_attempts: u32,
}

/// tessera's OTP policy of an organization: everything but the failures that lock, which
/// are ZITADEL's lockout policy's. Stored whole; a field's meaning is `OtpPolicy`'s.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OtpSettings {
    pub issuer: String,
    pub algorithm: HashAlgorithm,
    pub digits: u8,
    pub period_secs: u32,
    pub skew: u8,
    /// 0: until an admin unlocks.
    pub lock_duration_secs: u64,
    pub show_failures: bool,
    pub recovery_codes: u32,
    /// The audit trail's retention (absent from forms stored before it existed: the
    /// instance's then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Retention>,
}

/// The longest lock a policy may set: a year (and far from overflowing microseconds).
pub const MAX_LOCK_SECS: u64 = 366 * 24 * 3600;

impl OtpSettings {
    /// The settings a policy is made of.
    pub fn of(policy: &OtpPolicy) -> Self {
        let lockout = policy.lockout();
        Self {
            issuer: policy.issuer().to_owned(),
            algorithm: policy.params().algorithm(),
            digits: policy.params().digits(),
            period_secs: policy.params().period_secs(),
            skew: policy.skew(),
            lock_duration_secs: u64::try_from(lockout.lock_duration_micros / 1_000_000)
                .unwrap_or(0),
            show_failures: lockout.show_failures,
            recovery_codes: policy.recovery_codes(),
            retention: Some(policy.retention()),
        }
    }

    /// The policy these settings make with `max_attempts` failures to lock; every problem
    /// with them, in the API's field names.
    pub fn policy(&self, max_attempts: u32) -> Result<OtpPolicy, Vec<String>> {
        let params = TotpParams::new(self.algorithm, self.digits, self.period_secs);
        let mut problems: Vec<String> = params.as_ref().err().cloned().into_iter().collect();
        if self.lock_duration_secs > MAX_LOCK_SECS {
            problems.push(format!(
                "lockDurationSecs must be at most {MAX_LOCK_SECS} (a year), not {}",
                self.lock_duration_secs
            ));
        }
        let lockout = LockoutPolicy {
            max_attempts,
            lock_duration_micros: i64::try_from(self.lock_duration_secs.min(MAX_LOCK_SECS))
                .unwrap_or(0)
                .saturating_mul(1_000_000),
            show_failures: self.show_failures,
        };
        let policy = OtpPolicy::new(
            params.unwrap_or_default(),
            self.skew,
            self.issuer.clone(),
            lockout,
            self.recovery_codes,
        );
        if let Some(retention) = self.retention {
            problems.extend(retention.problems());
        }
        match policy {
            Ok(policy) if problems.is_empty() => match self.retention {
                Some(retention) => policy.with_retention(retention),
                None => Ok(policy),
            },
            Ok(_) => Err(problems),
            Err(more) => {
                problems.extend(more);
                Err(problems)
            }
        }
    }
}

/// A part of an organization's policies, with when it was set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamped<T> {
    pub value: T,
    pub created_at: UnixMicros,
    pub changed_at: UnixMicros,
}

/// What the store holds for one organization: each part it replaced, and the sequence of its
/// last policy change (0: never changed; it only grows, resets included).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StoredPolicies {
    pub sequence: u64,
    pub lockout: Option<Stamped<CustomLockout>>,
    pub otp: Option<Stamped<OtpSettings>>,
}

impl StoredPolicies {
    /// The organization's policy: the instance's `default`, with each part the organization
    /// replaced. A stored part was checked when it was written; one that no longer passes
    /// (a stricter release) is refused, and the default stands, as the error says.
    pub fn effective(&self, default: &OtpPolicy) -> Result<OtpPolicy, Vec<String>> {
        let max_attempts = self
            .lockout
            .as_ref()
            .map_or(default.lockout().max_attempts, |custom| {
                custom.value.max_otp_attempts
            });
        let mut settings = self
            .otp
            .as_ref()
            .map_or_else(|| OtpSettings::of(default), |custom| custom.value.clone());
        settings.retention.get_or_insert(default.retention());
        settings.policy(max_attempts)
    }
}

/// How a call changes one part of an organization's policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// ZITADEL's Add: only where the organization has none.
    Add,
    /// ZITADEL's Update: only where it has one, and only to something else.
    Update,
    /// tessera's Set: add or replace; the same again changes nothing and is no error.
    Set,
    /// Back to the instance's default; where it is already, nothing changes.
    Reset,
}

impl WriteMode {
    /// As the store's script names it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Add => "add",
            Self::Update => "update",
            Self::Set => "set",
            Self::Reset => "reset",
        }
    }
}

/// What a write does to a part that is `current` (its stored form), given `new`'s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteDecision {
    /// Store `new` (or, for a reset, remove the part) as a new change.
    Write,
    /// Nothing to do, and the caller is told so: ZITADEL's Add over an existing part.
    Exists,
    /// ZITADEL's Update or Reset where the organization has no part of its own.
    Absent,
    /// The part is already so: nothing changes.
    Unchanged,
}

pub fn decide_write(mode: WriteMode, current: Option<&str>, new: &str) -> WriteDecision {
    match (mode, current) {
        (WriteMode::Add, Some(_)) => WriteDecision::Exists,
        (WriteMode::Update | WriteMode::Reset, None) => WriteDecision::Absent,
        (WriteMode::Update | WriteMode::Set, Some(current)) if current == new => {
            WriteDecision::Unchanged
        }
        _ => WriteDecision::Write,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lockout() -> LockoutPolicy {
        LockoutPolicy {
            max_attempts: 5,
            lock_duration_micros: 0,
            show_failures: true,
        }
    }

    #[test]
    fn only_allowed_policies_are_built() {
        let params = TotpParams::default();
        let built = |skew, issuer: &str| OtpPolicy::new(params, skew, issuer.into(), lockout(), 10);
        for skew in 0..=2 {
            assert_eq!(built(skew, "ACME").unwrap().skew(), skew);
        }
        assert_eq!(built(1, "ACME").unwrap().issuer(), "ACME");
        assert_eq!(built(3, "ACME").unwrap_err().len(), 1);
        assert_eq!(built(1, "").unwrap_err().len(), 1);
        assert_eq!(built(1, "a:b").unwrap_err().len(), 1);
        assert_eq!(built(3, "a:b").unwrap_err().len(), 2);
        let codes = |count| OtpPolicy::new(params, 1, "ACME".into(), lockout(), count);
        assert_eq!(codes(1).unwrap().recovery_codes(), 1);
        assert_eq!(codes(20).unwrap().recovery_codes(), 20);
        assert_eq!(codes(0).unwrap_err().len(), 1);
        assert_eq!(codes(21).unwrap_err().len(), 1);
    }

    #[test]
    fn the_write_rule_is_zitadels_for_add_and_update_and_declarative_for_set_and_reset() {
        use WriteDecision::*;
        use WriteMode::*;
        let cases = [
            (Add, None, Write),
            (Add, Some("a"), Exists),
            (Update, None, Absent),
            (Update, Some("a"), Unchanged),
            (Update, Some("b"), Write),
            (Set, None, Write),
            (Set, Some("a"), Unchanged),
            (Set, Some("b"), Write),
            (Reset, None, Absent),
            (Reset, Some("a"), Write),
        ];
        for (mode, current, decision) in cases {
            assert_eq!(
                decide_write(mode, current, "a"),
                decision,
                "{mode:?} {current:?}"
            );
        }
    }

    #[test]
    fn stored_parts_replace_the_default_each_on_its_own() {
        let default =
            OtpPolicy::new(TotpParams::default(), 1, "tessera".into(), lockout(), 10).unwrap();
        let at = UnixMicros(1);
        let none = StoredPolicies::default();
        assert_eq!(none.effective(&default).unwrap(), default);

        let mut stored = StoredPolicies {
            sequence: 1,
            lockout: Some(Stamped {
                value: CustomLockout {
                    max_otp_attempts: 2,
                    max_password_attempts: 9,
                },
                created_at: at,
                changed_at: at,
            }),
            otp: None,
        };
        let policy = stored.effective(&default).unwrap();
        assert_eq!(policy.lockout().max_attempts, 2);
        assert_eq!(policy.issuer(), "tessera");

        let mut settings = OtpSettings::of(&default);
        assert_eq!(
            settings.policy(5).unwrap(),
            default,
            "of and policy are inverse"
        );
        settings.issuer = "ACME".into();
        settings.digits = 8;
        stored.otp = Some(Stamped {
            value: settings.clone(),
            created_at: at,
            changed_at: at,
        });
        let policy = stored.effective(&default).unwrap();
        assert_eq!((policy.issuer(), policy.params().digits()), ("ACME", 8));
        assert_eq!(
            policy.lockout().max_attempts,
            2,
            "the lockout part still counts"
        );

        settings.digits = 9;
        settings.lock_duration_secs = MAX_LOCK_SECS + 1;
        settings.skew = 3;
        assert_eq!(settings.policy(5).unwrap_err().len(), 3);
    }
}
