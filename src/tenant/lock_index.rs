//! The index of each organization's locked users, kept after the fact.
//!
//! The truth of a lock is the user's own hash, changed by the user's script. The index is
//! another key, in another slot under Redis Cluster, which that script cannot reach. So the
//! index is derived: an operation that sees a lock set (or refused a call because of one)
//! or lifted notes it here, off the request's path; one task per replica writes the notes in
//! batches, and keeps trying while the store is away. A reader takes the index as candidates
//! and rechecks each against the user's hash (`service::OtpService::locked_users`), so a
//! stale entry (an expired lock, a removed user) is never shown, and is dropped when seen.
//!
//! Lag: a note is written within one batch of being made, milliseconds while the store
//! answers; while it does not, notes wait in a bounded queue (`QUEUE`), and past it they are
//! dropped and counted (`tessera_lock_index_dropped_total`). A note lost with its replica
//! (a crash between the lock and the write) comes back with the next refused attempt of
//! the locked user, which notes the lock again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use tokio::sync::mpsc;

use super::TenantDeps;
use super::operation::store_error;
use crate::domain::{Lock, OtpError, UnixMicros};
use crate::store::{LockIndexChange, SharedStore, UserKey};

/// Notes waiting to be written, at most.
const QUEUE: usize = 10_000;
/// Notes per write, at most.
const BATCH: usize = 256;
/// How long the writer waits before trying again after the store failed.
const RETRY: Duration = Duration::from_millis(250);

/// Where operations note locks; cheap to clone.
#[derive(Clone)]
pub struct LockIndexFeed {
    notes: mpsc::Sender<LockIndexChange>,
    dropped: prometheus::IntCounter,
}

impl LockIndexFeed {
    /// The feed, and the writer to run on a runtime (`run`).
    pub fn new(dropped: prometheus::IntCounter) -> (Self, LockIndexWriter) {
        let (notes, pending) = mpsc::channel(QUEUE);
        (Self { notes, dropped }, LockIndexWriter { pending })
    }

    pub fn note(&self, key: &UserKey, locked: bool) {
        let change = LockIndexChange {
            key: key.clone(),
            locked,
        };
        if self.notes.try_send(change).is_err() {
            self.dropped.inc();
        }
    }
}

pub struct LockIndexWriter {
    pending: mpsc::Receiver<LockIndexChange>,
}

impl LockIndexWriter {
    /// Writes the notes until every feed is gone; each batch until the store takes it.
    pub async fn run(mut self, store: SharedStore, timeout: Duration) {
        let mut batch = Vec::with_capacity(BATCH);
        let mut failing = false;
        while self.pending.recv_many(&mut batch, BATCH).await > 0 {
            loop {
                match store.index_locks(&batch, Instant::now() + timeout).await {
                    Ok(()) => {
                        if failing {
                            tracing::info!("the index of locked users is written again");
                            failing = false;
                        }
                        break;
                    }
                    Err(err) => {
                        if !failing {
                            tracing::warn!(error = %err, "the index of locked users waits for the store");
                            failing = true;
                        }
                        tokio::time::sleep(RETRY).await;
                    }
                }
            }
            batch.clear();
        }
    }
}

/// A locked user as the listing shows one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockedUser {
    pub user: Arc<str>,
    pub lock: Lock,
    pub failures: u32,
}

/// One page of an organization's locked users, and where the next starts (none: the last).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockedPage {
    pub users: Vec<LockedUser>,
    pub next_after: Option<Arc<str>>,
}

/// Up to `limit` of the organization's locked users after `after`, in id order: the index's
/// candidates, each rechecked against the user's own hash at `now`. A candidate that is not
/// locked any more is left out, and taken out of the index. A page may hold fewer than
/// `limit` users while more follow: `next_after` says where.
pub async fn locked_users(
    deps: &TenantDeps,
    org: &Arc<str>,
    after: Option<&str>,
    limit: usize,
    now: UnixMicros,
    deadline: Instant,
) -> Result<LockedPage, OtpError> {
    let candidates = deps
        .store
        .lock_candidates(org, after, limit, deadline)
        .await
        .map_err(store_error)?;
    let next_after = (candidates.len() == limit)
        .then(|| candidates.last().cloned())
        .flatten();
    let keys: Vec<UserKey> = candidates
        .into_iter()
        .map(|user| UserKey {
            org: org.clone(),
            user,
        })
        .collect();
    let records = join_all(keys.iter().map(|key| deps.store.load_user(key, deadline))).await;
    let mut users = Vec::with_capacity(keys.len());
    for (key, record) in keys.iter().zip(records) {
        let standing = record.map_err(store_error)?.standing;
        match standing.lock {
            Some(lock) if lock.is_active(now) => users.push(LockedUser {
                user: key.user.clone(),
                lock,
                failures: standing.failures,
            }),
            _ => deps.lock_index.note(key, false),
        }
    }
    Ok(LockedPage { users, next_after })
}
