//! The entry's wiring, in two steps: `Core::build` makes the parts from the parsed settings
//! (store, key ring, token verifier, actors, the application service, readiness), and
//! `Application` starts the servers on them (HTTP, the optional metrics port, gRPC on its
//! own runtime) with the background tasks, and supervises them until they stop.
//! `port()` and `run_until_stopped()` serve tests.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix::Arbiter;
use actix_web::dev::Server;
use actix_web::{App, HttpServer, web};
use tracing_actix_web::TracingLogger;

use crate::api::grpc::listener::ConnectionLimits;
use crate::api::grpc::{self, GrpcOptions};
use crate::api::http::{HttpState, routes};
use crate::auth::{TokenVerifier, VerifierError};
use crate::clock::{SharedClock, SystemClock};
use crate::domain::audit::Retention;
use crate::health::Readiness;
use crate::metrics::Metrics;
use crate::seal::{KeyRing, SealError};
use crate::service::OtpService;
use crate::settings::{Config, GrpcConfig, StoreConfig};
use crate::store::{
    MemoryStore, MeteredStore, PolicySeed, RedisConfig, RedisStore, SharedStore, StoreError,
};
use crate::telemetry::RequestSpans;
use crate::tenant::{
    AddressLimiter, AuditFeed, AuditFeedCopier, LockIndexFeed, LockIndexWriter, OrgRegistry,
    PolicyDirectory, TenantDeps, policies,
};
use crate::tls::Tls;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("seal keys: {0}")]
    Seal(#[from] SealError),
    #[error("token keys: {0}")]
    Verifier(#[from] VerifierError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Metrics(#[from] crate::metrics::MetricsError),
    #[error("listening on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    #[error("{0}")]
    Tls(#[from] crate::tls::TlsError),
}

/// Test hooks: another clock, or a store shared between two instances.
#[cfg(feature = "test-kit")]
#[derive(Default)]
pub struct Overrides {
    pub clock: Option<SharedClock>,
    pub store: Option<SharedStore>,
}

/// What the servers read from files and the network before any listener exists: the token
/// keys (a JWKS file or URL), the TLS material, the Redis CA. `tessera check-config` reads
/// exactly this, so it fails where `serve` would.
pub struct Dependencies {
    verifier: Arc<TokenVerifier>,
    tls: Option<Arc<Tls>>,
    redis_ca: Option<Vec<u8>>,
}

impl Dependencies {
    pub async fn load(config: &Config) -> Result<Self, StartError> {
        let redis_ca = match &config.store {
            StoreConfig::Redis(redis) => redis_ca(redis)?,
            StoreConfig::Memory => None,
        };
        Ok(Self {
            verifier: Arc::new(TokenVerifier::from_config(&config.auth).await?),
            tls: load_tls(config)?,
            redis_ca,
        })
    }
}

/// The parts every server shares, built before any listener exists.
struct Core {
    service: Arc<OtpService>,
    registry: Arc<OrgRegistry>,
    store: SharedStore,
    /// Taken by `spawn_background_tasks`.
    lock_index_writer: Option<LockIndexWriter>,
    /// Taken by `spawn_background_tasks`.
    audit_feed_copier: Option<AuditFeedCopier>,
    /// Seeds the store did not take at the start, tried again in the background.
    seeds_left: Vec<(Arc<str>, PolicySeed)>,
    /// The organization actors' threads.
    arbiters: Vec<Arbiter>,
    address_limiter: AddressLimiter,
    readiness: Arc<Readiness>,
    tls: Option<Arc<Tls>>,
}

impl Core {
    /// `clock` and `store` replace the system clock and the configured store (tests only).
    async fn build(
        config: &Config,
        clock: Option<SharedClock>,
        store: Option<SharedStore>,
    ) -> Result<Self, StartError> {
        let Dependencies {
            verifier,
            tls,
            redis_ca,
        } = Dependencies::load(config).await?;
        let metrics = Arc::new(Metrics::new()?);
        metrics.register(verifier.collectors())?;
        let store = match store {
            Some(store) => store,
            None => open_store(&config.store, &metrics, redis_ca)?,
        };
        let clock = clock.unwrap_or_else(|| Arc::new(SystemClock));
        let store: SharedStore = Arc::new(MeteredStore::new(store, metrics.clone()));
        let (lock_index, lock_index_writer) =
            LockIndexFeed::new(metrics.lock_index_dropped.clone());
        let (audit_feed, audit_feed_copier) = AuditFeed::new(
            metrics.audit_feed_dropped.clone(),
            metrics.audit_feed_pending.clone(),
        );
        let deps = Arc::new(TenantDeps {
            store: store.clone(),
            keys: config.seal_keys.clone(),
            default_policy: config.policies.default.clone(),
            lock_index,
            audit_feed: audit_feed.clone(),
            limits: config.limits,
            cache_capacity: config.tenants.cache_capacity,
            metrics: metrics.clone(),
        });
        let arbiters: Vec<Arbiter> = (0..cores()).map(|_| Arbiter::new()).collect();
        let registry = Arc::new(OrgRegistry::new(
            deps,
            arbiters.iter().map(Arbiter::handle).collect(),
            config.tenants.mailbox_capacity,
        ));
        let address_limiter = AddressLimiter::new(config.limits.per_address);
        let readiness = Arc::new(Readiness::new(
            store.clone(),
            clock.clone(),
            metrics.clone(),
            config.health.max_clock_offset,
        ));
        // Once before serving, so probes and gRPC health are right from the first call.
        readiness.check().await;
        // Before serving too, so that a seeded organization's first call has its policy;
        // what the store does not take now is tried again in the background.
        let seeds: Vec<(Arc<str>, PolicySeed)> = config
            .policies
            .seeds
            .iter()
            .map(|(org, seed)| (Arc::from(org.as_str()), seed.clone()))
            .collect();
        let seeds_left = policies::seed(
            &store,
            &audit_feed,
            seeds,
            clock.now(),
            config.policies.default.retention(),
            config.tenants.call_timeout,
        )
        .await;
        let policy_directory = PolicyDirectory::new(
            store.clone(),
            registry.clone(),
            config.policies.default.clone(),
        );
        let service = Arc::new(OtpService {
            registry: registry.clone(),
            verifier,
            clock,
            request_timeout: config.tenants.call_timeout,
            address_limiter: address_limiter.clone(),
            trusted_proxies: config.http.trusted_proxies.clone(),
            check_role: config.auth.check_role.clone(),
            admin_role: config.auth.admin_role.clone(),
            policy_read_role: config.auth.policy_read_role.clone(),
            policy_write_role: config.auth.policy_write_role.clone(),
            policies: policy_directory,
            address_recording: config.client_address,
            webhook_private_targets: config.webhook_private_targets,
            management_needs_client_cert: tls.as_ref().is_some_and(|tls| tls.verifies_clients()),
            metrics,
            readiness: readiness.clone(),
        });
        Ok(Self {
            service,
            registry,
            store,
            lock_index_writer: Some(lock_index_writer),
            audit_feed_copier: Some(audit_feed_copier),
            seeds_left,
            arbiters,
            address_limiter,
            readiness,
            tls,
        })
    }

    /// What keeps the parts current while the servers run: token keys, TLS material, idle
    /// actors, readiness.
    fn spawn_background_tasks(&mut self, config: &Config) {
        spawn_key_refreshes(self.service.verifier.clone());
        if let Some(writer) = self.lock_index_writer.take() {
            actix_rt::spawn(writer.run(self.store.clone(), config.tenants.call_timeout));
        }
        if let Some(copier) = self.audit_feed_copier.take() {
            actix_rt::spawn(copier.run(self.store.clone(), config.tenants.call_timeout));
        }
        if let Some(delivery) = &config.webhooks {
            match crate::webhooks::Deliverer::new(
                self.store.clone(),
                config.seal_keys.clone(),
                self.service.clock.clone(),
                delivery.clone(),
                self.service.metrics.clone(),
            ) {
                Ok(deliverer) => {
                    actix_rt::spawn(deliverer.run());
                }
                Err(err) => tracing::error!(error = %err, "webhook deliveries cannot start"),
            }
        }
        actix_rt::spawn(policies::watch(
            self.registry.clone(),
            self.store.clone(),
            config.tenants.policy_refresh,
        ));
        let seeds = std::mem::take(&mut self.seeds_left);
        if !seeds.is_empty() {
            spawn_seeding(
                self.store.clone(),
                self.registry.deps().audit_feed.clone(),
                self.service.clock.clone(),
                seeds,
                config.policies.default.retention(),
                config.tenants.call_timeout,
            );
        }
        if let (Some(tls), Some(tls_config)) = (&self.tls, &config.tls) {
            spawn_tls_reloads(tls.clone(), tls_config.reload_interval);
        }
        spawn_housekeeping(
            self.registry.clone(),
            self.address_limiter.clone(),
            config.tenants.idle_evict,
        );
        spawn_readiness_checks(self.readiness.clone(), config.health.check_interval);
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, usize::from)
}

pub struct Application {
    port: u16,
    server: Server,
    /// The separate metrics listener, when `http.metrics_addr` is set.
    metrics_server: Option<(u16, actix_web::dev::ServerHandle)>,
    grpc: GrpcServer,
    registry: Arc<OrgRegistry>,
    arbiters: Vec<Arbiter>,
}

impl Application {
    pub async fn build(config: Config) -> Result<Self, StartError> {
        Self::assemble(config, None, None).await
    }

    /// `build`, with a clock or a store given from outside (tests).
    #[cfg(feature = "test-kit")]
    pub async fn build_with(config: Config, overrides: Overrides) -> Result<Self, StartError> {
        Self::assemble(config, overrides.clock, overrides.store).await
    }

    async fn assemble(
        config: Config,
        clock: Option<SharedClock>,
        store: Option<SharedStore>,
    ) -> Result<Self, StartError> {
        let mut core = Core::build(&config, clock, store).await?;
        let state = web::Data::new(HttpState {
            service: core.service.clone(),
            body_limit: config.http.body_limit_bytes,
            body_timeout: config.http.timeouts.body,
        });
        let (port, server) = http_server(&config, state.clone(), core.tls.as_deref())?;
        let metrics_server = match config.http.metrics_addr {
            Some(addr) => Some(metrics_server(addr, state)?),
            None => None,
        };
        let grpc = GrpcServer::start(core.service.clone(), &config.grpc, core.tls.as_deref())?;
        core.spawn_background_tasks(&config);
        Ok(Self {
            port,
            server,
            metrics_server,
            grpc,
            registry: core.registry,
            arbiters: core.arbiters,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The separate metrics port, when one is configured.
    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics_server.as_ref().map(|(port, _)| *port)
    }

    pub fn grpc_port(&self) -> u16 {
        self.grpc.port
    }

    pub fn registry(&self) -> Arc<OrgRegistry> {
        self.registry.clone()
    }

    /// Runs until the HTTP server stops. On SIGTERM or SIGINT actix stops accepting and lets
    /// in-flight requests finish (the grace period); then gRPC drains the same way, and only
    /// then do the actors stop, so no call is cut off between its commit and its answer.
    /// If the gRPC server stops by itself, HTTP drains and this is an error: a process that
    /// serves half its API would stay in its Service, so the orchestrator must restart it.
    pub async fn run_until_stopped(mut self) -> std::io::Result<()> {
        let http = self.server.handle();
        let grpc_ended = tokio::select! {
            result = &mut self.server => Some(result),
            ended = &mut self.grpc.ended => {
                let why = ended.unwrap_or_else(|_| "its thread panicked".to_owned());
                tracing::error!(reason = %why, "the gRPC server stopped; stopping HTTP too");
                // The command is sent at once; the server carries it out as it is polled.
                let stopping = http.stop(true);
                let _ = (&mut self.server).await;
                stopping.await;
                self.stop_the_rest().await;
                return Err(std::io::Error::other(format!("the gRPC server stopped: {why}")));
            }
        };
        self.stop_the_rest().await;
        grpc_ended.unwrap_or(Ok(()))
    }

    async fn stop_the_rest(self) {
        if let Some((_, metrics)) = &self.metrics_server {
            metrics.stop(true).await;
        }
        tracing::info!("HTTP drained; stopping gRPC and the organization actors");
        self.grpc.stop().await;
        for arbiter in &self.arbiters {
            arbiter.stop();
        }
    }

    /// A switch that stops the gRPC server as if it had died (for the test of the
    /// supervision), to throw once the application runs.
    #[cfg(feature = "test-kit")]
    pub fn grpc_kill_switch(&mut self) -> impl FnOnce() + Send + use<> {
        let stop = self.grpc.stop.take();
        move || {
            if let Some(stop) = stop {
                let _ = stop.send(());
            }
        }
    }
}

/// The gRPC server runs on its own thread with its own runtime: tonic wants a
/// multi-threaded tokio runtime, the actors are reached through their addresses.
struct GrpcServer {
    port: u16,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    /// Told when the server's thread ends, and why; dropped if it panics.
    ended: tokio::sync::oneshot::Receiver<String>,
    thread: std::thread::JoinHandle<()>,
}

impl GrpcServer {
    fn start(
        service: Arc<OtpService>,
        grpc: &GrpcConfig,
        tls: Option<&Tls>,
    ) -> Result<Self, StartError> {
        let bind_error = |e| StartError::Bind(grpc.addr, e);
        let listener = TcpListener::bind(grpc.addr).map_err(bind_error)?;
        listener.set_nonblocking(true).map_err(bind_error)?;
        let port = listener.local_addr().map_err(bind_error)?.port();
        let tls = match tls {
            // gRPC over h2, gRPC-web over HTTP/1.1.
            Some(tls) => Some(tokio_rustls::TlsAcceptor::from(Arc::new(
                tls.server_config(&[b"h2", b"http/1.1"])?,
            ))),
            None => None,
        };
        let options = GrpcOptions {
            max_message_bytes: grpc.max_message_bytes,
            cors_allowed_origins: grpc.cors_allowed_origins.clone(),
            body_timeout: grpc.timeouts.body,
            max_concurrent_streams: grpc.max_concurrent_streams,
            limits: ConnectionLimits {
                max_connections: grpc.max_connections.get(),
                header_timeout: grpc.timeouts.header,
                idle_timeout: grpc.timeouts.idle,
            },
            tls,
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ended_tx, ended) = tokio::sync::oneshot::channel::<String>();
        let threads = grpc.threads.get();
        let thread = std::thread::Builder::new()
            .name("grpc".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(threads)
                    .thread_name("grpc-worker")
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(err) => {
                        let _ = ended_tx.send(format!("its runtime did not start: {err}"));
                        return;
                    }
                };
                let served = runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)?;
                    grpc::serve(service, listener, options, async {
                        // A dropped sender stops the server too.
                        let _ = stopped.await;
                    })
                    .await
                    .map_err(std::io::Error::other)
                });
                let _ = ended_tx.send(match served {
                    Ok(()) => "it returned".to_owned(),
                    Err(err) => err.to_string(),
                });
            })
            .map_err(bind_error)?;
        Ok(Self {
            port,
            stop: Some(stop),
            ended,
            thread,
        })
    }

    async fn stop(self) {
        if let Some(stop) = self.stop {
            let _ = stop.send(());
        }
        let thread = self.thread;
        let _ = actix_rt::task::spawn_blocking(move || thread.join()).await;
    }
}

/// The HTTP server on its bound listener, and its port.
fn http_server(
    config: &Config,
    state: web::Data<HttpState>,
    tls: Option<&Tls>,
) -> Result<(u16, Server), StartError> {
    let http = &config.http;
    let bind_error = |e| StartError::Bind(http.addr, e);
    let listener = TcpListener::bind(http.addr).map_err(bind_error)?;
    let port = listener.local_addr().map_err(bind_error)?.port();
    let workers = http.workers.map_or_else(cores, usize::from);
    let server = HttpServer::new(move || {
        App::new()
            .wrap(TracingLogger::<RequestSpans>::new())
            .wrap_fn(crate::api::http::with_request_id)
            .app_data(state.clone())
            .configure(routes)
    })
    .workers(workers)
    .client_request_timeout(http.timeouts.header)
    .keep_alive(http.timeouts.idle)
    // actix counts per worker.
    .max_connections(http.max_connections.get().div_ceil(workers))
    .on_connect(crate::api::http::on_connect)
    .shutdown_timeout(http.shutdown_grace.as_secs());
    let server = match tls {
        // HTTP/1.1 only: actix-web cannot bound HTTP/2 streams per connection.
        Some(tls) => server.listen_rustls_0_23(listener, tls.server_config(&[b"http/1.1"])?),
        None => server.listen(listener),
    }
    .map_err(bind_error)?
    .run();
    Ok((port, server))
}

/// `/metrics` alone on a port of its own, for setups that keep scraping off the API port.
fn metrics_server(
    addr: SocketAddr,
    state: web::Data<HttpState>,
) -> Result<(u16, actix_web::dev::ServerHandle), StartError> {
    let bind_error = |e| StartError::Bind(addr, e);
    let listener = TcpListener::bind(addr).map_err(bind_error)?;
    let port = listener.local_addr().map_err(bind_error)?.port();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .route("/metrics", web::get().to(crate::api::http::metrics))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .map_err(bind_error)?
    .run();
    let handle = server.handle();
    actix_rt::spawn(server);
    Ok((port, handle))
}

fn open_store(
    store: &StoreConfig,
    metrics: &Metrics,
    redis_ca: Option<Vec<u8>>,
) -> Result<SharedStore, StartError> {
    Ok(match store {
        StoreConfig::Memory => Arc::new(MemoryStore::new()),
        StoreConfig::Redis(redis) => Arc::new(RedisStore::connect(
            Some(metrics.redis_connections.clone()),
            redis,
            redis_ca,
        )?),
    })
}

/// The Redis store and the key ring `serve` would use, for `tessera rekey`.
pub fn store_for_rekey(config: &Config) -> Result<(RedisStore, Arc<KeyRing>), StartError> {
    let StoreConfig::Redis(redis) = &config.store else {
        return Err(StartError::Store(StoreError::Unavailable(
            "rekey works on the Redis store (store.kind = \"redis\")".into(),
        )));
    };
    let store = RedisStore::connect(None, redis, redis_ca(redis)?)?;
    Ok((store, config.seal_keys.clone()))
}

fn redis_ca(redis: &RedisConfig) -> Result<Option<Vec<u8>>, StartError> {
    let Some(path) = &redis.tls_ca_file else {
        return Ok(None);
    };
    std::fs::read(path).map(Some).map_err(|e| {
        StartError::Store(StoreError::Unavailable(format!(
            "reading redis.tls_ca_file {}: {e}",
            path.display()
        )))
    })
}

fn load_tls(config: &Config) -> Result<Option<Arc<Tls>>, StartError> {
    let Some(tls) = &config.tls else {
        return Ok(None);
    };
    let loaded = Tls::load(tls.files.clone())?;
    tracing::info!(
        cert = %tls.files.cert.display(),
        client_ca = %tls.files.client_ca.as_ref().map_or_else(String::new, |ca| ca.display().to_string()),
        "TLS on the HTTP and gRPC ports"
    );
    Ok(Some(loaded))
}

/// Looks at the TLS files every `every`, and serves new material when they change.
fn spawn_tls_reloads(tls: Arc<Tls>, every: Duration) {
    actix_rt::spawn(async move {
        let mut ticks = actix_rt::time::interval(every);
        loop {
            ticks.tick().await;
            tls.reload_if_changed();
        }
    });
}

/// Keeps the token verification keys current: the JWKS file read again when it changes, the
/// URL fetched when its time comes.
fn spawn_key_refreshes(verifier: Arc<TokenVerifier>) {
    let Some(every) = verifier.refresh_every() else {
        return;
    };
    actix_rt::spawn(async move {
        let mut ticks = actix_rt::time::interval(every);
        loop {
            ticks.tick().await;
            verifier.refresh().await;
        }
    });
}

/// Checks the store and the clock offset in the background, so the gauge and gRPC health
/// stay current between probes.
fn spawn_readiness_checks(readiness: Arc<Readiness>, every: Duration) {
    actix_rt::spawn(async move {
        let mut ticks = actix_rt::time::interval(every.max(Duration::from_secs(1)));
        loop {
            ticks.tick().await;
            readiness.check().await;
        }
    });
}

/// Tries the seeds the store did not take at the start again, until it takes them all.
fn spawn_seeding(
    store: SharedStore,
    feed: AuditFeed,
    clock: SharedClock,
    mut seeds: Vec<(Arc<str>, PolicySeed)>,
    retention: Retention,
    timeout: Duration,
) {
    actix_rt::spawn(async move {
        let mut ticks = actix_rt::time::interval(Duration::from_secs(1));
        while !seeds.is_empty() {
            ticks.tick().await;
            seeds = policies::seed(&store, &feed, seeds, clock.now(), retention, timeout).await;
        }
    });
}

/// Evicts idle organization actors and prunes the address limiter, so memory stays bounded.
fn spawn_housekeeping(registry: Arc<OrgRegistry>, limiter: AddressLimiter, idle: Duration) {
    let every = (idle / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
    actix_rt::spawn(async move {
        let mut ticks = actix_rt::time::interval(every);
        loop {
            ticks.tick().await;
            let evicted = registry.evict_idle(idle);
            limiter.prune();
            if evicted > 0 {
                tracing::debug!(
                    evicted,
                    live = registry.live(),
                    "evicted idle organization actors"
                );
            }
        }
    });
}
