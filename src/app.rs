//! Builds the application from settings: store, key ring, token verifier, actor registry and
//! the HTTP server on a bound listener. `port()` and `run_until_stopped()` serve tests.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix::Arbiter;
use actix_web::dev::Server;
use actix_web::{App, HttpServer, web};
use secrecy::ExposeSecret;
use tracing_actix_web::TracingLogger;

use crate::api::grpc::listener::ConnectionLimits;
use crate::api::grpc::{self, GrpcOptions};
use crate::api::http::{HttpState, routes};
use crate::auth::{TokenVerifier, VerifierError};
use crate::clock::{SharedClock, SystemClock};
use crate::health::Readiness;
use crate::metrics::Metrics;
use crate::seal::{KeyRing, SealError};
use crate::service::OtpService;
use crate::settings::{Settings, StoreKind};
use crate::store::{MemoryStore, MeteredStore, RedisOptions, RedisStore, SharedStore, StoreError};
use crate::telemetry::RequestSpans;
use crate::tenant::{AddressLimiter, Limits, OrgRegistry, Policies, TenantDeps};
use crate::tls::{Tls, TlsFiles};

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
    Bind(String, std::io::Error),
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

pub struct Application {
    port: u16,
    server: Server,
    /// The separate metrics listener, when `http.metrics_addr` is set.
    metrics_server: Option<(u16, actix_web::dev::ServerHandle)>,
    grpc: GrpcServer,
    registry: Arc<OrgRegistry>,
    arbiters: Vec<Arbiter>,
}

/// What the servers read from files and the network before any listener exists: the seal
/// keys, the token keys (a JWKS file or URL), the TLS material, the Redis CA.
/// `tessera check-config` reads exactly this, so it fails where `serve` would.
pub struct Dependencies {
    keys: Arc<KeyRing>,
    verifier: Arc<TokenVerifier>,
    tls: Option<Arc<Tls>>,
    redis_ca: Option<Vec<u8>>,
}

impl Dependencies {
    pub async fn load(settings: &Settings) -> Result<Self, StartError> {
        Ok(Self {
            keys: Arc::new(KeyRing::parse(&settings.seal.keys)?),
            verifier: Arc::new(TokenVerifier::from_settings(&settings.auth).await?),
            tls: load_tls(settings)?,
            redis_ca: tls_ca(&settings.redis.tls_ca_file)?,
        })
    }
}

impl Application {
    pub async fn build(settings: Settings) -> Result<Self, StartError> {
        Self::assemble(settings, None, None).await
    }

    /// `build`, with a clock or a store given from outside (tests).
    #[cfg(feature = "test-kit")]
    pub async fn build_with(settings: Settings, overrides: Overrides) -> Result<Self, StartError> {
        Self::assemble(settings, overrides.clock, overrides.store).await
    }

    /// `clock` and `store` replace the system clock and the configured store (tests only).
    async fn assemble(
        settings: Settings,
        clock: Option<SharedClock>,
        store: Option<SharedStore>,
    ) -> Result<Self, StartError> {
        let Dependencies {
            keys,
            verifier,
            tls,
            redis_ca,
        } = Dependencies::load(&settings).await?;
        let metrics = Arc::new(Metrics::new()?);
        let store = match store {
            Some(store) => store,
            None => open_store(&settings, &metrics, redis_ca)?,
        };
        let clock = clock.unwrap_or_else(|| Arc::new(SystemClock));
        let store: SharedStore = Arc::new(MeteredStore::new(store, metrics.clone()));
        let limits = Limits::from_settings(&settings.limits);
        let deps = Arc::new(TenantDeps {
            store: store.clone(),
            keys,
            policies: Policies {
                default: Arc::new(settings.otp_policy(None)),
                by_org: settings
                    .orgs
                    .keys()
                    .map(|org| (org.clone(), Arc::new(settings.otp_policy(Some(org)))))
                    .collect(),
            },
            limits,
            cache_capacity: settings.tenants.cache_capacity,
            metrics: metrics.clone(),
        });
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        let arbiters: Vec<Arbiter> = (0..cores).map(|_| Arbiter::new()).collect();
        let registry = Arc::new(OrgRegistry::new(
            deps,
            arbiters.iter().map(Arbiter::handle).collect(),
            settings.tenants.mailbox_capacity,
        ));
        let address_limiter = AddressLimiter::new(limits.per_address);
        let readiness = Arc::new(Readiness::new(
            store.clone(),
            clock.clone(),
            metrics.clone(),
            Duration::from_millis(settings.health.max_clock_offset_ms),
        ));
        // Once before serving, so probes and gRPC health are right from the first call.
        readiness.check().await;
        let service = Arc::new(OtpService {
            registry: registry.clone(),
            verifier,
            clock,
            request_timeout: Duration::from_millis(settings.tenants.call_timeout_ms),
            address_limiter: address_limiter.clone(),
            trusted_proxies: settings.http.trusted_proxies.clone(),
            check_role: settings.auth.check_role.clone(),
            admin_role: settings.auth.admin_role.clone(),
            management_needs_client_cert: tls.as_ref().is_some_and(|tls| tls.verifies_clients()),
            metrics,
            readiness: readiness.clone(),
        });
        let state = web::Data::new(HttpState {
            service: service.clone(),
            body_limit: settings.http.body_limit_bytes,
            body_timeout: Duration::from_secs(settings.http.body_timeout_secs),
        });
        let listener = TcpListener::bind(&settings.http.addr)
            .map_err(|e| StartError::Bind(settings.http.addr.clone(), e))?;
        let port = listener
            .local_addr()
            .map_err(|e| StartError::Bind(settings.http.addr.clone(), e))?
            .port();
        let workers = if settings.http.workers == 0 {
            cores
        } else {
            settings.http.workers
        };
        let metrics_server = metrics_listener(&settings, &state)?;
        let server = HttpServer::new(move || {
            App::new()
                .wrap(TracingLogger::<RequestSpans>::new())
                .wrap_fn(crate::api::http::with_request_id)
                .app_data(state.clone())
                .configure(routes)
        })
        .workers(workers)
        .client_request_timeout(Duration::from_secs(settings.http.header_timeout_secs))
        .keep_alive(Duration::from_secs(settings.http.idle_timeout_secs))
        // actix counts per worker.
        .max_connections(settings.http.max_connections.div_ceil(workers.max(1)))
        .on_connect(crate::api::http::on_connect)
        .shutdown_timeout(settings.http.shutdown_grace_secs);
        let server = match &tls {
            // HTTP/1.1 only: actix-web cannot bound HTTP/2 streams per connection.
            Some(tls) => server.listen_rustls_0_23(listener, tls.server_config(&[b"http/1.1"])?),
            None => server.listen(listener),
        }
        .map_err(|e| StartError::Bind(settings.http.addr.clone(), e))?
        .run();
        spawn_key_refreshes(service.verifier.clone());
        let grpc = GrpcServer::start(service, &settings, tls.as_deref())?;
        if let Some(tls) = tls {
            spawn_tls_reloads(tls, Duration::from_secs(settings.tls.reload_interval_secs));
        }
        spawn_housekeeping(
            registry.clone(),
            address_limiter,
            Duration::from_secs(settings.tenants.idle_evict_secs),
        );
        spawn_readiness_checks(
            readiness,
            Duration::from_secs(settings.health.check_interval_secs),
        );
        Ok(Self {
            port,
            server,
            metrics_server,
            grpc,
            registry,
            arbiters,
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
        settings: &Settings,
        tls: Option<&Tls>,
    ) -> Result<Self, StartError> {
        let addr = settings.grpc.addr.clone();
        let bind_error = |e| StartError::Bind(addr.clone(), e);
        let listener = TcpListener::bind(&settings.grpc.addr).map_err(bind_error)?;
        listener.set_nonblocking(true).map_err(bind_error)?;
        let port = listener.local_addr().map_err(bind_error)?.port();
        let tls = match tls {
            // gRPC over h2, gRPC-web over HTTP/1.1.
            Some(tls) => Some(tokio_rustls::TlsAcceptor::from(Arc::new(
                tls.server_config(&[b"h2", b"http/1.1"])?,
            ))),
            None => None,
        };
        let grpc = &settings.grpc;
        let options = GrpcOptions {
            max_message_bytes: grpc.max_message_bytes,
            cors_allowed_origins: grpc.cors_allowed_origins.clone(),
            body_timeout: Duration::from_secs(grpc.body_timeout_secs),
            max_concurrent_streams: grpc.max_concurrent_streams,
            limits: ConnectionLimits {
                max_connections: grpc.max_connections,
                header_timeout: Duration::from_secs(grpc.header_timeout_secs),
                idle_timeout: Duration::from_secs(grpc.idle_timeout_secs),
            },
            tls,
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ended_tx, ended) = tokio::sync::oneshot::channel::<String>();
        let threads = settings.grpc.threads;
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
            .map_err(|e| StartError::Bind(settings.grpc.addr.clone(), e))?;
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

/// `/metrics` alone on a port of its own, for setups that keep scraping off the API port.
fn metrics_listener(
    settings: &Settings,
    state: &web::Data<HttpState>,
) -> Result<Option<(u16, actix_web::dev::ServerHandle)>, StartError> {
    let addr = settings.http.metrics_addr.trim();
    if addr.is_empty() {
        return Ok(None);
    }
    let bind_error = |e| StartError::Bind(addr.to_owned(), e);
    let listener = TcpListener::bind(addr).map_err(bind_error)?;
    let port = listener.local_addr().map_err(bind_error)?.port();
    let state = state.clone();
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
    Ok(Some((port, handle)))
}

fn open_store(
    settings: &Settings,
    metrics: &Metrics,
    redis_ca: Option<Vec<u8>>,
) -> Result<SharedStore, StartError> {
    Ok(match settings.store.kind {
        StoreKind::Memory => Arc::new(MemoryStore::new()),
        StoreKind::Redis => Arc::new(redis_store(
            settings,
            Some(metrics.redis_connections.clone()),
            redis_ca,
        )?),
    })
}

fn redis_store(
    settings: &Settings,
    connections_gauge: Option<prometheus::IntGauge>,
    redis_ca: Option<Vec<u8>>,
) -> Result<RedisStore, StartError> {
    Ok(RedisStore::connect(
        connections_gauge,
        RedisOptions {
            mode: settings.redis.mode,
            urls: &settings.redis.url,
            // Empty: none (a passwordless Redis refuses AUTH with an empty one).
            password: Some(&settings.redis.password)
                .filter(|password| !password.expose_secret().is_empty()),
            tls_ca_pem: redis_ca,
            prefix: &settings.redis.key_prefix,
            timeout: Duration::from_millis(settings.store.timeout_ms),
            wait_replicas: settings.redis.wait_replicas,
            wait_connections: settings.redis.wait_connections,
        },
    )?)
}

/// The Redis store and the key ring `serve` would use, for `tessera rekey`.
pub fn store_for_rekey(settings: &Settings) -> Result<(RedisStore, KeyRing), StartError> {
    if settings.store.kind != StoreKind::Redis {
        return Err(StartError::Store(StoreError::Unavailable(
            "rekey works on the Redis store (store.kind = \"redis\")".into(),
        )));
    }
    let keys = KeyRing::parse(&settings.seal.keys)?;
    let store = redis_store(settings, None, tls_ca(&settings.redis.tls_ca_file)?)?;
    Ok((store, keys))
}

fn tls_ca(path: &str) -> Result<Option<Vec<u8>>, StartError> {
    if path.is_empty() {
        return Ok(None);
    }
    std::fs::read(path).map(Some).map_err(|e| {
        StartError::Store(StoreError::Unavailable(format!(
            "reading redis.tls_ca_file {path}: {e}"
        )))
    })
}

fn load_tls(settings: &Settings) -> Result<Option<Arc<Tls>>, StartError> {
    let tls = &settings.tls;
    if tls.cert_file.is_empty() {
        return Ok(None);
    }
    let files = TlsFiles {
        cert: tls.cert_file.clone().into(),
        key: tls.key_file.clone().into(),
        client_ca: (!tls.client_ca_file.is_empty()).then(|| tls.client_ca_file.clone().into()),
    };
    let loaded = Tls::load(files)?;
    tracing::info!(
        cert = %tls.cert_file,
        client_ca = %tls.client_ca_file,
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
