//! The embedded store of `tessera dev` and tests: the Lua scripts' semantics over a map.
//! One process only; its state ends with the process.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;

use super::audit::{FeedCopy, FeedSource, FeedSources, Stamp, entry_id};
use super::policy::policies_from;
use super::webhook::{PendingDelivery, StoredEndpoint};
use super::{
    AddCodesOutcome, AddOutcome, Attempt, AttemptOutcome, Attempted, ChangeOutcome, FactorStore,
    LockIndexChange, NewCodes, NewFactor, PolicyChanges, PolicySeed, PolicyWrite, PolicyWritten,
    RedeemOutcome, Redemption, RemoveCodesOutcome, StoreError, UserKey, UserRecord, stored_form,
};
use crate::domain::audit::{AuditEvent, EventKind, Retention, attempt_events, redeem_events};
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
    events: EventStream,
}

/// Events as Redis keeps them: a user's (or an organization's own) newest last here, with
/// ids `<sequence>-<n>` as `lua/audit.lua` makes them; a feed's with a stream's ids
/// `<ms>-<n>`. Trimmed by count and by age as the scripts trim.
#[derive(Default)]
struct EventStream {
    entries: VecDeque<AuditEvent>,
    last: (u64, u64),
}

impl EventStream {
    fn wall_ms() -> u64 {
        u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0)
    }

    /// Drops the oldest past `max_events`, and those whose id's first number (a sequence in
    /// microseconds, or a stream's milliseconds) is below `oldest`.
    fn trim(&mut self, max_events: u32, oldest: u64) {
        while self.entries.len() > max_events as usize {
            self.entries.pop_front();
        }
        while self
            .entries
            .front()
            .and_then(|event| entry_id(&event.id))
            .is_some_and(|(first, _)| first < oldest)
        {
            self.entries.pop_front();
        }
    }

    /// Appends a copied event under a stream id, as the feed's XADD does.
    fn push(&mut self, mut event: AuditEvent, retention: Retention) {
        let ms = Self::wall_ms();
        self.last = if ms > self.last.0 {
            (ms, 0)
        } else {
            (self.last.0, self.last.1 + 1)
        };
        event.id = format!("{}-{}", self.last.0, self.last.1);
        self.entries.push_back(event);
        let age_ms = u64::try_from(retention.max_age_micros() / 1000).unwrap_or(0);
        self.trim(retention.max_events, self.last.0.saturating_sub(age_ms));
    }

    /// The change's events, as `lua/audit.lua` appends them.
    fn record(
        &mut self,
        kinds: &[EventKind],
        user: Option<&Arc<str>>,
        sequence: u64,
        stamp: &Stamp,
    ) {
        for (index, kind) in kinds.iter().enumerate() {
            self.entries.push_back(AuditEvent {
                id: format!("{sequence}-{}", index + 1),
                kind: *kind,
                user: user.cloned(),
                at: stamp.now,
                sequence,
                request_id: stamp.actor.request_id.to_string(),
                actor_user: stamp.actor.user.to_string(),
                actor_org: stamp.actor.org.to_string(),
                address: stamp.actor.address.as_deref().map(str::to_owned),
            });
        }
        let clock = Self::wall_ms().saturating_mul(1000);
        let age = u64::try_from(stamp.retention.max_age_micros()).unwrap_or(0);
        self.trim(
            stamp.retention.max_events_per_user,
            clock.saturating_sub(age),
        );
    }

    /// Newest first, before `before`.
    fn page(&self, before: Option<&str>, limit: usize) -> Vec<AuditEvent> {
        let before = before.and_then(entry_id);
        self.entries
            .iter()
            .rev()
            .filter(|event| before.is_none_or(|before| entry_id(&event.id) < Some(before)))
            .take(limit)
            .cloned()
            .collect()
    }
}

/// An organization's feed, and how far it copied each source (`store::audit`).
#[derive(Default)]
struct Feed {
    stream: EventStream,
    copied: HashMap<String, String>,
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
    policy_events: HashMap<String, EventStream>,
    feeds: HashMap<String, Feed>,
    webhooks: Webhooks,
}

/// Webhook endpoints and deliveries, as `store/webhook.rs` keeps them in Redis.
#[derive(Default)]
struct Webhooks {
    endpoints: std::collections::BTreeMap<String, StoredEndpoint>,
    /// Per organization's feed, its consumer group: the last entry read, and the entries read
    /// and not acknowledged (by whom, since when).
    groups: HashMap<String, Group>,
    /// Due time and member (`PendingDelivery::member`), as the retry set's score and member.
    retry: BTreeSet<(i64, String)>,
    dead: HashMap<String, VecDeque<PendingDelivery>>,
}

#[derive(Default)]
struct Group {
    last_read: Option<(u64, u64)>,
    pending: std::collections::BTreeMap<(u64, u64), (String, Instant)>,
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

    /// One source's events past the feed's mark into the feed; how many.
    fn copy_source(
        &self,
        source: &FeedSource,
        retention: Retention,
        deadline: Instant,
    ) -> Result<usize, StoreError> {
        // The source's events first (another lock, as they are another slot in Redis).
        let events: Vec<AuditEvent> = match source {
            FeedSource::User(key) => self.with_slot(key, deadline, |slot| {
                slot.events.entries.iter().cloned().collect()
            })?,
            FeedSource::Policies(org) => self.with_orgs(deadline, |orgs| {
                orgs.policy_events
                    .get(org.as_ref())
                    .map(|stream| stream.entries.iter().cloned().collect())
                    .unwrap_or_default()
            })?,
        };
        self.with_orgs(deadline, |orgs| {
            let feed = orgs.feeds.entry(source.org().to_string()).or_default();
            let field = source.cursor_field();
            let mark = feed.copied.get(&field).and_then(|mark| entry_id(mark));
            let mut appended = 0;
            for event in events {
                if mark.is_some_and(|mark| entry_id(&event.id).is_none_or(|id| id <= mark)) {
                    continue;
                }
                feed.copied.insert(field.clone(), event.id.clone());
                feed.stream.push(event, retention);
                appended += 1;
            }
            appended
        })
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
        stamp: &Stamp,
        deadline: Instant,
    ) -> Result<AddOutcome, StoreError> {
        let now = stamp.now;
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
            slot.events
                .record(&[EventKind::Enrolled], Some(&key.user), sequence, stamp);
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
        stamp: &Stamp,
        deadline: Instant,
    ) -> Result<Attempted, StoreError> {
        let now = stamp.now;
        self.with_slot(key, deadline, |slot| {
            let decision = decide_attempt(slot.factor.as_ref(), &attempt, now);
            // A lock the attempt may pass is one that expired: the commit clears it.
            let lock_expired = slot.factor.as_ref().is_some_and(|f| f.lock.is_some());
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
                    let kinds = attempt_events(attempt.purpose, &committed, lock_expired);
                    slot.events.record(&kinds, Some(&key.user), sequence, stamp);
                    committed
                        .verdict(sequence, now)
                        .map_or(AttemptOutcome::Absent, AttemptOutcome::Committed)
                }
            }
            .into()
        })
    }

    async fn remove(
        &self,
        key: &UserKey,
        stamp: &Stamp,
        deadline: Instant,
    ) -> Result<ChangeOutcome, StoreError> {
        let now = stamp.now;
        self.with_slot(key, deadline, |slot| {
            let Some(removed) = slot.factor.take() else {
                return ChangeOutcome::Absent;
            };
            // What is the user's stays: failures, the lock, the recovery codes.
            slot.standing = Standing {
                failures: removed.failures,
                lock: removed.lock,
            };
            let sequence = slot.next_sequence();
            slot.events
                .record(&[EventKind::Removed], Some(&key.user), sequence, stamp);
            ChangeOutcome::Changed {
                sequence,
                changed_at: now,
            }
        })
    }

    async fn unlock(
        &self,
        key: &UserKey,
        stamp: &Stamp,
        deadline: Instant,
    ) -> Result<ChangeOutcome, StoreError> {
        let now = stamp.now;
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
            let sequence = slot.changed(now);
            slot.events
                .record(&[EventKind::Unlocked], Some(&key.user), sequence, stamp);
            ChangeOutcome::Changed {
                sequence,
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
        stamp: &Stamp,
        deadline: Instant,
    ) -> Result<AddCodesOutcome, StoreError> {
        let now = stamp.now;
        self.with_slot(key, deadline, |slot| {
            let held = count(&slot.codes);
            let adding = u32::try_from(codes.fields.len()).unwrap_or(u32::MAX);
            if may_add(held, adding, codes.max).is_err() {
                return AddCodesOutcome::TooMany { held };
            }
            slot.codes.extend(codes.fields);
            let sequence = slot.changed(now);
            let kinds = [EventKind::RecoveryCodesGenerated];
            slot.events.record(&kinds, Some(&key.user), sequence, stamp);
            AddCodesOutcome::Added {
                sequence,
                held: count(&slot.codes),
            }
        })
    }

    async fn redeem_recovery_code(
        &self,
        key: &UserKey,
        redemption: Redemption,
        stamp: &Stamp,
        deadline: Instant,
    ) -> Result<RedeemOutcome, StoreError> {
        let now = stamp.now;
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
            // A lock the redemption may pass is one that expired: the commit clears it.
            let kinds = redeem_events(&decision, standing.lock.is_some());
            let outcome = match decision {
                RedeemDecision::Locked(lock) => return RedeemOutcome::Locked(lock),
                RedeemDecision::NoCodes => return RedeemOutcome::NoCodes,
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
            };
            let sequence = slot.sequence;
            slot.events.record(&kinds, Some(&key.user), sequence, stamp);
            outcome
        })
    }

    async fn remove_recovery_codes(
        &self,
        key: &UserKey,
        stamp: &Stamp,
        deadline: Instant,
    ) -> Result<RemoveCodesOutcome, StoreError> {
        let now = stamp.now;
        self.with_slot(key, deadline, |slot| {
            if let Some(lock) = slot.standing().lock.filter(|lock| lock.is_active(now)) {
                return RemoveCodesOutcome::Locked(lock);
            }
            if slot.codes.is_empty() {
                return RemoveCodesOutcome::NoCodes;
            }
            slot.codes.clear();
            let sequence = slot.changed(now);
            let kinds = [EventKind::RecoveryCodesRemoved];
            slot.events.record(&kinds, Some(&key.user), sequence, stamp);
            RemoveCodesOutcome::Removed {
                sequence,
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
        stamp: &Stamp,
        deadline: Instant,
    ) -> Result<PolicyWritten, StoreError> {
        let now = stamp.now;
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
            let sequence = orgs.changed(org);
            orgs.policy_events
                .entry(org.to_owned())
                .or_default()
                .record(&[EventKind::PolicyChanged], None, sequence, stamp);
            PolicyWritten::Written { sequence }
        })
    }

    async fn seed_policies(
        &self,
        org: &str,
        seed: &PolicySeed,
        stamp: &Stamp,
        deadline: Instant,
    ) -> Result<bool, StoreError> {
        let now = stamp.now;
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
                let sequence = orgs.changed(org);
                orgs.policy_events
                    .entry(org.to_owned())
                    .or_default()
                    .record(&[EventKind::PolicyChanged], None, sequence, stamp);
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

    async fn user_events(
        &self,
        key: &UserKey,
        before: Option<&str>,
        limit: usize,
        deadline: Instant,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        self.with_slot(key, deadline, |slot| slot.events.page(before, limit))
    }

    async fn copy_to_feed(
        &self,
        sources: &FeedSources,
        retention: Retention,
        deadline: Instant,
    ) -> Result<FeedCopy, StoreError> {
        let mut copy = FeedCopy::default();
        for source in sources.sources() {
            copy.appended += self.copy_source(source, retention, deadline)?;
        }
        Ok(copy)
    }

    async fn feed_events(
        &self,
        org: &str,
        before: Option<&str>,
        limit: usize,
        deadline: Instant,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        self.with_orgs(deadline, |orgs| {
            orgs.feeds
                .get(org)
                .map(|feed| feed.stream.page(before, limit))
                .unwrap_or_default()
        })
    }

    async fn put_endpoint(
        &self,
        endpoint: &StoredEndpoint,
        deadline: Instant,
    ) -> Result<(), StoreError> {
        self.with_orgs(deadline, |orgs| {
            orgs.webhooks
                .endpoints
                .insert(endpoint.id.clone(), endpoint.clone());
        })
    }

    async fn delete_endpoint(
        &self,
        org: &str,
        id: &str,
        deadline: Instant,
    ) -> Result<bool, StoreError> {
        self.with_orgs(deadline, |orgs| {
            let endpoints = &mut orgs.webhooks.endpoints;
            match endpoints.get(id) {
                Some(endpoint) if endpoint.org == org => endpoints.remove(id).is_some(),
                _ => false,
            }
        })
    }

    async fn endpoints(&self, deadline: Instant) -> Result<Vec<StoredEndpoint>, StoreError> {
        self.with_orgs(deadline, |orgs| {
            orgs.webhooks.endpoints.values().cloned().collect()
        })
    }

    async fn feed_orgs(&self, deadline: Instant) -> Result<Vec<Arc<str>>, StoreError> {
        self.with_orgs(deadline, |orgs| {
            orgs.feeds
                .keys()
                .map(|org| Arc::from(org.as_str()))
                .collect()
        })
    }

    async fn take_feed(
        &self,
        org: &str,
        consumer: &str,
        claim_idle: std::time::Duration,
        count: usize,
        deadline: Instant,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        self.with_orgs(deadline, |orgs| {
            let Some(feed) = orgs.feeds.get(org) else {
                return Vec::new();
            };
            let group = orgs.webhooks.groups.entry(org.to_owned()).or_default();
            let mut taken = Vec::new();
            // A dead consumer's entries first (XAUTOCLAIM), then new ones (XREADGROUP >).
            for (id, (owner, since)) in group.pending.iter_mut() {
                if taken.len() == count {
                    break;
                }
                if since.elapsed() >= claim_idle
                    && let Some(event) = feed
                        .stream
                        .entries
                        .iter()
                        .find(|e| entry_id(&e.id) == Some(*id))
                {
                    *owner = consumer.to_owned();
                    *since = Instant::now();
                    taken.push(event.clone());
                }
            }
            for event in &feed.stream.entries {
                if taken.len() == count {
                    break;
                }
                let Some(id) = entry_id(&event.id) else {
                    continue;
                };
                if group.last_read.is_some_and(|last| id <= last) {
                    continue;
                }
                group.last_read = Some(id);
                group
                    .pending
                    .insert(id, (consumer.to_owned(), Instant::now()));
                taken.push(event.clone());
            }
            taken
        })
    }

    async fn ack_feed(
        &self,
        org: &str,
        ids: &[String],
        deadline: Instant,
    ) -> Result<(), StoreError> {
        self.with_orgs(deadline, |orgs| {
            if let Some(group) = orgs.webhooks.groups.get_mut(org) {
                for id in ids.iter().filter_map(|id| entry_id(id)) {
                    group.pending.remove(&id);
                }
            }
        })
    }

    async fn schedule_delivery(
        &self,
        delivery: &PendingDelivery,
        due: UnixMicros,
        replacing: Option<&PendingDelivery>,
        deadline: Instant,
    ) -> Result<(), StoreError> {
        self.with_orgs(deadline, |orgs| {
            let retry = &mut orgs.webhooks.retry;
            if let Some(previous) = replacing {
                let member = previous.member();
                retry.retain(|(_, m)| *m != member);
            }
            retry.insert((due.0, delivery.member()));
        })
    }

    async fn claim_deliveries(
        &self,
        now: UnixMicros,
        lease: std::time::Duration,
        count: usize,
        deadline: Instant,
    ) -> Result<Vec<PendingDelivery>, StoreError> {
        let lease = i64::try_from(lease.as_micros()).unwrap_or(i64::MAX);
        self.with_orgs(deadline, |orgs| {
            let retry = &mut orgs.webhooks.retry;
            let due: Vec<(i64, String)> = retry
                .iter()
                .take_while(|(at, _)| *at <= now.0)
                .take(count)
                .cloned()
                .collect();
            let mut claimed = Vec::with_capacity(due.len());
            for entry in due {
                retry.remove(&entry);
                retry.insert((now.0.saturating_add(lease), entry.1.clone()));
                if let Ok(delivery) = serde_json::from_str(&entry.1) {
                    claimed.push(delivery);
                }
            }
            claimed
        })
    }

    async fn finish_delivery(
        &self,
        delivery: &PendingDelivery,
        deadline: Instant,
    ) -> Result<(), StoreError> {
        let member = delivery.member();
        self.with_orgs(deadline, |orgs| {
            orgs.webhooks.retry.retain(|(_, m)| *m != member);
        })
    }

    async fn dead_letter(
        &self,
        delivery: &PendingDelivery,
        deadline: Instant,
    ) -> Result<(), StoreError> {
        let member = delivery.member();
        self.with_orgs(deadline, |orgs| {
            orgs.webhooks.retry.retain(|(_, m)| *m != member);
            let dead = orgs.webhooks.dead.entry(delivery.org.clone()).or_default();
            dead.push_front(delivery.clone());
            dead.truncate(DEAD_LETTERS_KEPT);
        })
    }

    async fn dead_letters(
        &self,
        org: &str,
        deadline: Instant,
    ) -> Result<Vec<PendingDelivery>, StoreError> {
        self.with_orgs(deadline, |orgs| {
            orgs.webhooks
                .dead
                .get(org)
                .map(|dead| dead.iter().cloned().collect())
                .unwrap_or_default()
        })
    }

    async fn replay_dead_letters(
        &self,
        org: &str,
        now: UnixMicros,
        deadline: Instant,
    ) -> Result<usize, StoreError> {
        self.with_orgs(deadline, |orgs| {
            let dead = orgs.webhooks.dead.remove(org).unwrap_or_default();
            let replayed = dead.len();
            for mut delivery in dead {
                delivery.attempt = 0;
                delivery.first_failed_at = now.0;
                orgs.webhooks.retry.insert((now.0, delivery.member()));
            }
            replayed
        })
    }

    async fn oldest_pending_delivery(
        &self,
        deadline: Instant,
    ) -> Result<Option<UnixMicros>, StoreError> {
        self.with_orgs(deadline, |orgs| {
            orgs.webhooks
                .retry
                .iter()
                .filter_map(|(_, member)| serde_json::from_str::<PendingDelivery>(member).ok())
                .map(|delivery| delivery.first_failed())
                .min()
        })
    }
}

/// Dead letters an organization keeps, newest first (as `LTRIM` keeps them in Redis).
const DEAD_LETTERS_KEPT: usize = 1000;

fn count(codes: &BTreeSet<String>) -> u32 {
    u32::try_from(codes.len()).unwrap_or(u32::MAX)
}
