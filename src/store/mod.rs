//! Where factors live. Redis is the truth (`redis.rs`, one Lua script per atomic step over
//! one user's key); `memory.rs` is the embedded store of `tessera dev` and tests, with the
//! same semantics (one conformance suite runs against both).
//!
//! Every call carries its request's deadline: a change that reaches the store after it
//! changes nothing, because by then the caller has answered UNAVAILABLE.

mod memory;
mod metered;
mod redis;

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;

pub use memory::MemoryStore;
pub use metered::MeteredStore;
pub use redis::{Primary, RedisConfig, RedisMode, RedisNodes, RedisStore, Resealed, SealedRecord};

use crate::domain::factor::AttemptVerdict;
use crate::domain::{FactorId, FactorRecord, FactorState, Lock, TotpParams, UnixMicros};

/// One user of one organization: the unit of atomicity.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserKey {
    pub org: Arc<str>,
    pub user: Arc<str>,
}

/// A new enrollment, its id made and its secret sealed by the caller.
#[derive(Debug, Clone)]
pub struct NewFactor {
    pub factor_id: FactorId,
    pub params: TotpParams,
    pub sealed_secret: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddOutcome {
    Added {
        sequence: u64,
        created_at: UnixMicros,
    },
    AlreadyReady,
}

/// A code attempt, committed atomically by the store with the domain's attempt rule.
pub use crate::domain::factor::Attempt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// Committed: accepted (replay marker moved, failures reset) or rejected (failure counted).
    Committed(AttemptVerdict),
    /// Locked: nothing compared, nothing consumed.
    Locked(Lock),
    Absent,
    WrongState(FactorState),
    /// The factor was re-enrolled since it was read: read it again and decide again.
    Stale,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeOutcome {
    Changed {
        sequence: u64,
        changed_at: UnixMicros,
    },
    Absent,
    NotLocked,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store unreachable: {0}")]
    Unavailable(String),
    /// The deadline passed: the caller stops waiting, and a change that arrives later does
    /// nothing.
    #[error("store timed out")]
    Timeout,
    #[error("store returned malformed data: {0}")]
    Corrupt(String),
    /// A record written by a newer release, in a format this one does not know: it is
    /// neither read nor changed (fail closed until the rollout completes).
    #[error("stored record has format {0}, newer than this release's")]
    NewerFormat(i64),
}

/// The store. `now` is the domain's clock (dates, lock expiry); `deadline` is when the
/// request stops waiting (the monotonic clock), after which nothing may change.
#[async_trait]
pub trait FactorStore: Send + Sync + 'static {
    async fn load(
        &self,
        key: &UserKey,
        deadline: Instant,
    ) -> Result<Option<FactorRecord>, StoreError>;
    /// Replaces an unverified enrollment ("last added wins"); refuses while READY.
    async fn add(
        &self,
        key: &UserKey,
        factor: NewFactor,
        now: UnixMicros,
        deadline: Instant,
    ) -> Result<AddOutcome, StoreError>;
    async fn attempt(
        &self,
        key: &UserKey,
        attempt: Attempt,
        now: UnixMicros,
        deadline: Instant,
    ) -> Result<AttemptOutcome, StoreError>;
    async fn remove(
        &self,
        key: &UserKey,
        now: UnixMicros,
        deadline: Instant,
    ) -> Result<ChangeOutcome, StoreError>;
    async fn unlock(
        &self,
        key: &UserKey,
        now: UnixMicros,
        deadline: Instant,
    ) -> Result<ChangeOutcome, StoreError>;
    /// The store's own clock, when it has one (Redis `TIME`): replicas take time steps from
    /// their own clocks, so readiness compares them with a common one.
    async fn server_time(&self) -> Result<Option<UnixMicros>, StoreError> {
        Ok(None)
    }
}

pub type SharedStore = Arc<dyn FactorStore>;
