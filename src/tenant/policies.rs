//! Organizations' policies at run time: read and written through the store, and every
//! replica told of a change within `[tenants] policy_refresh_ms`.
//!
//! How a change travels: the write notes the organization in the store's change index under
//! a new epoch, in the same atomic step (`lua/write_policy.lua`). Every replica asks the store
//! for the organizations changed since the epoch it last saw (`watch`), a few times a second:
//! one small read per replica, whatever the number of organizations or requests. For each, the
//! registry raises the organization actor's policy generation, and the actor reads the policy
//! again at its next call (`operation.rs`). Nothing is lost when a replica misses a poll: the
//! next one asks from the same epoch. The replica that wrote applies its change at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::AuditFeed;
use super::registry::OrgRegistry;
use crate::domain::audit::{Author, Retention};
use crate::domain::policy::StoredPolicies;
use crate::domain::{OtpError, OtpPolicy, UnixMicros};
use crate::store::{FeedSource, PolicySeed, PolicyWrite, PolicyWritten, SharedStore, Stamp};

use super::operation::store_error;

/// An organization's policies as the API shows them: what it stored, and what applies.
pub struct OrgPolicies {
    pub stored: StoredPolicies,
    pub effective: OtpPolicy,
}

/// Reads and writes organizations' policies.
pub struct PolicyDirectory {
    store: SharedStore,
    registry: Arc<OrgRegistry>,
    default: Arc<OtpPolicy>,
}

impl PolicyDirectory {
    pub fn new(store: SharedStore, registry: Arc<OrgRegistry>, default: Arc<OtpPolicy>) -> Self {
        Self {
            store,
            registry,
            default,
        }
    }

    /// The instance's policy, which an organization follows where it set nothing.
    pub fn default_policy(&self) -> &OtpPolicy {
        &self.default
    }

    pub async fn read(&self, org: &str, deadline: Instant) -> Result<OrgPolicies, OtpError> {
        let stored = self
            .store
            .load_policies(org, deadline)
            .await
            .map_err(store_error)?;
        let effective = stored.effective(&self.default).map_err(|problems| {
            tracing::error!(?problems, "the organization's stored policy does not pass");
            OtpError::Internal
        })?;
        Ok(OrgPolicies { stored, effective })
    }

    /// One change; a written one applies on this replica at once, on the others at their
    /// next poll.
    pub async fn write(
        &self,
        org: &Arc<str>,
        write: PolicyWrite,
        stamp: &Stamp,
        deadline: Instant,
    ) -> Result<PolicyWritten, OtpError> {
        let written = self
            .store
            .write_policy(org, write, stamp, deadline)
            .await
            .map_err(store_error)?;
        if let PolicyWritten::Written { .. } = written {
            self.registry.policy_changed(org);
            self.registry
                .deps()
                .audit_feed
                .note(FeedSource::Policies(org.clone()), stamp.retention);
        }
        Ok(written)
    }
}

/// Asks the store every `every` which organizations' policies changed, and tells the
/// registry. Runs until the process ends.
pub async fn watch(registry: Arc<OrgRegistry>, store: SharedStore, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Unknown until the first answer, which then counts as a change of every organization:
    // actors may have read their policies before this replica knew the epoch.
    let mut seen: Option<u64> = None;
    let mut failing = false;
    loop {
        ticks.tick().await;
        let since = seen.unwrap_or(0);
        match store.policy_changes(since, Instant::now() + every).await {
            Ok(changes) => {
                if failing {
                    tracing::info!("policy changes are followed again");
                    failing = false;
                }
                match seen {
                    Some(seen) if changes.epoch >= seen => {
                        for org in &changes.orgs {
                            registry.policy_changed(org);
                        }
                    }
                    // First answer, or the store lost its index (flushed, replaced).
                    _ => registry.all_policies_changed(),
                }
                seen = Some(changes.epoch);
            }
            Err(err) => {
                if !failing {
                    tracing::warn!(error = %err, "policy changes cannot be followed now; the store is asked again");
                    failing = true;
                }
            }
        }
    }
}

/// Writes the configuration's `[orgs.<id>]` seeds (each at most once, ever, per organization:
/// see `PolicySeed`); returns those not written yet (the store did not answer).
/// Each seed's `policy_changed` event names the configuration as its author.
pub async fn seed(
    store: &SharedStore,
    feed: &AuditFeed,
    seeds: Vec<(Arc<str>, PolicySeed)>,
    now: UnixMicros,
    retention: Retention,
    timeout: Duration,
) -> Vec<(Arc<str>, PolicySeed)> {
    let mut left = Vec::new();
    for (org, seed) in seeds {
        let stamp = Stamp {
            now,
            actor: Arc::new(Author {
                request_id: "configuration".into(),
                user: "configuration".into(),
                org: org.clone(),
                address: None,
            }),
            retention,
        };
        match store
            .seed_policies(&org, &seed, &stamp, Instant::now() + timeout)
            .await
        {
            Ok(true) => {
                tracing::info!(org = %org, "the configuration's policy seed was written");
                feed.note(FeedSource::Policies(org), retention);
            }
            Ok(false) => {}
            Err(err) => {
                tracing::warn!(org = %org, error = %err, "the policy seed waits for the store");
                left.push((org, seed));
            }
        }
    }
    left
}
