//! The load tool's record (`benches/load/record.rs`): the soak's verdict arithmetic, and its
//! readings of `/proc`, of a real redis-server's `INFO` and of a real tessera's `/metrics`.
//! The load tool runs only under `cargo bench`; what it concludes from is held here.

use std::time::{Duration, Instant};

use crate::helpers::{Backend, RedisServer, Spawn, TempDir, Token, free_port};

#[path = "../../benches/load/record.rs"]
#[allow(dead_code)]
mod record;

use record::{
    HostCpu, RedisInfo, Restart, SLOW_MS, flat, growth, http_requests_over, percentile,
    process_cpu_us,
};

#[test]
fn a_restart_inside_a_window_is_in_that_window() {
    // Redis stopped 3 s into the window at 900 s and answered (plus the grace) 9 s into it:
    // neither end of the window is inside the restart, yet the window holds it.
    let restart = Restart {
        from_ms: 903_000,
        to_ms: 909_000,
    };
    assert!(restart.overlaps(900_000, 10_000));
    assert!(!restart.overlaps(890_000, 10_000), "the window before");
    assert!(!restart.overlaps(910_000, 10_000), "the window after");
    // A restart that starts as a window ends belongs to the next window only.
    let at_the_edge = Restart {
        from_ms: 910_000,
        to_ms: 916_000,
    };
    assert!(!at_the_edge.overlaps(900_000, 10_000));
    assert!(at_the_edge.overlaps(910_000, 10_000));
    // One still going when a window starts is in it.
    assert!(restart.overlaps(909_000, 10_000));
    assert!(restart.covers(903_000) && restart.covers(909_000) && !restart.covers(909_001));
}

#[test]
fn percentiles_are_nearest_rank_in_milliseconds() {
    let latencies_us: Vec<u32> = (1..=100).map(|n| n * 1000).collect();
    assert_eq!(percentile(&latencies_us, 0.99), 99.0);
    assert_eq!(percentile(&latencies_us, 0.50), 51.0);
    assert_eq!(percentile(&latencies_us, 0.0), 1.0);
    assert_eq!(percentile(&latencies_us, 1.0), 100.0);
    assert!(percentile(&[], 0.99).is_nan());
}

#[test]
fn counters_and_the_flat_rule() {
    assert_eq!(growth(10, 15), 5);
    // Redis restarted: its counters began again, and the window's growth is their value.
    assert_eq!(growth(10, 3), 3);
    let (change, within) = flat(100.0, 110.0, 0.10);
    assert!((change - 0.10).abs() < 1e-12 && within);
    assert!(!flat(100.0, 110.1, 0.10).1);
    assert!(
        !flat(100.0, 89.9, 0.10).1,
        "falling counts as much as rising"
    );
    assert!(flat(44.9, 44.9, 0.10).1);
}

#[test]
fn redis_info_is_read_off_a_real_server() {
    let dir = TempDir::new("load-tool-info");
    // AOF on, as the soak runs it (the later `--appendonly` wins over the kit's `no`).
    let redis = RedisServer::start_with(
        free_port(),
        &["--dir", dir.0.to_str().unwrap(), "--appendonly", "yes"],
    );
    for key in ["a", "b", "c"] {
        redis.cli(&["SET", key, "1"]).unwrap();
    }
    let info = RedisInfo::parse(&redis.cli(&["INFO", "all"]).unwrap());
    assert_eq!(info.pid, u64::from(redis.pid()));
    assert_eq!(info.keys, 3);
    assert_eq!(info.forks, 0);
    assert!(info.used_bytes > 0 && info.rss_bytes > 0, "{info:?}");
    assert_eq!(
        info.aof_base_bytes, 0,
        "the AOF's base is empty until a rewrite"
    );

    // An AOF rewrite forks, is counted once it is done, and leaves the keys in the base.
    redis.cli(&["BGREWRITEAOF"]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let after = loop {
        let text = redis.cli(&["INFO", "all"]).unwrap();
        let done =
            text.contains("aof_rewrite_in_progress:0") && text.contains("aof_rewrite_scheduled:0");
        if done && RedisInfo::parse(&text).forks > 0 {
            break RedisInfo::parse(&text);
        }
        assert!(
            Instant::now() < deadline,
            "the rewrite did not finish: {text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(growth(info.forks, after.forks), 1);
    assert!(after.aof_base_bytes > 0, "{after:?}");
    // Its own CPU so far: starting up and answering took some.
    assert!(after.main_cpu_us > 0 && after.main_cpu_us >= info.main_cpu_us);
}

#[test]
fn the_machine_and_a_process_cpu_are_read_off_proc() {
    let host = HostCpu::parse(&std::fs::read_to_string("/proc/stat").unwrap());
    assert!(host.total > 0, "{host:?}");
    assert!(
        host.idle + host.iowait + host.steal <= host.total,
        "{host:?}"
    );

    // This process's CPU moves while it works (ticks of 10 ms).
    let own = || process_cpu_us(&std::fs::read_to_string("/proc/self/stat").unwrap(), false);
    let before = own();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut work = 0u64;
    while own() == before && Instant::now() < deadline {
        for n in 0..100_000u64 {
            work = std::hint::black_box(work.wrapping_mul(31).wrapping_add(n));
        }
    }
    assert!(own() > before, "no CPU read off /proc/self/stat");

    // A command name with spaces and parentheses: the fields start after its last ')'.
    // utime 7, stime 5, cutime 3, cstime 2 (fields 14 to 17).
    let stat = "42 (tessera (x) y) S 1 42 42 0 -1 4194560 100 0 0 0 7 5 3 2 20 0 1 0";
    assert_eq!(process_cpu_us(stat, false), 12 * 10_000);
    assert_eq!(process_cpu_us(stat, true), 17 * 10_000);
    assert_eq!(process_cpu_us("", true), 0);
}

#[actix_web::test]
async fn tessera_s_slow_requests_are_read_off_its_metrics() {
    let app = Spawn::new(Backend::Memory).start().await;
    let alice = Token::user("acme", "alice")
        .role("otp.check", "acme")
        .sign();
    app.add(&alice).await;
    for _ in 0..3 {
        app.check(&alice, "alice", "000000").await;
    }
    let text = app.metrics_text().await;
    // The soak's bound must be one of tessera's buckets, or every request would count slow.
    let (all, slow) = http_requests_over(&text, SLOW_MS).expect("a bucket at SLOW_MS");
    assert_eq!(all, 4, "one enrollment and three checks over HTTP");
    assert!(slow <= all);
    assert_eq!(http_requests_over(&text, 26), None, "no bucket at 26 ms");
    assert_eq!(http_requests_over("", SLOW_MS), None);
}
