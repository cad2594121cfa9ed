//! Each organization's feed of events, assembled after the fact where a change cannot write
//! it itself.
//!
//! A change writes its events into its user's own list, atomically (`store::audit`). The
//! organization's feed is another key, in another slot under Redis Cluster, which that
//! script cannot reach. (On one Redis server it can, and does: a check whose store answers
//! `FeedDue::Nothing` notes nothing here.) So every other change notes its source here, off
//! the request's path, and one task per replica copies each noted source's new events into
//! the feed (the store's `copy_to_feed`: idempotent, in order, once per event, whichever
//! replica copies, and whatever a change's script appended already).
//!
//! Cost: the copier takes the notes waiting, gathers them by organization in groups of a
//! few dozen sources, and copies the groups at once. A check's note carries the events its
//! script wrote (`store::Written`), so that in Redis a group of checks costs one script and
//! nothing is read back; a source noted without them (enrollment, removal, a note that does
//! not follow on from the feed) costs a read of its mark and of its list first. At
//! thousands of checks a second a batch holds many sources, so the copy's work per check is
//! a share of those calls, not round trips of its own; the groups stay small, so that no
//! script holds Redis (and every check waiting on it) for long.
//!
//! Lag: a note is copied within one batch of being made (`GATHER`, then the copy's
//! milliseconds) while the store answers; while it does not, notes wait in a bounded queue
//! (`QUEUE`), and past it they are dropped and counted (`tessera_audit_feed_dropped_total`).
//! A note dropped, or lost with its replica, costs no event: the source's next change copies
//! everything past the feed's mark, that one included. Until then the event is in the user's
//! own list only.

use std::cell::Cell;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{StreamExt, stream};
use tokio::sync::mpsc;

use crate::domain::audit::Retention;
use crate::store::{FeedCopy, FeedNote, FeedSource, FeedSources, SharedStore, StoreError};

/// Notes waiting to be copied, at most: about a second of checks at the peak on two cores
/// (BENCHMARKS), so that a batch being copied while the next gathers drops nothing.
const QUEUE: usize = 20_000;
/// Notes taken at once (the same source noted twice in a batch is copied once): more than a
/// `GATHER` of them at that peak.
const BATCH: usize = 8192;
/// How long the copier gathers notes after the first of a batch arrives. Without it, at a
/// moderate rate each batch held one note, and each change paid the copy's calls alone:
/// four round trips, which cost Redis more than the change's own script (BENCHMARKS, "The
/// audit feed's copier"). Gathered, an organization's notes share one script. With a
/// thousand organizations each gets a note every few tens of milliseconds at most, so the
/// gathering is long: at 20 ms each script held about one check, at 250 ms about four, and
/// the cold check went from 59 % to 68 % of its floor. The feed lags by this much more:
/// a quarter of a second (`tests/api/audit.rs` holds the feed to a second).
const GATHER: Duration = Duration::from_millis(250);
/// Copies (groups of an organization's sources) run at once. One source at a time, a copy's
/// round trips (the mark, the source's new events, the append, the webhooks' hint) bound the
/// copier: it kept up with about 3,000 changes a second and dropped the rest of 9,000
/// (BENCHMARKS, "The audit feed's copier").
const COPIES_AT_ONCE: usize = 64;
/// Sources copied in one script, at most. Redis runs nothing else while a script runs: at
/// 9,000 checks a second one organization's batch held some 440 sources, a script of about
/// 9 ms that every check waited behind (p99 60–500 ms, BENCHMARKS, "The audit feed's
/// copier"). 32 sources take Redis well under a millisecond.
const SOURCES_PER_COPY: usize = 32;
/// How long the copier waits before trying again after the store failed.
const RETRY: Duration = Duration::from_millis(250);

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
        self.note_written(FeedNote {
            source,
            retention,
            written: None,
        });
    }

    /// A note that carries what the change wrote (`store::Written`), so that its copy need
    /// not read the source back.
    pub fn note_written(&self, note: FeedNote) {
        if self.notes.try_send(note).is_err() {
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
    pub async fn run(self, store: SharedStore, timeout: Duration) {
        self.run_with(move |sources: Arc<FeedSources>, retention| {
            let store = store.clone();
            async move {
                let deadline = Instant::now() + timeout;
                store.copy_to_feed(&sources, retention, deadline).await
            }
        })
        .await;
    }

    /// `run`, with the copy of one organization's sources given (the tests give their own).
    async fn run_with<Copied>(mut self, copy: impl Fn(Arc<FeedSources>, Retention) -> Copied)
    where
        Copied: Future<Output = Result<FeedCopy, StoreError>>,
    {
        let mut batch = Vec::with_capacity(BATCH);
        let failing = Cell::new(false);
        while self.pending.recv_many(&mut batch, BATCH).await > 0 {
            if batch.len() < BATCH {
                tokio::time::sleep(GATHER).await;
                // What came meanwhile, and nothing more is waited for.
                while batch.len() < BATCH
                    && let Ok(note) = self.pending.try_recv()
                {
                    batch.push(note);
                }
            }
            let waiting = batch.len() + self.pending.len();
            self.waiting.set(i64::try_from(waiting).unwrap_or(i64::MAX));
            let groups = FeedSources::by_org(batch.drain(..), SOURCES_PER_COPY);
            // The groups' copies at once: their round trips share the connection's writes
            // and the thread's wake-ups. Never two copies of one source
            // (a batch holds each once, and the next batch waits for this one), so each
            // source's events keep their order.
            stream::iter(groups)
                .for_each_concurrent(COPIES_AT_ONCE, |(sources, retention)| {
                    copy_until_taken(&copy, sources, retention, &failing)
                })
                .await;
            self.waiting
                .set(i64::try_from(self.pending.len()).unwrap_or(i64::MAX));
        }
    }
}

/// Copies one organization's sources, trying again while the store fails; `failing` is
/// whether the last copy failed, so that a failing store is logged once, and its recovery
/// once.
async fn copy_until_taken<Copied>(
    copy: &impl Fn(Arc<FeedSources>, Retention) -> Copied,
    sources: FeedSources,
    retention: Retention,
    failing: &Cell<bool>,
) where
    Copied: Future<Output = Result<FeedCopy, StoreError>>,
{
    // Shared by the tries, not copied for each: it holds the notes' events.
    let sources = Arc::new(sources);
    loop {
        match copy(sources.clone(), retention).await {
            Ok(copied) => {
                if failing.replace(false) {
                    tracing::info!("organizations' audit feeds are copied again");
                }
                // What no retry mends (an element that does not read back) must not hold up
                // every other source: it is logged, and that source's next change tries
                // again.
                for (source, err) in copied.left_out {
                    tracing::error!(
                        error = %err,
                        source = %source.cursor_field(),
                        "a source of an audit feed cannot be copied"
                    );
                }
                return;
            }
            Err(err @ (StoreError::Corrupt(_) | StoreError::NewerFormat(_))) => {
                tracing::error!(error = %err, "a source of an audit feed cannot be copied");
                return;
            }
            Err(err) => {
                if !failing.replace(true) {
                    tracing::warn!(error = %err, "organizations' audit feeds wait for the store");
                }
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tokio::sync::Barrier;

    use super::*;
    use crate::store::UserKey;

    fn note_of(feed: &AuditFeed, org: &str, user: &str) {
        let key = UserKey {
            org: Arc::from(org),
            user: Arc::from(user),
        };
        feed.note(FeedSource::User(key), Retention::default());
    }

    fn copier() -> (AuditFeed, AuditFeedCopier, prometheus::IntCounter) {
        let dropped = prometheus::IntCounter::new("dropped", "dropped").unwrap();
        let waiting = prometheus::IntGauge::new("waiting", "waiting").unwrap();
        let (feed, copier) = AuditFeed::new(dropped.clone(), waiting);
        (feed, copier, dropped)
    }

    /// Runs the copier until its feed is gone, with a copy that only records what it was
    /// given: each copy's organization and its sources' fields.
    async fn copies_made(copier: AuditFeedCopier) -> Vec<(String, Vec<String>)> {
        let copies = Arc::new(Mutex::new(Vec::new()));
        copier
            .run_with(|sources: Arc<FeedSources>, _| {
                let copies = copies.clone();
                async move {
                    let fields = sources
                        .sources()
                        .iter()
                        .map(FeedSource::cursor_field)
                        .collect();
                    copies
                        .lock()
                        .unwrap()
                        .push((sources.org().to_string(), fields));
                    Ok(FeedCopy::default())
                }
            })
            .await;
        copies.lock().unwrap().clone()
    }

    /// A batch's organizations are copied at once, not one after another: one at a time,
    /// the copier's round trips bound it to a few thousand changes a second, and past that
    /// it drops notes (BENCHMARKS, "The audit feed's copier"). Each copy here waits until all
    /// three are under way, which one at a time never are: the copier would wait forever.
    #[tokio::test]
    async fn copies_the_organizations_of_a_batch_at_once() {
        let (feed, copier, dropped) = copier();
        for org in ["acme", "globex", "initech"] {
            note_of(&feed, org, "ada");
        }
        drop(feed);
        let all_under_way = Arc::new(Barrier::new(3));
        let copied = Arc::new(Mutex::new(Vec::new()));
        let run = copier.run_with(|sources: Arc<FeedSources>, _| {
            let (all_under_way, copied) = (all_under_way.clone(), copied.clone());
            async move {
                all_under_way.wait().await;
                copied.lock().unwrap().push(sources.org().to_string());
                Ok(FeedCopy::default())
            }
        });
        // Not a measure of time: the bound only turns a copier that waits forever into a
        // failure.
        tokio::time::timeout(Duration::from_secs(10), run)
            .await
            .expect("the copier copied its batch one organization at a time");
        let mut copied = copied.lock().unwrap().clone();
        copied.sort();
        assert_eq!(copied, ["acme", "globex", "initech"]);
        assert_eq!(dropped.get(), 0);
    }

    /// An organization's sources go to the store in copies of at most `SOURCES_PER_COPY`:
    /// one script blocks Redis while it runs, and a batch's hundreds of sources in one
    /// script held every check behind it for milliseconds (BENCHMARKS, "The audit feed's
    /// copier").
    #[tokio::test]
    async fn copies_a_large_organization_in_bounded_scripts() {
        let (feed, copier, _) = copier();
        let users: Vec<String> = (0..100).map(|n| format!("user{n}")).collect();
        for user in &users {
            note_of(&feed, "acme", user);
        }
        drop(feed);
        let copies: Vec<Vec<String>> = copies_made(copier)
            .await
            .into_iter()
            .map(|(_, fields)| fields)
            .collect();
        assert!(
            copies.iter().all(|copy| copy.len() <= SOURCES_PER_COPY),
            "copies of {:?} sources",
            copies.iter().map(Vec::len).collect::<Vec<_>>()
        );
        let mut copied: Vec<String> = copies.into_iter().flatten().collect();
        copied.sort();
        let mut expected: Vec<String> = users.iter().map(|user| format!("u:{user}")).collect();
        expected.sort();
        assert_eq!(copied, expected, "each source copied once");
    }

    /// One organization's sources go to the store in one copy, each once: the store reads
    /// their marks at once and appends all their events in one script.
    #[tokio::test]
    async fn gathers_an_organizations_sources_into_one_copy() {
        let (feed, copier, _) = copier();
        for user in ["ada", "grace", "ada", "edsger"] {
            note_of(&feed, "acme", user);
        }
        note_of(&feed, "globex", "ada");
        drop(feed);
        let mut copies = copies_made(copier).await;
        for (_, fields) in &mut copies {
            fields.sort();
        }
        copies.sort();
        assert_eq!(
            copies,
            [
                (
                    "acme".to_owned(),
                    vec!["u:ada".to_owned(), "u:edsger".into(), "u:grace".into()]
                ),
                ("globex".to_owned(), vec!["u:ada".to_owned()]),
            ]
        );
    }
}
