//! The factor's record, its states, which state admits which attempt, the lock, the lockout
//! policy, and the attempt rule (`decide_attempt`): replay, a lock's expiry that starts a
//! fresh count, failure counting, the lock at the maximum, the state and factor checks. The
//! memory store calls it; `store/lua/attempt.lua` is its transcription for Redis, and a
//! differential property test (`tests/api/differential.rs`) holds the two equal.

use super::error::{FailedAttempts, OtpError};
use super::time::UnixMicros;
use super::totp::TotpParams;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FactorState {
    NotReady,
    Ready,
}

impl FactorState {
    /// The compact form kept in the store.
    pub const fn as_stored(self) -> u8 {
        match self {
            Self::NotReady => 1,
            Self::Ready => 2,
        }
    }

    pub const fn from_stored(value: u8) -> Option<Self> {
        match value {
            1 => Some(Self::NotReady),
            2 => Some(Self::Ready),
            _ => None,
        }
    }
}

/// Why a code is submitted: to confirm an enrollment, or at login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Enrollment,
    Login,
}

impl Purpose {
    /// The state a factor must be in for this purpose.
    pub const fn required_state(self) -> FactorState {
        match self {
            Self::Enrollment => FactorState::NotReady,
            Self::Login => FactorState::Ready,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Enrollment => "enroll",
            Self::Login => "login",
        }
    }

    /// The error for a factor that is absent or in the wrong state (checked before any code).
    pub const fn state_error(self, actual: Option<FactorState>) -> OtpError {
        match (self, actual) {
            (Self::Enrollment, None) => OtpError::FactorNotFound,
            (Self::Enrollment, Some(_)) => OtpError::FactorAlreadyReady,
            (Self::Login, _) => OtpError::FactorNotReady,
        }
    }
}

/// A lock set after too many consecutive failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lock {
    Until(UnixMicros),
    UntilUnlocked,
}

impl Lock {
    pub fn is_active(self, now: UnixMicros) -> bool {
        match self {
            Self::Until(until) => until > now,
            Self::UntilUnlocked => true,
        }
    }

    /// The stored form: `-1` for "until an admin unlocks", else the expiry.
    pub const fn as_stored(self) -> i64 {
        match self {
            Self::Until(until) => until.0,
            Self::UntilUnlocked => -1,
        }
    }

    pub const fn from_stored(value: i64) -> Self {
        if value < 0 {
            Self::UntilUnlocked
        } else {
            Self::Until(UnixMicros(value))
        }
    }
}

/// Lockout: how many consecutive failures lock a factor, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutPolicy {
    /// 0 means never lock.
    pub max_attempts: u32,
    /// 0 means until an admin unlocks.
    pub lock_duration_micros: i64,
    /// Whether a wrong-code answer says how many attempts failed and remain.
    pub show_failures: bool,
}

impl LockoutPolicy {
    /// The lock that the `failures`-th consecutive failure sets, if any.
    pub fn lock_after(&self, failures: u32, now: UnixMicros) -> Option<Lock> {
        if self.max_attempts == 0 || failures < self.max_attempts {
            return None;
        }
        Some(if self.lock_duration_micros > 0 {
            Lock::Until(now.saturating_add_micros(self.lock_duration_micros))
        } else {
            Lock::UntilUnlocked
        })
    }

    /// The answer to a wrong (or replayed) code after `failures` consecutive failures.
    pub fn invalid_code(&self, failures: u32) -> OtpError {
        OtpError::InvalidCode(self.shown_failures(failures))
    }

    /// The answer to a wrong (or used) recovery code: the same lockout, ZITADEL's id.
    pub fn invalid_recovery_code(&self, failures: u32) -> OtpError {
        OtpError::InvalidRecoveryCode(self.shown_failures(failures))
    }

    fn shown_failures(&self, failures: u32) -> Option<FailedAttempts> {
        (self.show_failures && self.max_attempts > 0).then(|| FailedAttempts {
            failed: failures,
            remaining: self.max_attempts.saturating_sub(failures),
        })
    }
}

/// May a code be compared for `purpose` at `now`? The state comes first, as in ZITADEL:
/// a verify of a READY factor is FAILED_PRECONDITION whatever code it carries. Then the lock:
/// a locked factor compares no code.
pub fn admit(
    state: FactorState,
    lock: Option<Lock>,
    purpose: Purpose,
    now: UnixMicros,
) -> Result<(), OtpError> {
    if state != purpose.required_state() {
        return Err(purpose.state_error(Some(state)));
    }
    if lock.is_some_and(|lock| lock.is_active(now)) {
        return Err(OtpError::FactorLocked);
    }
    Ok(())
}

/// Names one enrollment for all time, so that a copy cached by any replica can be checked
/// against the store at every commit.
///
/// A new enrollment gets 128 random bits from its caller. An id must never come back: if it
/// were derived from anything the store keeps (format 1 used the enrollment's sequence), a
/// store that lost the user's key would hand the same id to the next enrollment, and a
/// replica still caching the old secret under it would commit that secret's codes.
/// Records of format 1 keep their sequence-derived id (`Legacy`) until they are re-enrolled.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum FactorId {
    Random([u8; 16]),
    Legacy(u64),
}

impl FactorId {
    /// The caller's random bits (from a CSPRNG).
    pub const fn from_random(bytes: [u8; 16]) -> Self {
        Self::Random(bytes)
    }

    /// The form the store compares: the 16 bytes, or a legacy id's decimal text (the
    /// `f` field of format 1). The two never coincide: decimal text of a `u64` is at most
    /// 20 ASCII digits, and 16 random bytes that happen to be 16 ASCII digits are as likely
    /// as guessing the id.
    pub fn stored(&self) -> std::borrow::Cow<'_, [u8]> {
        match self {
            Self::Random(bytes) => std::borrow::Cow::Borrowed(bytes),
            Self::Legacy(sequence) => std::borrow::Cow::Owned(sequence.to_string().into_bytes()),
        }
    }
}

impl std::fmt::Debug for FactorId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Random(bytes) => {
                let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                write!(f, "FactorId({hex})")
            }
            Self::Legacy(sequence) => write!(f, "FactorId(legacy {sequence})"),
        }
    }
}

/// Everything the store keeps about one user's OTP factor.
#[derive(Clone, PartialEq, Eq)]
pub struct FactorRecord {
    /// Names this enrollment, so a cached copy can be checked at every commit.
    pub factor_id: FactorId,
    pub state: FactorState,
    pub params: TotpParams,
    /// The AEAD-sealed secret (see `seal`); never the plain secret.
    pub sealed_secret: Vec<u8>,
    /// The time step of the last accepted code (replay protection, RFC 6238 5.2).
    pub last_step: Option<u64>,
    pub failures: u32,
    pub lock: Option<Lock>,
    pub sequence: u64,
    pub created_at: UnixMicros,
    pub changed_at: UnixMicros,
}

impl std::fmt::Debug for FactorRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FactorRecord")
            .field("factor_id", &self.factor_id)
            .field("state", &self.state)
            .field("params", &self.params)
            .field("last_step", &self.last_step)
            .field("failures", &self.failures)
            .field("lock", &self.lock)
            .field("sequence", &self.sequence)
            .finish_non_exhaustive()
    }
}

impl FactorRecord {
    pub fn active_lock(&self, now: UnixMicros) -> Option<Lock> {
        self.lock.filter(|lock| lock.is_active(now))
    }

    pub fn admit(&self, purpose: Purpose, now: UnixMicros) -> Result<(), OtpError> {
        admit(self.state, self.lock, purpose, now)
    }
}

/// A code attempt as the store commits it: the code was compared by the caller, against the
/// enrollment `factor_id`, and matched `matched_step` (`None`: a wrong code).
#[derive(Debug, Clone, Copy)]
pub struct Attempt {
    /// The enrollment the code was checked against (stale caches are caught by it).
    pub factor_id: FactorId,
    pub purpose: Purpose,
    /// The time step the code matched, or `None` for a wrong code.
    pub matched_step: Option<u64>,
    pub policy: LockoutPolicy,
}

/// What the attempt rule decides about a stored factor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptDecision {
    /// No factor: nothing changes.
    Absent,
    /// The factor is not in the state the purpose needs: nothing changes.
    WrongState(FactorState),
    /// The factor was re-enrolled since the code was compared: nothing changes.
    Stale,
    /// Locked: nothing compared, nothing consumed.
    Locked(Lock),
    /// Accepted: READY, the replay marker at `step`, no failures, no lock.
    Accept { step: u64 },
    /// A wrong, replayed or old code: `failures` in a row now, and the lock they set.
    Reject {
        failures: u32,
        lock: Option<Lock>,
        replayed: bool,
    },
}

impl AttemptDecision {
    /// The verdict of a committed decision at `sequence` and `now`; `None` if it commits
    /// nothing.
    pub fn verdict(&self, sequence: u64, now: UnixMicros) -> Option<AttemptVerdict> {
        match *self {
            Self::Accept { .. } => Some(AttemptVerdict::Accepted {
                sequence,
                changed_at: now,
            }),
            Self::Reject {
                failures,
                lock,
                replayed,
            } => Some(AttemptVerdict::Rejected {
                failures,
                lock,
                replayed,
            }),
            _ => None,
        }
    }
}

/// The attempt rule, `(stored factor, attempt, now) -> decision`; `FactorRecord::apply` makes
/// the new state from it. In order: a factor must exist, be in the purpose's state and be
/// the enrollment the code was compared against; an active lock refuses without counting;
/// an expired lock starts a fresh count; a code is accepted only for a step above the last
/// accepted one (RFC 6238 5.2), and anything else, a replay included (ASVS V2.8.5), is a
/// failure, which locks at the policy's maximum.
pub fn decide_attempt(
    stored: Option<&FactorRecord>,
    attempt: &Attempt,
    now: UnixMicros,
) -> AttemptDecision {
    let Some(factor) = stored else {
        return AttemptDecision::Absent;
    };
    if factor.state != attempt.purpose.required_state() {
        return AttemptDecision::WrongState(factor.state);
    }
    if factor.factor_id != attempt.factor_id {
        return AttemptDecision::Stale;
    }
    if let Some(lock) = factor.active_lock(now) {
        return AttemptDecision::Locked(lock);
    }
    // An expired lock starts a fresh count.
    let failures = if factor.lock.is_some() {
        0
    } else {
        factor.failures
    };
    match attempt.matched_step {
        Some(step) if factor.last_step.is_none_or(|last| step > last) => {
            AttemptDecision::Accept { step }
        }
        matched => {
            let failures = failures.saturating_add(1);
            AttemptDecision::Reject {
                failures,
                lock: attempt.policy.lock_after(failures, now),
                replayed: matched.is_some(),
            }
        }
    }
}

impl FactorRecord {
    /// The factor after a committed decision, at `sequence` and `now`. Decisions that do not
    /// commit leave it as it is.
    pub fn apply(&mut self, decision: &AttemptDecision, sequence: u64, now: UnixMicros) {
        match *decision {
            AttemptDecision::Accept { step } => {
                self.state = FactorState::Ready;
                self.last_step = Some(step);
                self.failures = 0;
                self.lock = None;
            }
            AttemptDecision::Reject { failures, lock, .. } => {
                self.failures = failures;
                self.lock = lock;
            }
            _ => return,
        }
        self.sequence = sequence;
        self.changed_at = now;
    }
}

/// The outcome of an attempt once committed by the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptVerdict {
    Accepted {
        sequence: u64,
        changed_at: UnixMicros,
    },
    Rejected {
        failures: u32,
        lock: Option<Lock>,
        replayed: bool,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(state: FactorState, lock: Option<Lock>) -> FactorRecord {
        FactorRecord {
            factor_id: FactorId::from_random([7; 16]),
            state,
            params: TotpParams::default(),
            sealed_secret: vec![],
            last_step: None,
            failures: 0,
            lock,
            sequence: 1,
            created_at: UnixMicros(0),
            changed_at: UnixMicros(0),
        }
    }

    const NOW: UnixMicros = UnixMicros::from_secs(1_700_000_000);

    #[test]
    fn state_is_checked_before_lock() {
        let ready_locked = record(FactorState::Ready, Some(Lock::UntilUnlocked));
        assert_eq!(
            ready_locked.admit(Purpose::Enrollment, NOW),
            Err(OtpError::FactorAlreadyReady)
        );
        assert_eq!(
            ready_locked.admit(Purpose::Login, NOW),
            Err(OtpError::FactorLocked)
        );
        let not_ready = record(FactorState::NotReady, None);
        assert_eq!(
            not_ready.admit(Purpose::Login, NOW),
            Err(OtpError::FactorNotReady)
        );
        assert_eq!(not_ready.admit(Purpose::Enrollment, NOW), Ok(()));
    }

    fn login(matched_step: Option<u64>, max_attempts: u32) -> Attempt {
        Attempt {
            factor_id: FactorId::from_random([7; 16]),
            purpose: Purpose::Login,
            matched_step,
            policy: LockoutPolicy {
                max_attempts,
                lock_duration_micros: 60_000_000,
                show_failures: true,
            },
        }
    }

    #[test]
    fn a_code_is_accepted_once_and_a_replay_is_a_failure() {
        let mut factor = record(FactorState::Ready, None);
        let accepted = decide_attempt(Some(&factor), &login(Some(10), 3), NOW);
        assert_eq!(accepted, AttemptDecision::Accept { step: 10 });
        factor.apply(&accepted, 2, NOW);
        assert_eq!((factor.last_step, factor.sequence), (Some(10), 2));
        for step in [10, 9] {
            assert_eq!(
                decide_attempt(Some(&factor), &login(Some(step), 3), NOW),
                AttemptDecision::Reject {
                    failures: 1,
                    lock: None,
                    replayed: true
                }
            );
        }
        assert_eq!(
            decide_attempt(Some(&factor), &login(Some(11), 3), NOW),
            AttemptDecision::Accept { step: 11 }
        );
    }

    #[test]
    fn failures_lock_at_the_maximum_and_an_expired_lock_starts_afresh() {
        let mut factor = record(FactorState::Ready, None);
        factor.failures = 1;
        let until = Lock::Until(NOW.saturating_add_micros(60_000_000));
        let locking = decide_attempt(Some(&factor), &login(None, 2), NOW);
        assert_eq!(
            locking,
            AttemptDecision::Reject {
                failures: 2,
                lock: Some(until),
                replayed: false
            }
        );
        factor.apply(&locking, 3, NOW);
        assert_eq!(
            decide_attempt(Some(&factor), &login(Some(10), 2), NOW),
            AttemptDecision::Locked(until)
        );
        let later = NOW.saturating_add_micros(60_000_000);
        assert_eq!(
            decide_attempt(Some(&factor), &login(None, 2), later),
            AttemptDecision::Reject {
                failures: 1,
                lock: None,
                replayed: false
            }
        );
        let mut other = login(Some(10), 2);
        other.factor_id = FactorId::from_random([8; 16]);
        assert_eq!(
            decide_attempt(Some(&factor), &other, later),
            AttemptDecision::Stale
        );
        assert_eq!(decide_attempt(None, &other, later), AttemptDecision::Absent);
    }

    #[test]
    fn locks_expire_at_their_time() {
        let until = NOW.saturating_add_micros(1);
        let locked = record(FactorState::Ready, Some(Lock::Until(until)));
        assert_eq!(
            locked.admit(Purpose::Login, NOW),
            Err(OtpError::FactorLocked)
        );
        assert_eq!(locked.admit(Purpose::Login, until), Ok(()));
    }

    #[test]
    fn lockout_policy() {
        let policy = LockoutPolicy {
            max_attempts: 3,
            lock_duration_micros: 60_000_000,
            show_failures: true,
        };
        assert_eq!(policy.lock_after(2, NOW), None);
        assert_eq!(
            policy.lock_after(3, NOW),
            Some(Lock::Until(NOW.saturating_add_micros(60_000_000)))
        );
        let forever = LockoutPolicy {
            lock_duration_micros: 0,
            ..policy
        };
        assert_eq!(forever.lock_after(3, NOW), Some(Lock::UntilUnlocked));
        let never = LockoutPolicy {
            max_attempts: 0,
            ..policy
        };
        assert_eq!(never.lock_after(1_000, NOW), None);
        assert_eq!(
            policy.invalid_code(2),
            OtpError::InvalidCode(Some(FailedAttempts {
                failed: 2,
                remaining: 1
            }))
        );
        let hidden = LockoutPolicy {
            show_failures: false,
            ..policy
        };
        assert_eq!(hidden.invalid_code(2), OtpError::InvalidCode(None));
        // A policy that never locks has no attempts to count down.
        let never = LockoutPolicy {
            max_attempts: 0,
            ..policy
        };
        assert_eq!(never.invalid_code(2), OtpError::InvalidCode(None));
    }

    #[test]
    fn stored_forms_round_trip() {
        for lock in [
            Lock::UntilUnlocked,
            Lock::Until(NOW),
            Lock::Until(UnixMicros(0)),
        ] {
            assert_eq!(Lock::from_stored(lock.as_stored()), lock);
        }
        for state in [FactorState::NotReady, FactorState::Ready] {
            assert_eq!(FactorState::from_stored(state.as_stored()), Some(state));
        }
        assert_eq!(FactorState::from_stored(0), None);
    }

    #[test]
    fn purposes_name_themselves_as_the_metrics_do() {
        // The `purpose` label of tessera_otp_attempts_total (README, dashboard, alerts).
        assert_eq!(Purpose::Enrollment.as_str(), "enroll");
        assert_eq!(Purpose::Login.as_str(), "login");
    }

    #[test]
    fn a_record_prints_everything_but_its_sealed_secret() {
        let mut stored = record(FactorState::Ready, Some(Lock::UntilUnlocked));
        stored.sealed_secret = b"SEALED-BYTES".to_vec();
        let printed = format!("{stored:?}");
        assert_eq!(
            printed,
            "FactorRecord { factor_id: FactorId(07070707070707070707070707070707), \
             state: Ready, params: TotpParams { algorithm: Sha1, digits: 6, period_secs: 30 }, \
             last_step: None, failures: 0, lock: Some(UntilUnlocked), sequence: 1, .. }"
        );
        assert_eq!(format!("{:?}", FactorId::Legacy(42)), "FactorId(legacy 42)");
    }
}
