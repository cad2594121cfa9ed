//! Signed notifications as the store keeps them (`webhooks.rs` delivers them).
//!
//! - Endpoints: one hash in the `{webhooks}` slot, `<prefix>:{webhooks}:endpoints`, endpoint id
//!   to its JSON (`StoredEndpoint`; the secret sealed with the seal key ring, bound to the
//!   organization and the endpoint id).
//! - What to deliver: each organization's feed (`store::audit`) is the durable source. Its
//!   stream carries a consumer group, `deliverers`, so every event is read by some replica: `take_feed` claims entries a
//!   dead replica left pending for longer than `claim_idle` (XAUTOCLAIM), then reads new ones
//!   (XREADGROUP); `ack_feed` acknowledges them once each endpoint's first try is done or
//!   scheduled again. The group is made on the first read, from the feed's start: an
//!   endpoint is sent only events after its registration.
//! - Retries: a sorted set `<prefix>:{webhooks}:retry` of `PendingDelivery` (JSON) by due
//!   time. A replica claims due ones by pushing their due time a lease ahead in one script,
//!   so that a replica that dies mid-delivery leaves them to another after the lease. Past
//!   the retry period a delivery goes to the organization's dead letters, a list an admin
//!   reads and replays.

use serde::{Deserialize, Serialize};

use crate::domain::UnixMicros;
use crate::domain::audit::AuditEvent;

/// A webhook endpoint of an organization.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredEndpoint {
    pub id: String,
    pub org: String,
    pub url: String,
    /// The event kinds' names it receives.
    pub kinds: Vec<String>,
    /// The secret, sealed (`KeyRing::seal`, bound to the organization and the id), base64.
    pub sealed_secret: String,
    /// Events before this are not sent to it (Unix microseconds).
    pub created_at: i64,
}

/// One event still to be delivered to one endpoint, as the retry set keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingDelivery {
    pub endpoint: String,
    pub org: String,
    /// The message id (`webhook-id`), the same on every try.
    pub message_id: String,
    /// The body, as first built (retries send the same bytes).
    pub body: String,
    /// Tries made so far.
    pub attempt: u32,
    /// When the first try failed (Unix microseconds): the retry period starts there.
    pub first_failed_at: i64,
}

impl PendingDelivery {
    pub fn member(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn first_failed(&self) -> UnixMicros {
        UnixMicros(self.first_failed_at)
    }
}

/// The message id of an event of an organization's feed: stable across retries and
/// replicas, and distinct across organizations.
pub fn message_id(org: &str, event: &AuditEvent) -> String {
    format!("msg_{org}_{}", event.id)
}
