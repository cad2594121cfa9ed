//! The load tool: enrolls N users on a real `tessera serve` (release build) backed by a real
//! redis-server, drives the login check over many connections with wrk, and in the same run
//! measures the floor: a minimal actix-web handler doing one EVALSHA of the same script over
//! a shared multiplexed connection. Prints a markdown table for BENCHMARKS.md.
//!
//!     cargo bench --bench load -- [--users 10000] [--connections 64] [--seconds 10]
//!     cargo bench --bench load -- --audit-cost   (what the check's audit event costs)
//!     cargo bench --bench load -- --production   (the check as deployed: production settings)
//!     cargo bench --bench load -- --soak [--minutes 60] [--restart-every 15]
//!         (half of peak for an hour, Redis restarted; writes benches/results/soak.{csv,svg})
//!     cargo bench --bench load -- --cold [--cold-users 1000000] [--orgs 1000]
//!         (a million users seeded, each check a user never checked; memory per factor)
//!     cargo bench --bench load -- --paced [--rate 9000]
//!         (tessera and the floor at one open-loop rate: CPU, context switches per check)
//!
//! Needs `wrk` and `redis-server` on the PATH. Client and servers share this machine's cores:
//! compare the ratio of figures from one run, not absolute numbers across machines.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{App, HttpResponse, HttpServer, web};
use futures::StreamExt;
use serde_json::json;
use tessera::domain::TotpParams;

/// The floor gets the same allocator as tessera, so the comparison is of the request path only.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The tests' kit, shared: redis-server processes and clusters, free ports, fixtures, tokens.
#[path = "../../tests/api/helpers.rs"]
#[allow(dead_code)]
mod helpers;

mod cold;
mod paced;
mod record;
mod soak;

use helpers::{AUDIENCE, ISSUER, RedisCluster, RedisServer, Token, fixture, free_port};

const ORG: &str = "bench";

/// The check's script as tessera sends it: the prelude (deadline, format), the feed's rule,
/// the audit trail's writer, then the body.
const ATTEMPT_SCRIPT: &str = concat!(
    include_str!("../../src/store/lua/prelude.lua"),
    include_str!("../../src/store/lua/feed.lua"),
    include_str!("../../src/store/lua/audit.lua"),
    include_str!("../../src/store/lua/attempt.lua")
);

/// The same script before the audit trail: its events not written (`audit` does nothing) nor
/// handed on to the feed, for `--audit-cost`'s comparison in one run.
const ATTEMPT_SCRIPT_WITHOUT_EVENTS: &str = concat!(
    include_str!("../../src/store/lua/prelude.lua"),
    "local function audit(kind, sequence) end\n",
    "local function hand_on() return {} end\n",
    include_str!("../../src/store/lua/attempt.lua")
);

/// The audit stamp tessera passes with a check of `user` (`store::Stamp::script_arg`): 100
/// events kept per user for 90 days, 100,000 in the organization's feed, the user, now, a
/// request id, the acting user and organization, a truncated address.
fn audit_stamp(org: &str, user: &str, now: i64) -> String {
    format!(
        "100\n7776000000\n100000\n{user}\n{now}\n513fbb036695a7247b0dd92d257531f5\nlogin\n{org}\n127.0.0.0/24"
    )
}

struct Options {
    users: usize,
    connections: usize,
    seconds: u64,
    idle_orgs: usize,
    /// Only the wrk passes against the floor (`--quick`): for trying a change to the check path.
    quick: bool,
    /// What writing the audit event costs (`--audit-cost`): tessera, the floor with the event
    /// and the floor without it, alternating, with CPU per check of tessera and of Redis.
    audit_cost: bool,
    /// The check as deployed (`--production`): production settings, the same at warn, the
    /// floor, alternating, with CPU per check.
    production: bool,
    peer: bool,
    peer_tokens: usize,
    /// An hour at half of peak with Redis restarted (`--soak`, `soak.rs`).
    soak: bool,
    soak_minutes: u64,
    restart_every_minutes: u64,
    /// Redis's `auto-aof-rewrite-min-size` for the soak, in MB (`--aof-rewrite-min-mb`);
    /// Redis's own default (64 MB) when absent.
    aof_rewrite_min_mb: Option<u64>,
    /// The check on a cold cache at a million users (`--cold`, `cold.rs`).
    cold: bool,
    cold_users: usize,
    orgs: usize,
    /// tessera and the floor at one open-loop rate, with CPU and context switches per
    /// check (`--paced [--rate N]`, `paced.rs`).
    paced: bool,
    rate: u64,
}

fn options() -> Options {
    let mut o = Options {
        users: 10_000,
        connections: 64,
        seconds: 10,
        idle_orgs: 100_000,
        quick: false,
        audit_cost: false,
        production: false,
        peer: true,
        peer_tokens: 100,
        soak: false,
        soak_minutes: 60,
        restart_every_minutes: 15,
        aof_rewrite_min_mb: None,
        cold: false,
        cold_users: 1_000_000,
        orgs: 1000,
        paced: false,
        rate: 9000,
    };
    let args: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < args.len() {
        let value = || {
            args.get(i + 1)
                .and_then(|v| v.parse::<u64>().ok())
                .expect("a number")
        };
        match args[i].as_str() {
            "--users" => o.users = value() as usize,
            "--connections" => o.connections = value() as usize,
            "--seconds" => o.seconds = value(),
            "--idle-orgs" => o.idle_orgs = value() as usize,
            "--peer-tokens" => o.peer_tokens = value() as usize,
            "--no-peer" => o.peer = false,
            "--quick" => o.quick = true,
            "--audit-cost" => o.audit_cost = true,
            "--production" => o.production = true,
            "--soak" => o.soak = true,
            "--minutes" => o.soak_minutes = value(),
            "--restart-every" => o.restart_every_minutes = value(),
            "--aof-rewrite-min-mb" => o.aof_rewrite_min_mb = Some(value()),
            "--cold" => o.cold = true,
            "--cold-users" => o.cold_users = value() as usize,
            "--orgs" => o.orgs = value() as usize,
            "--paced" => o.paced = true,
            "--rate" => o.rate = value(),
            _ => {}
        }
        i += 1;
    }
    o
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A token of `user` in organization `org`, holding `roles` for that organization, valid
/// for an hour (a long run outlasts the tests' ten minutes).
fn token_in(org: &str, user: &str, roles: &[&str]) -> String {
    token_valid_for(org, user, roles, 3600)
}

fn token_valid_for(org: &str, user: &str, roles: &[&str], seconds: u64) -> String {
    let exp = chrono::Utc::now().timestamp() + seconds as i64;
    roles
        .iter()
        .fold(Token::user(org, user), |token, role| token.role(role, org))
        .claim("exp", json!(exp))
        .sign()
}

fn token(user: &str, roles: &[&str]) -> String {
    token_in(ORG, user, roles)
}

fn used_memory(redis: &RedisServer) -> u64 {
    memory_field(redis, "used_memory")
}

/// Redis's `INFO memory` field `name`.
fn memory_field(redis: &RedisServer, name: &str) -> u64 {
    redis
        .cli(&["INFO", "memory"])
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':')?.trim().parse().ok())
        .unwrap()
}

async fn wait_ready(url: &str) {
    let client = reqwest::Client::new();
    for _ in 0..200 {
        if client
            .get(url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{url} never became ready");
}

/// Adds a factor with a POST to `add`, verifies it at `verify` with the code of now, as
/// `bearer`; returns its base32 secret.
async fn add_and_verify(client: &reqwest::Client, add: &str, verify: &str, bearer: &str) -> String {
    let params = TotpParams::default();
    let added: serde_json::Value = client
        .post(add)
        .bearer_auth(bearer)
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let secret = added["secret"].as_str().expect("enrolled").to_owned();
    let bytes = data_encoding::BASE32_NOPAD
        .decode(secret.as_bytes())
        .unwrap();
    let now = chrono::Utc::now().timestamp() as u64;
    let code = params.code_for_step(&bytes, params.step_at(now)).unwrap();
    let verified = client
        .post(verify)
        .bearer_auth(bearer)
        .json(&json!({ "code": code }))
        .send()
        .await
        .unwrap();
    assert!(
        verified.status().is_success(),
        "verify at {verify}: {}",
        verified.status()
    );
    secret
}

/// Enrolls and verifies every user; returns their base32 secrets.
async fn enroll(base: &str, users: usize) -> Vec<String> {
    let client = reqwest::Client::new();
    let add = format!("{base}/auth/v1/users/me/auth_factors/otp");
    let verify = format!("{add}/_verify");
    futures::stream::iter(0..users)
        .map(|i| {
            let (client, add, verify) = (client.clone(), add.clone(), verify.clone());
            async move {
                let bearer = token(&format!("u{i}"), &[]);
                add_and_verify(&client, &add, &verify, &bearer).await
            }
        })
        .buffered(64)
        .collect()
        .await
}

/// The wrk script: a random user per request, its current code one time in ten (so a mix of
/// accepted, replayed and wrong codes), and a count of statuses across wrk's threads.
fn wrk_script(users: usize, codes: &[String], bearer: &str) -> String {
    let table: Vec<String> = codes.iter().map(|c| format!("\"{c}\"")).collect();
    format!(
        r#"local users = {users}
local codes = {{{codes}}}
local threads = {{}}
function setup(thread) table.insert(threads, thread) end
function init(args) statuses = {{}} end
request = function()
  local i = math.random(1, users)
  local code = "000000"
  if math.random(1, 10) == 1 then code = codes[i] end
  local path = "/management/v1/users/u" .. (i - 1) .. "/auth_factors/otp/_check"
  return wrk.format("POST", path, {{["Authorization"] = "Bearer {bearer}", ["Content-Type"] = "application/json"}}, '{{"code":"' .. code .. '"}}')
end
response = function(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end
done = function(summary, latency, requests)
  local total = {{}}
  for _, t in ipairs(threads) do
    for status, n in pairs(t:get("statuses")) do total[status] = (total[status] or 0) + n end
  end
  local parts = {{}}
  for status, n in pairs(total) do table.insert(parts, status .. "=" .. n) end
  table.sort(parts)
  io.write("STATUSES " .. table.concat(parts, " ") .. "\n")
  io.write(string.format("LATENCY p50=%.3f p99=%.3f p999=%.3f\n", latency:percentile(50)/1000, latency:percentile(99)/1000, latency:percentile(99.9)/1000))
end
"#,
        codes = table.join(",")
    )
}

struct Run {
    rps: f64,
    p50: f64,
    p99: f64,
    p999: f64,
    statuses: String,
}

fn wrk(port: u16, script: &str, o: &Options) -> Run {
    let dir = helpers::TempDir::new("wrk");
    let path = dir.0.join("load.lua");
    std::fs::write(&path, script).unwrap();
    let out = Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{}", o.connections),
            &format!("-d{}s", o.seconds),
        ])
        .args([
            "-s",
            path.to_str().unwrap(),
            &format!("http://127.0.0.1:{port}"),
        ])
        .output()
        .expect("wrk must be installed (apt-get install wrk)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let field = |line: &str, key: &str| -> f64 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN)
    };
    let latency = text
        .lines()
        .find(|l| l.starts_with("LATENCY"))
        .unwrap_or("");
    Run {
        rps: text
            .lines()
            .find_map(|l| l.strip_prefix("Requests/sec:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(f64::NAN),
        p50: field(latency, "p50="),
        p99: field(latency, "p99="),
        p999: field(latency, "p999="),
        statuses: text
            .lines()
            .find_map(|l| l.strip_prefix("STATUSES "))
            .unwrap_or("?")
            .to_owned(),
    }
}

impl Run {
    /// Whether any request was answered with `status` (statuses read `400=45031 503=2`:
    /// a count may hold the digits of a status, so each pair is read).
    fn answered(&self, status: &str) -> bool {
        self.statuses
            .split_whitespace()
            .any(|pair| pair.split('=').next() == Some(status))
    }

    /// Whether the server failed a request (500, 503): a pass that measures no check.
    fn failed_on_our_side(&self) -> bool {
        self.answered("500") || self.answered("503")
    }
}

/// A tiny xorshift: the load client needs cheap randomness in every task, nothing more.
struct Xorshift(u64);

impl Xorshift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Latencies and status counts of a run of the Rust load client.
fn summarize(
    seconds: u64,
    results: Vec<(Vec<u32>, std::collections::BTreeMap<String, u64>)>,
) -> Run {
    let mut latencies: Vec<u32> = Vec::new();
    let mut statuses = std::collections::BTreeMap::new();
    for (lat, counts) in results {
        latencies.extend(lat);
        for (status, n) in counts {
            *statuses.entry(status).or_insert(0u64) += n;
        }
    }
    latencies.sort_unstable();
    let pick = |q: f64| {
        let index = ((latencies.len() as f64 - 1.0) * q).round() as usize;
        f64::from(latencies.get(index).copied().unwrap_or(0)) / 1000.0
    };
    Run {
        rps: latencies.len() as f64 / seconds as f64,
        p50: pick(0.50),
        p99: pick(0.99),
        p999: pick(0.999),
        statuses: statuses
            .iter()
            .map(|(s, n)| format!("{s}={n}"))
            .collect::<Vec<_>>()
            .join(" "),
    }
}

/// The check mix of the wrk script: a random user, its current code one time in ten.
fn pick(rng: &mut Xorshift, codes: &[String]) -> (usize, String) {
    let user = (rng.next() % codes.len() as u64) as usize;
    let code = if rng.next().is_multiple_of(10) {
        codes[user].clone()
    } else {
        "000000".to_owned()
    };
    (user, code)
}

/// The login check over gRPC (h2c), `connections` tasks over a few shared HTTP/2 channels.
async fn grpc_load(port: u16, codes: &[String], bearer: &str, o: &Options) -> Run {
    use tessera::api::grpc::pb::tessera::otp::v1::CheckOtpRequest;
    use tessera::api::grpc::pb::tessera::otp::v1::otp_check_service_client::OtpCheckServiceClient;
    let mut channels = Vec::new();
    for _ in 0..4 {
        let endpoint =
            tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}")).unwrap();
        channels.push(endpoint.connect().await.unwrap());
    }
    let deadline = Instant::now() + Duration::from_secs(o.seconds);
    let tasks: Vec<_> = (0..o.connections)
        .map(|task| {
            let mut client = OtpCheckServiceClient::new(channels[task % channels.len()].clone());
            let codes = codes.to_vec();
            let authorization: tonic::metadata::MetadataValue<_> =
                format!("Bearer {bearer}").parse().unwrap();
            tokio::spawn(async move {
                let mut rng = Xorshift(0x9E37_79B9_7F4A_7C15 ^ (task as u64 + 1));
                let (mut latencies, mut statuses) = (Vec::new(), std::collections::BTreeMap::new());
                while Instant::now() < deadline {
                    let (user, code) = pick(&mut rng, &codes);
                    let mut request = tonic::Request::new(CheckOtpRequest {
                        user_id: format!("u{user}"),
                        code,
                        ..Default::default()
                    });
                    request
                        .metadata_mut()
                        .insert("authorization", authorization.clone());
                    let started = Instant::now();
                    let status = match client.check_otp(request).await {
                        Ok(_) => "OK".to_owned(),
                        Err(status) => format!("{:?}", status.code()),
                    };
                    latencies.push(started.elapsed().as_micros() as u32);
                    *statuses.entry(status).or_insert(0u64) += 1;
                }
                (latencies, statuses)
            })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }
    summarize(o.seconds, results)
}

/// One request of a mix: the request of `task` for `user` with `code`.
type MakeRequest =
    Arc<dyn Fn(&reqwest::Client, usize, usize, &str) -> reqwest::RequestBuilder + Send + Sync>;

/// tessera's login check over JSON, task `t` on instance `ports[t % ports.len()]`.
fn tessera_check(ports: &[u16], bearer: &str) -> MakeRequest {
    let ports = ports.to_vec();
    let authorization = format!("Bearer {bearer}");
    Arc::new(move |client, task, user, code| {
        let port = ports[task % ports.len()];
        client
            .post(format!(
                "http://127.0.0.1:{port}/management/v1/users/u{user}/auth_factors/otp/_check"
            ))
            .header("authorization", &authorization)
            .header("content-type", "application/json")
            .body(format!("{{\"code\":\"{code}\"}}"))
    })
}

/// The mix over HTTP with the Rust client (reqwest, HTTP/1.1 keep-alive), `o.connections`
/// tasks. Closed loop by default (each task sends as soon as its previous answer came);
/// with `rate`, open loop: requests are scheduled at `rate` per second in all, and latency
/// counts from the scheduled time, so a stall is not hidden by sending less during it.
async fn http_load(
    make: MakeRequest,
    codes: &[String],
    o: &Options,
    seconds: u64,
    rate: Option<f64>,
) -> Run {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(o.connections)
        .build()
        .unwrap();
    let start = Instant::now();
    let deadline = start + Duration::from_secs(seconds);
    let codes = Arc::new(codes.to_vec());
    let tasks: Vec<_> = (0..o.connections)
        .map(|task| {
            let (client, codes, make) = (client.clone(), codes.clone(), make.clone());
            let interval = rate.map(|r| Duration::from_secs_f64(o.connections as f64 / r));
            let stagger =
                interval.map_or(Duration::ZERO, |i| i * task as u32 / o.connections as u32);
            tokio::spawn(async move {
                let mut rng = Xorshift(0x2545_F491_4F6C_DD1D ^ (task as u64 + 1));
                let (mut latencies, mut statuses) = (Vec::new(), std::collections::BTreeMap::new());
                // Spread the tasks' schedules over one interval.
                let mut scheduled = start + stagger;
                while Instant::now() < deadline {
                    if interval.is_some() {
                        tokio::time::sleep_until(scheduled.into()).await;
                    } else {
                        scheduled = Instant::now();
                    }
                    let (user, code) = pick(&mut rng, &codes);
                    let status = match make(&client, task, user, &code).send().await {
                        Ok(response) => {
                            let status = response.status().as_u16().to_string();
                            let _ = response.bytes().await;
                            status
                        }
                        Err(_) => "error".to_owned(),
                    };
                    latencies.push(scheduled.elapsed().as_micros() as u32);
                    *statuses.entry(status).or_insert(0u64) += 1;
                    if let Some(interval) = interval {
                        scheduled += interval;
                    }
                }
                (latencies, statuses)
            })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }
    summarize(seconds, results)
}

/// Each enrolled user's factor id (`u<n>` at index n), as the floor must pass it.
async fn factor_ids(connection: &mut redis::aio::ConnectionManager, users: usize) -> Vec<Vec<u8>> {
    let mut ids = Vec::with_capacity(users);
    for user in 0..users {
        let id: Vec<u8> = redis::cmd("HGET")
            .arg(format!("tessera:{{{ORG}:u{user}}}"))
            .arg("i")
            .query_async(connection)
            .await
            .unwrap();
        ids.push(id);
    }
    ids
}

/// The check's body, as the floors parse it.
#[derive(serde::Deserialize)]
struct CheckBody {
    code: String,
}

/// The floors' one script call: tessera's own attempt script for the user's factor `id` (a
/// wrong code: read the hash, count a failure, write the event), answered as tessera
/// answers: 400 for a counted failure, 500 for any other reply (a stale id, a late
/// deadline: no work done), 503 when Redis failed.
async fn floor_attempt(
    connection: &mut redis::aio::ConnectionManager,
    script: &redis::Script,
    org: &str,
    user: &str,
    id: &[u8],
    code: &str,
) -> HttpResponse {
    let now = chrono::Utc::now().timestamp_micros();
    // The deadline in Redis's clock, which is this host's.
    let deadline = (now + 1_000_000).to_string();
    let step = if code.is_empty() { "0" } else { "-1" };
    let hash = format!("tessera:{{{org}:{user}}}");
    // The floor's events go to a list and a feed of their own: the same work (on one server
    // the script appends them to the organization's feed, as tessera's does), but not in the
    // list and the feed tessera reads, whose marks would otherwise bring the floor's events
    // to tessera's feed on tessera's time at tessera's next check of the user.
    let reply: redis::RedisResult<Vec<redis::Value>> = script
        .key(&hash)
        .key(format!("{hash}:floor-events"))
        .key(format!("tessera:audit:{{{org}}}:floor"))
        .key(format!("tessera:audit:{{{org}}}:floor:copied"))
        .arg(deadline)
        .arg(audit_stamp(org, user, now))
        .arg(id)
        .arg("2")
        .arg(step)
        .arg(now.to_string())
        .arg("0")
        .arg("0")
        .arg("0")
        .invoke_async(connection)
        .await;
    let counted = matches!(
        reply.as_deref(),
        Ok([redis::Value::BulkString(status), ..]) if status == b"invalid"
    );
    match reply {
        Ok(_) if counted => HttpResponse::BadRequest().json(json!({"code": 3})),
        Ok(_) => HttpResponse::InternalServerError().finish(),
        Err(_) => HttpResponse::ServiceUnavailable().finish(),
    }
}

/// The floor: parse the same body, one EVALSHA of tessera's own attempt script (a wrong
/// code: read the hash, count a failure) over one shared ConnectionManager. Nothing else.
fn start_floor(redis_url: String, port: u16, users: usize) {
    start_floor_with(redis_url, port, users, ATTEMPT_SCRIPT);
}

fn start_floor_with(redis_url: String, port: u16, users: usize, source: &'static str) {
    // Named, so that `--paced` counts its CPU apart from the load client's.
    let floor = std::thread::Builder::new().name("floor".to_owned());
    floor
        .spawn(move || {
            actix_rt::System::new().block_on(async move {
                let client = redis::Client::open(redis_url).unwrap();
                let mut connection = client.get_connection_manager().await.unwrap();
                let ids = web::Data::new(factor_ids(&mut connection, users).await);
                let script = web::Data::new(redis::Script::new(source));
                HttpServer::new(move || {
                    App::new()
                        .app_data(web::Data::new(connection.clone()))
                        .app_data(script.clone())
                        .app_data(ids.clone())
                        .route(
                            "/management/v1/users/{user}/auth_factors/otp/_check",
                            web::post().to(
                                |path: web::Path<String>,
                                 body: web::Json<CheckBody>,
                                 connection: web::Data<redis::aio::ConnectionManager>,
                                 script: web::Data<redis::Script>,
                                 ids: web::Data<Vec<Vec<u8>>>| async move {
                                    let mut connection = (**connection).clone();
                                    let user = path.into_inner();
                                    let index: usize =
                                        user.trim_start_matches('u').parse().unwrap_or(0);
                                    let id = ids.get(index).map_or(&[][..], Vec::as_slice);
                                    floor_attempt(
                                        &mut connection,
                                        &script,
                                        ORG,
                                        &user,
                                        id,
                                        &body.code,
                                    )
                                    .await
                                },
                            ),
                        )
                })
                .workers(2)
                .bind(("127.0.0.1", port))
                .unwrap()
                .run()
                .await
                .unwrap();
            });
        })
        .unwrap();
}

/// A release `tessera serve` on its own ports: limits and lockout off, so that the load is
/// not refused by design.
struct Instance {
    process: Killed,
    port: u16,
    grpc_port: u16,
}

async fn start_tessera(redis_url: &str, extra_env: &[(&str, &str)]) -> Instance {
    start_tessera_as("none", redis_url, extra_env, Stdio::inherit()).await
}

/// `tessera serve --env <environment>` (`production`: config/production.toml as shipped, with
/// its JSON logs at info), its logs to `stdout`.
async fn start_tessera_as(
    environment: &str,
    redis_url: &str,
    extra_env: &[(&str, &str)],
    stdout: Stdio,
) -> Instance {
    let port = free_port();
    let grpc_port = free_port();
    let process = Killed(
        Command::new(env!("CARGO_BIN_EXE_tessera"))
            .args(["serve", "--env", environment])
            .stdout(stdout)
            .env("TESSERA__HTTP__ADDR", format!("127.0.0.1:{port}"))
            .env("TESSERA__GRPC__ADDR", format!("127.0.0.1:{grpc_port}"))
            .env("TESSERA__STORE__KIND", "redis")
            .env("TESSERA__REDIS__URL", redis_url)
            .env("TESSERA__AUTH__JWKS_FILE", fixture("jwks.json"))
            .env("TESSERA__AUTH__ISSUER", ISSUER)
            .env("TESSERA__AUTH__AUDIENCE", AUDIENCE)
            .env(
                "TESSERA__SEAL__KEYS",
                "bench:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
            )
            .env("TESSERA__LIMITS__PER_USER_PER_MINUTE", "0")
            .env("TESSERA__LIMITS__PER_ORG_PER_SECOND", "0")
            .env("TESSERA__LIMITS__PER_ADDRESS_PER_SECOND", "0")
            .env("TESSERA__LOCKOUT__MAX_OTP_ATTEMPTS", "0")
            // The load replays codes on purpose; a warning per replay would be measured too
            // (the production comparison sets the level back to production's).
            .env("TESSERA__LOG__LEVEL", "error")
            .envs(extra_env.iter().copied())
            .env_remove("RUST_LOG")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .spawn()
            .expect("the tessera binary"),
    );
    wait_ready(&format!("http://127.0.0.1:{port}/debug/ready")).await;
    Instance {
        process,
        port,
        grpc_port,
    }
}

/// Each user's code of the next step (accepted with skew 1 from now until it is a step old;
/// enrollment spent the current one): made afresh before each phase, so a long run keeps
/// its mix of accepted, replayed and wrong codes.
fn current_codes(secrets: &[Vec<u8>]) -> Vec<String> {
    let params = TotpParams::default();
    let step = params.step_at(chrono::Utc::now().timestamp() as u64) + 1;
    secrets
        .iter()
        .map(|secret| params.code_for_step(secret, step).unwrap())
        .collect()
}

fn decode_all(secrets: &[String]) -> Vec<Vec<u8>> {
    secrets
        .iter()
        .map(|s| data_encoding::BASE32_NOPAD.decode(s.as_bytes()).unwrap())
        .collect()
}

/// Redis's own limit for the check's script: redis-benchmark running EVALSHA of attempt.lua
/// (a wrong code on one enrolled user: read the hash, count a failure, write the event and
/// append it to the organization's feed) with the same concurrency, two client threads. The
/// user is a copy of u0 under a printable factor id: the real ones are random bytes, which a
/// command line cannot carry.
fn redis_benchmark(redis: &RedisServer, o: &Options) -> f64 {
    let key = format!("tessera:{{{ORG}:redis-benchmark}}");
    let id = "redis-benchmark0";
    redis.cli(&["COPY", &format!("tessera:{{{ORG}:u0}}"), &key, "REPLACE"]);
    redis.cli(&["HSET", &key, "i", id]);
    let sha = redis.cli(&["SCRIPT", "LOAD", ATTEMPT_SCRIPT]);
    let sha = sha.expect("SCRIPT LOAD answers");
    let sha = sha.trim();
    let now = chrono::Utc::now().timestamp_micros();
    // A deadline an hour ahead: the run takes seconds.
    let deadline = (now + 3_600_000_000).to_string();
    let stamp = audit_stamp(ORG, "redis-benchmark", now);
    let now = now.to_string();
    let events = format!("{key}:events");
    let feed = format!("tessera:audit:{{{ORG}}}");
    let copied = format!("{feed}:copied");
    let out = Command::new("redis-benchmark")
        .args([
            "-p",
            &redis.port.to_string(),
            "-c",
            &o.connections.to_string(),
        ])
        .args(["-n", "400000", "--threads", "2", "-q"])
        .args([
            "EVALSHA", sha, "4", &key, &events, &feed, &copied, &deadline, &stamp, id, "2", "-1",
            &now, "0", "0", "0",
        ])
        .output()
        .expect("redis-benchmark (Debian: redis-tools)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    // "EVALSHA ...: 123456.78 requests per second, p50=0.2 msec"; -q rewrites the line with \r.
    text.rsplit('\r')
        .chain(text.lines())
        .find_map(|part| {
            let (_, rest) = part.split_once(": ")?;
            rest.split_whitespace().next()?.parse::<f64>().ok()
        })
        .unwrap_or(f64::NAN)
}

/// A process's CPU time so far (user + system, from /proc), in microseconds.
fn cpu_micros(pid: u32) -> u64 {
    stat_cpu_micros(&std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap())
}

/// User + system time, µs, of a `/proc/<pid>/stat` or `/proc/<pid>/task/<tid>/stat` line.
fn stat_cpu_micros(stat: &str) -> u64 {
    // After the command's name in parentheses: utime and stime are the 12th and 13th fields.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let ticks: u64 = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|field| field.parse::<u64>().unwrap())
        .sum();
    // Clock ticks of 10 ms (getconf CLK_TCK: 100 on Linux).
    ticks * 10_000
}

/// One wrk pass, with the CPU per answered check of each process in `pids`.
fn wrk_with_cpu(port: u16, script: &str, o: &Options, pids: &[u32]) -> (Run, Vec<f64>) {
    let before: Vec<u64> = pids.iter().map(|pid| cpu_micros(*pid)).collect();
    let run = wrk(port, script, o);
    let checks = run.rps * o.seconds as f64;
    let per_check = pids
        .iter()
        .zip(before)
        .map(|(pid, before)| (cpu_micros(*pid) - before) as f64 / checks)
        .collect();
    (run, per_check)
}

/// `--production`: the login check as deployed, from one run: tessera with
/// config/production.toml as shipped (JSON logs at info, to a file; metrics on), the same
/// with logs at warn, and the floor (actix-web, the same body, one EVALSHA of the same
/// attempt script with its audit event), alternating three times, with CPU per check of the
/// HTTP process and of redis-server. Limits and lockout off, wrong codes: nothing refused.
async fn production(o: &Options, redis: &RedisServer, script: &str) {
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let logs = helpers::TempDir::new("production-logs");
    let log_file = |name: &str| Stdio::from(std::fs::File::create(logs.0.join(name)).unwrap());
    let info = start_tessera_as(
        "production",
        &url,
        &[("TESSERA__LOG__LEVEL", "info")],
        log_file("info.log"),
    )
    .await;
    let warn = start_tessera_as(
        "production",
        &url,
        &[("TESSERA__LOG__LEVEL", "warn")],
        log_file("warn.log"),
    )
    .await;
    let floor_port = free_port();
    start_floor(url, floor_port, o.users);
    std::thread::sleep(Duration::from_millis(500));
    let me = std::process::id();
    let targets = [
        (
            "tessera, production settings (info)",
            info.port,
            info.process.0.id(),
        ),
        (
            "tessera, production settings, logs at warn",
            warn.port,
            warn.process.0.id(),
        ),
        ("floor", floor_port, me),
    ];
    let means = compare(o, redis, script, &targets);
    let (info_rps, warn_rps, floor_rps) = (means[0].0, means[1].0, means[2].0);
    println!(
        "\nproduction / floor = {:.0}%; logs at warn / floor = {:.0}%; info vs warn: {:+.1}%",
        100.0 * info_rps / floor_rps,
        100.0 * warn_rps / floor_rps,
        100.0 * (info_rps - warn_rps) / warn_rps
    );
    let written = std::fs::metadata(logs.0.join("info.log")).map_or(0, |m| m.len());
    println!("the info run's log: {written} bytes");
}

/// Passes of wrk against each target in turn, three times, with the CPU per check of the
/// target's process and of redis-server; prints each pass and the means, returns the means
/// (req/s, HTTP process µs/check, Redis µs/check).
fn compare(
    o: &Options,
    redis: &RedisServer,
    script: &str,
    targets: &[(&str, u16, u32)],
) -> Vec<(f64, f64, f64)> {
    let mut sums = vec![(0.0, 0.0, 0.0); targets.len()];
    println!(
        "| pass | what | req/s | p99 ms | HTTP process CPU µs/check | Redis CPU µs/check | statuses |"
    );
    println!("|---|---|---|---|---|---|---|");
    for pass in 1..=3 {
        for (index, (name, port, pid)) in targets.iter().enumerate() {
            let (run, cpu) = wrk_with_cpu(*port, script, o, &[*pid, redis.pid()]);
            assert!(!run.failed_on_our_side(), "{name}: {}", run.statuses);
            println!(
                "| {pass} | {name} | {:.0} | {:.2} | {:.1} | {:.1} | {} |",
                run.rps, run.p99, cpu[0], cpu[1], run.statuses
            );
            sums[index].0 += run.rps / 3.0;
            sums[index].1 += cpu[0] / 3.0;
            sums[index].2 += cpu[1] / 3.0;
        }
    }
    println!("\n| mean of 3 | req/s | HTTP process CPU µs/check | Redis CPU µs/check |");
    println!("|---|---|---|---|");
    for ((name, ..), (rps, http_cpu, redis_cpu)) in targets.iter().zip(&sums) {
        println!("| {name} | {rps:.0} | {http_cpu:.1} | {redis_cpu:.1} |");
    }
    sums
}

/// `--audit-cost`: what writing the check's event costs, from one run: tessera (which writes
/// it), the floor with the same script, and the floor without the event, alternating three
/// times; CPU per check of the HTTP process (tessera, or this one for the floors, which run
/// on its threads) and of redis-server.
fn audit_cost(o: &Options, redis: &RedisServer, tessera: (u16, u32), script: &str) {
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let without_port = free_port();
    start_floor_with(
        url.clone(),
        without_port,
        o.users,
        ATTEMPT_SCRIPT_WITHOUT_EVENTS,
    );
    let with_port = free_port();
    start_floor(url, with_port, o.users);
    std::thread::sleep(Duration::from_millis(500));
    let (tessera_port, tessera_pid) = tessera;
    let me = std::process::id();
    let targets = [
        ("tessera (event written)", tessera_port, tessera_pid),
        ("floor, event written", with_port, me),
        ("floor, no event", without_port, me),
    ];
    compare(o, redis, script, &targets);
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

async fn gauge(port: u16, name: &str) -> f64 {
    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(f64::NAN)
}

/// The registry's memory: `orgs` organizations touched once each (ListMyAuthFactors, which
/// starts the organization's actor) and then left idle past `idle_evict_secs`.
async fn idle_organizations(redis_url: &str, orgs: usize) -> (u64, u64, f64, u64, f64) {
    // Longer than touching them all takes, so that all are alive at once before eviction.
    let instance = start_tessera(redis_url, &[("TESSERA__TENANTS__IDLE_EVICT_SECS", "45")]).await;
    let pid = instance.process.0.id();
    let base = rss_kib(pid);
    let client = reqwest::Client::new();
    let port = instance.port;
    futures::stream::iter(0..orgs)
        .map(|n| {
            let client = client.clone();
            async move {
                let bearer = token_in(&format!("org-{n}"), "someone", &[]);
                let response = client
                    .post(format!(
                        "http://127.0.0.1:{port}/auth/v1/users/me/auth_factors/_search"
                    ))
                    .bearer_auth(bearer)
                    .json(&json!({}))
                    .send()
                    .await
                    .unwrap();
                assert!(response.status().is_success(), "{}", response.status());
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<()>>()
        .await;
    let touched = rss_kib(pid);
    let live = gauge(port, "tessera_org_actors").await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    let idle = rss_kib(pid);
    let left = gauge(port, "tessera_org_actors").await;
    (base, touched, live, idle, left)
}

/// privacyIDEA (benches/peer/privacyidea.sh: SQLite, gunicorn with 2 workers) answering
/// `POST /validate/check` with the same mix and concurrency: `tokens` TOTP tokens whose keys
/// are the numbers 1..=tokens.
async fn privacyidea(tokens: usize, o: &Options, seconds: u64) -> Option<Run> {
    use std::io::BufRead;
    let port = free_port();
    let work = std::env::temp_dir().join(format!("tessera-privacyidea-{port}"));
    let mut child = Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/benches/peer/privacyidea.sh"
    ))
    .args([
        &port.to_string(),
        &tokens.to_string(),
        work.to_str().unwrap(),
    ])
    .stdout(Stdio::piped())
    .process_group(0)
    .spawn()
    .ok()?;
    let stdout = child.stdout.take().unwrap();
    let group = child.id();
    let _peer = Killed(child);
    let ready = std::io::BufReader::new(stdout)
        .lines()
        .any(|line| line.is_ok_and(|l| l == "READY"));
    if !ready {
        return None;
    }
    // The script's keys: 20 bytes, big-endian n (printf %040x).
    let secrets: Vec<Vec<u8>> = (1..=tokens as u128)
        .map(|n| {
            let mut key = vec![0u8; 20];
            key[4..].copy_from_slice(&n.to_be_bytes());
            key
        })
        .collect();
    let codes = current_codes(&secrets);
    let check: MakeRequest = Arc::new(move |client, _task, user, code| {
        client
            .post(format!("http://127.0.0.1:{port}/validate/check"))
            .form(&[
                ("serial", format!("PI{user:05}")),
                ("pass", code.to_owned()),
            ])
    });
    let run = http_load(check, &codes, o, seconds, None).await;
    // gunicorn's workers are the script's grandchildren: end the whole group.
    let _ = Command::new("kill")
        .args(["--", &format!("-{group}")])
        .status();
    let _ = std::fs::remove_dir_all(&work);
    Some(run)
}

fn row(name: &str, run: &Run) {
    println!(
        "| {name} | {:.0} | {:.2} | {:.2} | {:.2} | {} |",
        run.rps, run.p50, run.p99, run.p999, run.statuses
    );
}

#[tokio::main]
async fn main() {
    // `cargo test --all-targets` runs this binary too (to prove it builds); only `cargo bench`
    // passes --bench, and only then is there load to make.
    if !std::env::args().any(|a| a == "--bench") {
        println!("load: not run under cargo test; run it with `cargo bench --bench load`");
        return;
    }
    let o = options();
    if o.soak {
        soak::run(&o).await;
        return;
    }
    if o.cold {
        cold::run(&o).await;
        return;
    }
    let redis = RedisServer::start();
    let redis_port = redis.port;
    let redis_url = format!("redis://127.0.0.1:{redis_port}");
    let first = start_tessera(&redis_url, &[]).await;
    let base = format!("http://127.0.0.1:{}", first.port);

    let before = used_memory(&redis);
    let started = Instant::now();
    let secrets = decode_all(&enroll(&base, o.users).await);
    let enroll_secs = started.elapsed().as_secs_f64();
    let per_factor = (used_memory(&redis).saturating_sub(before)) as f64 / o.users as f64;
    let bearer = token("login-page", &["otp.check"]);

    if o.production {
        // Wrong codes only: the work the floor does (read the hash, count a failure, write
        // the event). With the usual mix, whichever target ran first spent the accepted
        // codes, and every later one logged each replay at warn: work the floor never does.
        let wrong = vec!["000000".to_owned(); o.users];
        let script = wrk_script(o.users, &wrong, &bearer);
        production(&o, &redis, &script).await;
        return;
    }
    if o.paced {
        paced::run(&o, &redis, o.rate as f64).await;
        return;
    }
    if o.audit_cost {
        let script = wrk_script(o.users, &current_codes(&secrets), &bearer);
        audit_cost(&o, &redis, (first.port, first.process.0.id()), &script);
        return;
    }
    let floor_port = free_port();
    start_floor(redis_url.clone(), floor_port, o.users);
    std::thread::sleep(Duration::from_millis(500));
    // Alternate, so that drift on a shared machine (frequency, neighbours) hits both alike.
    let mut tessera_runs = Vec::new();
    let mut floor_runs = Vec::new();
    for _ in 0..2 {
        let script = wrk_script(o.users, &current_codes(&secrets), &bearer);
        tessera_runs.push(wrk(first.port, &script, &o));
        floor_runs.push(wrk(floor_port, &script, &o));
    }
    // A floor that answers errors measures nothing (it did, while its script lacked the
    // prelude): stop rather than print a ratio against it.
    for run in &floor_runs {
        assert!(
            !run.answered("503"),
            "the floor failed its requests: {}",
            run.statuses
        );
    }
    let mean = |runs: &[Run]| runs.iter().map(|r| r.rps).sum::<f64>() / runs.len() as f64;
    let (tessera_rps, floor_rps) = (mean(&tessera_runs), mean(&floor_runs));
    if o.quick {
        for (tessera, floor) in tessera_runs.iter().zip(&floor_runs) {
            println!(
                "tessera {:.0}/s ({}), floor {:.0}/s ({})",
                tessera.rps, tessera.statuses, floor.rps, floor.statuses
            );
        }
        println!("tessera / floor = {:.0}%", 100.0 * tessera_rps / floor_rps);
        return;
    }

    let codes = current_codes(&secrets);
    let json_rust = http_load(
        tessera_check(&[first.port], &bearer),
        &codes,
        &o,
        o.seconds,
        None,
    )
    .await;
    let grpc_rust = grpc_load(first.grpc_port, &codes, &bearer, &o).await;
    // p99 at half of the peak (wrk's, the higher), open loop.
    let half_rate = tessera_rps / 2.0;
    let half = http_load(
        tessera_check(&[first.port], &bearer),
        &current_codes(&secrets),
        &o,
        o.seconds,
        Some(half_rate),
    )
    .await;

    // Scaling on one store: more processes on the same two cores.
    let second = start_tessera(&redis_url, &[]).await;
    let third = start_tessera(&redis_url, &[]).await;
    let mut scaling = Vec::new();
    for ports in [
        vec![first.port],
        vec![first.port, second.port],
        vec![first.port, second.port, third.port],
    ] {
        let codes = current_codes(&secrets);
        scaling.push(http_load(tessera_check(&ports, &bearer), &codes, &o, o.seconds, None).await);
    }
    drop((second, third));

    // Token verification: the same load with the verified-token cache off.
    let uncached = start_tessera(&redis_url, &[("TESSERA__AUTH__TOKEN_CACHE_CAPACITY", "0")]).await;
    let no_cache = http_load(
        tessera_check(&[uncached.port], &bearer),
        &current_codes(&secrets),
        &o,
        o.seconds,
        None,
    )
    .await;
    drop(uncached);

    let redis_limit = redis_benchmark(&redis, &o);

    // One instance on a three-master cluster (enrolled afresh: a new store).
    let cluster = RedisCluster::start(3, 0);
    let on_cluster = start_tessera(&cluster.seeds(), &[("TESSERA__REDIS__MODE", "cluster")]).await;
    let cluster_secrets =
        decode_all(&enroll(&format!("http://127.0.0.1:{}", on_cluster.port), o.users).await);
    let cluster_run = http_load(
        tessera_check(&[on_cluster.port], &bearer),
        &current_codes(&cluster_secrets),
        &o,
        o.seconds,
        None,
    )
    .await;
    drop((on_cluster, cluster));

    let (rss_base, rss_touched, live, rss_idle, left) =
        idle_organizations(&redis_url, o.idle_orgs).await;

    let peer_seconds = o.seconds.max(20);
    let peer = if o.peer {
        privacyidea(o.peer_tokens, &o, peer_seconds).await
    } else {
        None
    };

    println!(
        "\nusers {} enrolled in {enroll_secs:.1} s; Redis memory per factor: {per_factor:.0} bytes",
        o.users
    );
    println!(
        "{} callers, {} s per row, login check, 1 in 10 requests with the user's current code\n",
        o.connections, o.seconds
    );
    println!("| server (client) | requests/s | p50 ms | p99 ms | p99.9 ms | statuses |");
    println!("|---|---|---|---|---|---|");
    row("tessera JSON (wrk), pass 1", &tessera_runs[0]);
    row("floor: actix + 1 EVALSHA (wrk), pass 1", &floor_runs[0]);
    row("tessera JSON (wrk), pass 2", &tessera_runs[1]);
    row("floor: actix + 1 EVALSHA (wrk), pass 2", &floor_runs[1]);
    row("tessera JSON (Rust client, reqwest)", &json_rust);
    row("tessera gRPC (Rust client, tonic)", &grpc_rust);
    row(
        &format!("tessera JSON at {half_rate:.0}/s (half of peak, open loop)"),
        &half,
    );
    for (n, run) in scaling.iter().enumerate() {
        row(
            &format!("{} instance(s), one redis-server (Rust client)", n + 1),
            run,
        );
    }
    row("1 instance, token cache off (Rust client)", &no_cache);
    row(
        "1 instance, Redis Cluster of 3 masters (Rust client)",
        &cluster_run,
    );
    match &peer {
        Some(run) => row(
            &format!(
                "privacyIDEA (SQLite, gunicorn 2 workers, {} tokens, {peer_seconds} s)",
                o.peer_tokens
            ),
            run,
        ),
        None => println!("| privacyIDEA | not run | | | | |"),
    }
    println!(
        "\nredis-benchmark, EVALSHA attempt.lua, -c {}: {redis_limit:.0} requests/s",
        o.connections
    );
    println!(
        "tessera / floor = {:.0}% (wrk, mean of the passes); gRPC / JSON = {:.0}% (same Rust client)",
        100.0 * tessera_rps / floor_rps,
        100.0 * grpc_rust.rps / json_rust.rps
    );
    println!(
        "token cache off / on = {:.0}%; cluster / standalone = {:.0}% (1 instance, Rust client)",
        100.0 * no_cache.rps / scaling[0].rps,
        100.0 * cluster_run.rps / scaling[0].rps
    );
    if let Some(run) = &peer {
        println!(
            "tessera (wrk) / privacyIDEA = {:.0}x",
            tessera_rps / run.rps
        );
    }
    println!(
        "{} organizations touched once: RSS {:.1} MiB -> {:.1} MiB ({live} actors, {:.0} bytes each); \
         idle past eviction: {:.1} MiB ({left} actors)",
        o.idle_orgs,
        rss_base as f64 / 1024.0,
        rss_touched as f64 / 1024.0,
        (rss_touched.saturating_sub(rss_base) * 1024) as f64 / o.idle_orgs as f64,
        rss_idle as f64 / 1024.0,
    );
}
