//! Connections to Redis, per thread.
//!
//! Each thread that uses the store has one shared, multiplexed connection, made on that
//! thread (to one server; on a cluster a `ClusterConnection`, which keeps one multiplexed
//! connection per node and follows MOVED/ASK and topology changes by itself). A connection's
//! reader task runs where it was connected, so the replies to an organization actor's
//! scripts arrive on the actor's own thread instead of waking another. None is checked out:
//! a request costs exactly one round trip and nothing caps throughput (a checkout pool holds
//! a connection for a whole round trip, and deadpool-redis adds an UNWATCH+PING round trip
//! to every checkout).
//!
//! Writes that must reach replicas before they are acknowledged (`redis.wait_replicas`) run
//! their script and its `WAIT`, pipelined, on a connection checked out from a small pool
//! instead: Redis counts for `WAIT` only the writes made on the connection it runs on, and
//! blocks that connection until it returns, which on the shared one would stall every other
//! request of the thread.
//!
//! A connection to one server that Redis closes (a restart, an idle `timeout` in redis.conf)
//! says so at once: under RESP3 its reader pushes a disconnect notice, which marks it closed.
//! A closed connection is never used again; the next request connects afresh before it sends
//! anything. So a request that fails to connect provably never left, and a request that
//! fails after it was sent is never sent again (it may have run). redis-rs's
//! `ConnectionManager` reconnects too, but a request can't tell its failed reconnection
//! (made while Redis was down, or while the old server was still tearing down its listener)
//! from a failure after sending, so it answered the first request after a restart with an
//! error.

use std::cell::RefCell;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::{ClusterClient, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{AsyncConnectionConfig, Cmd, PushKind, RedisFuture, Script, Value};

use super::super::StoreError;
use super::unavailable;

pub(super) enum Connector {
    Standalone {
        client: redis::Client,
        config: AsyncConnectionConfig,
    },
    Cluster {
        client: ClusterClient,
        config: ClusterConfig,
    },
}

/// A multiplexed connection to one server, and whether its reader has seen it close.
#[derive(Clone)]
pub(super) struct ServerConnection {
    connection: MultiplexedConnection,
    closed: Arc<AtomicBool>,
}

/// One multiplexed connection, to a server or to a cluster.
#[derive(Clone)]
pub(super) enum Connection {
    Standalone(ServerConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Standalone(server) => server.connection.req_packed_command(cmd),
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
            Self::Standalone(server) => server
                .connection
                .req_packed_commands(pipeline, offset, count),
            Self::Cluster(connection) => connection.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Standalone(server) => server.connection.get_db(),
            Self::Cluster(connection) => connection.get_db(),
        }
    }
}

impl Connection {
    /// Whether a request may be sent on it: not if Redis has closed it.
    fn usable(&self) -> bool {
        match self {
            Self::Standalone(server) => !server.closed.load(Ordering::Relaxed),
            Self::Cluster(_) => true,
        }
    }

    /// Sends a command whose keys do not tell a cluster where it goes: on a cluster, to the
    /// node `routing` names; one server takes it as it is.
    pub(super) async fn query_routed<T: redis::FromRedisValue>(
        &mut self,
        command: Cmd,
        routing: SingleNodeRoutingInfo,
    ) -> redis::RedisResult<T> {
        match self {
            Self::Standalone(server) => command.query_async(&mut server.connection).await,
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
    pub(super) async fn query_any_node<T: redis::FromRedisValue>(
        &mut self,
        command: Cmd,
    ) -> redis::RedisResult<T> {
        self.query_routed(command, SingleNodeRoutingInfo::Random)
            .await
    }

    /// Runs `script` over `keys` and `args` and then `WAIT`s until `replicas` replicas have
    /// what it wrote, as one pipeline: the reply of the script, and how many replicas
    /// acknowledged. Redis counts for `WAIT` only the writes of the connection it runs on, so
    /// the two must reach the same node over the same connection. Sent one after the other,
    /// a cluster routes each by its own map of slots, and the map can name another node than
    /// the one that ran the script: while a slot migrates, the script follows ASK to the new
    /// node and the map still names the old one, whose replicas then acknowledge a write
    /// they never saw. A node that redirects the script sends the whole pipeline on; a node
    /// that lacks the script (a promoted replica, a restarted server) gets it loaded, then
    /// the pipeline again.
    ///
    /// Each `WAIT` waits at most half the time left before `until`. A `WAIT` runs even when
    /// its script did not (a node that lacked it), so that one may have waited for nothing;
    /// the second still fits, a reply that needs no replica (a replay, say) is still answered
    /// while a replica lags, and no `WAIT` outlives the caller's deadline to hold up the next
    /// user of the connection.
    pub(super) async fn run_then_wait(
        &mut self,
        script: &Script,
        keys: &[&str],
        args: &[&[u8]],
        replicas: u32,
        until: Instant,
    ) -> redis::RedisResult<(Value, i64)> {
        let mut loaded = false;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            let wait_ms = u64::try_from((left / 2).as_millis()).unwrap_or(u64::MAX);
            let mut pipeline = redis::pipe();
            pipeline
                .cmd("EVALSHA")
                .arg(script.get_hash())
                .arg(keys.len())
                .arg(keys)
                .arg(args);
            // `WAIT n 0` would block for ever.
            pipeline.cmd("WAIT").arg(replicas).arg(wait_ms.max(1));
            let mut replies = self.req_packed_commands(&pipeline, 0, 2).await?.into_iter();
            let (Some(reply), Some(acknowledged)) = (replies.next(), replies.next()) else {
                return Err(redis::RedisError::from((
                    redis::ErrorKind::Client,
                    "a script and its WAIT got fewer than two replies",
                )));
            };
            let lacks_script = matches!(&reply, Value::ServerError(error)
                if error.kind() == Some(redis::ServerErrorKind::NoScript));
            if lacks_script && !loaded {
                script.prepare_invoke().load_async(self).await?;
                loaded = true;
                continue;
            }
            let acknowledged = redis::from_redis_value(acknowledged.extract_error()?)?;
            return Ok((reply.extract_error()?, acknowledged));
        }
    }
}

impl Connector {
    /// A new connection, on this thread. To one server it is connected here, so a failure
    /// means nothing was sent; a cluster connection connects to its nodes on first use.
    async fn connect(&self, opened: &Arc<Opened>) -> Result<Connection, StoreError> {
        match self {
            Self::Standalone { client, config } => {
                let closed = Arc::new(AtomicBool::new(false));
                let notice = closed.clone();
                let opened = opened.clone();
                let config = config
                    .clone()
                    .set_push_sender(move |push: redis::PushInfo| {
                        if push.kind == PushKind::Disconnection {
                            notice.store(true, Ordering::Relaxed);
                            opened.release();
                        }
                        Ok::<(), std::convert::Infallible>(())
                    });
                let connection = client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .map_err(unavailable)?;
                Ok(Connection::Standalone(ServerConnection {
                    connection,
                    closed,
                }))
            }
            Self::Cluster { client, config } => Ok(Connection::Cluster(
                client.get_pending_async_connection_with_config(config.clone()),
            )),
        }
    }
}

/// Counts a connection in `tessera_redis_connections` from its connecting until Redis closes
/// it (the disconnect notice) or tessera drops it, whichever comes first.
struct Opened {
    gauge: Option<prometheus::IntGauge>,
    counted: AtomicBool,
}

impl Opened {
    fn new(gauge: Option<&prometheus::IntGauge>) -> Arc<Self> {
        if let Some(gauge) = gauge {
            gauge.inc();
        }
        Arc::new(Self {
            gauge: gauge.cloned(),
            counted: AtomicBool::new(true),
        })
    }

    /// Takes the connection out of the count, once.
    fn release(&self) {
        if self.counted.swap(false, Ordering::Relaxed)
            && let Some(gauge) = &self.gauge
        {
            gauge.dec();
        }
    }
}

/// Releases the count when the connection is dropped.
struct Counted(Arc<Opened>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.release();
    }
}

/// A connection as a thread or a pool slot keeps it.
struct Held {
    connection: Connection,
    _counted: Counted,
}

/// A slot of the pool for writes that wait: empty until first used, emptied when Redis
/// closes its connection.
type Slot = Option<Held>;

/// A connection checked out of this thread's pool; its slot returns to the pool when this
/// is dropped.
pub(super) struct Exclusive(deadpool::unmanaged::Object<Slot>);

impl Exclusive {
    pub(super) fn connection(&mut self) -> Result<&mut Connection, StoreError> {
        let slot: &mut Slot = &mut self.0;
        slot.as_mut()
            .map(|held| &mut held.connection)
            .ok_or_else(|| StoreError::Unavailable("no connection".into()))
    }
}

/// One thread's connections to one store.
#[derive(Default)]
struct ThreadConnections {
    shared: Option<Held>,
    exclusive: Option<Arc<deadpool::unmanaged::Pool<Slot>>>,
}

static NEXT_STORE: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// This thread's connections to each store (a process may hold several, e.g. in tests).
    static CONNECTIONS: RefCell<HashMap<u64, ThreadConnections>> = RefCell::new(HashMap::new());
}

pub(super) struct Connections {
    id: u64,
    connector: Connector,
    exclusive_per_thread: usize,
    opened: Option<prometheus::IntGauge>,
}

impl Connections {
    pub(super) fn new(
        connector: Connector,
        exclusive_per_thread: usize,
        opened: Option<prometheus::IntGauge>,
    ) -> Self {
        Self {
            id: NEXT_STORE.fetch_add(1, Ordering::Relaxed),
            connector,
            exclusive_per_thread: exclusive_per_thread.max(1),
            opened,
        }
    }

    fn with_thread<T>(&self, use_them: impl FnOnce(&mut ThreadConnections) -> T) -> T {
        CONNECTIONS.with(|connections| {
            let mut connections = connections.borrow_mut();
            let thread = match connections.entry(self.id) {
                Entry::Occupied(entry) => entry.into_mut(),
                Entry::Vacant(entry) => entry.insert(ThreadConnections::default()),
            };
            use_them(thread)
        })
    }

    /// A new connection, connected by `until`.
    async fn connect(&self, until: Instant) -> Result<Held, StoreError> {
        // Counted from here: a failed connect drops it, which takes it out again.
        let counted = Counted(Opened::new(self.opened.as_ref()));
        let connection = tokio::time::timeout_at(until.into(), self.connector.connect(&counted.0))
            .await
            .map_err(|_| StoreError::Timeout)??;
        Ok(Held {
            connection,
            _counted: counted,
        })
    }

    /// This thread's shared connection, connected afresh (by `until`) if it has none or
    /// Redis closed it.
    pub(super) async fn shared(&self, until: Instant) -> Result<Connection, StoreError> {
        let usable = self.with_thread(|thread| {
            thread
                .shared
                .as_ref()
                .map(|held| held.connection.clone())
                .filter(Connection::usable)
        });
        if let Some(connection) = usable {
            return Ok(connection);
        }
        let held = self.connect(until).await?;
        let connection = held.connection.clone();
        self.with_thread(|thread| thread.shared = Some(held));
        Ok(connection)
    }

    /// A connection of this thread's own for one write and its `WAIT`, waiting for one to be
    /// free (and connecting it if need be) until `until`.
    pub(super) async fn exclusive(&self, until: Instant) -> Result<Exclusive, StoreError> {
        let pool = self.with_thread(|thread| {
            thread
                .exclusive
                .get_or_insert_with(|| {
                    let slots: Vec<Slot> = (0..self.exclusive_per_thread).map(|_| None).collect();
                    Arc::new(deadpool::unmanaged::Pool::from(slots))
                })
                .clone()
        });
        let mut slot = tokio::time::timeout_at(until.into(), pool.get())
            .await
            .map_err(|_| StoreError::Timeout)?
            .map_err(|err| StoreError::Unavailable(err.to_string()))?;
        let held: &mut Slot = &mut slot;
        if !held.as_ref().is_some_and(|held| held.connection.usable()) {
            *held = None;
            *held = Some(self.connect(until).await?);
        }
        Ok(Exclusive(slot))
    }
}
