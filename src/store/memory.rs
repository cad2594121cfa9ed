//! The embedded store of `tessera dev` and tests: the Lua scripts' semantics over a map.
//! One process only; its state ends with the process.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;

use super::policy::policies_from;
use super::{
    AddCodesOutcome, AddOutcome, Attempt, AttemptOutcome, ChangeOutcome, FactorStore,
    LockIndexChange, NewCodes, NewFactor, PolicyChanges, PolicySeed, PolicyWrite, PolicyWritten,
    RedeemOutcome, Redemption, RemoveCodesOutcome, StoreError, UserKey, UserRecord, stored_form,
};
use crate::domain::factor::{AttemptDecision, decide_attempt};
use crate::domain::policy::{StoredPolicies, WriteDecision, decide_write};
use crate::domain::recovery::{RedeemDecision, Standing, decide_redeem, may_add};
use crate::domain::{FactorRecord, FactorState, UnixMicros};

/// Per user: the factor if any; the sequence, which outlives removal (never goes back); the
/// standing against lockout while no factor holds it; and the recovery codes' fields.
#[derive(Default)]
struct Slot {
    factor: Option<FactorRecord>,
    sequence: u64,
    /// The user's failures and lock when there is no factor (removed, or never enrolled);
    /// while there is one, its record holds them, as the hash's `n` and `u` do in Redis.
    standing: Standing,
    codes: BTreeSet<String>,
}

impl Slot {
    fn standing(&self) -> Standing {
        self.factor
            .as_ref()
            .map_or(self.standing, |factor| Standing {
                failures: factor.failures,
                lock: factor.lock,
            })
    }

    fn set_standing(&mut self, standing: Standing) {
        match self.factor.as_mut() {
            Some(factor) => {
                factor.failures = standing.failures;
                factor.lock = standing.lock;
            }
            None => self.standing = standing,
        }
    }

    /// Dates the user's record at `now` with the next sequence, which it returns.
    fn changed(&mut self, now: UnixMicros) -> u64 {
        let sequence = self.next_sequence();
        if let Some(factor) = self.factor.as_mut() {
            factor.sequence = sequence;
            factor.changed_at = now;
        }
        sequence
    }

    /// The next sequence: above the last one and at least the store's clock in microseconds,
    /// as the scripts take it from Redis's `TIME`.
    fn next_sequence(&mut self) -> u64 {
        let clock = u64::try_from(chrono::Utc::now().timestamp_micros()).unwrap_or(0);
        self.sequence = self.sequence.saturating_add(1).max(clock);
        self.sequence
    }
}

/// The organizations' policies as the Redis hashes hold them (field -> value), the change
/// index with its epoch, and the indexes of locked users.
#[derive(Default)]
struct Organizations {
    policies: HashMap<String, HashMap<String, Vec<u8>>>,
    epoch: u64,
    changed: HashMap<String, u64>,
    locked: HashMap<String, BTreeSet<String>>,
}

impl Organizations {
    /// A change of `org`'s policies, as write_policy.lua ends one: the next sequence (at
    /// least the clock's microseconds), and the organization noted under a new epoch.
    fn changed(&mut self, org: &str) -> u64 {
        let hash = self.policies.entry(org.to_owned()).or_default();
        let last = field_number(hash, "q");
        let clock = u64::try_from(chrono::Utc::now().timestamp_micros()).unwrap_or(0);
        let sequence = last.saturating_add(1).max(clock);
        hash.insert("q".into(), sequence.to_string().into_bytes());
        hash.insert("v".into(), b"1".to_vec());
        self.epoch += 1;
        self.changed.insert(org.to_owned(), self.epoch);
        sequence
    }
}

fn field_number(hash: &HashMap<String, Vec<u8>>, name: &str) -> u64 {
    hash.get(name)
        .and_then(|bytes| std::str::from_utf8(bytes).ok()?.parse().ok())
        .unwrap_or(0)
}

/// Sets a part with its dates: created the first time, changed every time.
fn set_part(hash: &mut HashMap<String, Vec<u8>>, field: &str, form: &str, now: UnixMicros) {
    let stamp = now.0.to_string().into_bytes();
    if !hash.contains_key(field) {
        hash.insert(format!("{field}.c"), stamp.clone());
    }
    hash.insert(field.to_owned(), form.as_bytes().to_vec());
    hash.insert(format!("{field}.m"), stamp);
}

#[derive(Default)]
pub struct MemoryStore {
    slots: Mutex<HashMap<UserKey, Slot>>,
    orgs: Mutex<Organizations>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies `change` to the user's slot, unless the deadline has passed (then, as a
    /// script that arrives late, it changes nothing).
    fn with_slot<T>(
        &self,
        key: &UserKey,
        deadline: Instant,
        change: impl FnOnce(&mut Slot) -> T,
    ) -> Result<T, StoreError> {
        let mut slots = self
            .slots
            .lock()
            .map_err(|_| StoreError::Unavailable("memory store poisoned".into()))?;
        if Instant::now() > deadline {
            return Err(StoreError::Timeout);
        }
        Ok(change(slots.entry(key.clone()).or_default()))
    }

    /// As `with_slot`, for the organizations' part.
    fn with_orgs<T>(
        &self,
        deadline: Instant,
        change: impl FnOnce(&mut Organizations) -> T,
    ) -> Result<T, StoreError> {
        let mut orgs = self
            .orgs
            .lock()
            .map_err(|_| StoreError::Unavailable("memory store poisoned".into()))?;
        if Instant::now() > deadline {
            return Err(StoreError::Timeout);
        }
        Ok(change(&mut orgs))
    }
}

#[async_trait]
impl FactorStore for MemoryStore {
    async fn load(
        &self,
        key: &UserKey,
        _deadline: Instant,
    ) -> Result<Option<FactorRecord>, StoreError> {
        let slots = self
            .slots
            .lock()
            .map_err(|_| StoreError::Unavailable("memory store poisoned".into()))?;
        Ok(slots.get(key).and_then(|slot| slot.factor.clone()))
    }

    async fn add(
        &self,
        key: &UserKey,
        factor: NewFactor,
        now: UnixMicros,
        deadline: Instant,
    ) -> Result<AddOutcome, StoreError> {
        self.with_slot(key, deadline, |slot| {
            if slot
                .factor
                .as_ref()
                .is_some_and(|f| f.state == FactorState::Ready)
            {
                return AddOutcome::AlreadyReady;
            }
            let sequence = slot.next_sequence();
            // Failures and the lock are the user's: the new enrollment keeps them.
            let standing = slot.standing();
            slot.factor = Some(FactorRecord {
                factor_id: factor.factor_id,
                state: FactorState::NotReady,
                params: factor.params,
                sealed_secret: factor.sealed_secret,
                last_step: None,
                failures: standing.failures,
                lock: standing.lock,
                sequence,
                created_at: now,
                changed_at: now,
            });
            AddOutcome::Added {
                sequence,
                created_at: now,
            }
        })
    }

    async fn attempt(
        &self,
        key: &UserKey,
        attempt: Attempt,
        now: UnixMicros,
        deadline: Instant,
    ) -> Result<AttemptOutcome, StoreError> {
        self.with_slot(key, deadline, |slot| {
            let decision = decide_attempt(slot.factor.as_ref(), &attempt, now);
            match decision {
                AttemptDecision::Absent => AttemptOutcome::Absent,
                AttemptDecision::WrongState(state) => AttemptOutcome::WrongState(state),
                AttemptDecision::Stale => AttemptOutcome::Stale,
                AttemptDecision::Locked(lock) => AttemptOutcome::Locked(lock),
                committed => {
                    let sequence = slot.next_sequence();
                    if let Some(factor) = slot.factor.as_mut() {
                        factor.apply(&committed, sequence, now);
                    }
                    committed
                        .verdict(sequence, now)
                        .map_or(AttemptOutcome::Absent, AttemptOutcome::Committed)
                }
            }
        })
    }

    async fn remove(
        &self,
        key: &UserKey,
        now: UnixMicros,
        deadline: Instant,
    ) -> Result<ChangeOutcome, StoreError> {
        self.with_slot(key, deadline, |slot| {
            let Some(removed) = slot.factor.take() else {
                return ChangeOutcome::Absent;
            };
            // What is the user's stays: failures, the lock, the recovery codes.
            slot.standing = Standing {
                failures: removed.failures,
                lock: removed.lock,
            };
            ChangeOutcome::Changed {
                sequence: slot.next_sequence(),
                changed_at: now,
            }
        })
    }

    async fn unlock(
        &self,
        key: &UserKey,
        now: UnixMicros,
        deadline: Instant,
    ) -> Result<ChangeOutcome, StoreError> {
        self.with_slot(key, deadline, |slot| {
            let standing = slot.standing();
            if standing.lock.is_none_or(|lock| !lock.is_active(now)) {
                return if slot.factor.is_some() || !slot.codes.is_empty() {
                    ChangeOutcome::NotLocked
                } else {
                    ChangeOutcome::Absent
                };
            }
            slot.set_standing(Standing::default());
            ChangeOutcome::Changed {
                sequence: slot.changed(now),
                changed_at: now,
            }
        })
    }

    async fn load_user(&self, key: &UserKey, _deadline: Instant) -> Result<UserRecord, StoreError> {
        let slots = self
            .slots
            .lock()
            .map_err(|_| StoreError::Unavailable("memory store poisoned".into()))?;
        Ok(UserRecord {
            factor: slots.get(key).and_then(|slot| slot.factor.clone()),
            recovery_codes: slots.get(key).map_or(0, |slot| count(&slot.codes)),
            standing: slots.get(key).map(Slot::standing).unwrap_or_default(),
        })
    }

    async fn add_recovery_codes(
        &self,
        key: &UserKey,
        codes: NewCodes,
        now: UnixMicros,
        deadline: Instant,
    ) -> Result<AddCodesOutcome, StoreError> {
        self.with_slot(key, deadline, |slot| {
            let held = count(&slot.codes);
            let adding = u32::try_from(codes.fields.len()).unwrap_or(u32::MAX);
            if may_add(held, adding, codes.max).is_err() {
                return AddCodesOutcome::TooMany { held };
            }
            slot.codes.extend(codes.fields);
            AddCodesOutcome::Added {
                sequence: slot.changed(now),
                held: count(&slot.codes),
            }
        })
    }

    async fn redeem_recovery_code(
        &self,
        key: &UserKey,
        redemption: Redemption,
        now: UnixMicros,
        deadline: Instant,
    ) -> Result<RedeemOutcome, StoreError> {
        self.with_slot(key, deadline, |slot| {
            let found = redemption
                .candidates
                .iter()
                .find(|field| slot.codes.contains(*field));
            let standing = slot.standing();
            let decision = decide_redeem(
                standing,
                count(&slot.codes),
                found.is_some(),
                &redemption.policy,
                now,
            );
            match decision {
                RedeemDecision::Locked(lock) => RedeemOutcome::Locked(lock),
                RedeemDecision::NoCodes => RedeemOutcome::NoCodes,
                RedeemDecision::Accept { remaining } => {
                    if let Some(field) = found {
                        slot.codes.remove(field);
                    }
                    slot.set_standing(Standing::default());
                    RedeemOutcome::Accepted {
                        sequence: slot.changed(now),
                        changed_at: now,
                        remaining,
                    }
                }
                RedeemDecision::Reject { failures, lock } => {
                    slot.set_standing(Standing { failures, lock });
                    slot.changed(now);
                    RedeemOutcome::Rejected { failures, lock }
                }
            }
        })
    }

    async fn remove_recovery_codes(
        &self,
        key: &UserKey,
        now: UnixMicros,
        deadline: Instant,
    ) -> Result<RemoveCodesOutcome, StoreError> {
        self.with_slot(key, deadline, |slot| {
            if let Some(lock) = slot.standing().lock.filter(|lock| lock.is_active(now)) {
                return RemoveCodesOutcome::Locked(lock);
            }
            if slot.codes.is_empty() {
                return RemoveCodesOutcome::NoCodes;
            }
            slot.codes.clear();
            RemoveCodesOutcome::Removed {
                sequence: slot.changed(now),
                changed_at: now,
            }
        })
    }

    async fn load_policies(
        &self,
        org: &str,
        deadline: Instant,
    ) -> Result<StoredPolicies, StoreError> {
        self.with_orgs(deadline, |orgs| {
            orgs.policies
                .get(org)
                .map_or_else(|| Ok(StoredPolicies::default()), policies_from)
        })?
    }

    async fn write_policy(
        &self,
        org: &str,
        write: PolicyWrite,
        now: UnixMicros,
        deadline: Instant,
    ) -> Result<PolicyWritten, StoreError> {
        self.with_orgs(deadline, |orgs| {
            let field = write.part.field();
            let hash = orgs.policies.get(org);
            let sequence = hash.map_or(0, |hash| field_number(hash, "q"));
            let current = hash
                .and_then(|hash| hash.get(field))
                .map(|form| String::from_utf8_lossy(form).into_owned());
            match decide_write(write.mode, current.as_deref(), &write.form) {
                WriteDecision::Exists => return PolicyWritten::Exists,
                WriteDecision::Absent => return PolicyWritten::Absent { sequence },
                WriteDecision::Unchanged => return PolicyWritten::Unchanged { sequence },
                WriteDecision::Write => {}
            }
            let hash = orgs.policies.entry(org.to_owned()).or_default();
            if write.mode == crate::domain::policy::WriteMode::Reset {
                for name in [field.to_owned(), format!("{field}.c"), format!("{field}.m")] {
                    hash.remove(&name);
                }
            } else {
                set_part(hash, field, &write.form, now);
            }
            PolicyWritten::Written {
                sequence: orgs.changed(org),
            }
        })
    }

    async fn seed_policies(
        &self,
        org: &str,
        seed: &PolicySeed,
        now: UnixMicros,
        deadline: Instant,
    ) -> Result<bool, StoreError> {
        self.with_orgs(deadline, |orgs| {
            let hash = orgs.policies.entry(org.to_owned()).or_default();
            if hash.contains_key("seeded") {
                return false;
            }
            hash.insert("seeded".into(), b"1".to_vec());
            hash.insert("v".into(), b"1".to_vec());
            let parts = [
                ("lockout", seed.lockout.as_ref().map(stored_form)),
                ("otp", seed.otp.as_ref().map(stored_form)),
            ];
            let mut wrote = false;
            for (field, form) in parts {
                if let Some(form) = form
                    && !hash.contains_key(field)
                {
                    set_part(hash, field, &form, now);
                    wrote = true;
                }
            }
            if wrote {
                orgs.changed(org);
            }
            wrote
        })
    }

    async fn policy_changes(
        &self,
        since: u64,
        deadline: Instant,
    ) -> Result<PolicyChanges, StoreError> {
        self.with_orgs(deadline, |orgs| PolicyChanges {
            epoch: orgs.epoch,
            orgs: orgs
                .changed
                .iter()
                .filter(|(_, epoch)| **epoch > since)
                .map(|(org, _)| Arc::from(org.as_str()))
                .collect(),
        })
    }

    async fn index_locks(
        &self,
        changes: &[LockIndexChange],
        deadline: Instant,
    ) -> Result<(), StoreError> {
        self.with_orgs(deadline, |orgs| {
            for change in changes {
                let index = orgs.locked.entry(change.key.org.to_string()).or_default();
                if change.locked {
                    index.insert(change.key.user.to_string());
                } else {
                    index.remove(change.key.user.as_ref());
                }
            }
        })
    }

    async fn lock_candidates(
        &self,
        org: &str,
        after: Option<&str>,
        limit: usize,
        deadline: Instant,
    ) -> Result<Vec<Arc<str>>, StoreError> {
        self.with_orgs(deadline, |orgs| {
            let Some(index) = orgs.locked.get(org) else {
                return Vec::new();
            };
            let after = after.unwrap_or("");
            index
                .iter()
                .filter(|user| user.as_str() > after)
                .take(limit)
                .map(|user| Arc::from(user.as_str()))
                .collect()
        })
    }
}

fn count(codes: &BTreeSet<String>) -> u32 {
    u32::try_from(codes.len()).unwrap_or(u32::MAX)
}
