//! The operations on a user's recovery codes: generate (ZITADEL's GenerateRecoveryCodes),
//! use one at login in place of a TOTP code, and remove them all. A code is made here, shown
//! once, and kept only as its keyed hash (`KeyRing::recovery_hash`); the store uses it up
//! with the lockout in one atomic step (`store/lua/redeem_code.lua`).

use rand::TryRngCore;
use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

use super::operation::{OnUser, Operation, store_error};
use super::otp_factor::SubmitCode;
use crate::domain::recovery::{self, RANDOM_BYTES_PER_CODE, RecoveryCode};
use crate::domain::{Details, FactorState, OtpError, Purpose};
use crate::metrics::Metrics;
use crate::store::{AddCodesOutcome, NewCodes, RedeemOutcome, Redemption, RemoveCodesOutcome};

/// Who asks for codes, which decides whether a TOTP code must come with the request.
pub enum Requester {
    /// The user: with a READY TOTP factor, a current code of it, so that a stolen access
    /// token alone cannot mint codes that stand in for the second factor.
    User { totp_code: Option<SecretString> },
    /// An admin of the user's organization: no code.
    Admin,
}

/// GenerateRecoveryCodes: `count` new codes (`None`: the organization's default), added to
/// those left (at most `MAX_CODES` held).
pub struct GenerateCodes {
    pub count: Option<u32>,
    pub requester: Requester,
}

pub struct GeneratedCodes {
    pub details: Details,
    /// Shown once, never again; wiped on drop.
    pub codes: Vec<RecoveryCode>,
}

impl Operation for GenerateCodes {
    type Output = GeneratedCodes;
    // It creates secrets, and may check a TOTP code.
    const COUNTS_FOR_USER: bool = true;

    async fn run(self, on: OnUser) -> Result<GeneratedCodes, OtpError> {
        let policy = on.policy().await?;
        let count = self.count.unwrap_or_else(|| policy.recovery_codes());
        if let Requester::User { totp_code } = self.requester {
            // Read fresh: a cached NOT_READY copy must not spare the code.
            let user = on.read_user().await?;
            let ready = user
                .factor
                .is_some_and(|factor| factor.state == FactorState::Ready);
            if ready {
                let code = totp_code.ok_or(OtpError::TotpCodeRequired)?;
                // A generation that will be refused must not spend the TOTP code. (The store
                // decides again: another generation may come in between.)
                recovery::may_add(user.recovery_codes, count, recovery::MAX_CODES)
                    .map_err(|_| OtpError::RecoveryCodesMaxExceeded)?;
                // The proof is a login check like any other: counted, replay-protected,
                // refused while locked.
                let purpose = Purpose::Login;
                SubmitCode { code, purpose }.run(on.again()).await?;
            }
        }
        let codes = new_codes(count)?;
        let keys = &on.deps().keys;
        let key_id = keys.sealing_key_id();
        let (org, user) = (&on.key.org, &on.key.user);
        let fields = codes
            .iter()
            .map(|code| {
                keys.recovery_hash(key_id, org, user, &code.normalized())
                    .map(|hash| recovery::stored_field(key_id, &hash))
                    .ok_or(OtpError::Internal)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let new = NewCodes {
            fields,
            max: recovery::MAX_CODES,
        };
        let stamp = on.stamp(&policy);
        let added = on
            .deps()
            .store
            .add_recovery_codes(&on.key, new, &stamp, on.deadline);
        match added.await.map_err(store_error)? {
            AddCodesOutcome::Added { sequence, .. } => {
                on.note_events(&stamp);
                on.deps()
                    .metrics
                    .recovery_code_events
                    .with_label_values(&["generated"])
                    .inc_by(u64::from(count));
                Ok(GeneratedCodes {
                    details: Details::changed(sequence, on.now, on.key.org.clone()),
                    codes,
                })
            }
            AddCodesOutcome::TooMany { .. } => Err(OtpError::RecoveryCodesMaxExceeded),
        }
    }
}

/// `count` distinct codes from the operating system's generator, straight into buffers that
/// are wiped on drop.
fn new_codes(count: u32) -> Result<Vec<RecoveryCode>, OtpError> {
    let wanted = usize::try_from(count).map_err(|_| OtpError::RecoveryCodeCountInvalid)?;
    let mut codes = Vec::with_capacity(wanted);
    while codes.len() < wanted {
        let mut random = Zeroizing::new([0u8; RANDOM_BYTES_PER_CODE]);
        rand::rngs::OsRng
            .try_fill_bytes(random.as_mut())
            .map_err(|err| {
                tracing::error!(error = %err, "the operating system gave no random bytes");
                OtpError::Internal
            })?;
        let code = RecoveryCode::from_random(&random);
        // Two equal codes in 50 bits are all but impossible; if they come, draw again
        // rather than show the user a code twice.
        if !codes.contains(&code) {
            codes.push(code);
        }
    }
    Ok(codes)
}

/// A recovery code typed at login, in place of a TOTP code.
pub struct RedeemCode {
    pub code: SecretString,
}

/// The login check's answer to a recovery code: the change, and the codes left.
pub struct Redeemed {
    pub details: Details,
    pub remaining: u32,
}

impl Operation for RedeemCode {
    type Output = Redeemed;
    const COUNTS_FOR_USER: bool = true;

    fn rate_limited(&self, metrics: &Metrics) {
        count(metrics, "rate_limited");
    }

    async fn run(self, on: OnUser) -> Result<Redeemed, OtpError> {
        let metrics = &on.deps().metrics;
        let keys = &on.deps().keys;
        let (org, user) = (&on.key.org, &on.key.user);
        // A typed text that cannot be a code matches nothing, and counts as a wrong code.
        let candidates = recovery::normalize(self.code.expose_secret())
            .map(|code| {
                keys.key_ids()
                    .filter_map(|key_id| {
                        let hash = keys.recovery_hash(key_id, org, user, &code)?;
                        Some(recovery::stored_field(key_id, &hash))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let org_policy = on.policy().await?;
        let stamp = on.stamp(&org_policy);
        let policy = org_policy.lockout();
        let redemption = Redemption { candidates, policy };
        let outcome = on
            .deps()
            .store
            .redeem_recovery_code(&on.key, redemption, &stamp, on.deadline)
            .await
            .map_err(|err| {
                count(metrics, "unavailable");
                store_error(err)
            })?;
        if let RedeemOutcome::Accepted { .. } | RedeemOutcome::Rejected { .. } = outcome {
            on.note_events(&stamp);
        }
        match outcome {
            RedeemOutcome::Accepted {
                sequence,
                changed_at,
                remaining,
            } => {
                count(metrics, "accepted");
                on.update_cached(|cached| cached.lock = None);
                Ok(Redeemed {
                    details: Details::changed(sequence, changed_at, on.key.org.clone()),
                    remaining,
                })
            }
            RedeemOutcome::Rejected { failures, lock } => {
                count(metrics, "invalid");
                tracing::warn!("a recovery code that is not one of the user's came at login");
                if lock.is_some() {
                    metrics.lock_events.with_label_values(&["locked"]).inc();
                    on.note_lock(true);
                }
                on.update_cached(|cached| cached.lock = lock);
                Err(policy.invalid_recovery_code(failures))
            }
            RedeemOutcome::Locked(lock) => {
                count(metrics, "locked");
                on.update_cached(|cached| cached.lock = Some(lock));
                on.note_lock(true);
                Err(OtpError::FactorLocked)
            }
            RedeemOutcome::NoCodes => {
                count(metrics, "no_codes");
                Err(OtpError::RecoveryCodesNotAdded)
            }
        }
    }
}

fn count(metrics: &Metrics, outcome: &str) {
    metrics
        .recovery_code_checks
        .with_label_values(&[outcome])
        .inc();
}

/// RemoveRecoveryCodes: all of the user's codes.
pub struct RemoveCodes;

impl Operation for RemoveCodes {
    type Output = Details;
    const COUNTS_FOR_USER: bool = false;

    async fn run(self, on: OnUser) -> Result<Details, OtpError> {
        let stamp = on.stamp(&*on.policy().await?);
        let removed = on
            .deps()
            .store
            .remove_recovery_codes(&on.key, &stamp, on.deadline)
            .await;
        match removed.map_err(store_error)? {
            RemoveCodesOutcome::Removed {
                sequence,
                changed_at,
            } => {
                on.note_events(&stamp);
                on.deps()
                    .metrics
                    .recovery_code_events
                    .with_label_values(&["removed"])
                    .inc();
                Ok(Details::changed(sequence, changed_at, on.key.org.clone()))
            }
            RemoveCodesOutcome::NoCodes => Err(OtpError::RecoveryCodesNotAdded),
            RemoveCodesOutcome::Locked(_) => Err(OtpError::RecoveryCodesLocked),
        }
    }
}
