//! The embedded store of `tessera dev` and tests: the Lua scripts' semantics over a map.
//! One process only; its state ends with the process.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::{
    AddOutcome, Attempt, AttemptOutcome, ChangeOutcome, FactorStore, NewFactor, StoreError, UserKey,
};
use crate::domain::factor::AttemptVerdict;
use crate::domain::{FactorRecord, FactorState, UnixMicros};

/// Per user: the factor if any, and the sequence, which outlives removal (never goes back).
#[derive(Default)]
struct Slot {
    factor: Option<FactorRecord>,
    sequence: u64,
}

#[derive(Default)]
pub struct MemoryStore {
    slots: Mutex<HashMap<UserKey, Slot>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn with_slot<T>(
        &self,
        key: &UserKey,
        change: impl FnOnce(&mut Slot) -> T,
    ) -> Result<T, StoreError> {
        let mut slots = self
            .slots
            .lock()
            .map_err(|_| StoreError::Unavailable("memory store poisoned".into()))?;
        Ok(change(slots.entry(key.clone()).or_default()))
    }
}

#[async_trait]
impl FactorStore for MemoryStore {
    async fn load(&self, key: &UserKey) -> Result<Option<FactorRecord>, StoreError> {
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
    ) -> Result<AddOutcome, StoreError> {
        self.with_slot(key, |slot| {
            if slot
                .factor
                .as_ref()
                .is_some_and(|f| f.state == FactorState::Ready)
            {
                return AddOutcome::AlreadyReady;
            }
            slot.sequence += 1;
            slot.factor = Some(FactorRecord {
                factor_id: slot.sequence,
                state: FactorState::NotReady,
                params: factor.params,
                sealed_secret: factor.sealed_secret,
                last_step: None,
                failures: 0,
                lock: None,
                sequence: slot.sequence,
                created_at: now,
                changed_at: now,
            });
            AddOutcome::Added {
                sequence: slot.sequence,
                created_at: now,
            }
        })
    }

    async fn attempt(
        &self,
        key: &UserKey,
        attempt: Attempt,
        now: UnixMicros,
    ) -> Result<AttemptOutcome, StoreError> {
        self.with_slot(key, |slot| {
            let Some(factor) = slot.factor.as_mut() else {
                return AttemptOutcome::Absent;
            };
            if factor.state != attempt.purpose.required_state() {
                return AttemptOutcome::WrongState(factor.state);
            }
            if factor.factor_id != attempt.factor_id {
                return AttemptOutcome::Stale;
            }
            if let Some(lock) = factor.lock {
                if lock.is_active(now) {
                    return AttemptOutcome::Locked(lock);
                }
                // An expired lock starts a fresh count.
                factor.lock = None;
                factor.failures = 0;
            }
            slot.sequence += 1;
            factor.sequence = slot.sequence;
            factor.changed_at = now;
            match attempt.matched_step {
                Some(step) if factor.last_step.is_none_or(|last| step > last) => {
                    factor.state = FactorState::Ready;
                    factor.last_step = Some(step);
                    factor.failures = 0;
                    AttemptOutcome::Committed(AttemptVerdict::Accepted {
                        sequence: slot.sequence,
                        changed_at: now,
                    })
                }
                matched => {
                    factor.failures = factor.failures.saturating_add(1);
                    factor.lock = attempt.policy.lock_after(factor.failures, now);
                    AttemptOutcome::Committed(AttemptVerdict::Rejected {
                        failures: factor.failures,
                        lock: factor.lock,
                        replayed: matched.is_some(),
                    })
                }
            }
        })
    }

    async fn remove(&self, key: &UserKey, now: UnixMicros) -> Result<ChangeOutcome, StoreError> {
        self.with_slot(key, |slot| {
            if slot.factor.take().is_none() {
                return ChangeOutcome::Absent;
            }
            slot.sequence += 1;
            ChangeOutcome::Changed {
                sequence: slot.sequence,
                changed_at: now,
            }
        })
    }

    async fn unlock(&self, key: &UserKey, now: UnixMicros) -> Result<ChangeOutcome, StoreError> {
        self.with_slot(key, |slot| {
            let Some(factor) = slot.factor.as_mut() else {
                return ChangeOutcome::Absent;
            };
            if factor.active_lock(now).is_none() {
                return ChangeOutcome::NotLocked;
            }
            slot.sequence += 1;
            factor.lock = None;
            factor.failures = 0;
            factor.sequence = slot.sequence;
            factor.changed_at = now;
            ChangeOutcome::Changed {
                sequence: slot.sequence,
                changed_at: now,
            }
        })
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
