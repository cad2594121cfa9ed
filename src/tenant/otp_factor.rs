//! The I/O side of each message: runs as a future that does not hold the actor. It reads
//! through the actor's cache, lets the domain decide and commits with one store call.
//! Every answer it derives from a cached copy that says "no" is confirmed by a fresh read.

use std::sync::Arc;
use std::time::Instant;

use rand::{RngCore, TryRngCore};
use secrecy::{ExposeSecret, SecretString};

use super::TenantDeps;
use super::messages::SubmitCode;
use crate::domain::factor::AttemptVerdict;
use crate::domain::totp::NormalizedCode;
use crate::domain::{
    Details, FactorId, FactorState, Lock, OtpError, OtpPolicy, Purpose, TotpParams, UnixMicros,
};
use crate::seal::PlainSecret;
use crate::store::{
    AddOutcome, Attempt, AttemptOutcome, ChangeOutcome, NewFactor, StoreError, UserKey,
};

/// What the actor caches per user: the enrollment's immutable part and a hint of its lock.
/// The secret stays sealed here and is opened for each check only (about 300 ns, see
/// `benches/micro.rs`), so that a core dump or a read of the process's memory finds no
/// cache full of plain secrets. The store checks the factor id on every commit, and ids are
/// never reused, so a stale copy is harmless, even one that outlived the store's copy.
#[derive(Clone)]
pub(crate) struct CachedFactor {
    pub factor_id: FactorId,
    pub state: FactorState,
    pub params: TotpParams,
    pub sealed_secret: Arc<[u8]>,
    pub lock: Option<Lock>,
}

impl CachedFactor {
    fn admit(&self, purpose: Purpose, now: UnixMicros) -> Result<(), OtpError> {
        crate::domain::factor::admit(self.state, self.lock, purpose, now)
    }
}

/// How the actor's cache changes after a future completes.
pub(crate) enum CacheUpdate {
    Keep,
    Put(CachedFactor),
    Evict,
}

const SECRET_LEN: usize = 20;
const MAX_ROUNDS: usize = 3;

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

pub(crate) fn store_error(err: StoreError) -> OtpError {
    tracing::warn!(error = %err, "store call failed");
    OtpError::Unavailable
}

async fn read(
    deps: &TenantDeps,
    key: &UserKey,
    deadline: Instant,
) -> Result<Option<CachedFactor>, OtpError> {
    let record = deps.store.load(key, deadline).await.map_err(store_error)?;
    Ok(record.map(|record| CachedFactor {
        factor_id: record.factor_id,
        state: record.state,
        params: record.params,
        sealed_secret: record.sealed_secret.into(),
        lock: record.lock,
    }))
}

/// Opens the factor's secret for one comparison; the plain copy is wiped when it drops, at
/// the end of this call (`PlainSecret` zeroes its bytes, totp-rs its own copy).
fn matching_step(
    deps: &TenantDeps,
    key: &UserKey,
    factor: &CachedFactor,
    code: &SecretString,
    now: UnixMicros,
    skew: u8,
) -> Result<Option<u64>, OtpError> {
    let Some(code) = NormalizedCode::parse(code.expose_secret(), factor.params.digits) else {
        return Ok(None);
    };
    let secret: PlainSecret = deps
        .keys
        .open(&factor.sealed_secret, &key.org, &key.user)
        .map_err(|err| {
            tracing::error!(error = %err, "a stored OTP secret does not open");
            OtpError::Internal
        })?;
    Ok(factor
        .params
        .matching_step(secret.expose_secret(), &code, now.unsigned_secs(), skew))
}

pub(crate) async fn submit_code(
    deps: Arc<TenantDeps>,
    policy: Arc<OtpPolicy>,
    key: UserKey,
    msg: SubmitCode,
    cached: Option<CachedFactor>,
) -> (Result<Details, OtpError>, CacheUpdate) {
    let SubmitCode {
        code,
        purpose,
        now,
        deadline,
        ..
    } = msg;
    let mut from_cache = cached.is_some();
    let mut current = match cached {
        Some(factor) => Some(factor),
        None => match read(&deps, &key, deadline).await {
            Ok(factor) => factor,
            Err(err) => return (Err(err), CacheUpdate::Keep),
        },
    };
    for _ in 0..MAX_ROUNDS {
        let Some(factor) = current.take() else {
            return (Err(purpose.state_error(None)), CacheUpdate::Evict);
        };
        if let Err(refused) = factor.admit(purpose, now) {
            if from_cache {
                from_cache = false;
                current = match read(&deps, &key, deadline).await {
                    Ok(fresh) => fresh,
                    Err(err) => return (Err(err), CacheUpdate::Keep),
                };
                continue;
            }
            // A locked factor compares no code and consumes nothing.
            if refused == OtpError::FactorLocked {
                deps.metrics.attempt(purpose, "locked");
            }
            return (Err(refused), CacheUpdate::Put(factor));
        }
        let matched_step = match matching_step(&deps, &key, &factor, &code, now, policy.skew) {
            Ok(step) => step,
            Err(err) => return (Err(err), CacheUpdate::Evict),
        };
        let attempt = Attempt {
            factor_id: factor.factor_id,
            purpose,
            matched_step,
            policy: policy.lockout,
        };
        let outcome = match deps.store.attempt(&key, attempt, now, deadline).await {
            Ok(outcome) => outcome,
            Err(err) => {
                deps.metrics.attempt(purpose, "unavailable");
                return (Err(store_error(err)), CacheUpdate::Keep);
            }
        };
        if !matches!(outcome, AttemptOutcome::Stale) {
            deps.metrics
                .attempt(purpose, outcome_label(purpose, &outcome));
        }
        if let AttemptOutcome::Committed(AttemptVerdict::Rejected { replayed: true, .. }) = outcome
        {
            // A sign that someone else saw the code (ASVS V2.8.5): logged, and counted.
            tracing::warn!(purpose = ?purpose, "a code that was already used came again");
        }
        if let AttemptOutcome::Committed(AttemptVerdict::Rejected { lock: Some(_), .. }) = outcome {
            deps.metrics
                .lock_events
                .with_label_values(&["locked"])
                .inc();
        }
        let org = key.org.clone();
        return match outcome {
            AttemptOutcome::Committed(AttemptVerdict::Accepted {
                sequence,
                changed_at,
            }) => {
                let ready = CachedFactor {
                    state: FactorState::Ready,
                    lock: None,
                    ..factor
                };
                (
                    Ok(Details::changed(sequence, changed_at, org)),
                    CacheUpdate::Put(ready),
                )
            }
            AttemptOutcome::Committed(AttemptVerdict::Rejected { failures, lock, .. }) => (
                Err(policy.lockout.invalid_code(failures)),
                CacheUpdate::Put(CachedFactor { lock, ..factor }),
            ),
            AttemptOutcome::Locked(lock) => (
                Err(OtpError::FactorLocked),
                CacheUpdate::Put(CachedFactor {
                    lock: Some(lock),
                    ..factor
                }),
            ),
            AttemptOutcome::Absent => (Err(purpose.state_error(None)), CacheUpdate::Evict),
            AttemptOutcome::WrongState(state) => {
                (Err(purpose.state_error(Some(state))), CacheUpdate::Evict)
            }
            AttemptOutcome::Stale => {
                from_cache = false;
                current = match read(&deps, &key, deadline).await {
                    Ok(fresh) => fresh,
                    Err(err) => return (Err(err), CacheUpdate::Evict),
                };
                continue;
            }
        };
    }
    // Re-enrolled under our feet on every round: let the client try again.
    (Err(OtpError::Unavailable), CacheUpdate::Evict)
}

pub(crate) struct EnrollOutput {
    pub secret_base32: SecretString,
    pub details: Details,
}

pub(crate) async fn enroll(
    deps: Arc<TenantDeps>,
    policy: Arc<OtpPolicy>,
    key: UserKey,
    now: UnixMicros,
    deadline: Instant,
) -> (Result<EnrollOutput, OtpError>, CacheUpdate) {
    // Straight from the operating system into the buffer that is wiped on drop: the thread's
    // `rand::rng()` would keep a copy of the secret in its output buffer until it refills.
    let mut secret = zeroize::Zeroizing::new(vec![0u8; SECRET_LEN]);
    if let Err(err) = rand::rngs::OsRng.try_fill_bytes(&mut secret) {
        tracing::error!(error = %err, "the operating system gave no random bytes");
        return (Err(OtpError::Internal), CacheUpdate::Keep);
    }
    let mut id = [0u8; 16];
    rand::rng().fill_bytes(&mut id);
    let factor_id = FactorId::from_random(id);
    let sealed_secret = match deps.keys.seal(&secret, &key.org, &key.user) {
        Ok(sealed) => sealed,
        Err(err) => {
            tracing::error!(error = %err, "sealing a new OTP secret failed");
            return (Err(OtpError::Internal), CacheUpdate::Keep);
        }
    };
    let params = policy.params;
    let factor = NewFactor {
        factor_id,
        params,
        sealed_secret: sealed_secret.clone(),
    };
    match deps.store.add(&key, factor, now, deadline).await {
        Ok(AddOutcome::Added {
            sequence,
            created_at,
        }) => {
            let secret_base32 = SecretString::from(data_encoding::BASE32_NOPAD.encode(&secret));
            let cached = CachedFactor {
                factor_id,
                state: FactorState::NotReady,
                params,
                sealed_secret: sealed_secret.into(),
                lock: None,
            };
            let details = Details::created(sequence, created_at, key.org.clone());
            (
                Ok(EnrollOutput {
                    secret_base32,
                    details,
                }),
                CacheUpdate::Put(cached),
            )
        }
        Ok(AddOutcome::AlreadyReady) => (Err(OtpError::FactorAlreadyExists), CacheUpdate::Keep),
        Err(err) => (Err(store_error(err)), CacheUpdate::Keep),
    }
}

pub(crate) async fn remove(
    deps: Arc<TenantDeps>,
    key: UserKey,
    now: UnixMicros,
    deadline: Instant,
) -> Result<Details, OtpError> {
    match deps
        .store
        .remove(&key, now, deadline)
        .await
        .map_err(store_error)?
    {
        ChangeOutcome::Changed {
            sequence,
            changed_at,
        } => Ok(Details::changed(sequence, changed_at, key.org)),
        ChangeOutcome::Absent | ChangeOutcome::NotLocked => Err(OtpError::RemoveNotFound),
    }
}

pub(crate) async fn unlock(
    deps: Arc<TenantDeps>,
    key: UserKey,
    now: UnixMicros,
    deadline: Instant,
) -> Result<Details, OtpError> {
    match deps
        .store
        .unlock(&key, now, deadline)
        .await
        .map_err(store_error)?
    {
        ChangeOutcome::Changed {
            sequence,
            changed_at,
        } => {
            deps.metrics
                .lock_events
                .with_label_values(&["unlocked"])
                .inc();
            Ok(Details::changed(sequence, changed_at, key.org))
        }
        ChangeOutcome::Absent => Err(OtpError::FactorNotFound),
        ChangeOutcome::NotLocked => Err(OtpError::NotLocked),
    }
}

pub(crate) async fn list(
    deps: Arc<TenantDeps>,
    key: UserKey,
    deadline: Instant,
) -> Result<Vec<super::FactorView>, OtpError> {
    let record = deps.store.load(&key, deadline).await.map_err(store_error)?;
    Ok(record
        .filter(|r| r.state == FactorState::Ready)
        .map(|r| super::FactorView { state: r.state })
        .into_iter()
        .collect())
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
        params.algorithm, params.digits, params.period_secs
    )
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
