//! Where factors live. Redis is the truth (`redis.rs`, one Lua script per atomic step over
//! one user's key); `memory.rs` is the embedded store of `tessera dev` and tests, with the
//! same semantics (one conformance suite runs against both).
//!
//! Every call carries its request's deadline: a change that reaches the store after it
//! changes nothing, because by then the caller has answered UNAVAILABLE.

mod audit;
mod memory;
mod metered;
mod policy;
mod redis;
mod webhook;

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;

pub use audit::{FeedCopy, FeedDue, FeedNote, FeedSource, FeedSources, Stamp, Written, entry_id};
pub use memory::MemoryStore;
pub use metered::MeteredStore;
pub use policy::{
    LockIndexChange, PolicyChanges, PolicyPart, PolicySeed, PolicyWrite, PolicyWritten, stored_form,
};
pub use redis::{
    Primary, RecordFormat, RedisConfig, RedisMode, RedisNodes, RedisStore, Resealed, SealedRecord,
};
pub use webhook::{PendingDelivery, StoredEndpoint, message_id};

use crate::domain::audit::{AuditEvent, Retention};
use crate::domain::factor::AttemptVerdict;
use crate::domain::policy::StoredPolicies;
use crate::domain::recovery::Standing;
use crate::domain::{
    FactorId, FactorRecord, FactorState, Lock, LockoutPolicy, TotpParams, UnixMicros,
};

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

/// An attempt's outcome, and what the organization's feed still needs of its events: on one
/// Redis server nothing (the check's script appended them); under Redis Cluster a copy, of the
/// events the script answered, so that the copier need not read them back; the memory
/// store's copy reads its lists, which cost nothing to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempted {
    pub outcome: AttemptOutcome,
    pub feed: FeedDue,
}

impl From<AttemptOutcome> for Attempted {
    fn from(outcome: AttemptOutcome) -> Self {
        Self {
            outcome,
            feed: FeedDue::Copy(None),
        }
    }
}

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

/// A user's record as a listing reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub factor: Option<FactorRecord>,
    pub recovery_codes: u32,
    /// The user's failures and lock, TOTP factor or not (a user with recovery codes only
    /// locks too).
    pub standing: Standing,
}

/// Recovery codes to add: one field per code, `r:<seal key id>:<hex HMAC>`, made by the
/// caller (`KeyRing::recovery_hash`); no code reaches the store.
#[derive(Clone)]
pub struct NewCodes {
    pub fields: Vec<String>,
    /// The most codes the user may hold, those already held included.
    pub max: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddCodesOutcome {
    Added {
        sequence: u64,
        held: u32,
    },
    /// Adding them would pass the maximum: nothing added.
    TooMany {
        held: u32,
    },
}

/// A recovery code typed at login: its field under each key of the seal key ring (the
/// stored one names the key it was made under), and the lockout policy it counts against.
#[derive(Clone)]
pub struct Redemption {
    pub candidates: Vec<String>,
    pub policy: LockoutPolicy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedeemOutcome {
    /// Used up: `remaining` left.
    Accepted {
        sequence: u64,
        changed_at: UnixMicros,
        remaining: u32,
    },
    /// Not one of the user's codes: a failure counted, and the lock it set.
    Rejected {
        failures: u32,
        lock: Option<Lock>,
    },
    Locked(Lock),
    NoCodes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoveCodesOutcome {
    Removed {
        sequence: u64,
        changed_at: UnixMicros,
    },
    NoCodes,
    Locked(Lock),
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
        stamp: &Stamp,
        deadline: Instant,
    ) -> Result<AddOutcome, StoreError>;
    async fn attempt(
        &self,
        key: &UserKey,
        attempt: Attempt,
        stamp: &Stamp,
        deadline: Instant,
    ) -> Result<Attempted, StoreError>;
    async fn remove(
        &self,
        key: &UserKey,
        stamp: &Stamp,
        deadline: Instant,
    ) -> Result<ChangeOutcome, StoreError>;
    async fn unlock(
        &self,
        key: &UserKey,
        stamp: &Stamp,
        deadline: Instant,
    ) -> Result<ChangeOutcome, StoreError>;
    /// The factor and how many recovery codes the user holds (never the codes), in one read:
    /// for listings and generations. `load`, the check's read, leaves the codes out.
    async fn load_user(&self, key: &UserKey, deadline: Instant) -> Result<UserRecord, StoreError>;
    async fn add_recovery_codes(
        &self,
        key: &UserKey,
        codes: NewCodes,
        stamp: &Stamp,
        deadline: Instant,
    ) -> Result<AddCodesOutcome, StoreError>;
    /// Uses a recovery code at login, atomically with the lockout (`decide_redeem`).
    async fn redeem_recovery_code(
        &self,
        key: &UserKey,
        redemption: Redemption,
        stamp: &Stamp,
        deadline: Instant,
    ) -> Result<RedeemOutcome, StoreError>;
    async fn remove_recovery_codes(
        &self,
        key: &UserKey,
        stamp: &Stamp,
        deadline: Instant,
    ) -> Result<RemoveCodesOutcome, StoreError>;
    /// The organization's own policies (none: it follows the instance's).
    async fn load_policies(
        &self,
        org: &str,
        deadline: Instant,
    ) -> Result<StoredPolicies, StoreError>;
    /// Changes one part of the organization's policies by `decide_write`, atomically with
    /// the change index that replicas poll (`policy_changes`).
    async fn write_policy(
        &self,
        org: &str,
        write: PolicyWrite,
        stamp: &Stamp,
        deadline: Instant,
    ) -> Result<PolicyWritten, StoreError>;
    /// Applies the configuration's seed once (see `PolicySeed`); true when it wrote a part.
    async fn seed_policies(
        &self,
        org: &str,
        seed: &PolicySeed,
        stamp: &Stamp,
        deadline: Instant,
    ) -> Result<bool, StoreError>;
    /// The organizations whose policies changed after epoch `since`.
    async fn policy_changes(
        &self,
        since: u64,
        deadline: Instant,
    ) -> Result<PolicyChanges, StoreError>;
    /// Adds users to, or takes them out of, their organizations' indexes of locked users.
    /// The index is a list of candidates, kept after the fact: a reader rechecks each one.
    async fn index_locks(
        &self,
        changes: &[LockIndexChange],
        deadline: Instant,
    ) -> Result<(), StoreError>;
    /// Up to `limit` users of the organization's index, in id order, after `after`.
    async fn lock_candidates(
        &self,
        org: &str,
        after: Option<&str>,
        limit: usize,
        deadline: Instant,
    ) -> Result<Vec<Arc<str>>, StoreError>;
    /// Up to `limit` of the user's events, newest first, before the event `before` (none:
    /// from the newest): straight from the list each change appends to.
    async fn user_events(
        &self,
        key: &UserKey,
        before: Option<&str>,
        limit: usize,
        deadline: Instant,
    ) -> Result<Vec<AuditEvent>, StoreError>;
    /// Copies the events of `sources` that their organization's feed does not hold yet into
    /// the feed, each source's in their order, kept to `retention`. Idempotent: a copy that
    /// runs twice, or on two replicas at once, copies each event once (the feed keeps how far
    /// it copied each source, in its own slot). A source whose events do not read back is left
    /// out and named in the answer; the others are copied.
    async fn copy_to_feed(
        &self,
        sources: &FeedSources,
        retention: Retention,
        deadline: Instant,
    ) -> Result<FeedCopy, StoreError>;
    /// Up to `limit` events of the organization's feed, newest first, before the feed
    /// entry `before` (none: from the newest). The ids are the feed's.
    async fn feed_events(
        &self,
        org: &str,
        before: Option<&str>,
        limit: usize,
        deadline: Instant,
    ) -> Result<Vec<AuditEvent>, StoreError>;
    /// Adds or replaces a webhook endpoint (`webhook.rs`).
    async fn put_endpoint(
        &self,
        endpoint: &StoredEndpoint,
        deadline: Instant,
    ) -> Result<(), StoreError>;
    /// Removes an organization's endpoint; false when it has none by that id.
    async fn delete_endpoint(
        &self,
        org: &str,
        id: &str,
        deadline: Instant,
    ) -> Result<bool, StoreError>;
    /// Every organization's endpoints.
    async fn endpoints(&self, deadline: Instant) -> Result<Vec<StoredEndpoint>, StoreError>;
    /// The organizations that have a feed (a hint each copy renews: one that a lost write
    /// missed is added by its next copy).
    async fn feed_orgs(&self, deadline: Instant) -> Result<Vec<Arc<str>>, StoreError>;
    /// Up to `count` events of the organization's feed for `consumer` to deliver: first those
    /// another consumer took more than `claim_idle` ago and never acknowledged, then new ones.
    async fn take_feed(
        &self,
        org: &str,
        consumer: &str,
        claim_idle: std::time::Duration,
        count: usize,
        deadline: Instant,
    ) -> Result<Vec<AuditEvent>, StoreError>;
    /// Acknowledges events `take_feed` gave.
    async fn ack_feed(
        &self,
        org: &str,
        ids: &[String],
        deadline: Instant,
    ) -> Result<(), StoreError>;
    /// Schedules a delivery's next try at `due`, in place of `replacing` (its previous try).
    async fn schedule_delivery(
        &self,
        delivery: &PendingDelivery,
        due: UnixMicros,
        replacing: Option<&PendingDelivery>,
        deadline: Instant,
    ) -> Result<(), StoreError>;
    /// Up to `count` deliveries due at `now`, each leased to the caller until `now + lease`
    /// (after which another replica may take it).
    async fn claim_deliveries(
        &self,
        now: UnixMicros,
        lease: std::time::Duration,
        count: usize,
        deadline: Instant,
    ) -> Result<Vec<PendingDelivery>, StoreError>;
    /// A delivery done: out of the retry set.
    async fn finish_delivery(
        &self,
        delivery: &PendingDelivery,
        deadline: Instant,
    ) -> Result<(), StoreError>;
    /// A delivery given up: out of the retry set, into its organization's dead letters.
    async fn dead_letter(
        &self,
        delivery: &PendingDelivery,
        deadline: Instant,
    ) -> Result<(), StoreError>;
    /// The organization's dead letters, newest first.
    async fn dead_letters(
        &self,
        org: &str,
        deadline: Instant,
    ) -> Result<Vec<PendingDelivery>, StoreError>;
    /// Puts the organization's dead letters back to be tried at `now`, with a new retry
    /// period; how many.
    async fn replay_dead_letters(
        &self,
        org: &str,
        now: UnixMicros,
        deadline: Instant,
    ) -> Result<usize, StoreError>;
    /// When the oldest delivery still being retried first failed.
    async fn oldest_pending_delivery(
        &self,
        deadline: Instant,
    ) -> Result<Option<UnixMicros>, StoreError>;
    /// The store's own clock, when it has one (Redis `TIME`): replicas take time steps from
    /// their own clocks, so readiness compares them with a common one.
    async fn server_time(&self) -> Result<Option<UnixMicros>, StoreError> {
        Ok(None)
    }
}

pub type SharedStore = Arc<dyn FactorStore>;
