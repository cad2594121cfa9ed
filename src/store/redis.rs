//! The Redis store. One hash per user, `<prefix>:{<org>:<user>}`: the braces are a hash tag,
//! so every script touches one slot, and every script and command names its one key from
//! the client (nothing builds keys inside a script): it runs unchanged on Redis Cluster.
//! Every change is one Lua script.
//!
//! Connections: one multiplexed connection per thread that uses the store, made on that
//! thread (a `ConnectionManager`, or on a cluster a `ClusterConnection`, which keeps one
//! multiplexed connection per node and follows MOVED/ASK and topology changes by itself). A
//! connection's reader task runs where it was connected, so the replies to an organization
//! actor's scripts arrive on the actor's own thread instead of waking another. None is
//! checked out exclusively: a request costs exactly one round trip and nothing caps
//! throughput (a checkout pool holds a connection for a whole round trip, and deadpool-redis
//! adds an UNWATCH+PING round trip to every checkout).

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{Cmd, IntoConnectionInfo, RedisFuture, Script, Value};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::{
    AddOutcome, Attempt, AttemptOutcome, ChangeOutcome, FactorStore, NewFactor, StoreError, UserKey,
};
use crate::domain::factor::AttemptVerdict;
use crate::domain::{FactorRecord, FactorState, Lock, TotpParams, UnixMicros};

struct Scripts {
    add: Script,
    attempt: Script,
    remove: Script,
    unlock: Script,
}

/// How Redis is deployed: one server (or a primary behind a stable address), or a Cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RedisMode {
    Standalone,
    Cluster,
}

/// How to reach Redis. `urls` is one URL, or for a cluster one or more comma-separated seeds.
pub struct RedisOptions<'a> {
    pub mode: RedisMode,
    pub urls: &'a SecretString,
    pub password: Option<&'a SecretString>,
    pub tls_ca_pem: Option<Vec<u8>>,
    pub prefix: &'a str,
    pub timeout: Duration,
    /// Replicas that must hold an accepted code's replay marker (and a new lock) before the
    /// answer (Redis `WAIT`); 0 answers as soon as the primary has committed.
    pub wait_replicas: u32,
}

static NEXT_STORE: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// This thread's connection to each store (a process may hold several, e.g. in tests).
    static CONNECTIONS: RefCell<HashMap<u64, Connection>> = RefCell::new(HashMap::new());
}

enum Connector {
    Standalone {
        client: redis::Client,
        config: ConnectionManagerConfig,
    },
    Cluster {
        client: ClusterClient,
        config: ClusterConfig,
    },
}

/// One thread's multiplexed connection, to a server or to a cluster.
#[derive(Clone)]
enum Connection {
    Standalone(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Standalone(connection) => connection.req_packed_command(cmd),
            Self::Cluster(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Standalone(connection) => connection.req_packed_commands(pipeline, offset, count),
            Self::Cluster(connection) => connection.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Standalone(connection) => connection.get_db(),
            Self::Cluster(connection) => connection.get_db(),
        }
    }
}

impl Connection {
    /// Sends a command whose keys do not tell a cluster where it goes: on a cluster, to the
    /// node `routing` names; one server takes it as it is.
    async fn query_routed<T: redis::FromRedisValue>(
        &mut self,
        command: Cmd,
        routing: SingleNodeRoutingInfo,
    ) -> redis::RedisResult<T> {
        match self {
            Self::Standalone(connection) => command.query_async(connection).await,
            Self::Cluster(connection) => {
                let value = connection
                    .route_command(command, RoutingInfo::SingleNode(routing))
                    .await?;
                redis::from_redis_value(value).map_err(Into::into)
            }
        }
    }

    /// A command about the server rather than a key (PING, TIME). A cluster would send PING
    /// to every node and fail it while any one is down; one node answering shows that this
    /// process reaches the store, and a lost shard shows as UNAVAILABLE for its users
    /// instead of taking every replica out of its Service.
    async fn query_any_node<T: redis::FromRedisValue>(
        &mut self,
        command: Cmd,
    ) -> redis::RedisResult<T> {
        self.query_routed(command, SingleNodeRoutingInfo::Random)
            .await
    }

    /// `WAIT` on the connection that carried the key's last write: on a cluster, the key's
    /// primary (WAIT would otherwise go to every node).
    async fn wait_for_replicas(
        &mut self,
        key: &str,
        replicas: u32,
        timeout: Duration,
    ) -> redis::RedisResult<i64> {
        let mut command = redis::cmd("WAIT");
        command
            .arg(replicas)
            .arg(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX));
        let primary = Route::with_key(key.as_bytes(), SlotAddr::Master);
        self.query_routed(command, SingleNodeRoutingInfo::SpecificNode(primary))
            .await
    }
}

pub struct RedisStore {
    connections_open: Option<prometheus::IntGauge>,
    id: u64,
    connector: Connector,
    prefix: String,
    timeout: Duration,
    wait_replicas: u32,
    scripts: Scripts,
}

fn unavailable(error: redis::RedisError) -> StoreError {
    StoreError::Unavailable(error.to_string())
}

impl RedisStore {
    /// Connects lazily: the server starts (not ready) while Redis is down and recovers by itself.
    pub fn connect(
        metrics: Option<prometheus::IntGauge>,
        options: RedisOptions<'_>,
    ) -> Result<Self, StoreError> {
        let connector = match options.mode {
            RedisMode::Standalone => standalone(&options)?,
            RedisMode::Cluster => cluster(&options)?,
        };
        Ok(Self {
            connections_open: metrics,
            id: NEXT_STORE.fetch_add(1, Ordering::Relaxed),
            connector,
            prefix: options.prefix.to_owned(),
            timeout: options.timeout,
            wait_replicas: options.wait_replicas,
            scripts: Scripts {
                add: Script::new(include_str!("lua/add.lua")),
                attempt: Script::new(include_str!("lua/attempt.lua")),
                remove: Script::new(include_str!("lua/remove.lua")),
                unlock: Script::new(include_str!("lua/unlock.lua")),
            },
        })
    }

    /// This thread's connection, made (lazily: it connects on first use) if it has none.
    fn connection(&self) -> Result<Connection, StoreError> {
        CONNECTIONS.with(|connections| {
            let mut connections = connections.borrow_mut();
            if let Some(connection) = connections.get(&self.id) {
                return Ok(connection.clone());
            }
            let connection = match &self.connector {
                Connector::Standalone { client, config } => Connection::Standalone(
                    client
                        .get_connection_manager_lazy(config.clone())
                        .map_err(unavailable)?,
                ),
                Connector::Cluster { client, config } => Connection::Cluster(
                    client.get_pending_async_connection_with_config(config.clone()),
                ),
            };
            connections.insert(self.id, connection.clone());
            if let Some(open) = &self.connections_open {
                open.inc();
            }
            Ok(connection)
        })
    }

    pub fn key(&self, key: &UserKey) -> String {
        redis_key(&self.prefix, key)
    }

    /// Runs `script` with the user's key, bounded by the store timeout (fail closed).
    async fn run(
        &self,
        script: &Script,
        key: &str,
        args: &[&[u8]],
        connection: &mut Connection,
    ) -> Result<Vec<Value>, StoreError> {
        let mut invocation = script.key(key);
        for arg in args {
            invocation.arg(*arg);
        }
        tokio::time::timeout(
            self.timeout,
            invocation.invoke_async::<Vec<Value>>(connection),
        )
        .await
        .map_err(|_| StoreError::Timeout)?
        .map_err(unavailable)
    }

    /// Holds the answer until `wait_replicas` replicas have the write just made on this
    /// connection. Too few within the store timeout: the write stays on the primary, and the
    /// caller is told UNAVAILABLE (an accepted code is then spent but not reported accepted).
    async fn replicate(&self, key: &str, connection: &mut Connection) -> Result<(), StoreError> {
        if self.wait_replicas == 0 {
            return Ok(());
        }
        let acknowledged = tokio::time::timeout(
            self.timeout + Duration::from_millis(100),
            connection.wait_for_replicas(key, self.wait_replicas, self.timeout),
        )
        .await
        .map_err(|_| StoreError::Timeout)?
        .map_err(unavailable)?;
        if acknowledged < i64::from(self.wait_replicas) {
            return Err(StoreError::Unavailable(format!(
                "{acknowledged} of {} replicas acknowledged the write",
                self.wait_replicas
            )));
        }
        Ok(())
    }

    async fn run_once(
        &self,
        script: &Script,
        key: &UserKey,
        args: &[&[u8]],
    ) -> Result<Vec<Value>, StoreError> {
        let mut connection = self.connection()?;
        self.run(script, &self.key(key), args, &mut connection)
            .await
    }

    async fn query_any_node<T: redis::FromRedisValue>(
        &self,
        command: Cmd,
    ) -> Result<T, StoreError> {
        let mut connection = self.connection()?;
        tokio::time::timeout(self.timeout, connection.query_any_node(command))
            .await
            .map_err(|_| StoreError::Timeout)?
            .map_err(unavailable)
    }
}

fn standalone(options: &RedisOptions<'_>) -> Result<Connector, StoreError> {
    // A list of seeds in standalone mode is refused by the settings' validation.
    let mut info = options
        .urls
        .expose_secret()
        .trim()
        .into_connection_info()
        .map_err(unavailable)?;
    if let Some(password) = options.password {
        let settings = info
            .redis_settings()
            .clone()
            .set_password(password.expose_secret());
        info = info.set_redis_settings(settings);
    }
    let client = match options.tls_ca_pem.clone() {
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
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(options.timeout))
        .set_response_timeout(Some(options.timeout))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_secs(2));
    Ok(Connector::Standalone { client, config })
}

fn cluster(options: &RedisOptions<'_>) -> Result<Connector, StoreError> {
    let seeds = options
        .urls
        .expose_secret()
        .split(',')
        .map(str::trim)
        .filter(|seed| !seed.is_empty())
        .map(|seed| seed.into_connection_info().map_err(unavailable))
        .collect::<Result<Vec<_>, _>>()?;
    if seeds.is_empty() {
        return Err(StoreError::Unavailable(
            "redis.url names no seed node".into(),
        ));
    }
    // Retries cover MOVED/ASK and a node that is being failed over; the store timeout
    // still bounds every call, so a request fails closed rather than waiting them out.
    let mut builder = ClusterClient::builder(seeds)
        .retries(3)
        .min_retry_wait(50)
        .max_retry_wait(500);
    if let Some(password) = options.password {
        builder = builder.password(password.expose_secret());
    }
    if let Some(root_cert) = options.tls_ca_pem.clone() {
        builder = builder.certs(redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(root_cert),
        });
    }
    let client = builder.build().map_err(unavailable)?;
    let config = ClusterConfig::new()
        .set_connection_timeout(options.timeout)
        .set_response_timeout(options.timeout);
    Ok(Connector::Cluster { client, config })
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

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.to_owned())
}

/// A script reply: a status word followed by integers.
struct Reply {
    status: String,
    numbers: Vec<i64>,
}

impl Reply {
    fn parse(values: Vec<Value>) -> Result<Self, StoreError> {
        let mut values = values.into_iter();
        let status = match values.next() {
            Some(Value::BulkString(bytes)) => {
                String::from_utf8(bytes).map_err(|_| corrupt("status"))?
            }
            Some(Value::SimpleString(text)) => text,
            _ => return Err(corrupt("script reply has no status")),
        };
        let numbers = values
            .map(|value| match value {
                Value::Int(n) => Ok(n),
                _ => Err(corrupt("script reply is not numeric")),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { status, numbers })
    }

    fn number(&self, index: usize) -> Result<i64, StoreError> {
        self.numbers
            .get(index)
            .copied()
            .ok_or_else(|| corrupt("script reply too short"))
    }

    fn unsigned(&self, index: usize) -> Result<u64, StoreError> {
        u64::try_from(self.number(index)?).map_err(|_| corrupt("negative count"))
    }
}

fn text_field(fields: &HashMap<String, Vec<u8>>, name: &str) -> Result<String, StoreError> {
    let bytes = fields.get(name).ok_or_else(|| corrupt(name))?;
    String::from_utf8(bytes.clone()).map_err(|_| corrupt(name))
}

fn number_field<T: std::str::FromStr>(
    fields: &HashMap<String, Vec<u8>>,
    name: &str,
) -> Result<Option<T>, StoreError> {
    match fields.get(name) {
        None => Ok(None),
        Some(_) => text_field(fields, name)?
            .parse::<T>()
            .map(Some)
            .map_err(|_| corrupt(name)),
    }
}

fn required<T: std::str::FromStr>(
    fields: &HashMap<String, Vec<u8>>,
    name: &str,
) -> Result<T, StoreError> {
    number_field(fields, name)?.ok_or_else(|| corrupt(name))
}

fn record_from(fields: HashMap<String, Vec<u8>>) -> Result<Option<FactorRecord>, StoreError> {
    let Some(state) = number_field::<u8>(&fields, "s")? else {
        return Ok(None);
    };
    let state = FactorState::from_stored(state).ok_or_else(|| corrupt("s"))?;
    let params = TotpParams {
        algorithm: text_field(&fields, "a")?
            .parse()
            .map_err(|_| corrupt("a"))?,
        digits: required(&fields, "d")?,
        period_secs: required(&fields, "p")?,
    };
    let last_step = number_field::<i64>(&fields, "l")?.and_then(|step| u64::try_from(step).ok());
    Ok(Some(FactorRecord {
        factor_id: required(&fields, "f")?,
        state,
        params,
        sealed_secret: fields.get("k").cloned().ok_or_else(|| corrupt("k"))?,
        last_step,
        failures: number_field(&fields, "n")?.unwrap_or(0),
        lock: number_field::<i64>(&fields, "u")?.map(Lock::from_stored),
        sequence: required(&fields, "q")?,
        created_at: UnixMicros(required(&fields, "c")?),
        changed_at: UnixMicros(required(&fields, "m")?),
    }))
}

fn change_outcome(reply: &Reply, now: UnixMicros) -> Result<ChangeOutcome, StoreError> {
    match reply.status.as_str() {
        "ok" => Ok(ChangeOutcome::Changed {
            sequence: reply.unsigned(0)?,
            changed_at: now,
        }),
        "absent" => Ok(ChangeOutcome::Absent),
        "not_locked" => Ok(ChangeOutcome::NotLocked),
        other => Err(corrupt(other)),
    }
}

#[async_trait]
impl FactorStore for RedisStore {
    async fn load(&self, key: &UserKey) -> Result<Option<FactorRecord>, StoreError> {
        let mut connection = self.connection()?;
        let command = redis::cmd("HGETALL").arg(self.key(key)).clone();
        let fields: HashMap<String, Vec<u8>> =
            tokio::time::timeout(self.timeout, command.query_async(&mut connection))
                .await
                .map_err(|_| StoreError::Timeout)?
                .map_err(unavailable)?;
        record_from(fields)
    }

    async fn add(
        &self,
        key: &UserKey,
        factor: NewFactor,
        now: UnixMicros,
    ) -> Result<AddOutcome, StoreError> {
        let digits = factor.params.digits.to_string();
        let period = factor.params.period_secs.to_string();
        let now_text = now.0.to_string();
        let args: [&[u8]; 5] = [
            &factor.sealed_secret,
            factor.params.algorithm.as_str().as_bytes(),
            digits.as_bytes(),
            period.as_bytes(),
            now_text.as_bytes(),
        ];
        let reply = Reply::parse(self.run_once(&self.scripts.add, key, &args).await?)?;
        match reply.status.as_str() {
            "ok" => Ok(AddOutcome::Added {
                sequence: reply.unsigned(0)?,
                created_at: now,
            }),
            "exists" => Ok(AddOutcome::AlreadyReady),
            other => Err(corrupt(other)),
        }
    }

    async fn attempt(
        &self,
        key: &UserKey,
        attempt: Attempt,
        now: UnixMicros,
    ) -> Result<AttemptOutcome, StoreError> {
        let factor_id = attempt.factor_id.to_string();
        let state = attempt.purpose.required_state().as_stored().to_string();
        let step = attempt
            .matched_step
            .map_or_else(|| "-1".to_owned(), |step| step.to_string());
        let now_text = now.0.to_string();
        let max = attempt.policy.max_attempts.to_string();
        let duration = attempt.policy.lock_duration_micros.to_string();
        let args: [&[u8]; 6] = [
            factor_id.as_bytes(),
            state.as_bytes(),
            step.as_bytes(),
            now_text.as_bytes(),
            max.as_bytes(),
            duration.as_bytes(),
        ];
        let redis_key = self.key(key);
        let mut connection = self.connection()?;
        let reply = Reply::parse(
            self.run(&self.scripts.attempt, &redis_key, &args, &mut connection)
                .await?,
        )?;
        let marks_or_locks = match reply.status.as_str() {
            "ok" => true,
            "invalid" => reply.number(1)? != 0,
            _ => false,
        };
        if marks_or_locks {
            self.replicate(&redis_key, &mut connection).await?;
        }
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
                let actual = u8::try_from(reply.number(0)?).map_err(|_| corrupt("state"))?;
                Ok(AttemptOutcome::WrongState(
                    FactorState::from_stored(actual).ok_or_else(|| corrupt("state"))?,
                ))
            }
            "stale" => Ok(AttemptOutcome::Stale),
            other => Err(corrupt(other)),
        }
    }

    async fn remove(&self, key: &UserKey, now: UnixMicros) -> Result<ChangeOutcome, StoreError> {
        let now_text = now.0.to_string();
        let reply = Reply::parse(
            self.run_once(&self.scripts.remove, key, &[now_text.as_bytes()])
                .await?,
        )?;
        change_outcome(&reply, now)
    }

    async fn unlock(&self, key: &UserKey, now: UnixMicros) -> Result<ChangeOutcome, StoreError> {
        let now_text = now.0.to_string();
        let reply = Reply::parse(
            self.run_once(&self.scripts.unlock, key, &[now_text.as_bytes()])
                .await?,
        )?;
        change_outcome(&reply, now)
    }

    async fn server_time(&self) -> Result<Option<UnixMicros>, StoreError> {
        let (secs, micros): (i64, i64) = self.query_any_node(redis::cmd("TIME")).await?;
        Ok(Some(UnixMicros(
            secs.saturating_mul(1_000_000).saturating_add(micros),
        )))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.query_any_node::<String>(redis::cmd("PING"))
            .await
            .map(|_| ())
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

    /// Cluster safety of the scripts: each declares one key, reads it from KEYS[1] only, and
    /// every call names that key (a key built inside a script would go unrouted).
    #[test]
    fn every_script_touches_only_its_one_declared_key() {
        let scripts = [
            include_str!("lua/add.lua"),
            include_str!("lua/attempt.lua"),
            include_str!("lua/remove.lua"),
            include_str!("lua/unlock.lua"),
        ];
        for script in scripts {
            let code: Vec<&str> = script
                .lines()
                .filter(|line| !line.trim_start().starts_with("--"))
                .collect();
            let code = code.join("\n");
            assert!(code.contains("local key = KEYS[1]"), "{script}");
            assert_eq!(code.matches("KEYS[").count(), 1, "{script}");
            let calls: Vec<&str> = code.split("redis.call(").skip(1).collect();
            assert!(!calls.is_empty());
            for call in calls {
                let key_argument = call.split([',', ')']).nth(1).map(str::trim);
                assert_eq!(key_argument, Some("key"), "redis.call({call}");
            }
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
}
