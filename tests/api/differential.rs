//! The attempt rule lives once, in the domain (`decide_attempt`, and `decide_redeem` for
//! recovery codes); the memory store calls it and `attempt.lua` (`redeem_code.lua`)
//! transcribes it. This model check replays the same random histories on
//! the memory store, on a real redis-server and on a 3-master Redis Cluster, and demands the
//! same answer to every call and the same stored record after it. The caller gives the factor ids, the times and the
//! deadlines, so both stores see exactly the same history; only the sequences (each store's
//! clock) are left out of the comparison.

use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::{Just, Strategy, prop_oneof};
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use secrecy::SecretString;
use tessera::domain::audit::{AuditEvent, Author, EventKind, Retention};
use tessera::domain::factor::AttemptVerdict;
use tessera::domain::{FactorId, FactorRecord, LockoutPolicy, Purpose, TotpParams, UnixMicros};
use tessera::store::{
    AddCodesOutcome, AddOutcome, Attempt, AttemptOutcome, ChangeOutcome, FactorStore, FeedDue,
    FeedNote, FeedSource, FeedSources, MemoryStore, NewCodes, NewFactor, RecordFormat,
    RedeemOutcome, Redemption, RedisConfig, RedisMode, RedisNodes, RedisStore, RemoveCodesOutcome,
    Stamp, UserKey, Written,
};

use crate::helpers::{PINNED_SECS, RedisCluster, RedisServer};

/// Which code an attempt carries, as the step it matched.
#[derive(Debug, Clone, Copy)]
enum Code {
    /// The current step's code.
    Right,
    /// No match.
    Wrong,
    /// The step of the last accepted code again.
    Replayed,
    /// The step before the current one (inside the window, maybe already used).
    Old,
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Enroll,
    Verify(Code),
    Check(Code),
    /// A check against an enrollment that is no longer the user's (a stale cache).
    StaleCheck,
    Remove,
    Unlock,
    /// The clock moves on by this many seconds (a lock expires, new steps come).
    Advance(i64),
    /// This many recovery codes added (the maximum is 8 here, so some generations pass it).
    Generate(u8),
    /// A recovery code at login.
    Redeem(Recovery),
    RemoveCodes,
}

/// Which recovery code a login carries.
#[derive(Debug, Clone, Copy)]
enum Recovery {
    /// One generated and not used yet (if there is one).
    Unused,
    /// One used already (if there is one).
    Used,
    /// One never generated.
    Wrong,
}

fn code() -> impl Strategy<Value = Code> {
    prop_oneof![
        Just(Code::Right),
        Just(Code::Wrong),
        Just(Code::Replayed),
        Just(Code::Old)
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => Just(Op::Enroll),
        3 => code().prop_map(Op::Verify),
        6 => code().prop_map(Op::Check),
        1 => Just(Op::StaleCheck),
        1 => Just(Op::Remove),
        1 => Just(Op::Unlock),
        // Often past a lock's minute: an expired lock must start a fresh count.
        4 => prop_oneof![
            1 => Just(0i64),
            1 => Just(30),
            1 => Just(59),
            3 => Just(61),
            1 => Just(600)
        ]
        .prop_map(Op::Advance),
        2 => (1u8..5).prop_map(Op::Generate),
        4 => prop_oneof![
            2 => Just(Recovery::Unused),
            1 => Just(Recovery::Used),
            2 => Just(Recovery::Wrong)
        ]
        .prop_map(Op::Redeem),
        1 => Just(Op::RemoveCodes),
    ]
}

const MAX_CODES_HERE: u32 = 8;

/// A history: the lockout policy (maximum 1 to 4, locked for a minute or until unlocked)
/// and up to 40 calls.
fn history() -> impl Strategy<Value = (u32, bool, Vec<Op>)> {
    (
        1u32..5,
        proptest::bool::ANY,
        proptest::collection::vec(op(), 1..40),
    )
}

/// An answer with the store's own clock (the sequence) left out.
#[derive(Debug, PartialEq)]
enum Answer {
    Added(UnixMicros),
    AlreadyReady,
    Attempt(AttemptOutcome),
    Change(Option<UnixMicros>, bool),
    /// Codes held after, or too many (with the held ones).
    Codes(Result<u32, u32>),
    Redeemed(RedeemOutcome),
    CodesRemoved(RemoveCodesOutcome),
}

fn redeem_answer(outcome: RedeemOutcome) -> Answer {
    Answer::Redeemed(match outcome {
        RedeemOutcome::Accepted {
            changed_at,
            remaining,
            ..
        } => RedeemOutcome::Accepted {
            sequence: 0,
            changed_at,
            remaining,
        },
        other => other,
    })
}

fn codes_removed_answer(outcome: RemoveCodesOutcome) -> Answer {
    Answer::CodesRemoved(match outcome {
        RemoveCodesOutcome::Removed { changed_at, .. } => RemoveCodesOutcome::Removed {
            sequence: 0,
            changed_at,
        },
        other => other,
    })
}

fn attempt_answer(outcome: AttemptOutcome) -> Answer {
    Answer::Attempt(match outcome {
        AttemptOutcome::Committed(AttemptVerdict::Accepted { changed_at, .. }) => {
            AttemptOutcome::Committed(AttemptVerdict::Accepted {
                sequence: 0,
                changed_at,
            })
        }
        other => other,
    })
}

fn change_answer(outcome: ChangeOutcome) -> Answer {
    match outcome {
        ChangeOutcome::Changed { changed_at, .. } => Answer::Change(Some(changed_at), false),
        ChangeOutcome::Absent => Answer::Change(None, false),
        ChangeOutcome::NotLocked => Answer::Change(None, true),
    }
}

/// The record with the sequence left out.
fn comparable(record: Option<FactorRecord>) -> Option<FactorRecord> {
    record.map(|mut record| {
        record.sequence = 0;
        record
    })
}

/// The stores compared: the memory store, Redis (a check's script appends to the feed), Redis
/// with the copier appending instead (`redis.feed_in_script = false`), a Redis Cluster.
const STORES: usize = 4;
const NAMES: [&str; STORES] = ["memory", "redis", "redis, feed copied", "cluster"];
/// Where the scripts append to the feed themselves, and where the copier does on one server.
const FED_BY_SCRIPTS: usize = 1;
const COPIED_ON_ONE_SERVER: usize = 2;

struct Replay<'a> {
    /// The memory store first: the others are compared with it.
    stores: [&'a dyn FactorStore; STORES],
    key: UserKey,
    policy: LockoutPolicy,
    params: TotpParams,
    now: UnixMicros,
    enrollments: u8,
    /// Recovery-code fields generated so far, and those used or removed.
    issued: Vec<String>,
    spent: Vec<String>,
    /// Events each store's feed took from the attempts' notes (`carry_to_feed`).
    carried: [usize; STORES],
    /// Redis's attempts that answered what they wrote (the copier's Redis).
    carrying: usize,
    /// Redis's attempts that appended to the feed themselves (one server, the default).
    fed: usize,
}

impl Replay<'_> {
    /// What an attempt wrote, copied into the organization's feed as the copier does with
    /// the attempt's note: Redis answers what the script wrote and the copy appends it
    /// unread while the feed follows on; the memory store's copy reads its list. Other
    /// changes are not copied until the end, so the next attempt's copy finds a gap.
    async fn carry_to_feed(
        &mut self,
        place: usize,
        written: Option<Written>,
    ) -> Result<(), TestCaseError> {
        let note = FeedNote {
            source: FeedSource::User(self.key.clone()),
            retention: Retention::default(),
            written,
        };
        for (sources, retention) in FeedSources::by_org([note], 32) {
            let copy = self.stores[place]
                .copy_to_feed(&sources, retention, Self::deadline())
                .await
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            proptest::prop_assert!(copy.left_out.is_empty(), "{:?}", copy.left_out);
            self.carried[place] += copy.appended;
        }
        Ok(())
    }

    fn deadline() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    fn stamp(&self) -> Stamp {
        Stamp {
            now: self.now,
            actor: Arc::new(Author {
                request_id: "history".into(),
                user: "u".into(),
                org: "o".into(),
                // Recorded for some changes, not others: the feed leaves out an empty one.
                address: (self.enrollments % 2 == 1).then(|| "192.0.2.0/24".into()),
            }),
            retention: Retention::default(),
        }
    }

    /// The step `code` matches, from what the stores hold now.
    fn matched_step(&self, code: Code, stored: Option<&FactorRecord>) -> Option<u64> {
        let current = self.params.step_at(self.now.unsigned_secs());
        match code {
            Code::Right => Some(current),
            Code::Wrong => None,
            Code::Replayed => Some(stored.and_then(|r| r.last_step).unwrap_or(current)),
            Code::Old => Some(current.saturating_sub(1)),
        }
    }

    async fn run(&mut self, op: Op) -> Result<(), TestCaseError> {
        if let Op::Advance(secs) = op {
            self.now = self.now.saturating_add_micros(secs * 1_000_000);
            return Ok(());
        }
        let stored = self.stores[0]
            .load(&self.key, Self::deadline())
            .await
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut answers = Vec::new();
        let factor_id = stored
            .as_ref()
            .map_or(FactorId::from_random([0; 16]), |r| r.factor_id);
        let attempt = |purpose, matched_step, factor_id| Attempt {
            factor_id,
            purpose,
            matched_step,
            policy: self.policy,
        };
        let planned = match op {
            Op::Verify(code) => Some(attempt(
                Purpose::Enrollment,
                self.matched_step(code, stored.as_ref()),
                factor_id,
            )),
            Op::Check(code) => Some(attempt(
                Purpose::Login,
                self.matched_step(code, stored.as_ref()),
                factor_id,
            )),
            Op::StaleCheck => Some(attempt(
                Purpose::Login,
                Some(self.params.step_at(self.now.unsigned_secs())),
                FactorId::from_random([0xee; 16]),
            )),
            _ => None,
        };
        if let Op::Enroll = op {
            self.enrollments = self.enrollments.wrapping_add(1);
        }
        let fresh = |count: u8, issued: &[String]| -> Vec<String> {
            (0..count)
                .map(|i| format!("r:k:{:064x}", issued.len() + usize::from(i)))
                .collect()
        };
        let new_codes = match op {
            Op::Generate(count) => fresh(count, &self.issued),
            _ => Vec::new(),
        };
        let candidate = match op {
            Op::Redeem(Recovery::Unused) => self
                .issued
                .iter()
                .find(|field| !self.spent.contains(field))
                .cloned(),
            Op::Redeem(Recovery::Used) => self.spent.first().cloned(),
            _ => None,
        }
        .unwrap_or_else(|| "r:k:never".to_owned());
        for (place, store) in self.stores.into_iter().enumerate() {
            let answer = match op {
                Op::Enroll => {
                    let factor = NewFactor {
                        factor_id: FactorId::from_random([self.enrollments; 16]),
                        params: self.params,
                        sealed_secret: vec![self.enrollments; 8],
                    };
                    match store
                        .add(&self.key, factor, &self.stamp(), Self::deadline())
                        .await
                    {
                        Ok(AddOutcome::Added { created_at, .. }) => Answer::Added(created_at),
                        Ok(AddOutcome::AlreadyReady) => Answer::AlreadyReady,
                        Err(e) => return Err(TestCaseError::fail(e.to_string())),
                    }
                }
                Op::Verify(_) | Op::Check(_) | Op::StaleCheck => {
                    let attempt = planned.ok_or_else(|| TestCaseError::fail("no attempt"))?;
                    let attempted = store
                        .attempt(&self.key, attempt, &self.stamp(), Self::deadline())
                        .await
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                    if let AttemptOutcome::Committed(_) = attempted.outcome {
                        match attempted.feed {
                            FeedDue::Nothing => self.fed += usize::from(place == FED_BY_SCRIPTS),
                            FeedDue::Copy(written) => {
                                self.carrying +=
                                    usize::from(place == COPIED_ON_ONE_SERVER && written.is_some());
                                self.carry_to_feed(place, written).await?;
                            }
                        }
                    }
                    attempt_answer(attempted.outcome)
                }
                Op::Remove => change_answer(
                    store
                        .remove(&self.key, &self.stamp(), Self::deadline())
                        .await
                        .map_err(|e| TestCaseError::fail(e.to_string()))?,
                ),
                Op::Unlock => change_answer(
                    store
                        .unlock(&self.key, &self.stamp(), Self::deadline())
                        .await
                        .map_err(|e| TestCaseError::fail(e.to_string()))?,
                ),
                Op::Generate(_) => {
                    let codes = NewCodes {
                        fields: new_codes.clone(),
                        max: MAX_CODES_HERE,
                    };
                    match store
                        .add_recovery_codes(&self.key, codes, &self.stamp(), Self::deadline())
                        .await
                        .map_err(|e| TestCaseError::fail(e.to_string()))?
                    {
                        AddCodesOutcome::Added { held, .. } => Answer::Codes(Ok(held)),
                        AddCodesOutcome::TooMany { held } => Answer::Codes(Err(held)),
                    }
                }
                Op::Redeem(_) => {
                    let redemption = Redemption {
                        candidates: vec![candidate.clone()],
                        policy: self.policy,
                    };
                    redeem_answer(
                        store
                            .redeem_recovery_code(
                                &self.key,
                                redemption,
                                &self.stamp(),
                                Self::deadline(),
                            )
                            .await
                            .map_err(|e| TestCaseError::fail(e.to_string()))?,
                    )
                }
                Op::RemoveCodes => codes_removed_answer(
                    store
                        .remove_recovery_codes(&self.key, &self.stamp(), Self::deadline())
                        .await
                        .map_err(|e| TestCaseError::fail(e.to_string()))?,
                ),
                Op::Advance(_) => return Ok(()),
            };
            let record = store
                .load(&self.key, Self::deadline())
                .await
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let user = store
                .load_user(&self.key, Self::deadline())
                .await
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            // The check's read (the factor's fields) and the listing's (the whole record)
            // agree on the factor.
            proptest::prop_assert_eq!(&user.factor, &record);
            let held = user.recovery_codes;
            // The same events, from the scripts (`lua/audit.lua`) as from the domain's rule
            // (`domain::audit`), which the memory store follows.
            let events: Vec<EventKind> = store
                .user_events(&self.key, None, 1000, Self::deadline())
                .await
                .map_err(|e| TestCaseError::fail(e.to_string()))?
                .into_iter()
                .map(|event| event.kind)
                .collect();
            answers.push((answer, comparable(record), held, events));
        }
        match (&op, &answers[0].0) {
            (Op::Generate(_), Answer::Codes(Ok(_))) => self.issued.extend(new_codes),
            (Op::Redeem(_), Answer::Redeemed(RedeemOutcome::Accepted { .. })) => {
                self.spent.push(candidate);
            }
            (Op::RemoveCodes, Answer::CodesRemoved(RemoveCodesOutcome::Removed { .. })) => {
                let left: Vec<String> = self
                    .issued
                    .iter()
                    .filter(|field| !self.spent.contains(field))
                    .cloned()
                    .collect();
                self.spent.extend(left);
            }
            _ => {}
        }
        for (answer, store) in answers.iter().zip(NAMES).skip(1) {
            proptest::prop_assert_eq!(
                &answers[0],
                answer,
                "{:?}: memory (left) and {} (right) differ",
                op,
                store
            );
        }
        Ok(())
    }
}

/// Random histories of enrollments, verifies, checks (right, wrong, replayed and old codes,
/// against the current enrollment or a stale one), removals, unlocks, clock jumps, and
/// recovery codes generated, used (unused, used, never made) and removed:
/// the memory store, Redis (the check's script appending to the feed, or the copier), and a
/// Redis Cluster answer alike and keep alike.
#[test]
fn the_memory_store_and_redis_agree_on_every_history() {
    let redis = RedisServer::start();
    let cluster = RedisCluster::start(3, 0);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let connect = |mode, urls: String, key_prefix: &str, feed_in_script| {
        let config = RedisConfig {
            nodes: RedisNodes::parse(mode, &SecretString::from(urls)).unwrap(),
            password: None,
            tls_ca_file: None,
            key_prefix: key_prefix.into(),
            timeout: Duration::from_secs(5),
            wait_replicas: 0,
            wait_connections: 1,
            record_format: RecordFormat::Compact,
            feed_in_script,
        };
        RedisStore::connect(None, &config, None).unwrap()
    };
    let redis_store = connect(RedisMode::Standalone, redis.url(), "differential", true);
    // The same server, another prefix: checks' events copied by the copier, not the scripts.
    let copied_store = connect(RedisMode::Standalone, redis.url(), "copied", false);
    let cluster_store = connect(RedisMode::Cluster, cluster.seeds(), "differential", true);
    let memory = MemoryStore::new();
    let case = std::sync::atomic::AtomicU32::new(0);
    // A fixed seed: every run replays the same histories, so a pass in CI means the same
    // thing each time and a failure reproduces. PROPTEST_CASES explores further (the same
    // histories first, then more).
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(256);
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha));
    // Events each store's feed took from attempts' notes, and how many of Redis's attempts
    // answered what they wrote (the copy's carried path ran).
    let carried = std::cell::Cell::new([0usize; STORES]);
    let carrying = std::cell::Cell::new(0usize);
    let fed = std::cell::Cell::new(0usize);
    let result = runner.run(&history(), |(max_attempts, until_unlocked, ops)| {
        let n = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut replay = Replay {
            stores: [&memory, &redis_store, &copied_store, &cluster_store],
            key: UserKey {
                org: Arc::from("acme"),
                user: Arc::from(format!("u{n}")),
            },
            policy: LockoutPolicy {
                max_attempts,
                lock_duration_micros: if until_unlocked { 0 } else { 60_000_000 },
                show_failures: true,
            },
            params: TotpParams::default(),
            now: UnixMicros::from_secs(PINNED_SECS),
            enrollments: 0,
            issued: Vec::new(),
            spent: Vec::new(),
            carried: [0; STORES],
            carrying: 0,
            fed: 0,
        };
        let ran = runtime.block_on(async {
            for op in ops {
                replay.run(op).await?;
            }
            Ok(())
        });
        let mut total = carried.get();
        for (total, case) in total.iter_mut().zip(replay.carried) {
            *total += case;
        }
        carried.set(total);
        carrying.set(carrying.get() + replay.carrying);
        fed.set(fed.get() + replay.fed);
        ran
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
    let users = case.load(std::sync::atomic::Ordering::Relaxed);
    let feeds = runtime.block_on(async {
        let mut feeds = Vec::new();
        let stores = [
            &memory as &dyn FactorStore,
            &redis_store,
            &copied_store,
            &cluster_store,
        ];
        for (place, (store, carried)) in stores.into_iter().zip(carried.get()).enumerate() {
            // How many the feed took before is not known where the scripts appended.
            let carried = (place != FED_BY_SCRIPTS).then_some(carried);
            feeds.push(every_feed_copied_at_once(store, users, carried).await);
        }
        feeds
    });
    assert!(!feeds[0].is_empty(), "the histories wrote no events");
    assert!(
        carrying.get() > 0,
        "no attempt on Redis answered what it wrote"
    );
    assert!(
        fed.get() > 0,
        "no attempt on Redis appended to the feed itself"
    );
    for (feed, name) in feeds.iter().zip(NAMES).skip(1) {
        let differs = feeds[0].iter().zip(feed).position(|(a, b)| a != b);
        assert!(
            differs.is_none() && feeds[0].len() == feed.len(),
            "the memory store's feed and {name}'s differ (at {differs:?}; {} and {} events)",
            feeds[0].len(),
            feed.len()
        );
    }
}

/// Every history's user's events copied into the organization's feed in one call per batch
/// of sources, as the copier gathers them, and the feed read back: each event once, in its
/// user's order; a second copy finds nothing new. `carried`: how many events the feed took
/// before (`Replay::carry_to_feed`), when the copies alone appended them.
async fn every_feed_copied_at_once(
    store: &dyn FactorStore,
    users: u32,
    carried: Option<usize>,
) -> Vec<AuditEvent> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let notes: Vec<FeedNote> = (0..users)
        .map(|n| {
            let key = UserKey {
                org: Arc::from("acme"),
                user: Arc::from(format!("u{n}")),
            };
            FeedNote {
                source: FeedSource::User(key),
                retention: Retention::default(),
                written: None,
            }
        })
        .collect();
    let mut appended = carried.unwrap_or(0);
    for batch in notes.chunks(100) {
        for (sources, retention) in FeedSources::by_org(batch.iter().cloned(), 32) {
            let copy = store
                .copy_to_feed(&sources, retention, deadline)
                .await
                .unwrap();
            assert!(copy.left_out.is_empty(), "{:?}", copy.left_out);
            appended += copy.appended;
            let again = store
                .copy_to_feed(&sources, retention, deadline)
                .await
                .unwrap();
            assert_eq!(again.appended, 0, "a second copy appended again");
        }
    }
    let mut feed = Vec::new();
    let mut before: Option<String> = None;
    loop {
        let page = store
            .feed_events("acme", before.as_deref(), 500, deadline)
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        before = Some(last.id.clone());
        feed.extend(page);
    }
    if carried.is_some() {
        assert_eq!(
            feed.len(),
            appended,
            "the feed holds what the copies appended"
        );
    }
    // Oldest first, and each user's events in their order (by sequence, which each store
    // takes from its own clock: compared within a store only).
    feed.reverse();
    for user in 0..users {
        let user = format!("u{user}");
        let sequences: Vec<u64> = feed
            .iter()
            .filter(|event| event.user.as_deref() == Some(&*user))
            .map(|event| event.sequence)
            .collect();
        assert!(sequences.is_sorted(), "{user:?}: {sequences:?}");
    }
    // Each user's events in their order: users' events interleave in the order the feed
    // took them, which differs (Redis's scripts append at once, a copy when it runs). Every
    // field but the two each store numbers itself: the scripts write the feed's fields as
    // the copier does (`lua/audit.lua`'s `feed_event` against `feed_fields`).
    feed.sort_by(|a, b| a.user.cmp(&b.user));
    feed.into_iter()
        .map(|event| AuditEvent {
            id: String::new(),
            sequence: 0,
            ..event
        })
        .collect()
}
