//! The Redis store. One hash per user, `<prefix>:{<org>:<user>}`: the braces are a hash tag,
//! so every script touches one slot, and every script and command names its one key from
//! the client (nothing builds keys inside a script): it runs unchanged on Redis Cluster.
//! Every change is one Lua script; each starts by comparing Redis's clock with the request's
//! deadline (`clock.rs`), so a script that arrives after its request gave up changes nothing.

mod clock;
mod connections;
mod feed_hints;
mod rekey;
mod reply;

pub use self::rekey::{Primary, Resealed, SealedRecord};

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redis::{Cmd, IntoConnectionInfo, Script, Value};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use self::clock::RedisClock;
use self::connections::{Connection, Connections, Connector};
use self::feed_hints::FeedHints;
use self::reply::{FACTOR_FIELDS, FactorFields, Reply, codes_held, record_from, standing_of};
use super::audit::{
    FeedCopy, FeedDue, FeedSource, FeedSources, Stamp, Written, entry_id, event_from,
    event_of_entry, feed_fields,
};
use super::policy::policies_from;
use super::webhook::{PendingDelivery, StoredEndpoint};
use super::{
    AddCodesOutcome, AddOutcome, Attempt, AttemptOutcome, Attempted, ChangeOutcome, FactorStore,
    LockIndexChange, NewCodes, NewFactor, PolicyChanges, PolicySeed, PolicyWrite, PolicyWritten,
    RedeemOutcome, Redemption, RemoveCodesOutcome, StoreError, UserKey, UserRecord, stored_form,
};
use crate::domain::audit::{AuditEvent, Retention};
use crate::domain::factor::AttemptVerdict;
use crate::domain::policy::StoredPolicies;
use crate::domain::{FactorRecord, FactorState, Lock, UnixMicros};

/// A script's source: `lua/prelude.lua` (the deadline and the format, checked by every
/// script) followed by its body.
macro_rules! script_source {
    ($name:literal) => {
        concat!(
            include_str!("../lua/prelude.lua"),
            include_str!("../lua/feed.lua"),
            include_str!("../lua/audit.lua"),
            include_str!(concat!("../lua/", $name, ".lua"))
        )
    };
}

const ADD: &str = script_source!("add");
const ATTEMPT: &str = script_source!("attempt");
const REMOVE: &str = script_source!("remove");
const UNLOCK: &str = script_source!("unlock");
const RESEAL: &str = script_source!("reseal");
const ADD_CODES: &str = script_source!("add_codes");
const REDEEM_CODE: &str = script_source!("redeem_code");
const REMOVE_CODES: &str = script_source!("remove_codes");

/// A script over an organization's policies: `lua/policy_prelude.lua` and its body.
macro_rules! policy_script_source {
    ($name:literal) => {
        concat!(
            include_str!("../lua/policy_prelude.lua"),
            include_str!("../lua/feed.lua"),
            include_str!("../lua/audit.lua"),
            include_str!(concat!("../lua/", $name, ".lua"))
        )
    };
}

const WRITE_POLICY: &str = policy_script_source!("write_policy");
const SEED_POLICY: &str = policy_script_source!("seed_policy");
const POLICY_CHANGES: &str = include_str!("../lua/policy_changes.lua");
const FEED_APPEND: &str = concat!(
    include_str!("../lua/feed.lua"),
    include_str!("../lua/feed_append.lua")
);
const WEBHOOK_SCHEDULE: &str = include_str!("../lua/webhook_schedule.lua");
const WEBHOOK_CLAIM: &str = include_str!("../lua/webhook_claim.lua");
const WEBHOOK_DEAD: &str = include_str!("../lua/webhook_dead.lua");
const WEBHOOK_REQUEUE: &str = include_str!("../lua/webhook_requeue.lua");

/// Dead letters an organization keeps, newest first.
const DEAD_LETTERS_KEPT: usize = 1000;
/// The consumer group of every organization's feed that delivers webhooks.
const DELIVERERS: &str = "deliverers";

struct Scripts {
    add: Script,
    attempt: Script,
    remove: Script,
    unlock: Script,
    reseal: Script,
    add_codes: Script,
    redeem_code: Script,
    remove_codes: Script,
    write_policy: Script,
    seed_policy: Script,
    policy_changes: Script,
    feed_append: Script,
    webhook_schedule: Script,
    webhook_claim: Script,
    webhook_dead: Script,
    webhook_requeue: Script,
}

/// How Redis is deployed: one server (or a primary behind a stable address), or a Cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RedisMode {
    Standalone,
    Cluster,
}

/// Where Redis is, parsed from `redis.url` once: one server, or a cluster's seed nodes.
/// (A URL may carry a password: this has no `Debug`.)
#[derive(Clone)]
pub enum RedisNodes {
    Standalone(Box<redis::ConnectionInfo>),
    Cluster(Vec<redis::ConnectionInfo>),
}

impl RedisNodes {
    /// `urls` is one URL, or in cluster mode one or more comma-separated seeds, each
    /// `redis://` or `rediss://`. The problem, if any, is said in the settings' words.
    pub fn parse(mode: RedisMode, urls: &SecretString) -> Result<Self, String> {
        let urls: Vec<&str> = urls
            .expose_secret()
            .split(',')
            .map(str::trim)
            .filter(|url| !url.is_empty())
            .collect();
        if urls
            .iter()
            .any(|url| !(url.starts_with("redis://") || url.starts_with("rediss://")))
        {
            return Err("redis.url must start with redis:// or rediss://".into());
        }
        // redis-rs says what is wrong without repeating the URL (which may hold a password).
        let parse = |url: &&str| {
            url.into_connection_info()
                .map_err(|err| format!("redis.url does not parse: {err}"))
        };
        match (mode, urls.as_slice()) {
            (_, []) => Err("redis.url names no server".into()),
            (RedisMode::Standalone, [url]) => {
                parse(url).map(|info| Self::Standalone(Box::new(info)))
            }
            (RedisMode::Standalone, _) => Err(
                "redis.url holds several URLs: comma-separated seeds need redis.mode = \"cluster\""
                    .into(),
            ),
            (RedisMode::Cluster, seeds) => seeds
                .iter()
                .map(parse)
                .collect::<Result<_, _>>()
                .map(Self::Cluster),
        }
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }
}

/// How to reach Redis and use it, parsed from `[redis]` and `[store]`.
pub struct RedisConfig {
    pub nodes: RedisNodes,
    /// Overrides the URL's.
    pub password: Option<SecretString>,
    /// PEM of the CA that signed the Redis server's certificate (rediss:// with a private CA).
    pub tls_ca_file: Option<std::path::PathBuf>,
    pub key_prefix: String,
    /// Bounds every store call.
    pub timeout: Duration,
    /// Replicas that must hold every acknowledged change (Redis `WAIT`); 0 answers as soon
    /// as the primary has committed.
    pub wait_replicas: u32,
    /// Connections per thread for writes that wait for replicas.
    pub wait_connections: usize,
    pub record_format: RecordFormat,
    /// On one server, each change's script appends its events to the organization's feed
    /// itself (`redis.feed_in_script`); ignored under Cluster, where the feed is in another
    /// slot.
    pub feed_in_script: bool,
}

/// The format new enrollments are written in (`redis.record_format`). Either way this release
/// reads every format up to `reply::FORMAT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordFormat {
    /// Every field named (format 2, 3 with recovery codes): what releases before format 4
    /// read, for a rolling upgrade from one of them.
    Explicit,
    /// Format 4: an enrollment with `TotpParams::default()` leaves the parameters out.
    Compact,
}

/// Where a script runs: on the thread's shared connection, or on one checked out for a write
/// that must reach replicas before it is acknowledged.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Lane {
    Shared,
    Durable,
}

pub struct RedisStore {
    connections: Connections,
    prefix: String,
    timeout: Duration,
    wait_replicas: u32,
    record_format: RecordFormat,
    clock: RedisClock,
    scripts: Scripts,
    feed_hints: FeedHints,
    /// One server (not a Cluster), and `redis.feed_in_script`: a change's script reaches the
    /// organization's feed, in another hash tag, and appends its events itself
    /// (`lua/audit.lua`'s `hand_on`).
    feeds_in_script: bool,
}

fn unavailable(error: redis::RedisError) -> StoreError {
    StoreError::Unavailable(error.to_string())
}

impl RedisStore {
    /// Connects lazily: the server starts (not ready) while Redis is down and recovers by itself.
    /// `tls_ca_pem` is the content of `config.tls_ca_file`, read by the caller.
    pub fn connect(
        metrics: Option<prometheus::IntGauge>,
        config: &RedisConfig,
        tls_ca_pem: Option<Vec<u8>>,
    ) -> Result<Self, StoreError> {
        let connector = match &config.nodes {
            RedisNodes::Standalone(info) => standalone((**info).clone(), config, tls_ca_pem)?,
            RedisNodes::Cluster(seeds) => cluster(seeds.clone(), config, tls_ca_pem)?,
        };
        Ok(Self {
            connections: Connections::new(connector, config.wait_connections, metrics),
            prefix: config.key_prefix.clone(),
            timeout: config.timeout,
            wait_replicas: config.wait_replicas,
            record_format: config.record_format,
            clock: RedisClock::new(),
            feed_hints: FeedHints::new(),
            feeds_in_script: config.feed_in_script && !config.nodes.is_cluster(),
            scripts: Scripts {
                add: Script::new(ADD),
                attempt: Script::new(ATTEMPT),
                remove: Script::new(REMOVE),
                unlock: Script::new(UNLOCK),
                reseal: Script::new(RESEAL),
                add_codes: Script::new(ADD_CODES),
                redeem_code: Script::new(REDEEM_CODE),
                remove_codes: Script::new(REMOVE_CODES),
                write_policy: Script::new(WRITE_POLICY),
                seed_policy: Script::new(SEED_POLICY),
                policy_changes: Script::new(POLICY_CHANGES),
                feed_append: Script::new(FEED_APPEND),
                webhook_schedule: Script::new(WEBHOOK_SCHEDULE),
                webhook_claim: Script::new(WEBHOOK_CLAIM),
                webhook_dead: Script::new(WEBHOOK_DEAD),
                webhook_requeue: Script::new(WEBHOOK_REQUEUE),
            },
        })
    }

    pub fn key(&self, key: &UserKey) -> String {
        redis_key(&self.prefix, key)
    }

    /// The keys of a user's scripts: the hash, and the list of the user's events beside
    /// it (the same hash tag, so the same slot).
    fn user_keys(&self, key: &UserKey) -> [String; 2] {
        let hash = self.key(key);
        let events = format!("{hash}:events");
        [hash, events]
    }

    /// An organization's feed of events and its record of how far it copied each source,
    /// in a slot of their own (see `store::audit`).
    fn feed_keys(&self, org: &str) -> [String; 2] {
        let mut feed = format!("{}:audit:{{", self.prefix);
        escape_into(&mut feed, org);
        feed.push('}');
        let copied = format!("{feed}:copied");
        [feed, copied]
    }

    /// A key of the webhooks' slot (`store/webhook.rs`): `endpoints`, `orgs`, `retry`,
    /// `since`, or `dead:<org>`.
    fn webhook_key(&self, name: &str) -> String {
        format!("{}:{{webhooks}}:{name}", self.prefix)
    }

    fn dead_letters_key(&self, org: &str) -> String {
        let mut key = self.webhook_key("dead:");
        escape_into(&mut key, org);
        key
    }

    /// One command on the shared connection, by the deadline.
    async fn query<T: redis::FromRedisValue + Send>(
        &self,
        command: redis::Cmd,
        deadline: Instant,
    ) -> Result<T, StoreError> {
        let command = &command;
        self.on_shared(
            self.until(deadline),
            |mut connection: Connection| async move { command.query_async(&mut connection).await },
        )
        .await
    }

    /// One script on the shared connection, by the deadline.
    async fn invoke<T: redis::FromRedisValue + Send>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
        deadline: Instant,
    ) -> Result<T, StoreError> {
        self.on_shared(self.until(deadline), |mut connection: Connection| async move {
            invocation.invoke_async(&mut connection).await
        })
        .await
    }

    /// The list a feed copies from.
    fn source_list(&self, source: &FeedSource) -> String {
        match source {
            FeedSource::User(key) => {
                let [_, events] = self.user_keys(key);
                events
            }
            FeedSource::Policies(org) => {
                let [.., events] = self.policy_keys(org);
                events
            }
        }
    }

    /// The keys of an organization's policies: its hash, the epoch and the change index, all
    /// under the one hash tag `{policies}` (see `lua/policy_prelude.lua`). One slot holds every
    /// organization's policies: they are small, written rarely and read once per actor.
    fn policy_keys(&self, org: &str) -> [String; 4] {
        let mut hash = format!("{}:{{policies}}:org:", self.prefix);
        escape_into(&mut hash, org);
        let mut events = format!("{}:{{policies}}:events:", self.prefix);
        escape_into(&mut events, org);
        let [epoch, changes] = self.policy_index_keys();
        [hash, epoch, changes, events]
    }

    fn policy_index_keys(&self) -> [String; 2] {
        [
            format!("{}:{{policies}}:epoch", self.prefix),
            format!("{}:{{policies}}:changes", self.prefix),
        ]
    }

    /// An organization's index of locked users: a sorted set of user ids (all scored 0, so
    /// that it pages in id order), in a slot of its own, not its users'.
    fn lock_index_key(&self, org: &str) -> String {
        let mut key = format!("{}:locked:{{", self.prefix);
        escape_into(&mut key, org);
        key.push('}');
        key
    }

    /// Runs a policy script over `org`'s keys, in the lane of an acknowledged change: `args`
    /// after the deadline and the audit stamp, then the organization.
    async fn policy_script(
        &self,
        script: &Script,
        org: &str,
        stamp: &Stamp,
        args: &[&[u8]],
        deadline: Instant,
    ) -> Result<Reply, StoreError> {
        let keys = self.change_keys(self.policy_keys(org), org);
        let mut with_org = args.to_vec();
        with_org.push(org.as_bytes());
        self.run_over(
            self.change_lane(),
            script,
            &keys,
            org,
            &stamp.script_arg(""),
            &with_org,
            deadline,
            |reply| reply.status == "ok",
        )
        .await
    }

    /// Tells the instance's webhook endpoint (`store/webhook.rs`) that `org` has a feed, after
    /// events were appended to it, unless this replica told it lately (`feed_hints`). Another
    /// slot than the feed's, so not in the script that appends.
    async fn hint_feed(&self, org: &str, deadline: Instant) -> Result<(), StoreError> {
        let now = Instant::now();
        if !self.feed_hints.due(org, now) {
            return Ok(());
        }
        let mut hint = redis::cmd("SADD");
        hint.arg(self.webhook_key("orgs")).arg(org);
        self.query::<i64>(hint, deadline).await?;
        self.feed_hints.sent(org, now);
        Ok(())
    }

    /// The keys of a change's script: its own, then on one server the organization's feed
    /// and its marks, to which the script appends the change's events itself
    /// (`lua/audit.lua`'s `hand_on`).
    fn change_keys<const N: usize>(&self, own: [String; N], org: &str) -> Vec<String> {
        let mut keys = Vec::with_capacity(N + 2);
        keys.extend(own);
        if self.feeds_in_script {
            keys.extend(self.feed_keys(org));
        }
        keys
    }

    /// When this call stops waiting: the request's deadline, or the store timeout if sooner.
    fn until(&self, deadline: Instant) -> Instant {
        deadline.min(Instant::now() + self.timeout)
    }

    /// `until` in Redis's clock, for the script to compare with its own `TIME`. Readiness
    /// keeps the offset current; before its first answer, one `TIME` is asked here.
    async fn redis_deadline(&self, until: Instant) -> Result<i64, StoreError> {
        if let Some(deadline) = self.clock.at(until) {
            return Ok(deadline);
        }
        self.redis_time(until).await?;
        self.clock.at(until).ok_or(StoreError::Timeout)
    }

    /// Redis's `TIME` from any node, noted as the clock's offset.
    async fn redis_time(&self, until: Instant) -> Result<i64, StoreError> {
        let (secs, micros): (i64, i64) = self.query_any_node(redis::cmd("TIME"), until).await?;
        let redis_micros = secs.saturating_mul(1_000_000).saturating_add(micros);
        self.clock.observe(redis_micros, Instant::now());
        Ok(redis_micros)
    }

    /// Sends a command on this thread's shared connection, bounded by `until`.
    async fn on_shared<T, Sent>(
        &self,
        until: Instant,
        send: impl FnOnce(Connection) -> Sent,
    ) -> Result<T, StoreError>
    where
        Sent: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let connection = self.connections.shared(until).await?;
        tokio::time::timeout_at(until.into(), send(connection))
            .await
            .map_err(|_| StoreError::Timeout)?
            .map_err(unavailable)
    }

    async fn query_any_node<T: redis::FromRedisValue>(
        &self,
        command: Cmd,
        until: Instant,
    ) -> Result<T, StoreError> {
        self.on_shared(until, |mut connection: Connection| {
            let command = command.clone();
            async move { connection.query_any_node(command).await }
        })
        .await
    }

    /// Runs `script` over the user's key in `lane`, bounded by `until`. In the durable lane,
    /// the script and a Redis `WAIT` for `wait_replicas` replicas go together (one pipeline,
    /// one round trip), and a reply that `must_replicate` with too few replicas by then is
    /// answered UNAVAILABLE: the write stays on the primary, and an accepted code is spent
    /// but not reported accepted.
    async fn run(
        &self,
        lane: Lane,
        script: &Script,
        keys: &[&str],
        args: &[&[u8]],
        until: Instant,
        must_replicate: impl Fn(&Reply) -> bool,
    ) -> Result<Reply, StoreError> {
        if lane == Lane::Shared {
            let mut invocation = script.prepare_invoke();
            for key in keys {
                invocation.key(*key);
            }
            for arg in args {
                invocation.arg(*arg);
            }
            let invocation = &invocation;
            let values = self
                .on_shared(until, |mut connection: Connection| async move {
                    invocation.invoke_async::<Vec<Value>>(&mut connection).await
                })
                .await?;
            return Reply::parse(values);
        }
        let mut exclusive = self.connections.exclusive(until).await?;
        let connection = exclusive.connection()?;
        let (reply, acknowledged) = tokio::time::timeout_at(
            until.into(),
            connection.run_then_wait(script, keys, args, self.wait_replicas, until),
        )
        .await
        .map_err(|_| StoreError::Timeout)?
        .map_err(unavailable)?;
        let values: Vec<Value> = redis::from_redis_value(reply)
            .map_err(|err| StoreError::Corrupt(format!("script reply: {err}")))?;
        let reply = Reply::parse(values)?;
        if must_replicate(&reply) && acknowledged < i64::from(self.wait_replicas) {
            return Err(StoreError::Unavailable(format!(
                "{acknowledged} of {} replicas acknowledged the write",
                self.wait_replicas
            )));
        }
        Ok(reply)
    }

    /// The user's whole hash.
    async fn read_hash(
        &self,
        key: &UserKey,
        deadline: Instant,
    ) -> Result<HashMap<String, Vec<u8>>, StoreError> {
        let command = redis::cmd("HGETALL").arg(self.key(key)).clone();
        let command = &command;
        self.on_shared(
            self.until(deadline),
            |mut connection: Connection| async move { command.query_async(&mut connection).await },
        )
        .await
    }

    /// Up to `limit` entries of a stream, newest first, before the entry `before` (none:
    /// from the newest), each as its id and fields.
    async fn read_stream(
        &self,
        stream: &str,
        before: Option<&str>,
        limit: usize,
        deadline: Instant,
    ) -> Result<Vec<(String, HashMap<String, String>)>, StoreError> {
        let end = before.map_or_else(|| "+".to_owned(), |before| format!("({before}"));
        let command = redis::cmd("XREVRANGE")
            .arg(stream)
            .arg(end)
            .arg("-")
            .arg("COUNT")
            .arg(limit)
            .clone();
        let command = &command;
        let entries: Vec<(String, Vec<String>)> = self
            .on_shared(self.until(deadline), |mut connection: Connection| async move {
                command.query_async(&mut connection).await
            })
            .await?;
        Ok(entries
            .into_iter()
            .map(|(id, fields)| {
                let mut map = HashMap::with_capacity(fields.len() / 2);
                let mut pairs = fields.into_iter();
                while let (Some(name), Some(value)) = (pairs.next(), pairs.next()) {
                    map.insert(name, value);
                }
                (id, map)
            })
            .collect())
    }

    /// A source's events past `mark` (none: all it holds), oldest first. Read newest first,
    /// a few at a time: a copy usually follows one change, whose events are the list's first,
    /// so the first page holds them and the mark.
    async fn events_past(
        &self,
        source: &FeedSource,
        mark: Option<(u64, u64)>,
        deadline: Instant,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        const FIRST_PAGE: usize = 2;
        const PAGE: usize = 16;
        let list = self.source_list(source);
        let mut new = Vec::new();
        let (mut start, mut count) = (0, FIRST_PAGE);
        'read: loop {
            let entries = self.read_list(&list, start, count, deadline).await?;
            let last_page = entries.len() < count;
            for entry in entries {
                let event = event_of_entry(&entry, source.user().cloned())?;
                if mark.is_some_and(|mark| entry_id(&event.id).is_none_or(|id| id <= mark)) {
                    break 'read;
                }
                new.push(event);
            }
            if last_page {
                break;
            }
            start += count;
            count = PAGE;
        }
        new.reverse();
        Ok(new)
    }

    /// Up to `count` elements of a list from `start` (0: the head; a user's events are newest
    /// first); `usize::MAX` for the rest of it.
    async fn read_list(
        &self,
        key: &str,
        start: usize,
        count: usize,
        deadline: Instant,
    ) -> Result<Vec<String>, StoreError> {
        let stop = start
            .checked_add(count)
            .and_then(|end| i64::try_from(end).ok())
            .map_or(-1, |end| end - 1);
        let command = redis::cmd("LRANGE").arg(key).arg(start).arg(stop).clone();
        let command = &command;
        self.on_shared(
            self.until(deadline),
            |mut connection: Connection| async move { command.query_async(&mut connection).await },
        )
        .await
    }

    /// The lane of a change that is always acknowledged (enroll, remove, unlock).
    fn change_lane(&self) -> Lane {
        if self.wait_replicas > 0 {
            Lane::Durable
        } else {
            Lane::Shared
        }
    }

    /// A change whose only argument is `now` (remove, unlock).
    async fn change_at(
        &self,
        script: &Script,
        key: &UserKey,
        stamp: &Stamp,
        deadline: Instant,
    ) -> Result<ChangeOutcome, StoreError> {
        let now_text = stamp.now.0.to_string();
        let reply = self
            .change(script, key, stamp, &[now_text.as_bytes()], deadline)
            .await?;
        change_outcome(&reply, stamp.now)
    }

    /// Runs a change script (enroll, remove, unlock, recovery codes) in the lane of an
    /// acknowledged change: `args` after the deadline and the audit stamp.
    async fn change(
        &self,
        script: &Script,
        key: &UserKey,
        stamp: &Stamp,
        args: &[&[u8]],
        deadline: Instant,
    ) -> Result<Reply, StoreError> {
        self.run_user_script(
            self.change_lane(),
            script,
            key,
            stamp,
            args,
            deadline,
            |reply| reply.status == "ok",
        )
        .await
    }

    /// Runs one of a user's scripts over the user's keys: `args` after the deadline (in
    /// Redis's clock) and the audit stamp.
    #[allow(clippy::too_many_arguments)]
    async fn run_user_script(
        &self,
        lane: Lane,
        script: &Script,
        key: &UserKey,
        stamp: &Stamp,
        args: &[&[u8]],
        deadline: Instant,
        must_replicate: impl Fn(&Reply) -> bool,
    ) -> Result<Reply, StoreError> {
        let keys = self.change_keys(self.user_keys(key), &key.org);
        self.run_over(
            lane,
            script,
            &keys,
            &key.org,
            &stamp.script_arg(&key.user),
            args,
            deadline,
            must_replicate,
        )
        .await
    }

    /// Runs a change's script over `keys` (`change_keys`) of `org`: `args` after the deadline
    /// (in Redis's clock) and `stamp` (`Stamp::script_arg`).
    #[allow(clippy::too_many_arguments)]
    async fn run_over(
        &self,
        lane: Lane,
        script: &Script,
        keys: &[String],
        org: &str,
        stamp: &str,
        args: &[&[u8]],
        deadline: Instant,
        must_replicate: impl Fn(&Reply) -> bool,
    ) -> Result<Reply, StoreError> {
        let until = self.until(deadline);
        let redis_deadline = self.redis_deadline(until).await?.to_string();
        let mut all: Vec<&[u8]> = Vec::with_capacity(args.len() + 2);
        all.push(redis_deadline.as_bytes());
        all.push(stamp.as_bytes());
        all.extend_from_slice(args);
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let reply = self
            .run(lane, script, &keys, &all, until, must_replicate)
            .await?;
        if reply.fed() {
            // The change is made: a hint that fails now is sent with a later one.
            if let Err(err) = self.hint_feed(org, deadline).await {
                tracing::warn!(error = %err, "the webhooks' hint of a feed was not sent");
            }
        }
        Ok(reply)
    }
}

fn standalone(
    mut info: redis::ConnectionInfo,
    options: &RedisConfig,
    tls_ca_pem: Option<Vec<u8>>,
) -> Result<Connector, StoreError> {
    // RESP3: a connection learns that Redis closed it from the disconnect push it only gets
    // under RESP3 (`connections.rs`). Under RESP2 it learns it from the next request, which
    // then fails: after a Redis restart, or an idle timeout on the server, the first request
    // of every thread would answer UNAVAILABLE.
    let mut settings = info
        .redis_settings()
        .clone()
        .set_protocol(redis::ProtocolVersion::RESP3);
    if let Some(password) = &options.password {
        settings = settings.set_password(password.expose_secret());
    }
    info = info.set_redis_settings(settings);
    let client = match tls_ca_pem {
        Some(root_cert) => redis::Client::build_with_tls(
            info,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(root_cert),
            },
        ),
        None => redis::Client::open(info),
    }
    .map_err(unavailable)?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(options.timeout))
        .set_response_timeout(Some(options.timeout));
    Ok(Connector::Standalone { client, config })
}

fn cluster(
    seeds: Vec<redis::ConnectionInfo>,
    options: &RedisConfig,
    tls_ca_pem: Option<Vec<u8>>,
) -> Result<Connector, StoreError> {
    // Retries cover MOVED/ASK and a node that is being failed over; the deadline still
    // bounds every call, and a script retried after it changes nothing.
    let mut builder = redis::cluster::ClusterClient::builder(seeds)
        .retries(3)
        .min_retry_wait(50)
        .max_retry_wait(500);
    if let Some(password) = &options.password {
        builder = builder.password(password.expose_secret());
    }
    if let Some(root_cert) = tls_ca_pem {
        builder = builder.certs(redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(root_cert),
        });
    }
    let client = builder.build().map_err(unavailable)?;
    let config = redis::cluster::ClusterConfig::new()
        .set_connection_timeout(options.timeout)
        .set_response_timeout(options.timeout);
    Ok(Connector::Cluster { client, config })
}

/// Feed events from a stream reply's entries (`[[id, [field, value, …]], …]`); an entry a
/// trim removed while pending comes as `[id, nil]` and is skipped.
fn stream_entries(entries: Value) -> Result<Vec<AuditEvent>, StoreError> {
    let Value::Array(entries) = entries else {
        return Ok(Vec::new());
    };
    let mut events = Vec::with_capacity(entries.len());
    for entry in entries {
        let (id, fields): (String, Option<Vec<String>>) = redis::from_redis_value(entry)
            .map_err(|err| StoreError::Corrupt(format!("feed entry: {err}")))?;
        let Some(fields) = fields else { continue };
        let mut map = HashMap::with_capacity(fields.len() / 2);
        let mut pairs = fields.into_iter();
        while let (Some(name), Some(value)) = (pairs.next(), pairs.next()) {
            map.insert(name, value);
        }
        events.push(event_from(id, &map, None)?);
    }
    Ok(events)
}

/// `%`, `:`, `{` and `}` are escaped so that ("a:b","c") and ("a","b:c") never share a key
/// and an id can never end the hash tag early.
pub(crate) fn redis_key(prefix: &str, key: &UserKey) -> String {
    let mut out = String::with_capacity(prefix.len() + key.org.len() + key.user.len() + 4);
    out.push_str(prefix);
    out.push_str(":{");
    escape_into(&mut out, &key.org);
    out.push(':');
    escape_into(&mut out, &key.user);
    out.push('}');
    out
}

/// The user of a key `redis_key` made with `prefix`; `None` for any other key.
pub(crate) fn user_of_key(prefix: &str, key: &str) -> Option<UserKey> {
    let tagged = key
        .strip_prefix(prefix)?
        .strip_prefix(":{")?
        .strip_suffix('}')?;
    let (org, user) = tagged.split_once(':')?;
    Some(UserKey {
        org: Arc::from(unescape(org)?),
        user: Arc::from(unescape(user)?),
    })
}

fn unescape(part: &str) -> Option<String> {
    if part.contains([':', '{', '}']) {
        return None;
    }
    let mut out = String::with_capacity(part.len());
    let mut rest = part;
    while let Some(at) = rest.find('%') {
        out.push_str(rest.get(..at)?);
        out.push(match rest.get(at..at + 3)? {
            "%25" => '%',
            "%3A" => ':',
            "%7B" => '{',
            "%7D" => '}',
            _ => return None,
        });
        rest = rest.get(at + 3..)?;
    }
    out.push_str(rest);
    Some(out)
}

fn escape_into(out: &mut String, part: &str) {
    for c in part.chars() {
        match c {
            '%' => out.push_str("%25"),
            ':' => out.push_str("%3A"),
            '{' => out.push_str("%7B"),
            '}' => out.push_str("%7D"),
            other => out.push(other),
        }
    }
}

fn change_outcome(reply: &Reply, now: UnixMicros) -> Result<ChangeOutcome, StoreError> {
    match reply.status.as_str() {
        "ok" => Ok(ChangeOutcome::Changed {
            sequence: reply.unsigned(0)?,
            changed_at: now,
        }),
        "absent" => Ok(ChangeOutcome::Absent),
        "not_locked" => Ok(ChangeOutcome::NotLocked),
        _ => Err(reply.unexpected()),
    }
}

/// An acceptance (the replay marker, a used recovery code) or a new lock: what must survive
/// a failover. attempt.lua and redeem_code.lua both answer a lock second in "invalid".
fn accepts_or_locks(reply: &Reply) -> bool {
    match reply.status.as_str() {
        "ok" => true,
        "invalid" => reply.number(1).is_ok_and(|lock| lock != 0),
        _ => false,
    }
}

fn attempt_outcome(reply: &Reply, now: UnixMicros) -> Result<AttemptOutcome, StoreError> {
    match reply.status.as_str() {
        "ok" => Ok(AttemptOutcome::Committed(AttemptVerdict::Accepted {
            sequence: reply.unsigned(0)?,
            changed_at: now,
        })),
        "invalid" => {
            let lock = match reply.number(1)? {
                0 => None,
                stored => Some(Lock::from_stored(stored)),
            };
            Ok(AttemptOutcome::Committed(AttemptVerdict::Rejected {
                failures: u32::try_from(reply.unsigned(0)?).unwrap_or(u32::MAX),
                lock,
                replayed: reply.number(2)? == 1,
            }))
        }
        "locked" => Ok(AttemptOutcome::Locked(Lock::from_stored(reply.number(0)?))),
        "absent" => Ok(AttemptOutcome::Absent),
        "state" => {
            let actual = u8::try_from(reply.number(0)?).map_err(|_| reply.unexpected())?;
            Ok(AttemptOutcome::WrongState(
                FactorState::from_stored(actual).ok_or_else(|| reply.unexpected())?,
            ))
        }
        "stale" => Ok(AttemptOutcome::Stale),
        _ => Err(reply.unexpected()),
    }
}

/// A source's events as `feed_append.lua` takes them.
enum FeedEvents<'a> {
    /// Read from the source, past the feed's mark.
    Read(&'a [AuditEvent]),
    /// Carried by the change's note.
    Carried(&'a Written),
}

impl RedisStore {
    /// The new events of `which` (sources of `org`'s feed), read past the feed's marks: one
    /// read of the marks (the feed's slot), then the sources at once (their own slots).
    /// Sources that do not read back go to `copy.left_out`; those with nothing new are left
    /// out.
    async fn read_past_marks<'a>(
        &self,
        org: &str,
        which: &[&'a FeedSource],
        deadline: Instant,
        copy: &mut FeedCopy,
    ) -> Result<Vec<(&'a FeedSource, Vec<AuditEvent>)>, StoreError> {
        if which.is_empty() {
            return Ok(Vec::new());
        }
        let [_, copied] = self.feed_keys(org);
        let fields: Vec<String> = which.iter().map(|source| source.cursor_field()).collect();
        // The script reads the marks again as it appends; these only tell where reading may
        // stop.
        let command = redis::cmd("HMGET").arg(&copied).arg(&fields).clone();
        let command = &command;
        let marks: Vec<Option<String>> = self
            .on_shared(self.until(deadline), |mut connection: Connection| async move {
                command.query_async(&mut connection).await
            })
            .await?;
        let reads = which.iter().zip(&marks).map(|(source, mark)| {
            let mark = mark.as_deref().and_then(entry_id);
            self.events_past(source, mark, deadline)
        });
        let mut read = Vec::with_capacity(which.len());
        for (&source, events) in which
            .iter()
            .zip(futures_util::future::join_all(reads).await)
        {
            match events {
                Ok(events) if events.is_empty() => {}
                Ok(events) => read.push((source, events)),
                Err(err @ (StoreError::Corrupt(_) | StoreError::NewerFormat(_))) => {
                    copy.left_out.push((source.clone(), err));
                }
                Err(err) => return Err(err),
            }
        }
        Ok(read)
    }

    /// One `feed_append.lua` over `batch` (sources of `org`'s feed and their events): how
    /// many events it appended, and the carried sources it found a gap before.
    async fn append_to_feed<'a>(
        &self,
        org: &str,
        batch: &[(&'a FeedSource, FeedEvents<'_>)],
        retention: Retention,
        deadline: Instant,
    ) -> Result<(usize, Vec<&'a FeedSource>), StoreError> {
        if batch.is_empty() {
            return Ok((0, Vec::new()));
        }
        let [feed, copied] = self.feed_keys(org);
        let max_events = retention.max_events.to_string();
        let max_age = (retention.max_age_micros() / 1000).to_string();
        let mut invocation = self.scripts.feed_append.prepare_invoke();
        invocation
            .key(&feed)
            .key(&copied)
            .arg(&max_events)
            .arg(&max_age);
        let mut by_field = HashMap::with_capacity(batch.len());
        for &(source, ref events) in batch {
            let field = source.cursor_field();
            let (from, events) = match events {
                FeedEvents::Read(events) => ("*", *events),
                FeedEvents::Carried(written) => {
                    (written.before.as_deref().unwrap_or(""), &written.events[..])
                }
            };
            invocation
                .arg(&field)
                .arg(source.user().map_or("", |user| &**user))
                .arg(from)
                .arg(events.len());
            for event in events {
                let event_fields = feed_fields(event);
                invocation.arg(&event.id).arg(event_fields.len());
                for (name, value) in event_fields {
                    invocation.arg(name).arg(value);
                }
            }
            by_field.insert(field, source);
        }
        let invocation = &invocation;
        let reply: Vec<redis::Value> = self
            .on_shared(
                self.until(deadline),
                |mut connection: Connection| async move {
                    invocation.invoke_async(&mut connection).await
                },
            )
            .await?;
        let corrupt = || StoreError::Corrupt("feed_append.lua's reply".into());
        let mut reply = reply.into_iter();
        let appended = match reply.next() {
            Some(redis::Value::Int(appended)) => {
                usize::try_from(appended).map_err(|_| corrupt())?
            }
            _ => return Err(corrupt()),
        };
        let gaps = reply
            .map(|gap| match gap {
                redis::Value::BulkString(field) => String::from_utf8(field)
                    .ok()
                    .and_then(|field| by_field.get(&field).copied())
                    .ok_or_else(corrupt),
                _ => Err(corrupt()),
            })
            .collect::<Result<_, _>>()?;
        Ok((appended, gaps))
    }
}

/// The events a script answered that its change wrote (`Reply::written`). `None` when it
/// answered none, or one that does not read back: the feed's copier then reads the list,
/// and reports what it cannot read.
fn written_of(reply: &Reply, user: &Arc<str>) -> Option<Written> {
    let (before, elements) = reply.written().split_first()?;
    let events = elements
        .iter()
        .map(|element| event_of_entry(element, Some(user.clone())))
        .collect::<Result<Vec<_>, _>>()
        .ok()?;
    if events.is_empty() {
        return None;
    }
    Some(Written {
        before: Some(before.clone()).filter(|before| !before.is_empty()),
        events,
    })
}

#[async_trait]
impl FactorStore for RedisStore {
    async fn load(
        &self,
        key: &UserKey,
        deadline: Instant,
    ) -> Result<Option<FactorRecord>, StoreError> {
        // The factor's fields only: with HGETALL, a user's recovery codes would ride along
        // on every read of the check's path.
        let mut command = redis::cmd("HMGET");
        command.arg(self.key(key)).arg(&FACTOR_FIELDS[..]);
        let command = &command;
        let values: Vec<Option<Vec<u8>>> = self
            .on_shared(self.until(deadline), |mut connection: Connection| async move {
                command.query_async(&mut connection).await
            })
            .await?;
        record_from(&FactorFields(values))
    }

    async fn add(
        &self,
        key: &UserKey,
        factor: NewFactor,
        stamp: &Stamp,
        deadline: Instant,
    ) -> Result<AddOutcome, StoreError> {
        let now = stamp.now;
        let factor_id = factor.factor_id.stored();
        // Format 4 leaves the parameters every app assumes out: three empty arguments.
        let implied =
            self.record_format == RecordFormat::Compact && factor.params == reply::IMPLIED_PARAMS;
        let (algorithm, digits, period) = if implied {
            ("", String::new(), String::new())
        } else {
            (
                factor.params.algorithm().as_str(),
                factor.params.digits().to_string(),
                factor.params.period_secs().to_string(),
            )
        };
        let now_text = now.0.to_string();
        let args: [&[u8]; 6] = [
            &factor_id,
            &factor.sealed_secret,
            algorithm.as_bytes(),
            digits.as_bytes(),
            period.as_bytes(),
            now_text.as_bytes(),
        ];
        let reply = self
            .change(&self.scripts.add, key, stamp, &args, deadline)
            .await?;
        match reply.status.as_str() {
            "ok" => Ok(AddOutcome::Added {
                sequence: reply.unsigned(0)?,
                created_at: now,
            }),
            "exists" => Ok(AddOutcome::AlreadyReady),
            _ => Err(reply.unexpected()),
        }
    }

    async fn attempt(
        &self,
        key: &UserKey,
        attempt: Attempt,
        stamp: &Stamp,
        deadline: Instant,
    ) -> Result<Attempted, StoreError> {
        let now = stamp.now;
        let factor_id = attempt.factor_id.stored();
        let state = attempt.purpose.required_state().as_stored().to_string();
        let step = attempt
            .matched_step
            .map_or_else(|| "-1".to_owned(), |step| step.to_string());
        let now_text = now.0.to_string();
        let max = attempt.policy.max_attempts.to_string();
        let duration = attempt.policy.lock_duration_micros.to_string();
        let args = |hold: &'static [u8]| -> [&[u8]; 7] {
            [
                &factor_id,
                state.as_bytes(),
                step.as_bytes(),
                now_text.as_bytes(),
                max.as_bytes(),
                duration.as_bytes(),
                hold,
            ]
        };
        let script = &self.scripts.attempt;
        let run = |lane: Lane, hold: &'static [u8], must_replicate: fn(&Reply) -> bool| {
            let args = args(hold);
            async move {
                self.run_user_script(lane, script, key, stamp, &args, deadline, must_replicate)
                    .await
            }
        };
        let reply = if self.wait_replicas == 0 {
            run(Lane::Shared, b"0", |_| false).await?
        } else if attempt.matched_step.is_some() {
            // Most likely an acceptance, which must reach the replicas: straight to a
            // connection that can wait for them.
            run(Lane::Durable, b"0", accepts_or_locks).await?
        } else {
            // A wrong code changes only the failure count, unless it locks: try it on the
            // shared connection, and only a lock goes to one that waits.
            let first = run(Lane::Shared, b"1", |_| false).await?;
            if first.status == "hold" {
                run(Lane::Durable, b"0", accepts_or_locks).await?
            } else {
                first
            }
        };
        let feed = if reply.fed() {
            FeedDue::Nothing
        } else {
            FeedDue::Copy(written_of(&reply, &key.user))
        };
        Ok(Attempted {
            outcome: attempt_outcome(&reply, now)?,
            feed,
        })
    }

    async fn remove(
        &self,
        key: &UserKey,
        stamp: &Stamp,
        deadline: Instant,
    ) -> Result<ChangeOutcome, StoreError> {
        self.change_at(&self.scripts.remove, key, stamp, deadline)
            .await
    }

    async fn unlock(
        &self,
        key: &UserKey,
        stamp: &Stamp,
        deadline: Instant,
    ) -> Result<ChangeOutcome, StoreError> {
        self.change_at(&self.scripts.unlock, key, stamp, deadline)
            .await
    }

    async fn load_user(&self, key: &UserKey, deadline: Instant) -> Result<UserRecord, StoreError> {
        let fields = self.read_hash(key, deadline).await?;
        let recovery_codes = codes_held(&fields)?;
        let standing = standing_of(&fields)?;
        Ok(UserRecord {
            factor: record_from(&fields)?,
            recovery_codes,
            standing,
        })
    }

    async fn add_recovery_codes(
        &self,
        key: &UserKey,
        codes: NewCodes,
        stamp: &Stamp,
        deadline: Instant,
    ) -> Result<AddCodesOutcome, StoreError> {
        let now_text = stamp.now.0.to_string();
        let max = codes.max.to_string();
        let mut args: Vec<&[u8]> = vec![now_text.as_bytes(), max.as_bytes()];
        args.extend(codes.fields.iter().map(String::as_bytes));
        let reply = self
            .change(&self.scripts.add_codes, key, stamp, &args, deadline)
            .await?;
        match reply.status.as_str() {
            "ok" => Ok(AddCodesOutcome::Added {
                sequence: reply.unsigned(0)?,
                held: reply.count(1)?,
            }),
            "too_many" => Ok(AddCodesOutcome::TooMany {
                held: reply.count(0)?,
            }),
            _ => Err(reply.unexpected()),
        }
    }

    /// Always on a connection that waits for the replicas (when any are required): a used
    /// code and a new lock must survive a failover, and recovery codes are too rare at login
    /// to be worth a first try on the shared connection.
    async fn redeem_recovery_code(
        &self,
        key: &UserKey,
        redemption: Redemption,
        stamp: &Stamp,
        deadline: Instant,
    ) -> Result<RedeemOutcome, StoreError> {
        let now = stamp.now;
        let now_text = now.0.to_string();
        let max = redemption.policy.max_attempts.to_string();
        let duration = redemption.policy.lock_duration_micros.to_string();
        let mut args: Vec<&[u8]> = vec![now_text.as_bytes(), max.as_bytes(), duration.as_bytes()];
        args.extend(redemption.candidates.iter().map(String::as_bytes));
        let reply = self
            .run_user_script(
                self.change_lane(),
                &self.scripts.redeem_code,
                key,
                stamp,
                &args,
                deadline,
                accepts_or_locks,
            )
            .await?;
        match reply.status.as_str() {
            "ok" => Ok(RedeemOutcome::Accepted {
                sequence: reply.unsigned(0)?,
                changed_at: now,
                remaining: reply.count(1)?,
            }),
            "invalid" => Ok(RedeemOutcome::Rejected {
                failures: reply.count(0)?,
                lock: match reply.number(1)? {
                    0 => None,
                    stored => Some(Lock::from_stored(stored)),
                },
            }),
            "locked" => Ok(RedeemOutcome::Locked(Lock::from_stored(reply.number(0)?))),
            "none" => Ok(RedeemOutcome::NoCodes),
            _ => Err(reply.unexpected()),
        }
    }

    async fn remove_recovery_codes(
        &self,
        key: &UserKey,
        stamp: &Stamp,
        deadline: Instant,
    ) -> Result<RemoveCodesOutcome, StoreError> {
        let now_text = stamp.now.0.to_string();
        let reply = self
            .change(
                &self.scripts.remove_codes,
                key,
                stamp,
                &[now_text.as_bytes()],
                deadline,
            )
            .await?;
        match reply.status.as_str() {
            "ok" => Ok(RemoveCodesOutcome::Removed {
                sequence: reply.unsigned(0)?,
                changed_at: stamp.now,
            }),
            "none" => Ok(RemoveCodesOutcome::NoCodes),
            "locked" => Ok(RemoveCodesOutcome::Locked(Lock::from_stored(
                reply.number(0)?,
            ))),
            _ => Err(reply.unexpected()),
        }
    }

    async fn load_policies(
        &self,
        org: &str,
        deadline: Instant,
    ) -> Result<StoredPolicies, StoreError> {
        let [hash, ..] = self.policy_keys(org);
        let command = redis::cmd("HGETALL").arg(hash).clone();
        let command = &command;
        let fields: HashMap<String, Vec<u8>> = self
            .on_shared(self.until(deadline), |mut connection: Connection| async move {
                command.query_async(&mut connection).await
            })
            .await?;
        policies_from(&fields)
    }

    async fn write_policy(
        &self,
        org: &str,
        write: PolicyWrite,
        stamp: &Stamp,
        deadline: Instant,
    ) -> Result<PolicyWritten, StoreError> {
        let now_text = stamp.now.0.to_string();
        let args: [&[u8]; 4] = [
            write.part.field().as_bytes(),
            write.mode.as_str().as_bytes(),
            write.form.as_bytes(),
            now_text.as_bytes(),
        ];
        let reply = self
            .policy_script(&self.scripts.write_policy, org, stamp, &args, deadline)
            .await?;
        match reply.status.as_str() {
            "ok" => Ok(PolicyWritten::Written {
                sequence: reply.unsigned(0)?,
            }),
            "exists" => Ok(PolicyWritten::Exists),
            "absent" => Ok(PolicyWritten::Absent {
                sequence: reply.unsigned(0)?,
            }),
            "unchanged" => Ok(PolicyWritten::Unchanged {
                sequence: reply.unsigned(0)?,
            }),
            _ => Err(reply.unexpected()),
        }
    }

    async fn seed_policies(
        &self,
        org: &str,
        seed: &PolicySeed,
        stamp: &Stamp,
        deadline: Instant,
    ) -> Result<bool, StoreError> {
        let lockout = seed.lockout.as_ref().map(stored_form).unwrap_or_default();
        let otp = seed.otp.as_ref().map(stored_form).unwrap_or_default();
        let now_text = stamp.now.0.to_string();
        let args: [&[u8]; 3] = [lockout.as_bytes(), otp.as_bytes(), now_text.as_bytes()];
        let reply = self
            .policy_script(&self.scripts.seed_policy, org, stamp, &args, deadline)
            .await?;
        match reply.status.as_str() {
            "ok" => Ok(true),
            "kept" => Ok(false),
            _ => Err(reply.unexpected()),
        }
    }

    async fn policy_changes(
        &self,
        since: u64,
        deadline: Instant,
    ) -> Result<PolicyChanges, StoreError> {
        let [epoch, changes] = self.policy_index_keys();
        let mut invocation = self.scripts.policy_changes.prepare_invoke();
        invocation.key(epoch).key(changes).arg(since);
        let invocation = &invocation;
        let reply: Vec<String> = self
            .on_shared(
                self.until(deadline),
                |mut connection: Connection| async move {
                    invocation.invoke_async(&mut connection).await
                },
            )
            .await?;
        let mut reply = reply.into_iter();
        let epoch = reply
            .next()
            .and_then(|epoch| epoch.parse().ok())
            .ok_or_else(|| StoreError::Corrupt("policy epoch".into()))?;
        Ok(PolicyChanges {
            epoch,
            orgs: reply.map(Arc::from).collect(),
        })
    }

    async fn index_locks(
        &self,
        changes: &[LockIndexChange],
        deadline: Instant,
    ) -> Result<(), StoreError> {
        // One command per organization and kind: each index is one key, maybe on its own node.
        let mut by_index: HashMap<(String, bool), Vec<&str>> = HashMap::new();
        for change in changes {
            by_index
                .entry((self.lock_index_key(&change.key.org), change.locked))
                .or_default()
                .push(&change.key.user);
        }
        let until = self.until(deadline);
        for ((index, locked), users) in by_index {
            let mut command = if locked {
                let mut command = redis::cmd("ZADD");
                command.arg(&index);
                for user in users {
                    command.arg(0).arg(user);
                }
                command
            } else {
                let mut command = redis::cmd("ZREM");
                command.arg(&index).arg(users);
                command
            };
            let command = &mut command;
            let _: i64 = self
                .on_shared(until, |mut connection: Connection| async move {
                    command.query_async(&mut connection).await
                })
                .await?;
        }
        Ok(())
    }

    async fn lock_candidates(
        &self,
        org: &str,
        after: Option<&str>,
        limit: usize,
        deadline: Instant,
    ) -> Result<Vec<Arc<str>>, StoreError> {
        let min = after.map_or_else(|| "-".to_owned(), |after| format!("({after}"));
        let mut command = redis::cmd("ZRANGEBYLEX");
        command
            .arg(self.lock_index_key(org))
            .arg(min)
            .arg("+")
            .arg("LIMIT")
            .arg(0)
            .arg(limit);
        let command = &command;
        let users: Vec<String> = self
            .on_shared(self.until(deadline), |mut connection: Connection| async move {
                command.query_async(&mut connection).await
            })
            .await?;
        Ok(users.into_iter().map(Arc::from).collect())
    }

    async fn user_events(
        &self,
        key: &UserKey,
        before: Option<&str>,
        limit: usize,
        deadline: Instant,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let [_, events] = self.user_keys(key);
        let entries = self.read_list(&events, 0, usize::MAX, deadline).await?;
        let before = before.and_then(entry_id);
        let mut page = Vec::with_capacity(limit.min(entries.len()));
        for entry in entries {
            let event = event_of_entry(&entry, Some(key.user.clone()))?;
            if before.is_none_or(|before| entry_id(&event.id).is_some_and(|id| id < before)) {
                page.push(event);
                if page.len() == limit {
                    break;
                }
            }
        }
        Ok(page)
    }

    async fn copy_to_feed(
        &self,
        sources: &FeedSources,
        retention: Retention,
        deadline: Instant,
    ) -> Result<FeedCopy, StoreError> {
        let mut copy = FeedCopy::default();
        // The events the notes carried go straight to the script; the other sources are read
        // first. Carried events that do not follow the feed's mark (a change whose note was
        // lost or came late, a change on another replica) are read too, and appended by a
        // second script.
        let mut batch = Vec::with_capacity(sources.sources().len());
        let mut unread = Vec::new();
        for (source, written) in sources.sources().iter().zip(sources.written()) {
            match written {
                Some(written) => batch.push((source, FeedEvents::Carried(written))),
                None => unread.push(source),
            }
        }
        let read = self
            .read_past_marks(sources.org(), &unread, deadline, &mut copy)
            .await?;
        batch.extend(
            read.iter()
                .map(|(source, events)| (*source, FeedEvents::Read(events))),
        );
        let (appended, gaps) = self
            .append_to_feed(sources.org(), &batch, retention, deadline)
            .await?;
        copy.appended += appended;
        if !gaps.is_empty() {
            let read = self
                .read_past_marks(sources.org(), &gaps, deadline, &mut copy)
                .await?;
            let batch: Vec<_> = read
                .iter()
                .map(|(source, events)| (*source, FeedEvents::Read(events)))
                .collect();
            let (appended, _) = self
                .append_to_feed(sources.org(), &batch, retention, deadline)
                .await?;
            copy.appended += appended;
        }
        if copy.appended > 0 {
            self.hint_feed(sources.org(), deadline).await?;
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
        let [feed, _] = self.feed_keys(org);
        let entries = self.read_stream(&feed, before, limit, deadline).await?;
        entries
            .into_iter()
            .map(|(id, fields)| event_from(id, &fields, None))
            .collect()
    }

    async fn put_endpoint(
        &self,
        endpoint: &StoredEndpoint,
        deadline: Instant,
    ) -> Result<(), StoreError> {
        let json =
            serde_json::to_string(endpoint).map_err(|err| StoreError::Corrupt(err.to_string()))?;
        let mut command = redis::cmd("HSET");
        command
            .arg(self.webhook_key("endpoints"))
            .arg(&endpoint.id)
            .arg(json);
        self.query::<i64>(command, deadline).await.map(|_| ())
    }

    async fn delete_endpoint(
        &self,
        org: &str,
        id: &str,
        deadline: Instant,
    ) -> Result<bool, StoreError> {
        let owned = self
            .endpoints(deadline)
            .await?
            .into_iter()
            .any(|endpoint| endpoint.id == id && endpoint.org == org);
        if !owned {
            return Ok(false);
        }
        let mut command = redis::cmd("HDEL");
        command.arg(self.webhook_key("endpoints")).arg(id);
        self.query::<i64>(command, deadline).await.map(|n| n > 0)
    }

    async fn endpoints(&self, deadline: Instant) -> Result<Vec<StoredEndpoint>, StoreError> {
        let mut command = redis::cmd("HVALS");
        command.arg(self.webhook_key("endpoints"));
        let values: Vec<String> = self.query(command, deadline).await?;
        values
            .iter()
            .map(|json| {
                serde_json::from_str(json)
                    .map_err(|err| StoreError::Corrupt(format!("webhook endpoint: {err}")))
            })
            .collect()
    }

    async fn feed_orgs(&self, deadline: Instant) -> Result<Vec<Arc<str>>, StoreError> {
        let mut command = redis::cmd("SMEMBERS");
        command.arg(self.webhook_key("orgs"));
        let orgs: Vec<String> = self.query(command, deadline).await?;
        Ok(orgs.into_iter().map(Arc::from).collect())
    }

    async fn take_feed(
        &self,
        org: &str,
        consumer: &str,
        claim_idle: std::time::Duration,
        count: usize,
        deadline: Instant,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let [feed, _] = self.feed_keys(org);
        // The group reads the feed from its start: the deliverer sends an endpoint only
        // what happened after it was made. BUSYGROUP: made before.
        let mut create = redis::cmd("XGROUP");
        create
            .arg("CREATE")
            .arg(&feed)
            .arg(DELIVERERS)
            .arg("0")
            .arg("MKSTREAM");
        match self.query::<String>(create, deadline).await {
            Ok(_) => {}
            Err(StoreError::Unavailable(message)) if message.contains("BUSYGROUP") => {}
            Err(err) => return Err(err),
        }
        let idle = u64::try_from(claim_idle.as_millis()).unwrap_or(u64::MAX);
        let mut claim = redis::cmd("XAUTOCLAIM");
        claim
            .arg(&feed)
            .arg(DELIVERERS)
            .arg(consumer)
            .arg(idle)
            .arg("0-0")
            .arg("COUNT")
            .arg(count);
        let claimed: Value = self.query(claim, deadline).await?;
        let mut events = Vec::new();
        if let Value::Array(parts) = claimed
            && let Some(entries) = parts.into_iter().nth(1)
        {
            events.extend(stream_entries(entries)?);
        }
        if events.len() < count {
            let mut read = redis::cmd("XREADGROUP");
            read.arg("GROUP")
                .arg(DELIVERERS)
                .arg(consumer)
                .arg("COUNT")
                .arg(count - events.len())
                .arg("STREAMS")
                .arg(&feed)
                .arg(">");
            let reply: Value = self.query(read, deadline).await?;
            // RESP2: [[feed, [entries]]]; RESP3: {feed: [entries]}; nil when nothing is new.
            match reply {
                Value::Array(streams) => {
                    for stream in streams {
                        if let Value::Array(pair) = stream
                            && let Some(entries) = pair.into_iter().nth(1)
                        {
                            events.extend(stream_entries(entries)?);
                        }
                    }
                }
                Value::Map(streams) => {
                    for (_, entries) in streams {
                        events.extend(stream_entries(entries)?);
                    }
                }
                _ => {}
            }
        }
        Ok(events)
    }

    async fn ack_feed(
        &self,
        org: &str,
        ids: &[String],
        deadline: Instant,
    ) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let [feed, _] = self.feed_keys(org);
        let mut command = redis::cmd("XACK");
        command.arg(&feed).arg(DELIVERERS).arg(ids);
        self.query::<i64>(command, deadline).await.map(|_| ())
    }

    async fn schedule_delivery(
        &self,
        delivery: &PendingDelivery,
        due: UnixMicros,
        replacing: Option<&PendingDelivery>,
        deadline: Instant,
    ) -> Result<(), StoreError> {
        let mut invocation = self.scripts.webhook_schedule.prepare_invoke();
        invocation
            .key(self.webhook_key("retry"))
            .key(self.webhook_key("since"))
            .arg(due.0)
            .arg(delivery.member())
            .arg(delivery.first_failed_at)
            .arg(replacing.map(PendingDelivery::member).unwrap_or_default());
        self.invoke::<i64>(&invocation, deadline).await.map(|_| ())
    }

    async fn claim_deliveries(
        &self,
        now: UnixMicros,
        lease: std::time::Duration,
        count: usize,
        deadline: Instant,
    ) -> Result<Vec<PendingDelivery>, StoreError> {
        let lease = i64::try_from(lease.as_micros()).unwrap_or(i64::MAX);
        let mut invocation = self.scripts.webhook_claim.prepare_invoke();
        invocation
            .key(self.webhook_key("retry"))
            .arg(now.0)
            .arg(now.0.saturating_add(lease))
            .arg(count);
        let members: Vec<String> = self.invoke(&invocation, deadline).await?;
        members
            .iter()
            .map(|member| {
                serde_json::from_str(member)
                    .map_err(|err| StoreError::Corrupt(format!("webhook delivery: {err}")))
            })
            .collect()
    }

    async fn finish_delivery(
        &self,
        delivery: &PendingDelivery,
        deadline: Instant,
    ) -> Result<(), StoreError> {
        let member = delivery.member();
        for set in ["retry", "since"] {
            let mut command = redis::cmd("ZREM");
            command.arg(self.webhook_key(set)).arg(&member);
            self.query::<i64>(command, deadline).await?;
        }
        Ok(())
    }

    async fn dead_letter(
        &self,
        delivery: &PendingDelivery,
        deadline: Instant,
    ) -> Result<(), StoreError> {
        let mut invocation = self.scripts.webhook_dead.prepare_invoke();
        invocation
            .key(self.webhook_key("retry"))
            .key(self.webhook_key("since"))
            .key(self.dead_letters_key(&delivery.org))
            .arg(delivery.member())
            .arg(DEAD_LETTERS_KEPT);
        self.invoke::<i64>(&invocation, deadline).await.map(|_| ())
    }

    async fn dead_letters(
        &self,
        org: &str,
        deadline: Instant,
    ) -> Result<Vec<PendingDelivery>, StoreError> {
        let listed = self
            .read_list(&self.dead_letters_key(org), 0, usize::MAX, deadline)
            .await?;
        listed
            .iter()
            .map(|member| {
                serde_json::from_str(member)
                    .map_err(|err| StoreError::Corrupt(format!("dead letter: {err}")))
            })
            .collect()
    }

    async fn replay_dead_letters(
        &self,
        org: &str,
        now: UnixMicros,
        deadline: Instant,
    ) -> Result<usize, StoreError> {
        let key = self.dead_letters_key(org);
        let listed = self.read_list(&key, 0, usize::MAX, deadline).await?;
        if listed.is_empty() {
            return Ok(0);
        }
        let mut invocation = self.scripts.webhook_requeue.prepare_invoke();
        invocation
            .key(&key)
            .key(self.webhook_key("retry"))
            .key(self.webhook_key("since"))
            .arg(now.0);
        for member in &listed {
            let mut delivery: PendingDelivery = serde_json::from_str(member)
                .map_err(|err| StoreError::Corrupt(format!("dead letter: {err}")))?;
            delivery.attempt = 0;
            delivery.first_failed_at = now.0;
            invocation.arg(member).arg(delivery.member());
        }
        self.invoke(&invocation, deadline).await
    }

    async fn oldest_pending_delivery(
        &self,
        deadline: Instant,
    ) -> Result<Option<UnixMicros>, StoreError> {
        let mut command = redis::cmd("ZRANGE");
        command
            .arg(self.webhook_key("since"))
            .arg(0)
            .arg(0)
            .arg("WITHSCORES");
        let oldest: Vec<(String, f64)> = self.query(command, deadline).await?;
        #[allow(clippy::cast_possible_truncation)]
        Ok(oldest.first().map(|(_, since)| UnixMicros(*since as i64)))
    }

    async fn server_time(&self) -> Result<Option<UnixMicros>, StoreError> {
        let until = Instant::now() + self.timeout;
        self.redis_time(until)
            .await
            .map(|micros| Some(UnixMicros(micros)))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn key(org: &str, user: &str) -> UserKey {
        UserKey {
            org: Arc::from(org),
            user: Arc::from(user),
        }
    }

    const SCRIPTS: [&str; 8] = [
        ADD,
        ATTEMPT,
        REMOVE,
        UNLOCK,
        RESEAL,
        ADD_CODES,
        REDEEM_CODE,
        REMOVE_CODES,
    ];

    /// `redis.url` may carry a password: a problem with it is said without the URL.
    #[test]
    fn a_bad_redis_url_is_named_without_repeating_it() {
        let parse =
            |mode, urls: &str| RedisNodes::parse(mode, &SecretString::from(urls.to_owned()));
        for (mode, urls) in [
            (
                RedisMode::Standalone,
                "redis://user:hunter2@host:6379/not-a-db",
            ),
            (
                RedisMode::Cluster,
                "redis://a:6379, redis://user:hunter2@:6379",
            ),
            (RedisMode::Standalone, "http://user:hunter2@host:6379"),
            (
                RedisMode::Standalone,
                "redis://user:hunter2@a:1,redis://b:2",
            ),
        ] {
            let Err(problem) = parse(mode, urls) else {
                panic!("{mode:?} {urls} parsed");
            };
            assert!(problem.starts_with("redis.url "), "{problem}");
            assert!(!problem.contains("hunter2"), "{problem}");
        }
        assert!(
            !parse(RedisMode::Standalone, "rediss://h:6380")
                .unwrap()
                .is_cluster()
        );
        assert!(
            parse(RedisMode::Cluster, "redis://a:1, redis://b:2")
                .unwrap()
                .is_cluster()
        );
    }

    /// Cluster safety of the scripts: each declares the user's two keys (the hash and the
    /// list of the user's events, which share a hash tag), reads them from KEYS[1] and
    /// KEYS[2], and every call names one of them (a key built inside a script would go
    /// unrouted). The organization's feed and its marks (KEYS[3] and KEYS[4], another hash
    /// tag) may be named too: `audit.lua`'s `hand_on` uses them only when they are given,
    /// and the store gives them on one server only (`feeds_in_script`). The one call without
    /// a key is `TIME`, for the deadline and the sequence.
    #[test]
    fn every_script_touches_only_the_users_declared_keys() {
        for script in SCRIPTS {
            let code: Vec<&str> = script
                .lines()
                .filter(|line| !line.trim_start().starts_with("--"))
                .collect();
            let code = code.join("\n");
            assert!(code.contains("local key = KEYS[1]"), "{script}");
            assert!(code.contains("local events = KEYS[2]"), "{script}");
            assert!(
                code.contains("local feed, copied = KEYS[3], KEYS[4]"),
                "{script}"
            );
            assert!(code.contains("  if not feed then\n"), "{script}");
            assert_eq!(code.matches("KEYS[").count(), 4, "{script}");
            let calls: Vec<&str> = code.split("redis.call(").skip(1).collect();
            assert!(!calls.is_empty());
            for call in calls {
                if call.starts_with("'TIME')") {
                    continue;
                }
                let key_argument = call.split([',', ')']).nth(1).map(str::trim);
                assert!(
                    matches!(key_argument, Some("key" | "events" | "feed" | "copied")),
                    "redis.call({call}"
                );
            }
        }
    }

    /// The format the prelude lets through is the newest one `add.lua` writes (a compact
    /// record) and `reply.rs` reads.
    #[test]
    fn the_scripts_and_the_reader_agree_on_the_format() {
        let format = reply::FORMAT;
        assert!(ADD.contains(&format!("format = {format}\n")), "{ADD}");
        for script in SCRIPTS {
            assert!(script.contains(&format!("if version > {format} then")));
            assert!(script.starts_with(include_str!("../lua/prelude.lua")));
        }
    }

    #[test]
    fn keys_are_unambiguous_and_tagged() {
        assert_eq!(redis_key("t", &key("o1", "u1")), "t:{o1:u1}");
        assert_ne!(
            redis_key("t", &key("a:b", "c")),
            redis_key("t", &key("a", "b:c"))
        );
        assert_eq!(redis_key("t", &key("o}", "{u%")), "t:{o%7D:%7Bu%25}");
    }

    #[test]
    fn keys_read_back_into_their_user() {
        for (org, user) in [("o1", "u1"), ("a:b", "c"), ("o}", "{u%"), ("%3A", "x%")] {
            let read = user_of_key("t", &redis_key("t", &key(org, user))).unwrap();
            assert_eq!((&*read.org, &*read.user), (org, user));
        }
        for other in ["t:{a:b:c}", "u:{a:b}", "t:{ab}", "t:{a:b%zz}", "t:{a:b"] {
            assert!(user_of_key("t", other).is_none(), "{other}");
        }
    }
}
