//! Hands out organization actors, creating them on first use and evicting idle ones.
//!
//! Eviction never hands out a stopping actor: every handle carries a lease (a clone of the
//! entry's `Arc`), taken under the map's lock. An entry is evicted only under the same lock,
//! when it is idle and no lease is out, so no caller can hold its address afterwards.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;

use super::TenantDeps;
use super::actor::{OrgActor, Run, Stop};
use super::operation::Operation;
use crate::domain::audit::Author;
use crate::domain::{OtpError, UnixMicros};

struct Entry {
    addr: Addr<OrgActor>,
    lease: Arc<()>,
    last_used: Instant,
    /// Shared with the actor: raised when the organization's policy changed.
    policy_generation: Arc<AtomicU64>,
}

/// An organization's actor, held for one call.
pub struct OrgHandle {
    addr: Addr<OrgActor>,
    _lease: Arc<()>,
    in_flight: prometheus::IntGauge,
}

impl Drop for OrgHandle {
    fn drop(&mut self) {
        self.in_flight.dec();
    }
}

impl OrgHandle {
    /// Runs `op` on `user` in the organization's actor and waits until the request's
    /// `deadline` at most. A full mailbox waits too, so a saturated organization answers
    /// UNAVAILABLE instead of hanging. The actor works on it in the caller's span, so its
    /// log lines carry the request id and tenant.
    pub async fn run<Op: Operation>(
        &self,
        user: Arc<str>,
        actor: Arc<Author>,
        op: Op,
        now: UnixMicros,
        deadline: Instant,
    ) -> Result<Op::Output, OtpError> {
        let run = Run {
            op,
            user,
            actor,
            now,
            deadline,
            span: tracing::Span::current(),
        };
        self.addr
            .send(run)
            .timeout(deadline.saturating_duration_since(Instant::now()))
            .await
            .map_err(|err| {
                tracing::warn!(error = %err, "organization actor did not answer");
                OtpError::Unavailable
            })?
    }
}

pub struct OrgRegistry {
    deps: Arc<TenantDeps>,
    entries: Mutex<HashMap<Arc<str>, Entry>>,
    arbiters: Vec<ArbiterHandle>,
    next_arbiter: AtomicUsize,
    mailbox_capacity: usize,
}

impl OrgRegistry {
    /// Actors are spread over `arbiters` (threads of their own), so callers on any thread
    /// (actix workers, a tonic runtime) can reach them.
    pub fn new(
        deps: Arc<TenantDeps>,
        arbiters: Vec<ArbiterHandle>,
        mailbox_capacity: usize,
    ) -> Self {
        Self {
            deps,
            entries: Mutex::new(HashMap::new()),
            arbiters,
            next_arbiter: AtomicUsize::new(0),
            mailbox_capacity,
        }
    }

    /// What the organizations' actors share: for calls on an organization as a whole,
    /// which no one user's actor call serves (the listing of locked users).
    pub fn deps(&self) -> &TenantDeps {
        &self.deps
    }

    pub fn org(&self, org: &Arc<str>) -> Result<OrgHandle, OtpError> {
        let mut entries = self.entries.lock().map_err(|_| OtpError::Internal)?;
        let now = Instant::now();
        if let Some(entry) = entries.get_mut(org)
            && entry.addr.connected()
        {
            entry.last_used = now;
            return Ok(self.handle(entry));
        }
        // New, or replacing one that stopped by itself.
        let policy_generation = Arc::new(AtomicU64::new(0));
        let addr = self.start(org.clone(), policy_generation.clone())?;
        let entry = Entry {
            addr,
            lease: Arc::new(()),
            last_used: now,
            policy_generation,
        };
        let handle = self.handle(&entry);
        entries.insert(org.clone(), entry);
        self.count_live(entries.len());
        Ok(handle)
    }

    fn count_live(&self, live: usize) {
        self.deps
            .metrics
            .org_actors
            .set(i64::try_from(live).unwrap_or(i64::MAX));
    }

    fn handle(&self, entry: &Entry) -> OrgHandle {
        let in_flight = self.deps.metrics.org_calls_in_flight.clone();
        in_flight.inc();
        OrgHandle {
            addr: entry.addr.clone(),
            _lease: entry.lease.clone(),
            in_flight,
        }
    }

    /// The organization's policy changed: its actor, if one is live, reads it again at its
    /// next call. (One that starts later reads it anyway.)
    pub fn policy_changed(&self, org: &str) {
        if let Ok(entries) = self.entries.lock()
            && let Some(entry) = entries.get(org)
        {
            entry.policy_generation.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Every organization's policy may have changed.
    pub fn all_policies_changed(&self) {
        if let Ok(entries) = self.entries.lock() {
            for entry in entries.values() {
                entry.policy_generation.fetch_add(1, Ordering::AcqRel);
            }
        }
    }

    fn start(
        &self,
        org: Arc<str>,
        policy_generation: Arc<AtomicU64>,
    ) -> Result<Addr<OrgActor>, OtpError> {
        let index = self.next_arbiter.fetch_add(1, Ordering::Relaxed);
        let arbiter = self
            .arbiters
            .get(index % self.arbiters.len().max(1))
            .ok_or(OtpError::Internal)?;
        let deps = self.deps.clone();
        let capacity = self.mailbox_capacity;
        Ok(OrgActor::start_in_arbiter(arbiter, move |ctx| {
            ctx.set_mailbox_capacity(capacity);
            OrgActor::new(org, deps, policy_generation)
        }))
    }

    /// Evicts actors idle for `idle` that nobody holds; returns how many.
    pub fn evict_idle(&self, idle: Duration) -> usize {
        let Ok(mut entries) = self.entries.lock() else {
            return 0;
        };
        let before = entries.len();
        entries.retain(|_, entry| {
            let evict = Arc::strong_count(&entry.lease) == 1 && entry.last_used.elapsed() >= idle;
            if evict {
                entry.addr.do_send(Stop);
            }
            !evict
        });
        self.count_live(entries.len());
        before - entries.len()
    }

    pub fn live(&self) -> usize {
        self.entries.lock().map(|e| e.len()).unwrap_or(0)
    }
}
