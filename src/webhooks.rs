//! Signed notifications: each replica's deliverer (`[webhooks] enabled`). It reads each organization's feed through the feed's consumer group, sends each
//! event to the endpoints that want it (Standard Webhooks: `webhook-id`,
//! `webhook-timestamp`, `webhook-signature`, a JSON body), and schedules what failed for
//! retries with exponential backoff and jitter; past the retry period, a dead letter. Any
//! replica may deliver; one that dies mid-delivery leaves its feed entries pending, claimed
//! by another after `claim_idle`, and its leased retries to another after the lease. So a
//! delivery may happen twice (at least once): receivers deduplicate by `webhook-id`.
//! Deliveries run on their own task: the check's path never waits for them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use secrecy::ExposeSecret;
use serde_json::json;

use crate::clock::SharedClock;
use crate::domain::UnixMicros;
use crate::domain::audit::{AuditEvent, EventKind};
use crate::domain::webhook::{backoff, check_target, is_private, signature};
use crate::seal::KeyRing;
use crate::store::{PendingDelivery, SharedStore, StoredEndpoint, message_id};

/// The instance's own endpoint (`[webhooks] instance_url`): every organization's events.
pub struct InstanceEndpoint {
    pub url: String,
    pub secret: zeroize::Zeroizing<Vec<u8>>,
    pub kinds: Vec<EventKind>,
}

impl std::fmt::Debug for InstanceEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstanceEndpoint")
            .field("url", &self.url)
            .field("kinds", &self.kinds)
            .finish_non_exhaustive()
    }
}

/// The id under which the instance's endpoint is known in the store (its registration time,
/// from which it receives events) and in its deliveries.
const INSTANCE_ID: &str = "instance";

/// How deliveries behave (`[webhooks]`).
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    pub poll: Duration,
    pub claim_idle: Duration,
    pub lease: Duration,
    pub timeout: Duration,
    pub retry_base: Duration,
    pub retry_cap: Duration,
    pub retry_for: Duration,
    pub allow_private_targets: bool,
    pub instance: Option<Arc<InstanceEndpoint>>,
}

/// An endpoint with its secret opened, ready to sign.
struct Target {
    id: String,
    org: Option<String>,
    url: String,
    kinds: Vec<EventKind>,
    /// Opened for this round only, and wiped when the round drops it.
    secret: zeroize::Zeroizing<Vec<u8>>,
    created_at: i64,
}

impl Target {
    fn wants(&self, org: &str, event: &AuditEvent) -> bool {
        self.org.as_deref().is_none_or(|own| own == org)
            && self.kinds.contains(&event.kind)
            && event.at.0 >= self.created_at
    }
}

/// A resolver that refuses names resolving to private addresses (SSRF through DNS, a
/// rebinding included: the address checked is the one connected to).
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(async move {
            let addresses: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0))
                .await?
                .filter(|address| !is_private(address.ip()))
                .collect();
            if addresses.is_empty() {
                return Err(format!("{} resolves to no public address", name.as_str()).into());
            }
            let addresses: reqwest::dns::Addrs = Box::new(addresses.into_iter());
            Ok(addresses)
        })
    }
}

pub struct Deliverer {
    store: SharedStore,
    keys: Arc<KeyRing>,
    clock: SharedClock,
    config: DeliveryConfig,
    client: reqwest::Client,
    /// This replica's name in the feeds' consumer groups.
    consumer: String,
    metrics: Arc<crate::metrics::Metrics>,
}

/// Why one try failed.
#[derive(Debug)]
struct Refused(String);

impl Deliverer {
    pub fn new(
        store: SharedStore,
        keys: Arc<KeyRing>,
        clock: SharedClock,
        config: DeliveryConfig,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Result<Self, reqwest::Error> {
        let mut client = reqwest::Client::builder()
            .timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none());
        if !config.allow_private_targets {
            client = client.dns_resolver(Arc::new(PublicOnly));
        }
        let mut id = [0u8; 8];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut id);
        Ok(Self {
            store,
            keys,
            clock,
            client: client.build()?,
            consumer: format!("replica-{}", hex(&id)),
            config,
            metrics,
        })
    }

    /// Delivers until the process ends.
    pub async fn run(self) {
        let mut ticks = tokio::time::interval(self.config.poll);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if let Err(err) = self.round().await {
                tracing::warn!(error = %err, "webhook deliveries wait for the store");
            }
        }
    }

    fn deadline(&self) -> Instant {
        Instant::now() + self.config.timeout
    }

    /// The endpoints with their secrets opened, the instance's included: registered in the
    /// store the first time a replica sees it, so that it receives what happens from then on
    /// (and not the feeds' past), whichever replica starts or restarts.
    async fn targets(
        &self,
        endpoints: Vec<StoredEndpoint>,
    ) -> Result<Vec<Target>, crate::store::StoreError> {
        let mut targets = Vec::new();
        if let Some(instance) = &self.config.instance {
            let registered = endpoints.iter().find(|endpoint| endpoint.id == INSTANCE_ID);
            let created_at = match registered {
                Some(endpoint) => endpoint.created_at,
                None => {
                    let now = self.clock.now().0;
                    let record = StoredEndpoint {
                        id: INSTANCE_ID.to_owned(),
                        org: "*".to_owned(),
                        url: instance.url.clone(),
                        kinds: instance
                            .kinds
                            .iter()
                            .map(|k| k.as_str().to_owned())
                            .collect(),
                        sealed_secret: String::new(),
                        created_at: now,
                    };
                    self.store.put_endpoint(&record, self.deadline()).await?;
                    now
                }
            };
            targets.push(Target {
                id: INSTANCE_ID.to_owned(),
                org: None,
                url: instance.url.clone(),
                kinds: instance.kinds.clone(),
                secret: zeroize::Zeroizing::new(instance.secret.to_vec()),
                created_at,
            });
        }
        targets.extend(endpoints
            .into_iter()
            .filter(|endpoint| endpoint.id != INSTANCE_ID)
            .filter_map(|endpoint| {
                let sealed = base64::engine::general_purpose::STANDARD
                    .decode(&endpoint.sealed_secret)
                    .ok()?;
                let secret = self
                    .keys
                    .open(&sealed, &endpoint.org, &endpoint.id)
                    .inspect_err(|err| {
                        tracing::error!(error = %err, endpoint = %endpoint.id, "a webhook secret does not open");
                    })
                    .ok()?;
                Some(Target {
                    id: endpoint.id,
                    org: Some(endpoint.org),
                    url: endpoint.url,
                    kinds: endpoint
                        .kinds
                        .iter()
                        .filter_map(|kind| EventKind::parse(kind))
                        .collect(),
                    secret: zeroize::Zeroizing::new(secret.expose_secret().to_vec()),
                    created_at: endpoint.created_at,
                })
            }));
        Ok(targets)
    }

    /// One pass: the feeds' new (and abandoned) events, then the retries that are due.
    async fn round(&self) -> Result<(), crate::store::StoreError> {
        let targets = self
            .targets(self.store.endpoints(self.deadline()).await?)
            .await?;
        if !targets.is_empty() {
            let mut orgs: Vec<String> = if self.config.instance.is_some() {
                let all = self.store.feed_orgs(self.deadline()).await?;
                all.iter().map(|org| org.to_string()).collect()
            } else {
                targets.iter().filter_map(|t| t.org.clone()).collect()
            };
            orgs.sort();
            orgs.dedup();
            for org in orgs {
                self.deliver_feed(&org, &targets).await?;
            }
        }
        self.retry(&targets).await?;
        let oldest = self.store.oldest_pending_delivery(self.deadline()).await?;
        let now = self.clock.now();
        #[allow(clippy::cast_precision_loss)]
        self.metrics
            .webhook_oldest_pending
            .set(oldest.map_or(0.0, |since| (now.0 - since.0).max(0) as f64 / 1e6));
        Ok(())
    }

    async fn deliver_feed(
        &self,
        org: &str,
        targets: &[Target],
    ) -> Result<(), crate::store::StoreError> {
        loop {
            let events = self
                .store
                .take_feed(
                    org,
                    &self.consumer,
                    self.config.claim_idle,
                    32,
                    self.deadline(),
                )
                .await?;
            if events.is_empty() {
                return Ok(());
            }
            let mut done = Vec::with_capacity(events.len());
            for event in &events {
                for target in targets.iter().filter(|t| t.wants(org, event)) {
                    let delivery = PendingDelivery {
                        endpoint: target.id.clone(),
                        org: org.to_owned(),
                        message_id: message_id(org, event),
                        body: body(org, event),
                        attempt: 1,
                        first_failed_at: 0,
                    };
                    if let Err(refused) = self.send(target, &delivery).await {
                        let now = self.clock.now();
                        let failed = PendingDelivery {
                            first_failed_at: now.0,
                            ..delivery
                        };
                        tracing::info!(endpoint = %target.id, reason = %refused.0, "a webhook delivery failed; it is tried again");
                        let due = self.next_try(now, 1);
                        self.store
                            .schedule_delivery(&failed, due, None, self.deadline())
                            .await?;
                    }
                }
                done.push(event.id.clone());
            }
            self.store.ack_feed(org, &done, self.deadline()).await?;
        }
    }

    async fn retry(&self, targets: &[Target]) -> Result<(), crate::store::StoreError> {
        let now = self.clock.now();
        let due = self
            .store
            .claim_deliveries(now, self.config.lease, 32, self.deadline())
            .await?;
        for delivery in due {
            let Some(target) = targets.iter().find(|t| t.id == delivery.endpoint) else {
                // The endpoint was removed: nothing to deliver to.
                self.store
                    .finish_delivery(&delivery, self.deadline())
                    .await?;
                continue;
            };
            self.metrics.webhook_retries.inc();
            match self.send(target, &delivery).await {
                Ok(()) => {
                    self.store
                        .finish_delivery(&delivery, self.deadline())
                        .await?
                }
                Err(_)
                    if now.0 - delivery.first_failed_at
                        >= i64::try_from(self.config.retry_for.as_micros()).unwrap_or(i64::MAX) =>
                {
                    tracing::warn!(endpoint = %target.id, "a webhook delivery is given up: a dead letter");
                    self.metrics.webhook_dead_letters.inc();
                    self.store.dead_letter(&delivery, self.deadline()).await?;
                }
                Err(_) => {
                    let next = PendingDelivery {
                        attempt: delivery.attempt + 1,
                        ..delivery.clone()
                    };
                    let due = self.next_try(now, next.attempt);
                    self.store
                        .schedule_delivery(&next, due, Some(&delivery), self.deadline())
                        .await?;
                }
            }
        }
        Ok(())
    }

    fn next_try(&self, now: UnixMicros, attempt: u32) -> UnixMicros {
        let jitter: f64 = rand::random();
        let wait = backoff(
            attempt,
            self.config.retry_base,
            self.config.retry_cap,
            jitter,
        );
        UnixMicros(
            now.0
                .saturating_add(i64::try_from(wait.as_micros()).unwrap_or(i64::MAX)),
        )
    }

    /// One try: signed as the specification says; a 2xx answer is a delivery.
    async fn send(&self, target: &Target, delivery: &PendingDelivery) -> Result<(), Refused> {
        let url = reqwest::Url::parse(&target.url).map_err(|err| Refused(err.to_string()))?;
        check_target(
            url.scheme(),
            url.host_str(),
            self.config.allow_private_targets,
        )
        .map_err(|err| Refused(err.to_string()))?;
        let timestamp = self.clock.now().0 / 1_000_000;
        let signed = signature(
            &target.secret,
            &delivery.message_id,
            timestamp,
            delivery.body.as_bytes(),
        );
        let answer = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", &delivery.message_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signed)
            .body(delivery.body.clone())
            .send()
            .await;
        match answer {
            Ok(answer) if answer.status().is_success() => {
                self.metrics
                    .webhook_deliveries
                    .with_label_values(&["success"])
                    .inc();
                Ok(())
            }
            Ok(answer) => {
                self.metrics
                    .webhook_deliveries
                    .with_label_values(&["failure"])
                    .inc();
                Err(Refused(format!("answered {}", answer.status())))
            }
            Err(err) => {
                self.metrics
                    .webhook_deliveries
                    .with_label_values(&["failure"])
                    .inc();
                Err(Refused(err.to_string()))
            }
        }
    }
}

/// The message: `{type, timestamp, data}`, as the specification suggests.
fn body(org: &str, event: &AuditEvent) -> String {
    json!({
        "type": event.kind.as_str(),
        "timestamp": crate::api::wire::timestamp(event.at),
        "data": {
            "organizationId": org,
            "userId": event.user.as_deref(),
            "sequence": event.sequence.to_string(),
            "requestId": event.request_id,
            "actorUserId": event.actor_user,
            "actorOrgId": event.actor_org,
            "clientAddress": event.address,
        }
    })
    .to_string()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
