//! The embedded store of `tessera dev` and tests: the Lua scripts' semantics over a map.
//! One process only; its state ends with the process.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use async_trait::async_trait;

use super::{
    AddOutcome, Attempt, AttemptOutcome, ChangeOutcome, FactorStore, NewFactor, StoreError, UserKey,
};
use crate::domain::factor::{AttemptDecision, decide_attempt};
use crate::domain::{FactorRecord, FactorState, UnixMicros};

/// Per user: the factor if any, and the sequence, which outlives removal (never goes back).
#[derive(Default)]
struct Slot {
    factor: Option<FactorRecord>,
    sequence: u64,
}

impl Slot {
    /// The next sequence: above the last one and at least the store's clock in microseconds,
    /// as the scripts take it from Redis's `TIME`.
    fn next_sequence(&mut self) -> u64 {
        let clock = u64::try_from(chrono::Utc::now().timestamp_micros()).unwrap_or(0);
        self.sequence = self.sequence.saturating_add(1).max(clock);
        self.sequence
    }
}

#[derive(Default)]
pub struct MemoryStore {
    slots: Mutex<HashMap<UserKey, Slot>>,
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
            slot.factor = Some(FactorRecord {
                factor_id: factor.factor_id,
                state: FactorState::NotReady,
                params: factor.params,
                sealed_secret: factor.sealed_secret,
                last_step: None,
                failures: 0,
                lock: None,
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
            if slot.factor.take().is_none() {
                return ChangeOutcome::Absent;
            }
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
            match slot.factor.as_ref() {
                None => return ChangeOutcome::Absent,
                Some(factor) if factor.active_lock(now).is_none() => {
                    return ChangeOutcome::NotLocked;
                }
                Some(_) => {}
            }
            let sequence = slot.next_sequence();
            let Some(factor) = slot.factor.as_mut() else {
                return ChangeOutcome::Absent;
            };
            factor.lock = None;
            factor.failures = 0;
            factor.sequence = sequence;
            factor.changed_at = now;
            ChangeOutcome::Changed {
                sequence,
                changed_at: now,
            }
        })
    }
}
