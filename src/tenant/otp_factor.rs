//! The operations on a user's OTP factor: each is the value a caller sends and its `run`.
//! They read through the actor's cache, let the domain decide and commit with one store
//! call. Every answer derived from a cached copy that says "no" is confirmed by a fresh read.

use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};

use super::operation::{CachedFactor, OnUser, Operation, store_error};
use crate::domain::factor::AttemptVerdict;
use crate::domain::totp::NormalizedCode;
use crate::domain::{Details, FactorId, FactorState, OtpError, Purpose, TotpParams};
use crate::metrics::Metrics;
use crate::seal::PlainSecret;
use crate::store::{
    AddOutcome, Attempt, AttemptOutcome, Attempted, ChangeOutcome, FeedDue, NewFactor, UserRecord,
};

/// AddMyAuthFactorOTP: a new secret, NOT_READY until a code confirms it. Replaces a factor
/// that is not ready yet; refused once one is.
pub struct Enroll {
    /// The account shown by authenticator apps.
    pub account: String,
}

pub struct Enrollment {
    /// Base32 without padding; returned once, never again.
    pub secret: SecretString,
    pub uri: SecretString,
    pub details: Details,
}

const SECRET_LEN: usize = 20;

impl Operation for Enroll {
    type Output = Enrollment;
    const COUNTS_FOR_USER: bool = true;

    async fn run(self, on: OnUser) -> Result<Enrollment, OtpError> {
        let secret = crate::seal::fresh_secret(SECRET_LEN)?;
        let mut id = [0u8; 16];
        rand::rng().fill_bytes(&mut id);
        let factor_id = FactorId::from_random(id);
        let key = &on.key;
        let sealed_secret = on
            .deps()
            .keys
            .seal(&secret, &key.org, &key.user)
            .map_err(|err| {
                tracing::error!(error = %err, "sealing a new OTP secret failed");
                OtpError::Internal
            })?;
        let policy = on.policy().await?;
        let params = policy.params();
        let factor = NewFactor {
            factor_id,
            params,
            sealed_secret: sealed_secret.clone(),
        };
        let stamp = on.stamp(&policy);
        let added = on.deps().store.add(key, factor, &stamp, on.deadline).await;
        let (sequence, created_at) = match added.map_err(store_error)? {
            AddOutcome::Added {
                sequence,
                created_at,
            } => (sequence, created_at),
            AddOutcome::AlreadyReady => return Err(OtpError::FactorAlreadyExists),
        };
        on.note_events(&stamp);
        on.remember(CachedFactor {
            factor_id,
            state: FactorState::NotReady,
            params,
            sealed_secret: sealed_secret.into(),
            lock: None,
        });
        let secret_base32 = data_encoding::BASE32_NOPAD.encode(&secret);
        let uri = otpauth_uri(policy.issuer(), &self.account, &params, &secret_base32);
        Ok(Enrollment {
            secret: SecretString::from(secret_base32),
            uri: SecretString::from(uri),
            details: Details::created(sequence, created_at, key.org.clone()),
        })
    }
}

/// VerifyMyAuthFactorOTP (`Purpose::Enrollment`) or the login check (`Purpose::Login`).
pub struct SubmitCode {
    pub code: SecretString,
    pub purpose: Purpose,
}

/// Reads again when the factor changed between read and commit this many times in a row.
const MAX_ROUNDS: usize = 3;

impl Operation for SubmitCode {
    type Output = Details;
    const COUNTS_FOR_USER: bool = true;

    fn rate_limited(&self, metrics: &Metrics) {
        metrics.attempt(self.purpose, "rate_limited");
    }

    async fn run(self, on: OnUser) -> Result<Details, OtpError> {
        let SubmitCode { code, purpose } = self;
        let metrics = &on.deps().metrics;
        let policy = on.policy().await?;
        let stamp = on.stamp(&policy);
        let cached = on.cached();
        let mut from_cache = cached.is_some();
        if from_cache {
            metrics.factor_cache_hits.inc();
        } else {
            metrics.factor_cache_misses.inc();
        }
        let mut current = match cached {
            Some(factor) => Some(factor),
            None => on.read().await?,
        };
        for _ in 0..MAX_ROUNDS {
            let Some(factor) = current.take() else {
                on.forget();
                return Err(purpose.state_error(None));
            };
            if let Err(refused) =
                crate::domain::factor::admit(factor.state, factor.lock, purpose, on.now)
            {
                if from_cache {
                    from_cache = false;
                    current = on.read().await?;
                    continue;
                }
                // A locked factor compares no code and consumes nothing.
                if refused == OtpError::FactorLocked {
                    metrics.attempt(purpose, "locked");
                }
                on.remember(factor);
                return Err(refused);
            }
            let matched_step =
                matching_step(&on, &factor, &code, policy.skew()).inspect_err(|_| on.forget())?;
            let attempt = Attempt {
                factor_id: factor.factor_id,
                purpose,
                matched_step,
                policy: policy.lockout(),
            };
            let Attempted { outcome, feed } = match on
                .deps()
                .store
                .attempt(&on.key, attempt, &stamp, on.deadline)
                .await
            {
                Ok(attempted) => attempted,
                Err(err) => {
                    metrics.attempt(purpose, "unavailable");
                    return Err(store_error(err));
                }
            };
            if !matches!(outcome, AttemptOutcome::Stale) {
                metrics.attempt(purpose, outcome_label(purpose, &outcome));
            }
            if let (AttemptOutcome::Committed(_), FeedDue::Copy(written)) = (&outcome, feed) {
                on.note_written(&stamp, written);
            }
            if let AttemptOutcome::Committed(AttemptVerdict::Rejected { replayed: true, .. }) =
                outcome
            {
                // A sign that someone else saw the code (ASVS V2.8.5): logged, and counted.
                tracing::warn!(purpose = ?purpose, "a code that was already used came again");
            }
            if let AttemptOutcome::Committed(AttemptVerdict::Rejected { lock: Some(_), .. }) =
                outcome
            {
                metrics.lock_events.with_label_values(&["locked"]).inc();
            }
            // A new lock enters the organization's index; a refusal while locked notes it
            // again, which heals an entry that a crash lost before it was written.
            if let AttemptOutcome::Committed(AttemptVerdict::Rejected { lock: Some(_), .. })
            | AttemptOutcome::Locked(_) = outcome
            {
                on.note_lock(true);
            }
            return match outcome {
                AttemptOutcome::Committed(AttemptVerdict::Accepted {
                    sequence,
                    changed_at,
                }) => {
                    on.remember(CachedFactor {
                        state: FactorState::Ready,
                        lock: None,
                        ..factor
                    });
                    Ok(Details::changed(sequence, changed_at, on.key.org.clone()))
                }
                AttemptOutcome::Committed(AttemptVerdict::Rejected { failures, lock, .. }) => {
                    on.remember(CachedFactor { lock, ..factor });
                    Err(policy.lockout().invalid_code(failures))
                }
                AttemptOutcome::Locked(lock) => {
                    on.remember(CachedFactor {
                        lock: Some(lock),
                        ..factor
                    });
                    Err(OtpError::FactorLocked)
                }
                AttemptOutcome::Absent => {
                    on.forget();
                    Err(purpose.state_error(None))
                }
                AttemptOutcome::WrongState(state) => {
                    on.forget();
                    Err(purpose.state_error(Some(state)))
                }
                AttemptOutcome::Stale => {
                    from_cache = false;
                    on.forget();
                    current = on.read().await?;
                    continue;
                }
            };
        }
        // Re-enrolled under our feet on every round: let the client try again.
        on.forget();
        Err(OtpError::Unavailable)
    }
}

/// The outcome label of an attempt's answer (`tessera_otp_attempts_total`).
fn outcome_label(purpose: Purpose, outcome: &AttemptOutcome) -> &'static str {
    match outcome {
        AttemptOutcome::Committed(AttemptVerdict::Accepted { .. }) => match purpose {
            Purpose::Enrollment => "verified",
            Purpose::Login => "checked",
        },
        AttemptOutcome::Committed(AttemptVerdict::Rejected { replayed: true, .. }) => "replayed",
        AttemptOutcome::Committed(AttemptVerdict::Rejected { .. }) => "invalid",
        AttemptOutcome::Locked(_) => "locked",
        // A stale copy is read again and decided again; only the final outcome is counted.
        AttemptOutcome::Absent | AttemptOutcome::WrongState(_) | AttemptOutcome::Stale => "refused",
    }
}

/// Opens the factor's secret for one comparison; the plain copy is wiped when it drops, at
/// the end of this call (`PlainSecret` zeroes its bytes, totp-rs its own copy).
fn matching_step(
    on: &OnUser,
    factor: &CachedFactor,
    code: &SecretString,
    skew: u8,
) -> Result<Option<u64>, OtpError> {
    let Some(code) = NormalizedCode::parse(code.expose_secret(), factor.params.digits()) else {
        return Ok(None);
    };
    let key = &on.key;
    let secret: PlainSecret = on
        .deps()
        .keys
        .open(&factor.sealed_secret, &key.org, &key.user)
        .map_err(|err| {
            tracing::error!(error = %err, "a stored OTP secret does not open");
            OtpError::Internal
        })?;
    Ok(factor
        .params
        .matching_step(secret.expose_secret(), &code, on.now.unsigned_secs(), skew))
}

/// RemoveMyAuthFactorOTP and RemoveHumanAuthFactorOTP.
pub struct RemoveFactor;

impl Operation for RemoveFactor {
    type Output = Details;
    const COUNTS_FOR_USER: bool = false;

    async fn run(self, on: OnUser) -> Result<Details, OtpError> {
        let stamp = on.stamp(&*on.policy().await?);
        let removed = on.deps().store.remove(&on.key, &stamp, on.deadline).await;
        // Whatever the outcome, the cached copy may no longer hold.
        on.forget();
        match removed.map_err(store_error)? {
            ChangeOutcome::Changed {
                sequence,
                changed_at,
            } => {
                on.note_events(&stamp);
                Ok(Details::changed(sequence, changed_at, on.key.org.clone()))
            }
            ChangeOutcome::Absent | ChangeOutcome::NotLocked => Err(OtpError::RemoveNotFound),
        }
    }
}

/// UnlockUser (the OTP factor's lock).
pub struct UnlockFactor;

impl Operation for UnlockFactor {
    type Output = Details;
    const COUNTS_FOR_USER: bool = false;

    async fn run(self, on: OnUser) -> Result<Details, OtpError> {
        let stamp = on.stamp(&*on.policy().await?);
        let unlocked = on.deps().store.unlock(&on.key, &stamp, on.deadline).await;
        match unlocked.map_err(store_error)? {
            ChangeOutcome::Changed {
                sequence,
                changed_at,
            } => {
                on.note_events(&stamp);
                on.update_cached(|cached| cached.lock = None);
                on.note_lock(false);
                on.deps()
                    .metrics
                    .lock_events
                    .with_label_values(&["unlocked"])
                    .inc();
                Ok(Details::changed(sequence, changed_at, on.key.org.clone()))
            }
            ChangeOutcome::Absent => Err(OtpError::FactorNotFound),
            ChangeOutcome::NotLocked => Err(OtpError::NotLocked),
        }
    }
}

/// The user's factor, whatever its state, and how many recovery codes the user holds, read
/// fresh; which states a call shows is the call's rule (`service::FactorFilter`).
pub struct ListFactors;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FactorView {
    pub state: FactorState,
}

/// What a user holds: the TOTP factor if any, and the recovery codes left (never the codes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserFactors {
    pub totp: Vec<FactorView>,
    pub recovery_codes: u32,
}

impl Operation for ListFactors {
    type Output = UserFactors;
    const COUNTS_FOR_USER: bool = false;

    async fn run(self, on: OnUser) -> Result<UserFactors, OtpError> {
        let user = on.read_user().await?;
        let totp = user
            .factor
            .map(|factor| FactorView {
                state: factor.state,
            })
            .into_iter()
            .collect();
        Ok(UserFactors {
            totp,
            recovery_codes: user.recovery_codes,
        })
    }
}

/// `otpauth://totp/{Issuer}:{Account}?algorithm=..&digits=..&issuer=..&period=..&secret=..`
pub(crate) fn otpauth_uri(
    issuer: &str,
    account: &str,
    params: &TotpParams,
    secret_base32: &str,
) -> String {
    use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
    // RFC 3986 unreserved characters stay as they are.
    const ESCAPED: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    let issuer = utf8_percent_encode(issuer, ESCAPED);
    let account = utf8_percent_encode(account, ESCAPED);
    format!(
        "otpauth://totp/{issuer}:{account}?algorithm={}&digits={}&issuer={issuer}&period={}&secret={secret_base32}",
        params.algorithm(),
        params.digits(),
        params.period_secs()
    )
}

/// The user's whole record read fresh, for an admin's view of it: the factor, the codes
/// left and where the user stands against lockout.
pub struct InspectUser;

impl Operation for InspectUser {
    type Output = UserRecord;
    const COUNTS_FOR_USER: bool = false;

    async fn run(self, on: OnUser) -> Result<UserRecord, OtpError> {
        on.read_user().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn otpauth_uri_escapes_issuer_and_account() {
        let uri = otpauth_uri(
            "ACME Corp",
            "alice@acme.test",
            &TotpParams::default(),
            "JBSWY3DP",
        );
        assert_eq!(
            uri,
            "otpauth://totp/ACME%20Corp:alice%40acme.test?algorithm=SHA1&digits=6&issuer=ACME%20Corp&period=30&secret=JBSWY3DP"
        );
    }
}
