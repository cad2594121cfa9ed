//! The soak's arithmetic and its readings of what other programs print (`/proc`, Redis's
//! `INFO`, tessera's `/metrics`): pure functions, so that `tests/api/load_tool.rs` holds them
//! against real servers. The load tool itself runs only under `cargo bench`.

/// A request slower than this counts as slow, on both sides: the load tool's (scheduled
/// to answered) and tessera's (its own request histogram, whose bucket this is).
pub const SLOW_MS: u32 = 25;

/// One restart of Redis: from the signal to some seconds after it answered again, in
/// milliseconds since the start of the load.
#[derive(Clone, Copy, Debug)]
pub struct Restart {
    pub from_ms: u64,
    pub to_ms: u64,
}

impl Restart {
    pub fn covers(&self, at_ms: u64) -> bool {
        (self.from_ms..=self.to_ms).contains(&at_ms)
    }

    /// Whether any of the window `[start_ms, start_ms + length_ms)` falls in the restart,
    /// a restart shorter than the window and inside it included.
    pub fn overlaps(&self, start_ms: u64, length_ms: u64) -> bool {
        self.from_ms < start_ms + length_ms && self.to_ms >= start_ms
    }
}

/// The nearest-rank `q` quantile of latencies in µs, sorted, in ms; NaN when there are none.
pub fn percentile(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    f64::from(sorted[index]) / 1000.0
}

/// A counter's growth between samples; after a restart (the counter began again) its value.
pub fn growth(before: u64, now: u64) -> u64 {
    if now >= before { now - before } else { now }
}

/// `part` in percent of `total` (0 when `total` is).
pub fn share(part: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        100.0 * part as f64 / total as f64
    }
}

pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// How far `after` moved from `before`, as a fraction of it, and whether that is within
/// `tolerance` either way: the soak's "flat".
pub fn flat(before: f64, after: f64, tolerance: f64) -> (f64, bool) {
    let change = (after - before) / before;
    (change, change.abs() <= tolerance)
}

/// What Redis says of itself (`INFO all`) in a sample; zeros while it is down.
#[derive(Clone, Copy, Debug, Default)]
pub struct RedisInfo {
    pub pid: u64,
    /// `total_forks` and `aof_delayed_fsync` so far (since its last start).
    pub forks: u64,
    pub delayed_fsyncs: u64,
    /// The data set and what the process holds for it (`used_memory`, `used_memory_rss`),
    /// its keys, and the append-only file's base as of the last rewrite (`aof_base_size`):
    /// whether Redis's work grows because its data does.
    pub used_bytes: u64,
    pub rss_bytes: u64,
    pub keys: u64,
    pub aof_base_bytes: u64,
    /// The server's own CPU so far (`used_cpu_user` + `used_cpu_sys`, its threads), µs: the
    /// process's CPU less this is its rewrite children's.
    pub main_cpu_us: u64,
}

impl RedisInfo {
    pub fn parse(info: &str) -> Self {
        let text = |name: &str| {
            info.lines()
                .find_map(|l| Some(l.strip_prefix(name)?.strip_prefix(':')?.trim()))
        };
        let field = |name: &str| text(name).and_then(|v| v.parse().ok()).unwrap_or(0);
        let seconds = |name: &str| {
            text(name)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        // "db0:keys=N,expires=M,avg_ttl=T"
        let keys = text("db0")
            .and_then(|v| v.strip_prefix("keys=")?.split(',').next()?.parse().ok())
            .unwrap_or(0);
        Self {
            pid: field("process_id"),
            forks: field("total_forks"),
            delayed_fsyncs: field("aof_delayed_fsync"),
            used_bytes: field("used_memory"),
            rss_bytes: field("used_memory_rss"),
            keys,
            aof_base_bytes: field("aof_base_size"),
            main_cpu_us: ((seconds("used_cpu_user") + seconds("used_cpu_sys")) * 1e6) as u64,
        }
    }
}

/// The machine's CPU time so far (`/proc/stat`, in ticks): all of it, stolen, waiting on I/O,
/// idle.
#[derive(Clone, Copy, Debug, Default)]
pub struct HostCpu {
    pub total: u64,
    pub steal: u64,
    pub iowait: u64,
    pub idle: u64,
}

impl HostCpu {
    pub fn parse(proc_stat: &str) -> Self {
        let ticks: Vec<u64> = proc_stat
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .skip(1)
            .filter_map(|field| field.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal guest guest_nice (guests are in user).
        Self {
            total: ticks.iter().take(8).sum(),
            steal: ticks.get(7).copied().unwrap_or(0),
            iowait: ticks.get(4).copied().unwrap_or(0),
            idle: ticks.get(3).copied().unwrap_or(0),
        }
    }
}

/// A process's CPU time so far from its `/proc/<pid>/stat`, µs: utime and stime, and with
/// `children` its reaped children's too (cutime and cstime); 0 when unreadable.
pub fn process_cpu_us(stat: &str, children: bool) -> u64 {
    // The command name, in parentheses, may hold spaces: the fields start after its end.
    let Some(rest) = stat.rfind(')').and_then(|at| stat.get(at + 2..)) else {
        return 0;
    };
    let ticks: u64 = rest
        .split_whitespace()
        .skip(11)
        .take(if children { 4 } else { 2 })
        .filter_map(|field| field.parse::<u64>().ok())
        .sum();
    // Clock ticks of 10 ms (getconf CLK_TCK: 100 on Linux).
    ticks * 10_000
}

/// tessera's HTTP requests so far and those slower than `slow_ms`, from its `/metrics`: the
/// count of `tessera_request_duration_seconds` less its bucket at `slow_ms`. `None` when
/// the text has no such histogram or no bucket at that bound (the slow count would be
/// every request).
pub fn http_requests_over(metrics: &str, slow_ms: u32) -> Option<(u64, u64)> {
    let bucket = format!("le=\"{}\"", f64::from(slow_ms) / 1000.0);
    let sum = |prefix: &str, also: &str| -> Option<u64> {
        let values: Vec<u64> = metrics
            .lines()
            .filter(|l| {
                l.starts_with(prefix) && l.contains("transport=\"http\"") && l.contains(also)
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .map(|v| v as u64)
            .collect();
        (!values.is_empty()).then(|| values.iter().sum())
    };
    let all = sum("tessera_request_duration_seconds_count{", "")?;
    let fast = sum("tessera_request_duration_seconds_bucket{", &bucket)?;
    Some((all, all.saturating_sub(fast)))
}
