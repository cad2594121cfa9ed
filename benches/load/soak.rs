//! `--soak`: an hour at half of peak, with Redis (AOF on) restarted every 15 minutes.
//!
//! tessera runs with production settings (`config/production.toml`, JSON logs at info, to
//! /dev/null so that an hour of them does not fill the disk; metrics on; limits and lockout
//! off so that nothing is refused by design). The load is open loop: requests are scheduled
//! at a fixed rate and latency counts from the scheduled time, so a stall during a restart
//! shows in full. Every 10 s the tool records the requests, errors and latencies of the
//! window and tessera's RSS and open file descriptors, and, to place a stall, what else
//! happened: Redis's forks, delayed fsyncs and worst latency event, the machine's stolen,
//! iowait and idle CPU, each process's CPU (tessera, Redis with its rewrites and without,
//! the load tool), Redis's data set, resident memory, keys and AOF base (whether its work
//! grows with its data), the requests over 25 ms as tessera measured them beside those the
//! load tool saw, and the load tool's own lateness. At the end it prints the verdict (flat
//! RSS, descriptors and p99; errors only inside restart windows) and the stalled windows,
//! writes the windows as CSV and draws them as an SVG.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use plotters::prelude::*;

use super::record::{
    HostCpu, RedisInfo, Restart, SLOW_MS, flat, growth, http_requests_over, mib, percentile,
    process_cpu_us, share,
};
use super::*;

/// The resolution of the record.
const WINDOW: Duration = Duration::from_secs(10);
/// How often the lag probe asks the load tool's runtime to wake it.
const LAG_PROBE_EVERY: Duration = Duration::from_millis(5);
/// How long after Redis answers again errors still count as the restart's.
const RESTART_GRACE: Duration = Duration::from_secs(5);

/// What one load task saw, by window.
#[derive(Default)]
struct TaskRecord {
    latencies: Vec<Vec<u32>>,
    errors: Vec<u64>,
    /// When each error's request failed, ms since the start: what a restart window is
    /// matched against (a request scheduled just before the signal fails after it).
    error_times: Vec<u64>,
}

impl TaskRecord {
    fn window(&mut self, index: usize) -> (&mut Vec<u32>, &mut u64) {
        if self.latencies.len() <= index {
            self.latencies.resize_with(index + 1, Vec::new);
            self.errors.resize(index + 1, 0);
        }
        (&mut self.latencies[index], &mut self.errors[index])
    }
}

/// A window of the whole run.
struct WindowRow {
    start_s: u64,
    requests: u64,
    errors: u64,
    p50_ms: f64,
    p99_ms: f64,
    rss_mib: f64,
    fds: u64,
    /// Redis's forks (an AOF rewrite) and delayed AOF fsyncs (`aof_delayed_fsync`: the
    /// main thread waited for the disk) during the window: suspects for a stall.
    redis_forks: u64,
    delayed_fsyncs: u64,
    /// The machine's CPU time stolen by the hypervisor and spent waiting for the disk, in
    /// percent of the window's: a stall with neither tessera's nor Redis's doing.
    steal_pct: f64,
    iowait_pct: f64,
    /// The machine's idle CPU time in percent of the window's: near 0, every process on it
    /// (tessera, Redis and its rewrite child, the load tool) waits for a core.
    idle_pct: f64,
    /// Redis's own worst stall in the window (its latency monitor: event and milliseconds,
    /// "" when nothing passed `REDIS_LATENCY_THRESHOLD_MS`).
    redis_latency: String,
    /// Requests slower than `SLOW_MS` as the load tool saw them, and as tessera measured
    /// them (its `tessera_request_duration_seconds`, HTTP): many on the load tool's side
    /// and few on tessera's put a stall outside tessera's handlers.
    client_slow: u64,
    server_slow: u64,
    /// The load tool's own worst lateness in the window: how late its runtime woke a
    /// timer. A stall of the load tool delays every request it schedules.
    tool_lag_ms: f64,
    /// Each process's CPU in the window, in percent of one core: tessera's, Redis's (with
    /// its AOF rewrites' children once it has reaped them) and the load tool's own. What
    /// takes the cores in a stalled window.
    tessera_cpu_pct: f64,
    redis_cpu_pct: f64,
    tool_cpu_pct: f64,
    /// Redis's main process alone (its rewrite children are `redis_cpu_pct` less this), its
    /// data set and resident memory, its keys and its append-only file's base at the end of
    /// the window: whether Redis works harder for the same rate because its data grows.
    redis_main_cpu_pct: f64,
    redis_used_mib: f64,
    redis_rss_mib: f64,
    redis_keys: u64,
    aof_base_mib: f64,
}

/// One window's sample of the processes.
#[derive(Clone)]
struct Sample {
    rss_kib: u64,
    fds: u64,
    redis: RedisInfo,
    cpu: HostCpu,
    redis_latency: String,
    /// tessera's HTTP requests slower than `SLOW_MS` so far.
    server_slow: u64,
    processes: ProcessCpu,
}

/// Each process's CPU so far, µs: tessera's, Redis's with its reaped children (and which
/// Redis: a restart starts it again), the load tool's.
#[derive(Clone, Copy)]
struct ProcessCpu {
    tessera_us: u64,
    redis_pid: u64,
    redis_us: u64,
    tool_us: u64,
}

impl ProcessCpu {
    fn now(tessera_pid: u32, redis_pid: u64) -> Self {
        Self {
            tessera_us: cpu_us(u64::from(tessera_pid), false),
            redis_pid,
            redis_us: cpu_us(redis_pid, true),
            tool_us: cpu_us(u64::from(std::process::id()), false),
        }
    }
}

/// Redis records in its latency monitor every event (a command, an AOF write, a fork…) that
/// blocked it at least this long.
const REDIS_LATENCY_THRESHOLD_MS: u64 = 20;

/// Redis's worst latency event since the last call ("<event> <ms> ms", or ""), which it then
/// forgets (`LATENCY RESET`), so that each window sees its own.
fn redis_latency(port: u16) -> String {
    let cli = |args: &[&str]| {
        Command::new("redis-cli")
            .args(["-p", &port.to_string()])
            .args(args)
            .output()
            .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
            .unwrap_or_default()
    };
    let latest = cli(&["LATENCY", "LATEST"]);
    let _ = cli(&["LATENCY", "RESET"]);
    // Four lines per event: its name, when it last happened, the latest and the worst ms.
    let lines: Vec<&str> = latest.lines().collect();
    lines
        .chunks_exact(4)
        .filter_map(|event| Some((event[0], event[3].trim().parse::<u64>().ok()?)))
        .max_by_key(|(_, ms)| *ms)
        .map_or_else(String::new, |(name, ms)| format!("{name} {ms} ms"))
}

/// What Redis says of itself now (`INFO all`); zeros while it is down.
fn redis_info(port: u16) -> RedisInfo {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string(), "INFO", "all"])
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
        .unwrap_or_default();
    RedisInfo::parse(&out)
}

fn host_cpu() -> HostCpu {
    HostCpu::parse(&std::fs::read_to_string("/proc/stat").unwrap_or_default())
}

/// A process's CPU time so far, µs; 0 when it is gone. Redis's count with its children (its
/// AOF rewrites); the load tool's without them, since its children are tessera and the
/// Redis servers it restarts, reaped at their end.
fn cpu_us(pid: u64, children: bool) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_or(0, |stat| process_cpu_us(&stat, children))
}

fn open_fds(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |dir| dir.count() as u64)
}

/// redis-server with AOF on (fsync every second), its files in `dir`; with
/// `auto-aof-rewrite-min-size` at `rewrite_min_mb` when given.
fn start_redis(port: u16, dir: &Path, rewrite_min_mb: Option<u64>) -> RedisServer {
    let rewrite_min = rewrite_min_mb.map(|mb| format!("{mb}mb"));
    let threshold = REDIS_LATENCY_THRESHOLD_MS.to_string();
    let mut args = vec![
        "--appendonly",
        "yes",
        "--appendfsync",
        "everysec",
        "--dir",
        dir.to_str().unwrap(),
        "--latency-monitor-threshold",
        &threshold,
    ];
    if let Some(size) = &rewrite_min {
        args.extend(["--auto-aof-rewrite-min-size", size]);
    }
    RedisServer::start_with(port, &args)
}

/// Stops Redis as an orchestrator does (SIGTERM: it flushes the AOF and exits), waits for
/// it to exit, and starts it again on the same port from the same files.
fn restart_redis(redis: &mut RedisServer, dir: &Path, rewrite_min_mb: Option<u64>) {
    let pid = redis.pid();
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let exited = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
            stat[stat.rfind(')').unwrap() + 2..].starts_with('Z')
        });
        if exited {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // Reaps the exited process (a SIGKILL only if it had not exited in 30 s).
    redis.kill();
    *redis = start_redis(redis.port, dir, rewrite_min_mb);
}

pub(super) async fn run(o: &Options) {
    let minutes = o.soak_minutes;
    let every = o.restart_every_minutes;
    let dir = helpers::TempDir::new("soak-redis");
    let redis = start_redis(free_port(), &dir.0, o.aof_rewrite_min_mb);
    let url = redis.url();
    let redis_port = redis.port;
    let tessera = start_tessera_as(
        "production",
        &url,
        &[("TESSERA__LOG__LEVEL", "info")],
        Stdio::null(),
    )
    .await;
    let pid = tessera.process.0.id();
    let base = format!("http://127.0.0.1:{}", tessera.port);
    let secrets = Arc::new(decode_all(&enroll(&base, o.users).await));
    // The run outlasts the other modes' tokens: valid for the run and an hour more.
    let valid_for = minutes * 60 + 3600;
    let bearer = token_valid_for(ORG, "login-page", &["otp.check"], valid_for);

    let peak = http_load(
        tessera_check(&[tessera.port], &bearer),
        &current_codes(&secrets),
        o,
        10,
        None,
    )
    .await
    .rps;
    let rate = peak / 2.0;
    println!(
        "soak: peak {peak:.0}/s (closed loop, {} connections); {minutes} min at {rate:.0}/s, \
         Redis restarted every {every} min",
        o.connections
    );

    let started = Instant::now();
    let deadline = started + Duration::from_secs(minutes * 60);
    let sent = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let tasks = soak_tasks(
        o,
        rate,
        started,
        deadline,
        &bearer,
        tessera.port,
        &secrets,
        &sent,
        &failed,
    );

    // Redis's restarts, on a thread of their own (starting redis-server blocks).
    let restarts = {
        let dir = dir.0.clone();
        let rewrite_min_mb = o.aof_rewrite_min_mb;
        std::thread::spawn(move || {
            let mut redis = redis;
            let mut restarts = Vec::new();
            for n in 1.. {
                let at = started + Duration::from_secs(n * every * 60);
                if at >= deadline {
                    break;
                }
                std::thread::sleep(at.saturating_duration_since(Instant::now()));
                let from_ms = started.elapsed().as_millis() as u64;
                restart_redis(&mut redis, &dir, rewrite_min_mb);
                let answered = started.elapsed();
                restarts.push(Restart {
                    from_ms,
                    to_ms: (answered + RESTART_GRACE).as_millis() as u64,
                });
                println!(
                    "soak: Redis restarted at {:.1} min, answering again after {} ms",
                    from_ms as f64 / 60_000.0,
                    answered.as_millis() as u64 - from_ms
                );
            }
            (restarts, redis)
        })
    };

    let lag = tokio::spawn(lag_probe(started, deadline));
    // The process's resources, sampled once a window. The reads that block (redis-cli,
    // /proc) run off the runtime's workers, which the load tasks need on time.
    let metrics_client = reqwest::Client::new();
    let mut samples: Vec<Sample> = Vec::new();
    let first_cpu = host_cpu();
    let (first_processes, first_redis) = tokio::task::spawn_blocking(move || {
        let redis = redis_info(redis_port);
        (ProcessCpu::now(pid, redis.pid), redis)
    })
    .await
    .unwrap();
    let _ = redis_latency(redis_port);
    let mut next = started + WINDOW;
    // Not at the deadline itself: the load stops there and its connections close, which
    // the last sample would record as fewer descriptors.
    while next < deadline {
        tokio::time::sleep_until(next.into()).await;
        let server_slow = server_slow(&metrics_client, tessera.port).await;
        let sample = tokio::task::spawn_blocking(move || {
            let redis = redis_info(redis_port);
            Sample {
                processes: ProcessCpu::now(pid, redis.pid),
                rss_kib: rss_kib(pid),
                fds: open_fds(pid),
                redis,
                cpu: host_cpu(),
                redis_latency: redis_latency(redis_port),
                server_slow,
            }
        })
        .await
        .unwrap();
        if (samples.len() + 1).is_multiple_of(6) {
            println!(
                "soak: {:>3} min, {} requests, {} errors, RSS {:.1} MiB, {} fds",
                (samples.len() + 1) / 6,
                sent.load(Ordering::Relaxed),
                failed.load(Ordering::Relaxed),
                sample.rss_kib as f64 / 1024.0,
                sample.fds
            );
        }
        samples.push(sample);
        next += WINDOW;
    }
    let mut records = Vec::new();
    for task in tasks {
        records.push(task.await.unwrap());
    }
    let (restarts, _redis) = restarts.join().unwrap();
    let lag = lag.await.unwrap();
    let rows = merge(
        &records,
        &samples,
        (first_cpu, first_processes, first_redis),
        &lag,
    );
    report(o, rate, &rows, &records, &restarts);
    drop(tessera);
}

#[allow(clippy::too_many_arguments)]
fn soak_tasks(
    o: &Options,
    rate: f64,
    started: Instant,
    deadline: Instant,
    bearer: &str,
    port: u16,
    secrets: &Arc<Vec<Vec<u8>>>,
    sent: &Arc<AtomicU64>,
    failed: &Arc<AtomicU64>,
) -> Vec<tokio::task::JoinHandle<TaskRecord>> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(o.connections)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let make = tessera_check(&[port], bearer);
    let interval = Duration::from_secs_f64(o.connections as f64 / rate);
    let params = TotpParams::default();
    let connections = o.connections;
    (0..connections)
        .map(|task| {
            let (client, make, secrets) = (client.clone(), make.clone(), secrets.clone());
            let (sent, failed) = (sent.clone(), failed.clone());
            tokio::spawn(async move {
                let mut rng = Xorshift(0x2545_F491_4F6C_DD1D ^ (task as u64 + 1));
                let mut record = TaskRecord::default();
                // Spread the tasks' schedules over one interval.
                let mut scheduled = started + interval * task as u32 / connections as u32;
                while scheduled < deadline {
                    tokio::time::sleep_until(scheduled.into()).await;
                    let user = (rng.next() % secrets.len() as u64) as usize;
                    // One in ten with the user's current code, made now: an hour outlives
                    // any table of codes.
                    let code = if rng.next().is_multiple_of(10) {
                        let step = params.step_at(chrono::Utc::now().timestamp() as u64);
                        params.code_for_step(&secrets[user], step).unwrap()
                    } else {
                        "000000".to_owned()
                    };
                    let ok = match make(&client, task, user, &code).send().await {
                        Ok(response) => {
                            let ok = !response.status().is_server_error();
                            let _ = response.bytes().await;
                            ok
                        }
                        Err(_) => false,
                    };
                    let at = scheduled.duration_since(started);
                    let latency = scheduled.elapsed().as_micros() as u32;
                    let (latencies, errors) =
                        record.window((at.as_secs() / WINDOW.as_secs()) as usize);
                    latencies.push(latency);
                    sent.fetch_add(1, Ordering::Relaxed);
                    if !ok {
                        *errors += 1;
                        failed.fetch_add(1, Ordering::Relaxed);
                        // When it failed, not when it was due: a 12-minute trial counted
                        // an error "outside" the restart, a request due in the last
                        // milliseconds before Redis was stopped that failed after it.
                        record
                            .error_times
                            .push(started.elapsed().as_millis() as u64);
                    }
                    scheduled += interval;
                }
                record
            })
        })
        .collect()
}

/// `first_cpu`: the machine's CPU counters as the load started; `lag_us`: the load tool's
/// worst timer lateness per window.
fn merge(
    records: &[TaskRecord],
    samples: &[Sample],
    (first_cpu, first_processes, first_redis): (HostCpu, ProcessCpu, RedisInfo),
    lag_us: &[u32],
) -> Vec<WindowRow> {
    let window_us = WINDOW.as_micros() as f64;
    let core_pct = |before: u64, now: u64| 100.0 * now.saturating_sub(before) as f64 / window_us;
    (0..samples.len())
        .map(|index| {
            let mut latencies: Vec<u32> = records
                .iter()
                .filter_map(|r| r.latencies.get(index))
                .flatten()
                .copied()
                .collect();
            latencies.sort_unstable();
            let errors = records.iter().filter_map(|r| r.errors.get(index)).sum();
            let sample = &samples[index];
            let before = index.checked_sub(1).map_or(
                Sample {
                    redis: first_redis,
                    server_slow: 0,
                    cpu: first_cpu,
                    processes: first_processes,
                    ..sample.clone()
                },
                |i| samples[i].clone(),
            );
            let ticks = sample.cpu.total.saturating_sub(before.cpu.total);
            WindowRow {
                start_s: index as u64 * WINDOW.as_secs(),
                requests: latencies.len() as u64,
                errors,
                p50_ms: percentile(&latencies, 0.50),
                p99_ms: percentile(&latencies, 0.99),
                rss_mib: sample.rss_kib as f64 / 1024.0,
                fds: sample.fds,
                redis_forks: growth(before.redis.forks, sample.redis.forks),
                delayed_fsyncs: growth(before.redis.delayed_fsyncs, sample.redis.delayed_fsyncs),
                steal_pct: share(sample.cpu.steal.saturating_sub(before.cpu.steal), ticks),
                iowait_pct: share(sample.cpu.iowait.saturating_sub(before.cpu.iowait), ticks),
                idle_pct: share(sample.cpu.idle.saturating_sub(before.cpu.idle), ticks),
                redis_latency: sample.redis_latency.clone(),
                client_slow: latencies.iter().filter(|&&us| us > SLOW_MS * 1000).count() as u64,
                // tessera's counters live as long as the process: no restart to allow for.
                server_slow: sample.server_slow.saturating_sub(before.server_slow),
                tool_lag_ms: f64::from(lag_us.get(index).copied().unwrap_or(0)) / 1000.0,
                tessera_cpu_pct: core_pct(before.processes.tessera_us, sample.processes.tessera_us),
                // A restarted Redis is a new process: its CPU so far is the window's.
                redis_cpu_pct: if before.processes.redis_pid == sample.processes.redis_pid {
                    core_pct(before.processes.redis_us, sample.processes.redis_us)
                } else {
                    core_pct(0, sample.processes.redis_us)
                },
                tool_cpu_pct: core_pct(before.processes.tool_us, sample.processes.tool_us),
                redis_main_cpu_pct: if before.redis.pid == sample.redis.pid {
                    core_pct(before.redis.main_cpu_us, sample.redis.main_cpu_us)
                } else {
                    core_pct(0, sample.redis.main_cpu_us)
                },
                redis_used_mib: mib(sample.redis.used_bytes),
                redis_rss_mib: mib(sample.redis.rss_bytes),
                redis_keys: sample.redis.keys,
                aof_base_mib: mib(sample.redis.aof_base_bytes),
            }
        })
        .collect()
}

/// tessera's HTTP requests slower than `SLOW_MS` so far: all of them less those in the
/// histogram's `SLOW_MS` bucket; 0 when /metrics does not answer.
async fn server_slow(client: &reqwest::Client, port: u16) -> u64 {
    let Ok(response) = client
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
    else {
        return 0;
    };
    let text = response.text().await.unwrap_or_default();
    http_requests_over(&text, SLOW_MS).map_or(0, |(_, slow)| slow)
}

/// Wakes every `LAG_PROBE_EVERY` until `deadline` and records, per window, how late the
/// runtime woke it (µs): the load tool's own stalls, which would delay the requests it
/// schedules as much.
async fn lag_probe(started: Instant, deadline: Instant) -> Vec<u32> {
    let mut worst: Vec<u32> = Vec::new();
    let mut due = started + LAG_PROBE_EVERY;
    while due < deadline {
        tokio::time::sleep_until(due.into()).await;
        let late = Instant::now().saturating_duration_since(due).as_micros() as u32;
        let index = (due.duration_since(started).as_secs() / WINDOW.as_secs()) as usize;
        if worst.len() <= index {
            worst.resize(index + 1, 0);
        }
        worst[index] = worst[index].max(late);
        // From now, not from `due`: after a stall, one late wake-up, not a burst of them.
        due = Instant::now() + LAG_PROBE_EVERY;
    }
    worst
}

/// The latencies of the windows starting in [from_min, to_min), outside restarts.
fn latencies_between(
    records: &[TaskRecord],
    restarts: &[Restart],
    from_min: f64,
    to_min: f64,
) -> Vec<u32> {
    let window_s = WINDOW.as_secs();
    let mut all: Vec<u32> = records
        .iter()
        .flat_map(|r| r.latencies.iter().enumerate())
        .filter(|(index, _)| {
            let start_ms = *index as u64 * window_s * 1000;
            let minute = start_ms as f64 / 60_000.0;
            minute >= from_min
                && minute < to_min
                && !restarts
                    .iter()
                    .any(|r| r.overlaps(start_ms, window_s * 1000))
        })
        .flat_map(|(_, latencies)| latencies.iter().copied())
        .collect();
    all.sort_unstable();
    all
}

fn report(
    o: &Options,
    rate: f64,
    rows: &[WindowRow],
    records: &[TaskRecord],
    restarts: &[Restart],
) {
    let minutes = o.soak_minutes as f64;
    // Minutes 5–15 against the last 10 (of 60); a shorter trial run scales both.
    let (early, late) = (
        (minutes / 12.0, minutes / 4.0),
        (minutes * 5.0 / 6.0, minutes),
    );
    let mean = |range: (f64, f64), value: fn(&WindowRow) -> f64| {
        let picked: Vec<f64> = rows
            .iter()
            .filter(|r| {
                let minute = r.start_s as f64 / 60.0;
                minute >= range.0 && minute < range.1
            })
            .map(value)
            .collect();
        picked.iter().sum::<f64>() / picked.len() as f64
    };
    let p99 = |range: (f64, f64)| {
        percentile(
            &latencies_between(records, restarts, range.0, range.1),
            0.99,
        )
    };
    let checks = [
        (
            "RSS MiB",
            mean(early, |r| r.rss_mib),
            mean(late, |r| r.rss_mib),
        ),
        (
            "open fds",
            mean(early, |r| r.fds as f64),
            mean(late, |r| r.fds as f64),
        ),
        ("p99 ms", p99(early), p99(late)),
    ];
    let errors: Vec<u64> = records
        .iter()
        .flat_map(|r| r.error_times.iter().copied())
        .collect();
    let outside = errors
        .iter()
        .filter(|at| !restarts.iter().any(|r| r.covers(**at)))
        .count();
    let requests: u64 = rows.iter().map(|r| r.requests).sum();
    println!(
        "\nsoak: {minutes} min at {rate:.0}/s, {} users, {} connections: {requests} requests, \
         {} errors ({} inside the {} restart windows, {outside} outside)",
        o.users,
        o.connections,
        errors.len(),
        errors.len() - outside,
        restarts.len()
    );
    println!(
        "\n| measure | minutes {:.0}–{:.0} | minutes {:.0}–{:.0} | change | flat (±10%) |",
        early.0, early.1, late.0, late.1
    );
    println!("|---|---|---|---|---|");
    let mut all_flat = true;
    for (name, before, after) in checks {
        let (change, within) = flat(before, after, 0.10);
        all_flat &= within;
        println!(
            "| {name} | {before:.2} | {after:.2} | {:+.1}% | {} |",
            100.0 * change,
            if within { "yes" } else { "NO" }
        );
    }
    stalls(rows, restarts);
    println!(
        "\nsoak verdict: {} (flat: {all_flat}; errors outside restarts: {outside})",
        if all_flat && outside == 0 {
            "PASS"
        } else {
            "FAIL"
        }
    );
    // The hour's record is kept in the repository; a shorter trial's goes to target/.
    let results = Path::new(env!("CARGO_MANIFEST_DIR")).join(if minutes >= 60.0 {
        "benches/results"
    } else {
        "target/soak-trial"
    });
    std::fs::create_dir_all(&results).unwrap();
    let csv = results.join("soak.csv");
    let mut text = String::from(
        "start_s,requests,errors,p50_ms,p99_ms,rss_mib,fds,redis_forks,redis_delayed_fsyncs,\
         steal_pct,iowait_pct,idle_pct,redis_latency,client_slow,server_slow,tool_lag_ms,\
         tessera_cpu_pct,redis_cpu_pct,tool_cpu_pct,redis_main_cpu_pct,redis_used_mib,\
         redis_rss_mib,redis_keys,aof_base_mib\n",
    );
    for r in rows {
        text.push_str(&format!(
            "{},{},{},{:.3},{:.3},{:.2},{},{},{},{:.1},{:.1},{:.1},{},{},{},{:.1},{:.1},{:.1},{:.1},\
             {:.1},{:.1},{:.1},{},{:.1}\n",
            r.start_s,
            r.requests,
            r.errors,
            r.p50_ms,
            r.p99_ms,
            r.rss_mib,
            r.fds,
            r.redis_forks,
            r.delayed_fsyncs,
            r.steal_pct,
            r.iowait_pct,
            r.idle_pct,
            r.redis_latency,
            r.client_slow,
            r.server_slow,
            r.tool_lag_ms,
            r.tessera_cpu_pct,
            r.redis_cpu_pct,
            r.tool_cpu_pct,
            r.redis_main_cpu_pct,
            r.redis_used_mib,
            r.redis_rss_mib,
            r.redis_keys,
            r.aof_base_mib
        ));
    }
    std::fs::write(&csv, text).unwrap();
    let svg = results.join("soak.svg");
    plot(&svg, rows, restarts, rate, minutes, o.restart_every_minutes).unwrap();
    println!(
        "soak: windows in {}, plot in {}",
        csv.display(),
        svg.display()
    );
}

/// The windows whose p99 is over four times the median window's, outside restarts, with
/// what Redis did in them or in the window before (a fork for an AOF rewrite, a delayed
/// fsync): where to look for the cause of a stall.
fn stalls(rows: &[WindowRow], restarts: &[Restart]) {
    let mut p99s: Vec<f64> = rows
        .iter()
        .map(|r| r.p99_ms)
        .filter(|v| v.is_finite())
        .collect();
    p99s.sort_by(f64::total_cmp);
    let Some(median) = p99s.get(p99s.len() / 2).copied() else {
        return;
    };
    let window_ms = WINDOW.as_millis() as u64;
    let mut stalled = 0;
    let mut with_redis_work = 0;
    // Stalled windows whose slow requests tessera mostly did not see (under a tenth of the
    // load tool's count), and those in which the load tool itself woke late (over a window's
    // median p99): which side of the socket stalled.
    let mut unseen_by_tessera = 0;
    let mut tool_lagged = 0;
    let (mut stalled_rows, mut calm_rows) = (Vec::new(), Vec::new());
    for (index, row) in rows.iter().enumerate() {
        let start_ms = row.start_s * 1000;
        let in_restart = restarts.iter().any(|r| r.overlaps(start_ms, window_ms));
        if in_restart {
            continue;
        }
        if row.p99_ms <= 4.0 * median {
            calm_rows.push(row);
            continue;
        }
        stalled_rows.push(row);
        stalled += 1;
        let previous = index.checked_sub(1).map(|i| &rows[i]);
        let forks = row.redis_forks + previous.map_or(0, |r| r.redis_forks);
        let fsyncs = row.delayed_fsyncs + previous.map_or(0, |r| r.delayed_fsyncs);
        if forks + fsyncs > 0 {
            with_redis_work += 1;
        }
        if row.server_slow * 10 < row.client_slow {
            unseen_by_tessera += 1;
        }
        if row.tool_lag_ms > median {
            tool_lagged += 1;
        }
        println!(
            "soak: stall in the window at {:.1} min: p99 {:.1} ms (median window {median:.1} ms); \
             Redis forks {forks}, delayed fsyncs {fsyncs} (this window and the one before); \
             CPU stolen {:.1} %, iowait {:.1} %, idle {:.1} %; Redis's worst: {}; over {SLOW_MS} ms: {} \
             requests seen by the load tool, {} measured by tessera; the load tool's worst \
             lag {:.1} ms; CPU of a core: tessera {:.0} %, Redis {:.0} %, the load tool {:.0} %",
            row.start_s as f64 / 60.0,
            row.p99_ms,
            row.steal_pct,
            row.iowait_pct,
            row.idle_pct,
            if row.redis_latency.is_empty() {
                "nothing over the threshold"
            } else {
                &row.redis_latency
            },
            row.client_slow,
            row.server_slow,
            row.tool_lag_ms,
            row.tessera_cpu_pct,
            row.redis_cpu_pct,
            row.tool_cpu_pct
        );
    }
    let forks: u64 = rows.iter().map(|r| r.redis_forks).sum();
    let median_of = |value: fn(&WindowRow) -> f64| {
        let mut values: Vec<f64> = rows.iter().map(value).collect();
        values.sort_by(f64::total_cmp);
        values.get(values.len() / 2).copied().unwrap_or(0.0)
    };
    println!(
        "soak: {stalled} stalled windows outside restarts, {with_redis_work} of them with a Redis \
         fork or delayed fsync, {unseen_by_tessera} with under a tenth of their slow requests \
         measured by tessera, {tool_lagged} with the load tool lagging over the median window's \
         p99; Redis forked {forks} times in all; the median window: CPU stolen {:.1} %, iowait \
         {:.1} %, idle {:.1} %, the load tool's worst lag {:.1} ms",
        median_of(|r| r.steal_pct),
        median_of(|r| r.iowait_pct),
        median_of(|r| r.idle_pct),
        median_of(|r| r.tool_lag_ms)
    );
    // Who takes the cores when requests queue: each process's mean in the stalled windows
    // against the calm ones (restarts left out of both).
    let mean_of = |rows: &[&WindowRow], value: fn(&WindowRow) -> f64| {
        rows.iter().map(|r| value(r)).sum::<f64>() / rows.len().max(1) as f64
    };
    for (name, value) in [
        ("tessera", (|r| r.tessera_cpu_pct) as fn(&WindowRow) -> f64),
        ("Redis", |r| r.redis_cpu_pct),
        ("the load tool", |r| r.tool_cpu_pct),
        ("idle (of the machine)", |r| r.idle_pct),
    ] {
        println!(
            "soak: {name}: {:.1} % in the stalled windows, {:.1} % in the calm ones",
            mean_of(&stalled_rows, value),
            mean_of(&calm_rows, value)
        );
    }
}

type PlotResult = Result<(), Box<dyn std::error::Error>>;

/// Four panels over the run's minutes: throughput and errors, p99, RSS, open descriptors;
/// Redis's restarts as red bands.
fn plot(
    path: &Path,
    rows: &[WindowRow],
    restarts: &[Restart],
    rate: f64,
    minutes: f64,
    every: u64,
) -> PlotResult {
    let root = SVGBackend::new(path, (1000, 1100)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(
        &format!("tessera soak: {minutes:.0} min at {rate:.0} checks/s, Redis (AOF) restarted every {every} min"),
        ("sans-serif", 20),
    )?;
    let panels = root.split_evenly((4, 1));
    let minute = |r: &WindowRow| r.start_s as f64 / 60.0;
    let window = WINDOW.as_secs_f64();
    type Series<'a> = (&'a str, Box<dyn Fn(&WindowRow) -> f64 + 'a>, RGBColor);
    let specs: [(&str, Vec<Series>); 4] = [
        (
            "per second",
            vec![
                (
                    "checks/s",
                    Box::new(|r: &WindowRow| r.requests as f64 / window),
                    BLUE,
                ),
                (
                    "errors/s",
                    Box::new(|r: &WindowRow| r.errors as f64 / window),
                    RED,
                ),
            ],
        ),
        (
            "ms",
            vec![
                ("p99 latency", Box::new(|r: &WindowRow| r.p99_ms), BLUE),
                ("p50 latency", Box::new(|r: &WindowRow| r.p50_ms), GREEN),
            ],
        ),
        (
            "MiB",
            vec![("tessera RSS", Box::new(|r: &WindowRow| r.rss_mib), BLUE)],
        ),
        (
            "count",
            vec![(
                "tessera open file descriptors",
                Box::new(|r: &WindowRow| r.fds as f64),
                BLUE,
            )],
        ),
    ];
    for (panel, (unit, series)) in panels.iter().zip(specs) {
        let top = rows
            .iter()
            .flat_map(|r| series.iter().map(move |(_, value, _)| value(r)))
            .filter(|v| v.is_finite())
            .fold(0.0f64, f64::max)
            * 1.15
            + 1e-9;
        let mut chart = ChartBuilder::on(panel)
            .margin(8)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..minutes, 0.0..top)?;
        chart
            .configure_mesh()
            .x_desc("minutes")
            .y_desc(unit)
            .light_line_style(WHITE)
            .draw()?;
        for restart in restarts {
            let (from, to) = (
                restart.from_ms as f64 / 60_000.0,
                restart.to_ms as f64 / 60_000.0,
            );
            chart.draw_series(std::iter::once(Rectangle::new(
                [(from, 0.0), (to.max(from + 0.15), top)],
                RED.mix(0.25).filled(),
            )))?;
        }
        for (name, value, color) in series {
            chart
                .draw_series(LineSeries::new(
                    rows.iter()
                        .filter(|r| value(r).is_finite())
                        .map(|r| (minute(r), value(r))),
                    color,
                ))?
                .label(name)
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
    }
    root.present()?;
    Ok(())
}
