//! What an operation on one user is, and what it reaches inside its organization's actor.
//!
//! An operation is one type and one function: a value that says what is asked (`Operation`)
//! and its `run`, a future over the `OnUser` it acts on. The actor admits it (rate limits),
//! starts `run` and answers with its result; `run` reads and writes the actor's cache through
//! `OnUser` as it goes. Adding an operation adds no message, handler or cache protocol.

use std::cell::RefCell;
use std::future::Future;
use std::num::NonZeroUsize;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lru::LruCache;

use super::TenantDeps;
use crate::domain::audit::Author;
use crate::domain::{FactorId, FactorState, Lock, OtpError, OtpPolicy, TotpParams, UnixMicros};
use crate::metrics::Metrics;
use crate::store::{FeedNote, FeedSource, Stamp, StoreError, UserKey, UserRecord, Written};

/// One thing a caller asks of a user's factor.
pub trait Operation: Send + 'static {
    type Output: Send + 'static;

    /// Whether the user's own rate limit counts the call, besides the organization's:
    /// true for what guesses or creates secrets (checks, enrollments).
    const COUNTS_FOR_USER: bool;

    /// The work, on the organization's thread: it may hold no borrow of the cache across an
    /// `.await`, and other operations of the organization run in between.
    fn run(self, on: OnUser) -> impl Future<Output = Result<Self::Output, OtpError>> + 'static;

    /// Called instead of `run` when a rate limit refused the call.
    fn rate_limited(&self, _metrics: &Metrics) {}
}

/// What the actor caches per user: the enrollment's immutable part and a hint of its lock.
/// The secret stays sealed here and is opened for each check only (about 300 ns, see
/// `benches/micro.rs`), so that a core dump or a read of the process's memory finds no
/// cache full of plain secrets. The store checks the factor id on every commit, and ids are
/// never reused, so a stale copy is harmless, even one that outlived the store's copy.
#[derive(Clone)]
pub struct CachedFactor {
    pub factor_id: FactorId,
    pub state: FactorState,
    pub params: TotpParams,
    pub sealed_secret: Arc<[u8]>,
    pub lock: Option<Lock>,
}

/// How long an organization's policy is used before it is read again even though no change
/// was seen: a second line behind the change index (`policies.rs`), which every replica
/// polls; one read a minute per active organization and replica.
const POLICY_MAX_AGE: Duration = Duration::from_secs(60);

/// The organization's policy as last read, and which generation of it.
struct LoadedPolicy {
    generation: u64,
    policy: Arc<OtpPolicy>,
    read_at: Instant,
}

/// The organization's part of the actor that its operations share: they run on the actor's
/// thread, so a `RefCell` suffices.
pub(super) struct OrgState {
    pub org: Arc<str>,
    pub deps: Arc<TenantDeps>,
    /// Raised by the registry when the organization's policy changed (`policies.rs`); the
    /// loaded policy is used while its generation is this one.
    policy_generation: Arc<AtomicU64>,
    policy: RefCell<Option<LoadedPolicy>>,
    cache: RefCell<LruCache<Arc<str>, CachedFactor>>,
}

impl OrgState {
    pub fn new(org: Arc<str>, deps: Arc<TenantDeps>, policy_generation: Arc<AtomicU64>) -> Self {
        let capacity = NonZeroUsize::new(deps.cache_capacity).unwrap_or(NonZeroUsize::MIN);
        // Bounded at `capacity`, but grown with use: `LruCache::new` reserves the whole
        // table up front, 1.3 MB per organization at the default 50,000, even for a tenant
        // with three users (measured: 5,000 organizations took 6 GB).
        let mut cache = LruCache::unbounded();
        cache.resize(capacity);
        Self {
            org,
            deps,
            policy_generation,
            policy: RefCell::new(None),
            cache: RefCell::new(cache),
        }
    }

    /// The organization's policy: the one loaded, unless a change was seen since or it is
    /// older than `POLICY_MAX_AGE`; then read again (the only store read it costs). Calls in
    /// between may each read it; they are few, and the last read wins.
    async fn policy(&self, deadline: Instant) -> Result<Arc<OtpPolicy>, OtpError> {
        // Taken before the read: a change seen during it raises the generation past this one,
        // and the next call reads again.
        let wanted = self.policy_generation.load(Ordering::Acquire);
        if let Some(loaded) = self.policy.borrow().as_ref()
            && loaded.generation == wanted
            && loaded.read_at.elapsed() < POLICY_MAX_AGE
        {
            return Ok(loaded.policy.clone());
        }
        let stored = self
            .deps
            .store
            .load_policies(&self.org, deadline)
            .await
            .map_err(store_error)?;
        let policy = stored
            .effective(&self.deps.default_policy)
            .map_err(|problems| {
                // Written only after the same checks: a stricter release, or a hand edit.
                // Fail closed rather than guess a looser lockout.
                tracing::error!(?problems, "the organization's stored policy does not pass");
                OtpError::Internal
            })?;
        let policy = Arc::new(policy);
        *self.policy.borrow_mut() = Some(LoadedPolicy {
            generation: wanted,
            policy: policy.clone(),
            read_at: Instant::now(),
        });
        Ok(policy)
    }
}

/// The user an operation acts on: who, when, by when, and their entry in the actor's cache.
pub struct OnUser {
    pub(super) state: Rc<OrgState>,
    pub key: UserKey,
    /// Who asks, for the audit events of the changes made.
    pub actor: Arc<Author>,
    /// The request's time, from the instance's clock.
    pub now: UnixMicros,
    /// The request's deadline: every store call ends by it.
    pub deadline: Instant,
}

impl OnUser {
    /// The same user, time and deadline, for one operation that runs another inside it
    /// (a recovery-code generation proves the TOTP factor with a login check).
    pub fn again(&self) -> OnUser {
        OnUser {
            state: self.state.clone(),
            key: self.key.clone(),
            actor: self.actor.clone(),
            now: self.now,
            deadline: self.deadline,
        }
    }

    pub fn deps(&self) -> &TenantDeps {
        &self.state.deps
    }

    /// The organization's policy, as current as the last change this replica saw.
    pub async fn policy(&self) -> Result<Arc<OtpPolicy>, OtpError> {
        self.state.policy(self.deadline).await
    }

    /// The stamp of a change made now, for its audit events: when, by whom, and how long
    /// the organization keeps them.
    pub fn stamp(&self, policy: &OtpPolicy) -> Stamp {
        Stamp {
            now: self.now,
            actor: self.actor.clone(),
            retention: policy.retention(),
        }
    }

    /// Notes that the user's stream has new events, for the organization's feed (after
    /// the fact, off the request's path: `audit_feed.rs`).
    pub fn note_events(&self, stamp: &Stamp) {
        self.note_written(stamp, None);
    }

    /// `note_events`, with the events the change wrote when the store answered them, so
    /// that the copier need not read them back (`store::Written`).
    pub fn note_written(&self, stamp: &Stamp, written: Option<Written>) {
        self.deps().audit_feed.note_written(FeedNote {
            source: FeedSource::User(self.key.clone()),
            retention: stamp.retention,
            written,
        });
    }

    /// Notes in the organization's index of locked users that this user is, or no longer
    /// is, locked (`lock_index.rs`: after the fact, off the request's path).
    pub fn note_lock(&self, locked: bool) {
        self.deps().lock_index.note(&self.key, locked);
    }

    /// The cached copy of the user's factor, if any (a hint: see `CachedFactor`).
    pub fn cached(&self) -> Option<CachedFactor> {
        self.state.cache.borrow_mut().get(&self.key.user).cloned()
    }

    pub fn remember(&self, factor: CachedFactor) {
        let mut cache = self.state.cache.borrow_mut();
        match cache.get_mut(&self.key.user) {
            // The common case (a check of a cached factor): update in place.
            Some(cached) => *cached = factor,
            None => {
                cache.put(self.key.user.clone(), factor);
            }
        }
    }

    pub fn forget(&self) {
        self.state.cache.borrow_mut().pop(&self.key.user);
    }

    /// Changes the cached copy, if there is one.
    pub fn update_cached(&self, change: impl FnOnce(&mut CachedFactor)) {
        if let Some(cached) = self.state.cache.borrow_mut().get_mut(&self.key.user) {
            change(cached);
        }
    }

    /// The stored factor, read fresh.
    pub async fn read(&self) -> Result<Option<CachedFactor>, OtpError> {
        let record = self
            .deps()
            .store
            .load(&self.key, self.deadline)
            .await
            .map_err(store_error)?;
        Ok(record.map(|record| CachedFactor {
            factor_id: record.factor_id,
            state: record.state,
            params: record.params,
            sealed_secret: record.sealed_secret.into(),
            lock: record.lock,
        }))
    }

    /// The user's whole record, read fresh: the factor and how many recovery codes are left.
    pub async fn read_user(&self) -> Result<UserRecord, OtpError> {
        self.deps()
            .store
            .load_user(&self.key, self.deadline)
            .await
            .map_err(store_error)
    }
}

/// A store that failed is UNAVAILABLE to the caller, and a warning to the operator.
pub fn store_error(err: StoreError) -> OtpError {
    tracing::warn!(error = %err, "store call failed");
    OtpError::Unavailable
}
