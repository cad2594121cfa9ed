//! spawn_app and friends: a real server on port 0, a real redis-server on a free port,
//! tokens signed with the fixture keys, and a clock pinned so no test straddles a time step.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tessera::app::{Application, Overrides};
use tessera::clock::ManualClock;
use tessera::domain::{TotpParams, UnixMicros};
use tessera::settings::{Settings, StoreKind};
use tessera::store::{RedisMode, SharedStore};

pub const ISSUER: &str = "https://issuer.test";
pub const AUDIENCE: &str = "tessera-tests";
/// A time in the middle of a 30 s step, so the window is the same for everyone.
pub const PINNED_SECS: i64 = 1_790_000_025;

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A redis-server of the test's own, killed on drop.
pub struct RedisServer {
    pub port: u16,
    child: Child,
}

impl RedisServer {
    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    pub fn start_on(port: u16) -> Self {
        Self::start_with(port, &[])
    }

    /// With extra redis-server arguments (e.g. `--requirepass`); `cli` then needs `-a`.
    pub fn start_with(port: u16, extra: &[&str]) -> Self {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            // DEBUG SLEEP simulates a slow server in the fail-closed tests.
            .args(["--enable-debug-command", "local"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be on the PATH (see README: tests)");
        let server = Self { port, child };
        server.wait_ready(extra);
        server
    }

    /// Waits for PONG: 10 s for the server to come up, and as long as it answers LOADING
    /// (alive, still reading its AOF or RDB: minutes for the soak's hour of writes).
    fn wait_ready(&self, extra: &[&str]) {
        let mut deadline = Instant::now() + Duration::from_secs(10);
        let ping: Vec<&str> = match extra.iter().position(|a| *a == "--requirepass") {
            Some(i) => vec!["--no-auth-warning", "-a", extra[i + 1], "PING"],
            None => vec!["PING"],
        };
        while Instant::now() < deadline {
            match self.cli(&ping) {
                Some(out) if out.trim() == "PONG" => return,
                Some(out) if out.starts_with("LOADING") => {
                    deadline = Instant::now() + Duration::from_secs(10);
                }
                _ => {}
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server on {} did not start", self.port);
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// redis-cli against this server; `None` when it cannot connect.
    pub fn cli(&self, args: &[&str]) -> Option<String> {
        let output = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        (output.status.success() && !text.starts_with("Could not connect")).then_some(text)
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Freezes the process (`SIGSTOP`): its sockets stay open and nothing answers, as in
    /// a stall (a long fork, a swapped-out host, a paused VM).
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// Lets a paused process run again (`SIGCONT`); it then serves what queued up.
    pub fn resume(&self) {
        self.signal("CONT");
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn signal(&self, name: &str) {
        signal(self.child.id(), name);
    }

    /// A replica of this server on a port of its own; returns once it has synced.
    pub fn start_replica(&self) -> RedisServer {
        let primary_port = self.port.to_string();
        let replica =
            RedisServer::start_with(free_port(), &["--replicaof", "127.0.0.1", &primary_port]);
        replica.wait_synced();
        replica
    }

    /// Waits until this replica's link to its primary is up.
    pub fn wait_synced(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self
                .cli(&["INFO", "replication"])
                .is_some_and(|info| info.contains("master_link_status:up"))
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("replica on {} did not sync", self.port);
    }

    /// One field of one hash, as redis-cli prints it (empty when absent).
    pub fn hget(&self, key: &str, field: &str) -> String {
        self.cli(&["HGET", key, field])
            .unwrap_or_default()
            .trim()
            .to_owned()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A cluster node the test may freeze from another thread.
pub struct ReplicaHandle {
    pub pid: u32,
}

impl ReplicaHandle {
    pub fn pause(&self) {
        signal(self.pid, "STOP");
    }

    pub fn resume(&self) {
        signal(self.pid, "CONT");
    }
}

fn signal(pid: u32, name: &str) {
    let sent = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .expect("kill(1) runs");
    assert!(sent.success(), "kill -{name} {pid}");
}

/// A Redis Cluster of real redis-server processes on loopback, killed on drop.
pub struct RedisCluster {
    /// Every node; `redis-cli --cluster create` chose which are masters (see `master_of`).
    pub nodes: Vec<RedisServer>,
    pub masters: usize,
    dir: TempDir,
}

/// A folder of the test's own for the nodes' cluster config files, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(label: &str) -> Self {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("tessera-{label}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A port whose cluster bus port (+10,000) is free too.
fn cluster_port() -> u16 {
    loop {
        let port = free_port();
        if port < 55_535 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

impl RedisCluster {
    /// `masters` masters and `replicas_each` replicas of each; returns once every node
    /// agrees that all 16,384 slots are served.
    pub fn start(masters: usize, replicas_each: usize) -> Self {
        let dir = TempDir::new("cluster");
        let nodes: Vec<RedisServer> = (0..masters * (1 + replicas_each))
            .map(|_| Self::start_node(&dir, cluster_port()))
            .collect();
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args([
                "--cluster-replicas",
                &replicas_each.to_string(),
                "--cluster-yes",
            ])
            .output()
            .expect("redis-cli must be on the PATH");
        assert!(
            created.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&created.stdout)
        );
        let cluster = Self {
            nodes,
            masters,
            dir,
        };
        cluster.wait_until_served(Duration::from_secs(20));
        cluster
    }

    fn start_node(dir: &TempDir, port: u16) -> RedisServer {
        let config = dir.0.join(format!("nodes-{port}.conf"));
        RedisServer::start_with(
            port,
            &[
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                config.to_str().unwrap(),
                "--cluster-node-timeout",
                "1000",
                "--dir",
                dir.0.to_str().unwrap(),
            ],
        )
    }

    /// Starts a killed node again on its port; its cluster config file makes it rejoin (a
    /// failed-over master comes back as a replica of the node that replaced it).
    pub fn restart(&mut self, port: u16) {
        let node = Self::start_node(&self.dir, port);
        let slot = self.nodes.iter().position(|n| n.port == port).unwrap();
        self.nodes[slot] = node;
    }

    /// Comma-separated seed URLs, as `TESSERA__REDIS__URL` takes them in cluster mode.
    pub fn seeds(&self) -> String {
        self.nodes
            .iter()
            .map(RedisServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Waits until every running node reports `cluster_state:ok` with as many masters as asked,
    /// and every running replica has synced with its master.
    pub fn wait_until_served(&self, within: Duration) {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            let all_ok = self.nodes.iter().all(|node| {
                node.cli(&["CLUSTER", "INFO"]).is_none_or(|info| {
                    info.contains("cluster_state:ok")
                        && info.contains(&format!("cluster_size:{}", self.masters))
                })
            });
            let any_up = self.nodes.iter().any(|node| node.cli(&["PING"]).is_some());
            // A replica counts once it has synced (WAIT counts only those).
            let replicas_synced = self.nodes.iter().all(|node| {
                node.cli(&["INFO", "replication"]).is_none_or(|info| {
                    info.contains("role:master") || info.contains("master_link_status:up")
                })
            });
            if all_ok && any_up && replicas_synced {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the cluster did not serve all slots in {within:?}");
    }

    /// The replica of the master on `port`, to freeze it.
    pub fn replica_of(&self, port: u16) -> ReplicaHandle {
        let node = self
            .nodes
            .iter()
            .find(|node| {
                node.cli(&["INFO", "replication"])
                    .is_some_and(|info| info.contains(&format!("master_port:{port}\r")))
            })
            .expect("the master has a replica");
        ReplicaHandle { pid: node.pid() }
    }

    /// The node that serves `key` now (the others answer MOVED).
    pub fn master_of(&mut self, key: &str) -> &mut RedisServer {
        self.nodes
            .iter_mut()
            .find(|node| {
                node.cli(&["EXISTS", key])
                    .is_some_and(|reply| reply.trim().parse::<i64>().is_ok())
            })
            .expect("some node serves the key")
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Memory,
    Redis,
    /// Redis Cluster: 3 masters of the test's own.
    Cluster,
}

/// Runs each named scenario `async fn name(backend: Backend)` on every store: the memory
/// store, a real redis-server and a real Redis Cluster of three masters, as three modules of
/// tests. (`benches/load/` includes this file and runs no scenario.)
#[allow(unused_macros)]
macro_rules! on_every_store {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(#[actix_web::test] async fn $name() { super::$name(crate::helpers::Backend::Memory).await; })*
        }
        mod redis {
            $(#[actix_web::test] async fn $name() { super::$name(crate::helpers::Backend::Redis).await; })*
        }
        mod cluster {
            $(#[actix_web::test] async fn $name() { super::$name(crate::helpers::Backend::Cluster).await; })*
        }
    };
}
#[allow(unused_imports)]
pub(crate) use on_every_store;

/// Test settings: the dev defaults with the fixture JWKS instead of the dev key, no limits.
pub fn base_settings() -> Settings {
    for_tests(Settings::dev_defaults().unwrap())
}

/// Settings loaded with these `TESSERA__*` variables (without touching the process
/// environment), then made fit for tests.
pub fn settings_with_env(vars: &[(&str, &str)]) -> Settings {
    let map = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let environment = config::Environment::with_prefix("TESSERA").source(Some(map));
    let nowhere = tessera::settings::Source {
        config_dir: None,
        environment: Some("none".into()),
    };
    for_tests(Settings::load_with(tessera::settings::Mode::Dev, &nowhere, environment).unwrap())
}

fn for_tests(mut s: Settings) -> Settings {
    s.http.addr = "127.0.0.1:0".into();
    s.grpc.addr = "127.0.0.1:0".into();
    s.http.workers = 2;
    s.auth.dev_key = false;
    s.auth.jwks_file = fixture("jwks.json").to_string_lossy().into_owned();
    s.auth.issuer = ISSUER.into();
    s.auth.audience = AUDIENCE.into();
    s.limits.per_user_per_minute = 0;
    s.limits.per_org_per_second = 0;
    s.limits.per_address_per_second = 0;
    s.store.timeout_ms = 500;
    // Test clocks are pinned far from Redis's; the clock test sets its own bound.
    s.health.max_clock_offset_ms = u64::MAX;
    s.tenants.call_timeout_ms = 2_000;
    // Deliverers poll Redis; the tests of webhooks turn them on (tests/api/webhooks.rs).
    s.webhooks.enabled = false;
    s
}

pub struct TestApp {
    pub address: String,
    /// The gRPC (and gRPC-web) endpoint, `http://127.0.0.1:<port>`.
    pub grpc_address: String,
    pub client: reqwest::Client,
    pub clock: Arc<ManualClock>,
    pub redis: Option<Arc<RedisServer>>,
    pub cluster: Option<Arc<RedisCluster>>,
    pub params: TotpParams,
    pub registry: Arc<tessera::tenant::OrgRegistry>,
}

pub struct Spawn {
    pub backend: Backend,
    pub settings: Settings,
    pub redis: Option<Arc<RedisServer>>,
    pub cluster: Option<Arc<RedisCluster>>,
    pub store: Option<SharedStore>,
    pub clock: Option<Arc<ManualClock>>,
    /// A Redis the test manages itself (to stop and restart it).
    pub external_redis_url: Option<String>,
}

impl Spawn {
    pub fn new(backend: Backend) -> Self {
        Self {
            backend,
            settings: base_settings(),
            redis: None,
            cluster: None,
            store: None,
            clock: None,
            external_redis_url: None,
        }
    }

    pub fn settings(mut self, settings: Settings) -> Self {
        self.settings = settings;
        self
    }

    pub fn with(mut self, tweak: impl FnOnce(&mut Settings)) -> Self {
        tweak(&mut self.settings);
        self
    }

    /// Share a redis-server (and its key prefix) with another instance.
    pub fn redis(mut self, redis: Arc<RedisServer>) -> Self {
        self.redis = Some(redis);
        self
    }

    /// Share a Redis Cluster with another instance.
    pub fn cluster(mut self, cluster: Arc<RedisCluster>) -> Self {
        self.cluster = Some(cluster);
        self
    }

    /// Share a memory store with another instance.
    pub fn store(mut self, store: SharedStore) -> Self {
        self.store = Some(store);
        self
    }

    pub fn external_redis(mut self, url: String) -> Self {
        self.external_redis_url = Some(url);
        self
    }

    pub fn clock(mut self, clock: Arc<ManualClock>) -> Self {
        self.clock = Some(clock);
        self
    }

    pub async fn start(mut self) -> TestApp {
        let mut cluster = None;
        let redis = match self.backend {
            Backend::Memory => {
                self.settings.store.kind = StoreKind::Memory;
                None
            }
            Backend::Redis | Backend::Cluster if self.external_redis_url.is_some() => {
                self.settings.store.kind = StoreKind::Redis;
                if self.backend == Backend::Cluster {
                    self.settings.redis.mode = RedisMode::Cluster;
                }
                self.settings.redis.url = self.external_redis_url.unwrap_or_default().into();
                None
            }
            Backend::Redis => {
                let redis = self.redis.unwrap_or_else(|| Arc::new(RedisServer::start()));
                self.settings.store.kind = StoreKind::Redis;
                self.settings.redis.url = redis.url().into();
                Some(redis)
            }
            Backend::Cluster => {
                let started = self
                    .cluster
                    .unwrap_or_else(|| Arc::new(RedisCluster::start(3, 0)));
                self.settings.store.kind = StoreKind::Redis;
                self.settings.redis.mode = RedisMode::Cluster;
                self.settings.redis.url = started.seeds().into();
                cluster = Some(started);
                None
            }
        };
        let clock = self
            .clock
            .unwrap_or_else(|| Arc::new(ManualClock::new(UnixMicros::from_secs(PINNED_SECS))));
        let config = self
            .settings
            .parse(tessera::settings::Mode::Dev)
            .expect("test settings parse");
        let params = config.policies.default.params();
        let overrides = Overrides {
            clock: Some(clock.clone()),
            store: self.store,
        };
        let app = Application::build_with(config, overrides)
            .await
            .expect("app starts");
        let address = format!("http://127.0.0.1:{}", app.port());
        let registry = app.registry();
        let grpc_address = format!("http://127.0.0.1:{}", app.grpc_port());
        actix_rt::spawn(app.run_until_stopped());
        TestApp {
            address,
            grpc_address,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                // Below every keep-alive a test gives the server (the shortest is 2 s, in
                // wire_edges.rs): a test that pauses (a cluster restarting, a silent client
                // cut off) must not reuse a connection the server is closing at that moment.
                // Equal timeouts raced: the request went out on a socket being closed.
                .pool_idle_timeout(Duration::from_secs(1))
                .build()
                .unwrap(),
            clock,
            redis,
            cluster,
            params,
            registry,
        }
    }
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    Spawn::new(backend).start().await
}

/// Signs tokens with the fixture keys.
pub struct Token {
    pub org: String,
    pub user: String,
    pub roles: Vec<(String, String)>,
    pub alg: Algorithm,
    pub claims: serde_json::Map<String, Value>,
    pub kid: Option<String>,
}

impl Token {
    pub fn user(org: &str, user: &str) -> Self {
        Self {
            org: org.into(),
            user: user.into(),
            roles: vec![],
            alg: Algorithm::EdDSA,
            claims: serde_json::Map::new(),
            kid: None,
        }
    }

    /// Grants `role` for `org`.
    pub fn role(mut self, role: &str, org: &str) -> Self {
        self.roles.push((role.into(), org.into()));
        self
    }

    pub fn alg(mut self, alg: Algorithm) -> Self {
        self.alg = alg;
        self
    }

    pub fn claim(mut self, name: &str, value: Value) -> Self {
        self.claims.insert(name.into(), value);
        self
    }

    pub fn kid(mut self, kid: &str) -> Self {
        self.kid = Some(kid.into());
        self
    }

    pub fn claims(&self) -> serde_json::Map<String, Value> {
        let now = chrono::Utc::now().timestamp();
        let mut roles = serde_json::Map::new();
        for (role, org) in &self.roles {
            let entry = roles.entry(role.clone()).or_insert_with(|| json!({}));
            entry[org] = json!(format!("{org}.test"));
        }
        let mut claims = serde_json::Map::new();
        claims.insert("iss".into(), json!(ISSUER));
        claims.insert("aud".into(), json!(AUDIENCE));
        claims.insert("sub".into(), json!(self.user));
        claims.insert(
            "urn:zitadel:iam:user:resourceowner:id".into(),
            json!(self.org),
        );
        claims.insert(
            "urn:zitadel:iam:org:project:roles".into(),
            Value::Object(roles),
        );
        claims.insert("iat".into(), json!(now));
        claims.insert("exp".into(), json!(now + 600));
        for (name, value) in &self.claims {
            claims.insert(name.clone(), value.clone());
        }
        claims
    }

    pub fn sign(&self) -> String {
        let (file, kid) = match self.alg {
            Algorithm::EdDSA => ("ed25519.pem", "test-ed25519"),
            Algorithm::ES256 => ("es256.pem", "test-es256"),
            Algorithm::RS256 => ("rs256.pem", "test-rs256"),
            other => panic!("no fixture key for {other:?}"),
        };
        let pem = std::fs::read(fixture(file)).unwrap();
        let key = match self.alg {
            Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem),
            Algorithm::ES256 => EncodingKey::from_ec_pem(&pem),
            _ => EncodingKey::from_rsa_pem(&pem),
        }
        .unwrap();
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone().unwrap_or_else(|| kid.into()));
        jsonwebtoken::encode(&header, &self.claims(), &key).unwrap()
    }
}

/// An answer: status, body as JSON, and the headers that matter.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
    pub retry_after: Option<String>,
}

impl Answer {
    /// The contract's error shape, with this gRPC code and id.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: i64, id: &str) {
        assert_eq!(self.status.as_u16(), status, "{self:?}");
        assert_eq!(self.body["code"], code, "{self:?}");
        assert_eq!(
            self.body["details"][0]["@type"], "type.googleapis.com/zitadel.v1.ErrorDetail",
            "{self:?}"
        );
        assert_eq!(self.body["details"][0]["id"], id, "{self:?}");
        let message = self.body["message"].as_str().unwrap();
        assert!(message.ends_with(&format!("({id})")), "{message}");
    }

    #[track_caller]
    pub fn assert_ok(&self) -> &Value {
        assert_eq!(self.status, StatusCode::OK, "{self:?}");
        &self.body
    }

    pub fn sequence(&self) -> u64 {
        self.body["details"]["sequence"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    }
}

impl TestApp {
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        let response = request.send().await.expect("request reaches the server");
        let status = response.status();
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        let bytes = response.bytes().await.unwrap();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| panic!("body is JSON: {:?}", String::from_utf8_lossy(&bytes)));
        Answer {
            status,
            body,
            retry_after,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn post(&self, token: Option<&str>, path: &str, body: Value) -> Answer {
        let mut request = self.client.post(self.url(path)).json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        self.send(request).await
    }

    pub async fn delete(&self, token: Option<&str>, path: &str) -> Answer {
        let mut request = self.client.delete(self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        self.send(request).await
    }

    pub async fn add(&self, token: &str) -> Answer {
        self.post(Some(token), "/auth/v1/users/me/auth_factors/otp", json!({}))
            .await
    }

    pub async fn verify(&self, token: &str, code: &str) -> Answer {
        self.post(
            Some(token),
            "/auth/v1/users/me/auth_factors/otp/_verify",
            json!({ "code": code }),
        )
        .await
    }

    pub async fn check(&self, token: &str, user: &str, code: &str) -> Answer {
        let path = format!("/management/v1/users/{user}/auth_factors/otp/_check");
        self.post(Some(token), &path, json!({ "code": code })).await
    }

    pub async fn list(&self, token: &str) -> Answer {
        self.post(
            Some(token),
            "/auth/v1/users/me/auth_factors/_search",
            json!({}),
        )
        .await
    }

    pub async fn remove_mine(&self, token: &str) -> Answer {
        self.delete(Some(token), "/auth/v1/users/me/auth_factors/otp")
            .await
    }

    pub async fn unlock(&self, token: &str, user: &str) -> Answer {
        self.post(
            Some(token),
            &format!("/management/v1/users/{user}/_unlock"),
            json!({}),
        )
        .await
    }

    pub fn now_secs(&self) -> u64 {
        use tessera::clock::Clock;
        self.clock.now().unsigned_secs()
    }

    /// The code of the step `offset` steps from now, for a base32 secret.
    pub fn code(&self, secret: &str, offset: i64) -> String {
        code_with(&self.params, secret, self.now_secs(), offset)
    }

    /// Enrolls and verifies, then moves the clock one step on so that the enrollment's code
    /// is spent and a fresh one is current: the state of a user about to log in.
    pub async fn ready_for_login(&self, token: &str) -> String {
        let secret = self.enroll_ready(token).await;
        self.clock
            .advance_secs(i64::from(self.params.period_secs()));
        secret
    }

    /// The readiness probe's answer.
    pub async fn ready(&self) -> reqwest::Response {
        self.client
            .get(self.url("/debug/ready"))
            .send()
            .await
            .unwrap()
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics_text(&self) -> String {
        let response = self.client.get(self.url("/metrics")).send().await.unwrap();
        response.text().await.unwrap()
    }

    /// A search (list) call with an `X-Forwarded-For` header.
    pub async fn search_forwarded(&self, token: &str, forwarded: &str) -> Answer {
        let request = self
            .client
            .post(self.url("/auth/v1/users/me/auth_factors/_search"))
            .bearer_auth(token)
            .header("x-forwarded-for", forwarded)
            .json(&serde_json::json!({}));
        self.send(request).await
    }

    /// Enrolls `token`'s user and verifies; returns the secret.
    pub async fn enroll_ready(&self, token: &str) -> String {
        let added = self.add(token).await;
        let secret = added.assert_ok()["secret"].as_str().unwrap().to_owned();
        self.verify(token, &self.code(&secret, 0)).await.assert_ok();
        secret
    }
}

pub fn code_with(params: &TotpParams, secret: &str, now_secs: u64, offset: i64) -> String {
    let bytes = data_encoding::BASE32_NOPAD
        .decode(secret.as_bytes())
        .unwrap();
    let step = params.step_at(now_secs).checked_add_signed(offset).unwrap();
    params.code_for_step(&bytes, step).unwrap()
}

/// `tessera dev`, the real binary, on ports of its own with JSON logs into a file of its own:
/// for tests of what a user runs and of what it logs.
pub struct DevBinary {
    pub base: String,
    pub grpc_port: u16,
    child: Child,
    log: PathBuf,
}

impl DevBinary {
    /// Starts it with these `TESSERA__*` variables on top of its ports and JSON logs, and
    /// waits until it answers.
    pub async fn start(env: &[(&str, String)]) -> Self {
        let (port, grpc_port) = (free_port(), free_port());
        let log = std::env::temp_dir().join(format!("tessera-dev-{port}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_tessera"))
            .arg("dev")
            .env("TESSERA__HTTP__ADDR", format!("127.0.0.1:{port}"))
            .env("TESSERA__GRPC__ADDR", format!("127.0.0.1:{grpc_port}"))
            .env("TESSERA__LOG__FORMAT", "json")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env_remove("RUST_LOG")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let running = Self {
            base: format!("http://127.0.0.1:{port}"),
            grpc_port,
            child,
            log,
        };
        let client = reqwest::Client::new();
        for _ in 0..100 {
            if client
                .get(format!("{}/debug/healthz", running.base))
                .send()
                .await
                .is_ok()
            {
                return running;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("tessera dev did not start:\n{}", running.stop());
    }

    /// A token for `user` of `org` with `roles`, from the binary's `token` command.
    pub fn token(&self, org: &str, user: &str, roles: &[&str]) -> String {
        let mut args = vec!["token", "--org", org, "--user", user];
        for role in roles {
            args.extend(["--role", role]);
        }
        let output = Command::new(env!("CARGO_BIN_EXE_tessera"))
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap();
        assert!(output.status.success());
        String::from_utf8(output.stdout).unwrap().trim().to_owned()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// POSTs `body` as JSON to `path` with `token`; the status and the JSON answer.
    pub async fn post(
        &self,
        path: &str,
        token: &str,
        request_id: Option<&str>,
        body: serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let mut request = reqwest::Client::new()
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(&body);
        if let Some(id) = request_id {
            request = request.header("x-request-id", id);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or_default())
    }

    /// Enrolls the owner of `token`; the secret, base32.
    pub async fn enroll(&self, token: &str) -> String {
        let (status, added) = self
            .post(
                "/auth/v1/users/me/auth_factors/otp",
                token,
                None,
                serde_json::json!({}),
            )
            .await;
        assert_eq!(status, 200, "{added}");
        added["secret"].as_str().unwrap().to_owned()
    }

    /// Stops it; returns everything it logged.
    pub fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A test that panics before `stop` leaves neither the process nor its log behind.
impl Drop for DevBinary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}
