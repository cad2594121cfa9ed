//! A store that measures another: latency per operation and failures, for any backend.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;

use super::audit::{FeedCopy, FeedSources};
use super::webhook::{PendingDelivery, StoredEndpoint};
use super::{
    AddCodesOutcome, AddOutcome, Attempt, Attempted, ChangeOutcome, FactorStore, LockIndexChange,
    NewCodes, NewFactor, PolicyChanges, PolicySeed, PolicyWrite, PolicyWritten, RedeemOutcome,
    Redemption, RemoveCodesOutcome, SharedStore, Stamp, StoreError, UserKey, UserRecord,
};
use crate::domain::audit::{AuditEvent, Retention};
use crate::domain::policy::StoredPolicies;
use crate::domain::{FactorRecord, UnixMicros};
use crate::metrics::Metrics;

pub struct MeteredStore {
    inner: SharedStore,
    metrics: Arc<Metrics>,
}

impl MeteredStore {
    pub fn new(inner: SharedStore, metrics: Arc<Metrics>) -> Self {
        Self { inner, metrics }
    }

    async fn measure<T>(
        &self,
        op: &str,
        call: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let started = Instant::now();
        let result = call.await;
        self.metrics
            .observe_store(op, started.elapsed().as_secs_f64());
        if result.is_err() {
            self.metrics.store_errors.with_label_values(&[op]).inc();
        }
        result
    }
}

#[async_trait]
impl FactorStore for MeteredStore {
    async fn load(
        &self,
        key: &UserKey,
        deadline: Instant,
    ) -> Result<Option<FactorRecord>, StoreError> {
        self.measure("load", self.inner.load(key, deadline)).await
    }

    async fn add(
        &self,
        key: &UserKey,
        factor: NewFactor,
        stamp: &Stamp,
        deadline: Instant,
    ) -> Result<AddOutcome, StoreError> {
        self.measure("add", self.inner.add(key, factor, stamp, deadline))
            .await
    }

    async fn attempt(
        &self,
        key: &UserKey,
        attempt: Attempt,
        stamp: &Stamp,
        deadline: Instant,
    ) -> Result<Attempted, StoreError> {
        self.measure("attempt", self.inner.attempt(key, attempt, stamp, deadline))
            .await
    }

    async fn remove(
        &self,
        key: &UserKey,
        stamp: &Stamp,
        deadline: Instant,
    ) -> Result<ChangeOutcome, StoreError> {
        self.measure("remove", self.inner.remove(key, stamp, deadline))
            .await
    }

    async fn unlock(
        &self,
        key: &UserKey,
        stamp: &Stamp,
        deadline: Instant,
    ) -> Result<ChangeOutcome, StoreError> {
        self.measure("unlock", self.inner.unlock(key, stamp, deadline))
            .await
    }

    async fn load_user(&self, key: &UserKey, deadline: Instant) -> Result<UserRecord, StoreError> {
        self.measure("load_user", self.inner.load_user(key, deadline))
            .await
    }

    async fn add_recovery_codes(
        &self,
        key: &UserKey,
        codes: NewCodes,
        stamp: &Stamp,
        deadline: Instant,
    ) -> Result<AddCodesOutcome, StoreError> {
        let call = self.inner.add_recovery_codes(key, codes, stamp, deadline);
        self.measure("add_codes", call).await
    }

    async fn redeem_recovery_code(
        &self,
        key: &UserKey,
        redemption: Redemption,
        stamp: &Stamp,
        deadline: Instant,
    ) -> Result<RedeemOutcome, StoreError> {
        let call = self
            .inner
            .redeem_recovery_code(key, redemption, stamp, deadline);
        self.measure("redeem_code", call).await
    }

    async fn remove_recovery_codes(
        &self,
        key: &UserKey,
        stamp: &Stamp,
        deadline: Instant,
    ) -> Result<RemoveCodesOutcome, StoreError> {
        let call = self.inner.remove_recovery_codes(key, stamp, deadline);
        self.measure("remove_codes", call).await
    }

    async fn user_events(
        &self,
        key: &UserKey,
        before: Option<&str>,
        limit: usize,
        deadline: Instant,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        self.measure(
            "user_events",
            self.inner.user_events(key, before, limit, deadline),
        )
        .await
    }

    async fn copy_to_feed(
        &self,
        sources: &FeedSources,
        retention: Retention,
        deadline: Instant,
    ) -> Result<FeedCopy, StoreError> {
        self.measure(
            "copy_to_feed",
            self.inner.copy_to_feed(sources, retention, deadline),
        )
        .await
    }

    async fn feed_events(
        &self,
        org: &str,
        before: Option<&str>,
        limit: usize,
        deadline: Instant,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        self.measure(
            "feed_events",
            self.inner.feed_events(org, before, limit, deadline),
        )
        .await
    }

    async fn put_endpoint(
        &self,
        endpoint: &StoredEndpoint,
        deadline: Instant,
    ) -> Result<(), StoreError> {
        self.measure("put_endpoint", self.inner.put_endpoint(endpoint, deadline))
            .await
    }

    async fn delete_endpoint(
        &self,
        org: &str,
        id: &str,
        deadline: Instant,
    ) -> Result<bool, StoreError> {
        self.measure(
            "delete_endpoint",
            self.inner.delete_endpoint(org, id, deadline),
        )
        .await
    }

    async fn endpoints(&self, deadline: Instant) -> Result<Vec<StoredEndpoint>, StoreError> {
        self.measure("endpoints", self.inner.endpoints(deadline))
            .await
    }

    async fn feed_orgs(&self, deadline: Instant) -> Result<Vec<Arc<str>>, StoreError> {
        self.measure("feed_orgs", self.inner.feed_orgs(deadline))
            .await
    }

    async fn take_feed(
        &self,
        org: &str,
        consumer: &str,
        claim_idle: std::time::Duration,
        count: usize,
        deadline: Instant,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        self.measure(
            "take_feed",
            self.inner
                .take_feed(org, consumer, claim_idle, count, deadline),
        )
        .await
    }

    async fn ack_feed(
        &self,
        org: &str,
        ids: &[String],
        deadline: Instant,
    ) -> Result<(), StoreError> {
        self.measure("ack_feed", self.inner.ack_feed(org, ids, deadline))
            .await
    }

    async fn schedule_delivery(
        &self,
        delivery: &PendingDelivery,
        due: UnixMicros,
        replacing: Option<&PendingDelivery>,
        deadline: Instant,
    ) -> Result<(), StoreError> {
        self.measure(
            "schedule_delivery",
            self.inner
                .schedule_delivery(delivery, due, replacing, deadline),
        )
        .await
    }

    async fn claim_deliveries(
        &self,
        now: UnixMicros,
        lease: std::time::Duration,
        count: usize,
        deadline: Instant,
    ) -> Result<Vec<PendingDelivery>, StoreError> {
        self.measure(
            "claim_deliveries",
            self.inner.claim_deliveries(now, lease, count, deadline),
        )
        .await
    }

    async fn finish_delivery(
        &self,
        delivery: &PendingDelivery,
        deadline: Instant,
    ) -> Result<(), StoreError> {
        self.measure(
            "finish_delivery",
            self.inner.finish_delivery(delivery, deadline),
        )
        .await
    }

    async fn dead_letter(
        &self,
        delivery: &PendingDelivery,
        deadline: Instant,
    ) -> Result<(), StoreError> {
        self.measure("dead_letter", self.inner.dead_letter(delivery, deadline))
            .await
    }

    async fn dead_letters(
        &self,
        org: &str,
        deadline: Instant,
    ) -> Result<Vec<PendingDelivery>, StoreError> {
        self.measure("dead_letters", self.inner.dead_letters(org, deadline))
            .await
    }

    async fn replay_dead_letters(
        &self,
        org: &str,
        now: UnixMicros,
        deadline: Instant,
    ) -> Result<usize, StoreError> {
        self.measure(
            "replay_dead_letters",
            self.inner.replay_dead_letters(org, now, deadline),
        )
        .await
    }

    async fn oldest_pending_delivery(
        &self,
        deadline: Instant,
    ) -> Result<Option<UnixMicros>, StoreError> {
        self.measure(
            "oldest_pending_delivery",
            self.inner.oldest_pending_delivery(deadline),
        )
        .await
    }

    async fn server_time(&self) -> Result<Option<UnixMicros>, StoreError> {
        self.measure("time", self.inner.server_time()).await
    }

    async fn load_policies(
        &self,
        org: &str,
        deadline: Instant,
    ) -> Result<StoredPolicies, StoreError> {
        self.measure("load_policies", self.inner.load_policies(org, deadline))
            .await
    }

    async fn write_policy(
        &self,
        org: &str,
        write: PolicyWrite,
        stamp: &Stamp,
        deadline: Instant,
    ) -> Result<PolicyWritten, StoreError> {
        self.measure(
            "write_policy",
            self.inner.write_policy(org, write, stamp, deadline),
        )
        .await
    }

    async fn seed_policies(
        &self,
        org: &str,
        seed: &PolicySeed,
        stamp: &Stamp,
        deadline: Instant,
    ) -> Result<bool, StoreError> {
        self.measure(
            "seed_policies",
            self.inner.seed_policies(org, seed, stamp, deadline),
        )
        .await
    }

    async fn policy_changes(
        &self,
        since: u64,
        deadline: Instant,
    ) -> Result<PolicyChanges, StoreError> {
        self.measure("policy_changes", self.inner.policy_changes(since, deadline))
            .await
    }

    async fn index_locks(
        &self,
        changes: &[LockIndexChange],
        deadline: Instant,
    ) -> Result<(), StoreError> {
        self.measure("index_locks", self.inner.index_locks(changes, deadline))
            .await
    }

    async fn lock_candidates(
        &self,
        org: &str,
        after: Option<&str>,
        limit: usize,
        deadline: Instant,
    ) -> Result<Vec<Arc<str>>, StoreError> {
        self.measure(
            "lock_candidates",
            self.inner.lock_candidates(org, after, limit, deadline),
        )
        .await
    }
}
