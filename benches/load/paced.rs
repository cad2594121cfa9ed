//! `--paced [--rate 9000]`: tessera with production settings (logs at info) and the floor at
//! the same open-loop rate, alternating three times, with what each costs per check: CPU
//! (user + system) and context switches of the HTTP process's threads, and Redis's CPU.
//!
//! The closed-loop comparisons (`--production`) run at the peak, where 64 busy connections
//! let one wake-up of a thread serve several requests. At a moderate rate (the soak's half of
//! peak) most requests pay their own wake-ups; this mode measures what that costs, on both
//! sides of the comparison, so that a cost of tessera's own shows beside the floor's.
//!
//! The floor runs on this process's threads, beside the load client's; only its own threads
//! are counted (`floor` and actix's, by name).

use std::collections::BTreeMap;
use std::time::Duration;

use super::*;

/// CPU time (µs) and context switches (voluntary, involuntary) of some threads.
#[derive(Clone, Copy, Default)]
struct ThreadCost {
    cpu_micros: u64,
    voluntary: u64,
    involuntary: u64,
}

/// The cost so far of the threads of `pid` whose name passes `counted`, by thread.
fn thread_costs(pid: u32, counted: &ThreadFilter) -> BTreeMap<String, ThreadCost> {
    let mut costs: BTreeMap<String, ThreadCost> = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return costs;
    };
    for task in tasks.flatten() {
        let dir = task.path();
        let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let name = name.trim_end();
        if !counted(name) {
            continue;
        }
        // A thread may end between the listing and the reads: it then counts for nothing.
        let Ok(stat) = std::fs::read_to_string(dir.join("stat")) else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(dir.join("status")) else {
            continue;
        };
        let field = |key: &str| -> u64 {
            status
                .lines()
                .find_map(|line| line.strip_prefix(key))
                .and_then(|value| value.trim().parse().ok())
                .unwrap_or(0)
        };
        // Thread names are cut at 15 characters: actix's workers and arbiters all read
        // `actix-rt|system`. So each is told by its id as well.
        let kind = format!("{name} ({})", task.file_name().to_string_lossy());
        let cost = costs.entry(kind).or_default();
        cost.cpu_micros += stat_cpu_micros(&stat);
        cost.voluntary += field("voluntary_ctxt_switches:");
        cost.involuntary += field("nonvoluntary_ctxt_switches:");
    }
    costs
}

fn total(costs: &BTreeMap<String, ThreadCost>) -> ThreadCost {
    costs
        .values()
        .fold(ThreadCost::default(), |sum, cost| ThreadCost {
            cpu_micros: sum.cpu_micros + cost.cpu_micros,
            voluntary: sum.voluntary + cost.voluntary,
            involuntary: sum.involuntary + cost.involuntary,
        })
}

/// Per check, by thread, over the passes: what changed between `before` and `after`.
fn breakdown(
    before: &BTreeMap<String, ThreadCost>,
    after: &BTreeMap<String, ThreadCost>,
    checks: f64,
) -> Vec<(String, f64, f64)> {
    after
        .iter()
        .map(|(kind, now)| {
            let then = before.get(kind).copied().unwrap_or_default();
            let cpu = now.cpu_micros.saturating_sub(then.cpu_micros) as f64 / checks;
            let switches = (now.voluntary + now.involuntary)
                .saturating_sub(then.voluntary + then.involuntary)
                as f64
                / checks;
            (kind.clone(), cpu, switches)
        })
        .filter(|(_, cpu, switches)| *cpu > 0.0 || *switches > 0.0)
        .collect()
}

/// Which of a process's threads count, by name.
type ThreadFilter = dyn Fn(&str) -> bool;

/// The floor's threads: its system thread (named `floor`, where its Redis connection's task
/// runs) and actix's (workers are arbiters of its system, and the acceptor). The load client
/// runs on tokio's threads, which are not counted.
fn is_floor_thread(name: &str) -> bool {
    name == "floor" || name.starts_with("actix-")
}

pub(super) async fn run(o: &Options, redis: &RedisServer, rate: f64) {
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let logs = helpers::TempDir::new("paced-logs");
    let log = Stdio::from(std::fs::File::create(logs.0.join("info.log")).unwrap());
    let tessera =
        start_tessera_as("production", &url, &[("TESSERA__LOG__LEVEL", "info")], log).await;
    let floor_port = free_port();
    start_floor(url, floor_port, o.users);
    std::thread::sleep(Duration::from_millis(500));
    let bearer = token("login-page", &["otp.check"]);
    // Wrong codes only, as `--production`: the work the floor does.
    let wrong = vec!["000000".to_owned(); o.users];
    let me = std::process::id();
    let tessera_pid = tessera.process.0.id();
    let everything = |_: &str| true;
    let targets: [(&str, u16, u32, &ThreadFilter); 2] = [
        (
            "tessera, production settings (info)",
            tessera.port,
            tessera_pid,
            &everything,
        ),
        ("floor", floor_port, me, &is_floor_thread),
    ];
    println!(
        "paced at {rate:.0}/s, {} connections, {} s a pass",
        o.connections, o.seconds
    );
    println!(
        "| pass | what | answered/s | p50 ms | p99 ms | HTTP process CPU µs/check | \
         context switches/check (voluntary + involuntary) | Redis CPU µs/check | statuses |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut sums = [(0.0, 0.0, 0.0); 2];
    // By thread, summed over the passes: where each side's CPU and switches go.
    let mut by_thread: [BTreeMap<String, (f64, f64)>; 2] = Default::default();
    for pass in 1..=3 {
        for (index, (name, port, pid, counted)) in targets.iter().enumerate() {
            let before = thread_costs(*pid, *counted);
            let redis_before = cpu_micros(redis.pid());
            let run = http_load(
                tessera_check(&[*port], &bearer),
                &wrong,
                o,
                o.seconds,
                Some(rate),
            )
            .await;
            let after = thread_costs(*pid, *counted);
            let redis_after = cpu_micros(redis.pid());
            assert!(!run.failed_on_our_side(), "{name}: {}", run.statuses);
            let checks = run.rps * o.seconds as f64;
            for (kind, cpu, switches) in breakdown(&before, &after, checks) {
                let sum = by_thread[index].entry(kind).or_default();
                sum.0 += cpu / 3.0;
                sum.1 += switches / 3.0;
            }
            let (before, after) = (total(&before), total(&after));
            let cpu = (after.cpu_micros - before.cpu_micros) as f64 / checks;
            let voluntary = (after.voluntary - before.voluntary) as f64 / checks;
            let involuntary = (after.involuntary - before.involuntary) as f64 / checks;
            let redis_cpu = (redis_after - redis_before) as f64 / checks;
            println!(
                "| {pass} | {name} | {:.0} | {:.2} | {:.2} | {cpu:.1} | {:.2} ({voluntary:.2} + \
                 {involuntary:.2}) | {redis_cpu:.1} | {} |",
                run.rps,
                run.p50,
                run.p99,
                voluntary + involuntary,
                run.statuses
            );
            if *pid == tessera_pid {
                // Whether the audit feed's copier kept up: notes it had to drop, and those
                // still waiting, so far.
                println!(
                    "|   | (audit feed: {} notes dropped so far, {} pending) |",
                    gauge(*port, "tessera_audit_feed_dropped_total").await,
                    gauge(*port, "tessera_audit_feed_pending").await
                );
            }
            sums[index].0 += cpu / 3.0;
            sums[index].1 += (voluntary + involuntary) / 3.0;
            sums[index].2 += redis_cpu / 3.0;
        }
    }
    println!(
        "\n| mean of 3 | HTTP process CPU µs/check | context switches/check | Redis CPU µs/check |"
    );
    println!("|---|---|---|---|");
    for ((name, ..), (cpu, switches, redis_cpu)) in targets.iter().zip(&sums) {
        println!("| {name} | {cpu:.1} | {switches:.2} | {redis_cpu:.1} |");
    }
    println!("\n| mean of 3, by thread | thread | CPU µs/check | context switches/check |");
    println!("|---|---|---|---|");
    for ((name, ..), threads) in targets.iter().zip(&by_thread) {
        for (kind, (cpu, switches)) in threads {
            println!("| {name} | {kind} | {cpu:.1} | {switches:.2} |");
        }
    }
}
