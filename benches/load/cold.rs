//! `--cold`: the login check on a cold cache, at a million users.
//!
//! 1. Seeds `--cold-users` users (1,000,000) spread over `--orgs` organizations (1,000)
//!    through tessera's own v2 calls (RegisterTOTP, then VerifyTOTPRegistration), as an
//!    administrator of each organization. Ids look like ZITADEL's: 18 digits.
//! 2. Redis memory: the whole delta per user; then, with every user's audit list and every
//!    organization's feed unlinked, the factors alone; then recovery codes (the default
//!    count) for 10,000 users, apart.
//! 3. The check: a fresh `tessera serve` with production settings (JSON logs at info, to a
//!    file; metrics on; limits and lockout off so that nothing is refused) against a floor
//!    doing the same two round trips (HGETALL, then EVALSHA of tessera's attempt script),
//!    alternating twice with wrk. Every pass takes its own quarter of the users and walks it
//!    in order, so that every check is for a user never checked before, by either; the
//!    misses are tessera's own metric.
//! 4. tessera's memory: a fresh instance checks every user once (the factor cache at its
//!    default, 50,000 per organization), then another with the cache at 100.

use std::collections::HashMap;

use super::*;

/// An organization id like ZITADEL's (18 digits).
fn org_id(org: usize) -> String {
    format!("3{org:017}")
}

/// The user with index `user` (18 digits), and its organization: users are dealt to the
/// organizations in turn.
fn user_of(user: usize, orgs: usize) -> (String, usize) {
    (format!("2{user:017}"), user % orgs)
}

/// Each organization's token for `user` holding `role` there.
fn tokens(orgs: usize, user: &str, role: &str) -> Vec<String> {
    (0..orgs)
        .map(|org| token_in(&org_id(org), user, &[role]))
        .collect()
}

/// Enrolls and verifies `users` users through the v2 API, 128 at a time, printing progress.
async fn seed(port: u16, users: usize, orgs: usize) {
    let admins = Arc::new(tokens(orgs, "seeder", "otp.admin"));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(128)
        .build()
        .unwrap();
    let started = Instant::now();
    let mut done = 0usize;
    let mut stream = futures::stream::iter(0..users)
        .map(|index| {
            let (client, admins) = (client.clone(), admins.clone());
            async move {
                let (user, org) = user_of(index, orgs);
                let add = format!("http://127.0.0.1:{port}/v2/users/{user}/totp");
                add_and_verify(&client, &add, &format!("{add}/verify"), &admins[org]).await;
            }
        })
        .buffer_unordered(128);
    while stream.next().await.is_some() {
        done += 1;
        if done.is_multiple_of(100_000) {
            println!(
                "seeded {done} users in {:.0} s",
                started.elapsed().as_secs_f64()
            );
        }
    }
}

/// Unlinks every key matching one of `patterns`; waits until Redis has freed them, so that
/// `used_memory` counts what is left. Returns how many keys went.
async fn unlink_all(redis: &RedisServer, patterns: &[&str]) -> u64 {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let mut unlinked = 0;
    for pattern in patterns {
        let mut cursor = 0u64;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(10_000)
                .query_async(&mut connection)
                .await
                .unwrap();
            if !keys.is_empty() {
                let n: u64 = redis::cmd("UNLINK")
                    .arg(&keys)
                    .query_async(&mut connection)
                    .await
                    .unwrap();
                unlinked += n;
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
    }
    while memory_field(redis, "lazyfree_pending_objects") > 0 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    unlinked
}

/// One user's hash as Redis holds it: `MEMORY USAGE`, its encoding, and each field's name
/// with its value's length.
async fn record_layout(redis: &RedisServer, key: &str) -> String {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let fields: Vec<(String, Vec<u8>)> = redis::cmd("HGETALL")
        .arg(key)
        .query_async(&mut connection)
        .await
        .unwrap();
    let usage = redis.cli(&["MEMORY", "USAGE", key]).unwrap_or_default();
    let encoding = redis.cli(&["OBJECT", "ENCODING", key]).unwrap_or_default();
    let layout: Vec<String> = fields
        .iter()
        .map(|(name, value)| format!("{name}:{}", value.len()))
        .collect();
    format!(
        "MEMORY USAGE {} bytes, {}, fields (name:bytes) {}",
        usage.trim(),
        encoding.trim(),
        layout.join(" ")
    )
}

/// The keys of the audit trail: each user's list of events and each organization's feed
/// (with its record of what it copied).
const AUDIT_KEYS: [&str; 2] = ["tessera:{*}:events", "tessera:audit:*"];

/// Recovery codes at the organization's default count for users `range`, as an
/// administrator.
async fn generate_codes(port: u16, range: std::ops::Range<usize>, orgs: usize) {
    let admins = Arc::new(tokens(orgs, "seeder", "otp.admin"));
    let client = reqwest::Client::new();
    futures::stream::iter(range)
        .map(|index| {
            let (client, admins) = (client.clone(), admins.clone());
            async move {
                let (user, org) = user_of(index, orgs);
                let generated = client
                    .post(format!(
                        "http://127.0.0.1:{port}/v2/users/{user}/recovery_codes"
                    ))
                    .bearer_auth(&admins[org])
                    .json(&json!({}))
                    .send()
                    .await
                    .unwrap();
                assert!(generated.status().is_success(), "{}", generated.status());
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<()>>()
        .await;
}

/// The wrk script of one pass: its users `first..last` in order, each once (two wrk threads
/// take every other one), a wrong code, the organization's own `otp.check` token and its id
/// in `x-zitadel-orgid`. Counts statuses, and how often a thread ran out of users (`wraps`:
/// then checks repeat, and the pass is not cold).
fn cold_script(first: usize, last: usize, orgs: usize, bearers: &[String]) -> String {
    let table: Vec<String> = bearers.iter().map(|b| format!("\"{b}\"")).collect();
    format!(
        r#"local first, last, orgs = {first}, {last}, {orgs}
local tokens = {{{tokens}}}
local threads = {{}}
function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end
function init(args)
  statuses = {{}}
  wraps = 0
  nextuser = first + id
end
request = function()
  local i = nextuser
  nextuser = nextuser + 2
  if nextuser >= last then
    nextuser = first + id
    wraps = wraps + 1
  end
  local org = i % orgs
  local path = "/management/v1/users/2" .. string.format("%017d", i) .. "/auth_factors/otp/_check"
  return wrk.format("POST", path, {{["Authorization"] = "Bearer " .. tokens[org + 1], ["Content-Type"] = "application/json", ["x-zitadel-orgid"] = "3" .. string.format("%017d", org)}}, '{{"code":"000000"}}')
end
response = function(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end
done = function(summary, latency, requests)
  local total = {{}}
  local wrapped = 0
  for _, t in ipairs(threads) do
    for status, n in pairs(t:get("statuses")) do total[status] = (total[status] or 0) + n end
    wrapped = wrapped + t:get("wraps")
  end
  local parts = {{}}
  for status, n in pairs(total) do table.insert(parts, status .. "=" .. n) end
  table.sort(parts)
  table.insert(parts, "wraps=" .. wrapped)
  io.write("STATUSES " .. table.concat(parts, " ") .. "\n")
  io.write(string.format("LATENCY p50=%.3f p99=%.3f p999=%.3f\n", latency:percentile(50)/1000, latency:percentile(99)/1000, latency:percentile(99.9)/1000))
end
"#,
        tokens = table.join(",")
    )
}

/// The cold floor: the same request, the organization from `x-zitadel-orgid`; HGETALL of
/// the user's hash for its factor id, then tessera's attempt script (`floor_attempt`). Two
/// round trips, nothing else.
fn start_cold_floor(redis_url: String, port: u16) {
    std::thread::spawn(move || {
        actix_rt::System::new().block_on(async move {
            let client = redis::Client::open(redis_url).unwrap();
            let connection = client.get_connection_manager().await.unwrap();
            let script = web::Data::new(redis::Script::new(ATTEMPT_SCRIPT));
            HttpServer::new(move || {
                App::new()
                    .app_data(web::Data::new(connection.clone()))
                    .app_data(script.clone())
                    .route(
                        "/management/v1/users/{user}/auth_factors/otp/_check",
                        web::post().to(
                            |request: actix_web::HttpRequest,
                             path: web::Path<String>,
                             body: web::Json<CheckBody>,
                             connection: web::Data<redis::aio::ConnectionManager>,
                             script: web::Data<redis::Script>| async move {
                                let mut connection = (**connection).clone();
                                let user = path.into_inner();
                                let org = request
                                    .headers()
                                    .get("x-zitadel-orgid")
                                    .and_then(|v| v.to_str().ok())
                                    .unwrap_or_default()
                                    .to_owned();
                                let hash: redis::RedisResult<HashMap<String, Vec<u8>>> =
                                    redis::cmd("HGETALL")
                                        .arg(format!("tessera:{{{org}:{user}}}"))
                                        .query_async(&mut connection)
                                        .await;
                                let Ok(hash) = hash else {
                                    return HttpResponse::ServiceUnavailable().finish();
                                };
                                let Some(id) = hash.get("i") else {
                                    return HttpResponse::NotFound().finish();
                                };
                                floor_attempt(&mut connection, &script, &org, &user, id, &body.code)
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
    });
}

/// Checks every user once with the Rust client, 64 at a time; returns the statuses.
async fn sweep(port: u16, users: usize, orgs: usize, bearers: &[String]) -> String {
    let bearers = Arc::new(bearers.to_vec());
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .unwrap();
    let statuses: Vec<u16> = futures::stream::iter(0..users)
        .map(|index| {
            let (client, bearers) = (client.clone(), bearers.clone());
            async move {
                let (user, org) = user_of(index, orgs);
                client
                    .post(format!(
                        "http://127.0.0.1:{port}/management/v1/users/{user}/auth_factors/otp/_check"
                    ))
                    .bearer_auth(&bearers[org])
                    .header("x-zitadel-orgid", org_id(org))
                    .header("content-type", "application/json")
                    .body(r#"{"code":"000000"}"#)
                    .send()
                    .await
                    .map_or(0, |r| r.status().as_u16())
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let mut counts = std::collections::BTreeMap::new();
    for status in statuses {
        *counts.entry(status).or_insert(0u64) += 1;
    }
    counts
        .iter()
        .map(|(s, n)| format!("{s}={n}"))
        .collect::<Vec<_>>()
        .join(" ")
}

const MISS: &str = "tessera_factor_cache_lookups_total{result=\"miss\"}";
const HIT: &str = "tessera_factor_cache_lookups_total{result=\"hit\"}";

pub(super) async fn run(o: &Options) {
    let (users, orgs) = (o.cold_users, o.orgs);
    assert!(users >= 40_000, "--cold-users: at least 40,000");
    let redis = RedisServer::start();
    let url = redis.url();

    // 1. Seed through tessera, then let it go: its cache holds what it enrolled.
    let seeder = start_tessera(&url, &[]).await;
    let empty = used_memory(&redis);
    let started = Instant::now();
    seed(seeder.port, users, orgs).await;
    let seed_secs = started.elapsed().as_secs_f64();
    // The feeds are copied after the fact: measured before the copier is done, they would
    // hold only part of the seeding's events.
    let copied_by = Instant::now() + Duration::from_secs(120);
    while gauge(seeder.port, "tessera_audit_feed_pending").await != 0.0
        && Instant::now() < copied_by
    {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let feed_pending = gauge(seeder.port, "tessera_audit_feed_pending").await;
    let feed_dropped = gauge(seeder.port, "tessera_audit_feed_dropped_total").await;
    let seeded = used_memory(&redis);

    // 2. Memory: everything, then the factors alone, then recovery codes for 10,000 users.
    let audit_keys = unlink_all(&redis, &AUDIT_KEYS).await;
    let factors_only = used_memory(&redis);
    let (first_user, first_org) = user_of(0, orgs);
    let first_key = format!("tessera:{{{}:{first_user}}}", org_id(first_org));
    let record = record_layout(&redis, &first_key).await;
    let with_codes_users = 10_000;
    generate_codes(seeder.port, users - with_codes_users..users, orgs).await;
    unlink_all(&redis, &AUDIT_KEYS).await;
    let with_codes = used_memory(&redis);
    drop(seeder);
    let per_user = |bytes: u64, n: usize| bytes as f64 / n as f64;
    println!(
        "\n{users} users in {orgs} organizations seeded through the v2 API in {seed_secs:.0} s \
         ({:.0} users/s)",
        users as f64 / seed_secs
    );
    println!("the audit feeds when measured: {feed_pending} notes pending, {feed_dropped} dropped");
    println!("| Redis memory | bytes per user |");
    println!("|---|---|");
    println!(
        "| factor, its audit events (2: added, verified) and the organizations' feeds | {:.0} |",
        per_user(seeded - empty, users)
    );
    println!(
        "| factor alone ({audit_keys} audit keys unlinked) | {:.0} |",
        per_user(factors_only - empty, users)
    );
    println!(
        "| audit trail (the difference) | {:.0} |",
        per_user(seeded - factors_only, users)
    );
    println!(
        "| recovery codes at the default count ({with_codes_users} users) | {:.0} |",
        per_user(with_codes.saturating_sub(factors_only), with_codes_users)
    );
    println!("\none record, `{first_key}`: {record}");

    // 3. The cold check, against the cold floor: each pass its own quarter of the users.
    let checkers = tokens(orgs, "login-page", "otp.check");
    let logs = helpers::TempDir::new("cold-logs");
    let tessera = start_tessera_as(
        "production",
        &url,
        &[("TESSERA__LOG__LEVEL", "info")],
        Stdio::from(std::fs::File::create(logs.0.join("info.log")).unwrap()),
    )
    .await;
    let tessera_pid = tessera.process.0.id();
    let floor_port = free_port();
    start_cold_floor(url.clone(), floor_port);
    std::thread::sleep(Duration::from_millis(500));
    let quarter = users / 4;
    let me = std::process::id();
    println!(
        "\n| pass | what | req/s | p50 ms | p99 ms | HTTP process CPU µs/check | Redis CPU µs/check | cache misses | statuses |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut means = [(0.0, 0.0, 0.0); 2];
    for pass in 0..2 {
        let targets = [
            ("tessera, production settings", tessera.port, tessera_pid),
            ("floor: HGETALL + EVALSHA", floor_port, me),
        ];
        for (index, (name, port, pid)) in targets.into_iter().enumerate() {
            let first = (2 * pass + index) * quarter;
            let script = cold_script(first, first + quarter, orgs, &checkers);
            let misses = gauge(tessera.port, MISS).await;
            let (run, cpu) = wrk_with_cpu(port, &script, o, &[pid, redis.pid()]);
            let missed = gauge(tessera.port, MISS).await - misses;
            assert!(!run.failed_on_our_side(), "{name}: {}", run.statuses);
            println!(
                "| {} | {name} | {:.0} | {:.2} | {:.2} | {:.1} | {:.1} | {} | {} |",
                pass + 1,
                run.rps,
                run.p50,
                run.p99,
                cpu[0],
                cpu[1],
                if index == 0 {
                    format!("{missed:.0}")
                } else {
                    "–".to_owned()
                },
                run.statuses
            );
            means[index].0 += run.rps / 2.0;
            means[index].1 += run.p99 / 2.0;
            means[index].2 += cpu[0] / 2.0;
        }
    }
    println!(
        "\ncold: tessera / floor = {:.0}% (mean of 2 passes); p99 {:.2} ms vs {:.2} ms; \
         HTTP process CPU {:.1} vs {:.1} µs/check; hits during the passes: {:.0}",
        100.0 * means[0].0 / means[1].0,
        means[0].1,
        means[1].1,
        means[0].2,
        means[1].2,
        gauge(tessera.port, HIT).await
    );
    drop(tessera);

    // 4. tessera's memory with every user checked once, at two cache sizes.
    println!(
        "\n| factor cache | RSS before | RSS after every user checked once | organization actors | misses | statuses |"
    );
    println!("|---|---|---|---|---|---|");
    for (label, capacity) in [
        ("50,000 per organization (default)", None),
        ("100 per organization", Some("100")),
    ] {
        let mut env = vec![("TESSERA__LOG__LEVEL", "info")];
        env.extend(capacity.map(|c| ("TESSERA__TENANTS__CACHE_CAPACITY", c)));
        let instance = start_tessera_as("production", &url, &env, Stdio::null()).await;
        let pid = instance.process.0.id();
        let before = rss_kib(pid);
        let statuses = sweep(instance.port, users, orgs, &checkers).await;
        let after = rss_kib(pid);
        println!(
            "| {label} | {:.1} MiB | {:.1} MiB | {:.0} | {:.0} | {statuses} |",
            before as f64 / 1024.0,
            after as f64 / 1024.0,
            gauge(instance.port, "tessera_org_actors").await,
            gauge(instance.port, MISS).await,
        );
    }
}
