//! Each organization's feed of events, assembled after the fact.
//!
//! A change writes its events into its user's own list, atomically (`store::audit`). The
//! organization's feed is another key, in another slot under Redis Cluster, which that
//! script cannot reach. So every change notes its source here, off the request's path, and
//! one task per replica copies each noted source's new events into the feed (the store's
//! `copy_to_feed`: idempotent, in order, once per event, whichever replica copies).
//!
//! Lag: a note is copied within one batch of being made, milliseconds while the store
//! answers; while it does not, notes wait in a bounded queue (`QUEUE`), and past it they are
//! dropped and counted (`tessera_audit_feed_dropped_total`). A note dropped, or lost with its
//! replica, costs no event: the source's next change copies everything past the feed's mark,
//! that one included. Until then the event is in the user's own list only.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::domain::audit::Retention;
use crate::store::{FeedSource, SharedStore, StoreError};

/// Notes waiting to be copied, at most.
const QUEUE: usize = 10_000;
/// Notes taken at once (the same source noted twice in a batch is copied once).
const BATCH: usize = 256;
/// How long the copier waits before trying again after the store failed.
const RETRY: Duration = Duration::from_millis(250);

/// A source with new events, and how long its organization keeps them.
#[derive(Debug, Clone)]
pub struct FeedNote {
    pub source: FeedSource,
    pub retention: Retention,
}

/// Where changes note their sources; cheap to clone.
#[derive(Clone)]
pub struct AuditFeed {
    notes: mpsc::Sender<FeedNote>,
    dropped: prometheus::IntCounter,
}

impl AuditFeed {
    /// The feed, and the copier to run on a runtime (`run`).
    pub fn new(
        dropped: prometheus::IntCounter,
        waiting: prometheus::IntGauge,
    ) -> (Self, AuditFeedCopier) {
        let (notes, pending) = mpsc::channel(QUEUE);
        (
            Self { notes, dropped },
            AuditFeedCopier { pending, waiting },
        )
    }

    pub fn note(&self, source: FeedSource, retention: Retention) {
        if self.notes.try_send(FeedNote { source, retention }).is_err() {
            self.dropped.inc();
        }
    }
}

pub struct AuditFeedCopier {
    pending: mpsc::Receiver<FeedNote>,
    /// `tessera_audit_feed_pending`: the notes taken and not yet copied, and those queued.
    waiting: prometheus::IntGauge,
}

impl AuditFeedCopier {
    /// Copies the noted sources until every feed is gone; each until the store takes it.
    pub async fn run(mut self, store: SharedStore, timeout: Duration) {
        let mut batch = Vec::with_capacity(BATCH);
        let mut failing = false;
        while self.pending.recv_many(&mut batch, BATCH).await > 0 {
            let waiting = batch.len() + self.pending.len();
            self.waiting.set(i64::try_from(waiting).unwrap_or(i64::MAX));
            let sources: HashMap<FeedSource, Retention> = batch
                .drain(..)
                .map(|note| (note.source, note.retention))
                .collect();
            for (source, retention) in sources {
                loop {
                    let deadline = Instant::now() + timeout;
                    match store.copy_to_feed(&source, retention, deadline).await {
                        Ok(_) => {
                            if failing {
                                tracing::info!("organizations' audit feeds are copied again");
                                failing = false;
                            }
                            break;
                        }
                        // What no retry mends (an element that does not read back) must not
                        // hold up every other source: it is logged, and that source's next
                        // change tries again.
                        Err(err @ (StoreError::Corrupt(_) | StoreError::NewerFormat(_))) => {
                            tracing::error!(error = %err, "a source of an audit feed cannot be copied");
                            break;
                        }
                        Err(err) => {
                            if !failing {
                                tracing::warn!(error = %err, "organizations' audit feeds wait for the store");
                                failing = true;
                            }
                            tokio::time::sleep(RETRY).await;
                        }
                    }
                }
            }
            self.waiting
                .set(i64::try_from(self.pending.len()).unwrap_or(i64::MAX));
        }
    }
}
