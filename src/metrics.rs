//! The Prometheus registry. Labels never carry a user id, a code, a token or an organization
//! (unbounded); outcomes and operations are small closed sets.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    /// Calls by transport ("http", "grpc"), RPC name and gRPC code name.
    pub requests: IntCounterVec,
    pub request_seconds: HistogramVec,
    /// Code attempts by purpose ("enroll", "login") and outcome.
    pub otp_attempts: IntCounterVec,
    /// Lock events: "locked", "unlocked".
    pub lock_events: IntCounterVec,
    pub store_seconds: HistogramVec,
    pub store_errors: IntCounterVec,
    pub org_actors: IntGauge,
    /// Calls handed to organization actors and not yet answered (queued or running): the
    /// mailbox depth, summed over organizations.
    pub org_calls_in_flight: IntGauge,
    /// Redis connections open: one shared per thread that uses the store (no checkout, so
    /// nothing waits for it), plus each thread's pool for writes that wait for replicas.
    pub redis_connections: IntGauge,
    /// This replica's clock minus the store's, in seconds.
    pub clock_offset: prometheus::Gauge,
    /// Token refusals by reason: "missing", "not_bearer", "invalid", and "unchecked" (the
    /// provider could not be asked about an opaque token).
    pub token_failures: IntCounterVec,
    /// Recovery codes typed at login, by outcome (`RECOVERY_OUTCOMES`).
    pub recovery_code_checks: IntCounterVec,
    /// Recovery-code sets changed: "generated" (codes made), "removed" (sets removed).
    pub recovery_code_events: IntCounterVec,
    /// Notes for the index of locked users dropped because the queue was full (the store
    /// away for long): those users show in the listing again at their next refused attempt.
    pub lock_index_dropped: prometheus::IntCounter,
    pub audit_feed_dropped: prometheus::IntCounter,
    pub audit_feed_pending: prometheus::IntGauge,
    pub webhook_deliveries: IntCounterVec,
    pub webhook_retries: prometheus::IntCounter,
    pub webhook_dead_letters: prometheus::IntCounter,
    pub webhook_oldest_pending: prometheus::Gauge,
    /// Changes of organizations' policies through the API, by part ("lockout", "otp").
    pub policy_changes: IntCounterVec,
    /// Code attempts whose factor the organization actor had cached (no read before the
    /// check's script), and those that read it from the store first: the cold path.
    pub factor_cache_hits: prometheus::IntCounter,
    pub factor_cache_misses: prometheus::IntCounter,
    /// `otp_attempts` and `store_seconds` for their known label sets, resolved once.
    attempt_series: Resolved<IntCounter, 2>,
    store_timers: Resolved<Histogram, 1>,
}

/// A family's series for the label sets known when the registry is made, resolved once: a
/// call on every request finds its series by comparing a few short strings, instead of
/// hashing the labels, locking the family's map and cloning the series.
struct Resolved<M, const N: usize> {
    series: Vec<([&'static str; N], M)>,
}

impl<M, const N: usize> Resolved<M, N> {
    fn get(&self, labels: [&str; N]) -> Option<&M> {
        self.series
            .iter()
            .find(|(known, _)| *known == labels)
            .map(|(_, metric)| metric)
    }
}

/// One RPC's request series (`tessera_requests_total` by code and the duration histogram),
/// resolved on its first call and then kept by the caller, one per route and method.
pub struct RpcSeries {
    transport: &'static str,
    rpc: &'static str,
    requests: IntCounterVec,
    seconds: Histogram,
    /// By gRPC code, each made on first use, so that /metrics shows only codes answered.
    by_code: [std::sync::OnceLock<IntCounter>; 17],
}

impl RpcSeries {
    pub fn observe(&self, code: i32, seconds: f64) {
        self.seconds.observe(seconds);
        let name = code_name(code);
        match usize::try_from(code).ok().and_then(|i| self.by_code.get(i)) {
            Some(cell) => cell
                .get_or_init(|| {
                    self.requests
                        .with_label_values(&[self.transport, self.rpc, name])
                })
                .inc(),
            None => self
                .requests
                .with_label_values(&[self.transport, self.rpc, name])
                .inc(),
        }
    }
}

/// The outcomes of `tessera_recovery_code_checks_total`.
pub const RECOVERY_OUTCOMES: &[&str] = &[
    "accepted",
    "invalid",
    "locked",
    "no_codes",
    "rate_limited",
    "unavailable",
];

#[derive(Debug, thiserror::Error)]
#[error("metrics: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

/// The outcomes of `tessera_otp_attempts_total`.
const OUTCOMES: &[&str] = &[
    "verified",
    "checked",
    "invalid",
    "replayed",
    "locked",
    "rate_limited",
    "unavailable",
    "refused",
];

/// Latency buckets from 250 µs to 2.5 s: a check is a few milliseconds, a timeout is a second.
const BUCKETS: &[f64] = &[
    0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

impl Metrics {
    pub fn new() -> Result<Self, MetricsError> {
        let registry = Registry::new();
        let counter =
            |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, MetricsError> {
                let metric = IntCounterVec::new(Opts::new(name, help), labels)?;
                registry.register(Box::new(metric.clone()))?;
                Ok(metric)
            };
        let histogram =
            |name: &str, help: &str, labels: &[&str]| -> Result<HistogramVec, MetricsError> {
                let metric = HistogramVec::new(
                    HistogramOpts::new(name, help).buckets(BUCKETS.to_vec()),
                    labels,
                )?;
                registry.register(Box::new(metric.clone()))?;
                Ok(metric)
            };
        let requests = counter(
            "tessera_requests_total",
            "Calls answered, by transport, RPC and gRPC code.",
            &["transport", "rpc", "code"],
        )?;
        let request_seconds = histogram(
            "tessera_request_duration_seconds",
            "Time to answer a call, by transport and RPC.",
            &["transport", "rpc"],
        )?;
        let otp_attempts = counter(
            "tessera_otp_attempts_total",
            "OTP code attempts by purpose (enroll, login) and outcome (verified, checked, invalid, replayed, locked, rate_limited, unavailable).",
            &["purpose", "outcome"],
        )?;
        let lock_events = counter(
            "tessera_otp_lock_events_total",
            "Factors locked after too many failures, and unlocked by an admin.",
            &["event"],
        )?;
        let store_seconds = histogram(
            "tessera_store_duration_seconds",
            "Time of one store call, by operation.",
            &["op"],
        )?;
        let store_errors = counter(
            "tessera_store_errors_total",
            "Store calls that failed (unreachable or timed out), by operation.",
            &["op"],
        )?;
        let org_actors = IntGauge::new(
            "tessera_org_actors",
            "Organization actors alive in this process.",
        )?;
        registry.register(Box::new(org_actors.clone()))?;
        let org_calls_in_flight = IntGauge::new(
            "tessera_org_calls_in_flight",
            "Calls handed to organization actors and not yet answered (mailbox depth).",
        )?;
        registry.register(Box::new(org_calls_in_flight.clone()))?;
        let redis_connections = IntGauge::new(
            "tessera_redis_connections",
            "Redis connections open: one shared per thread using the store, plus each thread's pool for writes that wait for replicas.",
        )?;
        registry.register(Box::new(redis_connections.clone()))?;
        let clock_offset = prometheus::Gauge::new(
            "tessera_clock_offset_seconds",
            "This replica's clock minus the store's (Redis TIME), in seconds.",
        )?;
        registry.register(Box::new(clock_offset.clone()))?;
        let token_failures = counter(
            "tessera_token_verification_failures_total",
            "Requests refused at the token check, by reason.",
            &["reason"],
        )?;
        let recovery_code_checks = counter(
            "tessera_recovery_code_checks_total",
            "Recovery codes typed at login, by outcome (accepted, invalid, locked, no_codes, rate_limited, unavailable).",
            &["outcome"],
        )?;
        let recovery_code_events = counter(
            "tessera_recovery_codes_total",
            "Recovery codes generated (one per code), and sets removed.",
            &["event"],
        )?;
        // Known label sets start at zero: a series that appears only on its first event
        // hides it from rate() and from the alerts until then.
        let mut attempt_series = Resolved { series: Vec::new() };
        for purpose in ["enroll", "login"] {
            for outcome in OUTCOMES {
                let series = otp_attempts.with_label_values(&[purpose, outcome]);
                attempt_series.series.push(([purpose, outcome], series));
            }
        }
        for event in ["locked", "unlocked"] {
            lock_events.with_label_values(&[event]);
        }
        for outcome in RECOVERY_OUTCOMES {
            recovery_code_checks.with_label_values(&[outcome]);
        }
        for event in ["generated", "removed"] {
            recovery_code_events.with_label_values(&[event]);
        }
        let mut store_timers = Resolved { series: Vec::new() };
        for op in [
            "load",
            "add",
            "attempt",
            "remove",
            "unlock",
            "time",
            "load_user",
            "add_codes",
            "redeem_code",
            "remove_codes",
            "load_policies",
            "write_policy",
            "seed_policies",
            "policy_changes",
            "index_locks",
            "lock_candidates",
            "user_events",
            "copy_to_feed",
            "feed_events",
        ] {
            store_errors.with_label_values(&[op]);
            store_timers
                .series
                .push(([op], store_seconds.with_label_values(&[op])));
        }
        for reason in ["missing", "not_bearer", "invalid", "unchecked"] {
            token_failures.with_label_values(&[reason]);
        }
        let lock_index_dropped = prometheus::IntCounter::new(
            "tessera_lock_index_dropped_total",
            "Notes for the index of locked users dropped because the store was away too long.",
        )?;
        registry.register(Box::new(lock_index_dropped.clone()))?;
        let audit_feed_dropped = prometheus::IntCounter::new(
            "tessera_audit_feed_dropped_total",
            "Notes for organizations' audit feeds dropped because the store was away too long \
             (the source's next change copies its events).",
        )?;
        registry.register(Box::new(audit_feed_dropped.clone()))?;
        let audit_feed_pending = prometheus::IntGauge::new(
            "tessera_audit_feed_pending",
            "Notes waiting to be copied into organizations' audit feeds on this replica (the \
             feeds' lag; a growing figure means the store does not keep up or is away).",
        )?;
        registry.register(Box::new(audit_feed_pending.clone()))?;
        let webhook_deliveries = counter(
            "tessera_webhook_deliveries_total",
            "Webhook delivery tries, by outcome (success: a 2xx answer; failure: anything else).",
            &["outcome"],
        )?;
        for outcome in ["success", "failure"] {
            webhook_deliveries.with_label_values(&[outcome]);
        }
        let webhook_retries = prometheus::IntCounter::new(
            "tessera_webhook_retries_total",
            "Webhook deliveries tried again after a failure.",
        )?;
        registry.register(Box::new(webhook_retries.clone()))?;
        let webhook_dead_letters = prometheus::IntCounter::new(
            "tessera_webhook_dead_letters_total",
            "Webhook deliveries given up after the retry period, kept as dead letters.",
        )?;
        registry.register(Box::new(webhook_dead_letters.clone()))?;
        let webhook_oldest_pending = prometheus::Gauge::new(
            "tessera_webhook_oldest_pending_seconds",
            "How long the oldest webhook delivery still being retried has been failing.",
        )?;
        registry.register(Box::new(webhook_oldest_pending.clone()))?;
        let policy_changes = counter(
            "tessera_policy_changes_total",
            "Changes of organizations' policies through the API, by part (lockout, otp).",
            &["part"],
        )?;
        for part in ["lockout", "otp"] {
            policy_changes.with_label_values(&[part]);
        }
        let factor_cache_lookups = counter(
            "tessera_factor_cache_lookups_total",
            "Code attempts by whether the organization actor had the user's factor cached (hit) or read it from the store first (miss).",
            &["result"],
        )?;
        // Resolved once: the lookup is on every check, the label search need not be.
        let factor_cache_hits = factor_cache_lookups.with_label_values(&["hit"]);
        let factor_cache_misses = factor_cache_lookups.with_label_values(&["miss"]);
        Ok(Self {
            attempt_series,
            store_timers,
            factor_cache_hits,
            factor_cache_misses,
            audit_feed_dropped,
            audit_feed_pending,
            webhook_deliveries,
            webhook_retries,
            webhook_dead_letters,
            webhook_oldest_pending,
            lock_index_dropped,
            policy_changes,
            registry,
            requests,
            request_seconds,
            otp_attempts,
            lock_events,
            store_seconds,
            store_errors,
            org_actors,
            org_calls_in_flight,
            redis_connections,
            clock_offset,
            token_failures,
            recovery_code_checks,
            recovery_code_events,
        })
    }

    /// The text exposition format.
    /// Adds metrics that another part owns (introspection's, which the token verifier keeps).
    pub fn register(
        &self,
        collectors: Vec<Box<dyn prometheus::core::Collector>>,
    ) -> Result<(), MetricsError> {
        for collector in collectors {
            self.registry.register(collector)?;
        }
        Ok(())
    }

    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if let Err(err) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %err, "encoding metrics failed");
        }
        String::from_utf8(out).unwrap_or_default()
    }

    pub fn observe_request(&self, transport: &str, rpc: &str, code: &str, seconds: f64) {
        self.requests
            .with_label_values(&[transport, rpc, code])
            .inc();
        self.request_seconds
            .with_label_values(&[transport, rpc])
            .observe(seconds);
    }

    /// A call's series, for the caller to keep: `observe_request` without the label search.
    pub fn rpc_series(&self, transport: &'static str, rpc: &'static str) -> RpcSeries {
        RpcSeries {
            transport,
            rpc,
            requests: self.requests.clone(),
            seconds: self.request_seconds.with_label_values(&[transport, rpc]),
            by_code: Default::default(),
        }
    }

    pub fn attempt(&self, purpose: crate::domain::Purpose, outcome: &str) {
        match self.attempt_series.get([purpose.as_str(), outcome]) {
            Some(series) => series.inc(),
            None => self
                .otp_attempts
                .with_label_values(&[purpose.as_str(), outcome])
                .inc(),
        }
    }

    /// The time of one store call of operation `op`.
    pub fn observe_store(&self, op: &str, seconds: f64) {
        match self.store_timers.get([op]) {
            Some(timer) => timer.observe(seconds),
            None => self.store_seconds.with_label_values(&[op]).observe(seconds),
        }
    }
}

/// The name of a gRPC code as Prometheus label values use it (`OK`, `INVALID_ARGUMENT`, ...).
pub fn code_name(code: i32) -> &'static str {
    match code {
        0 => "OK",
        1 => "CANCELLED",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => "UNKNOWN",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(metrics: &Metrics, line_start: &str) -> Option<String> {
        metrics
            .render()
            .lines()
            .find(|line| line.starts_with(line_start))
            .map(|line| line.rsplit(' ').next().unwrap_or_default().to_owned())
    }

    /// A kept series counts into the same family as a label search would, code by code,
    /// creating each code's series only when it is first answered.
    #[test]
    fn kept_rpc_series_count_like_the_label_search() {
        let metrics = Metrics::new().unwrap();
        let series = metrics.rpc_series("http", "CheckOTP");
        series.observe(3, 0.001);
        series.observe(3, 0.002);
        series.observe(0, 0.001);
        // Past the codes gRPC defines: still counted, by the label search.
        series.observe(99, 0.001);
        metrics.observe_request("http", "CheckOTP", "OK", 0.001);
        let requests = |code: &str| {
            sample(
                &metrics,
                &format!(
                    "tessera_requests_total{{code=\"{code}\",rpc=\"CheckOTP\",transport=\"http\"}}"
                ),
            )
        };
        assert_eq!(requests("INVALID_ARGUMENT").as_deref(), Some("2"));
        assert_eq!(requests("OK").as_deref(), Some("2"));
        assert_eq!(requests(code_name(99)).as_deref(), Some("1"));
        assert_eq!(requests("UNAVAILABLE"), None, "a code never answered");
        let count = sample(
            &metrics,
            "tessera_request_duration_seconds_count{rpc=\"CheckOTP\",transport=\"http\"}",
        );
        assert_eq!(count.as_deref(), Some("5"));
    }

    /// The resolved attempt and store series are the family's own.
    #[test]
    fn resolved_series_are_the_familys() {
        let metrics = Metrics::new().unwrap();
        metrics.attempt(crate::domain::Purpose::Login, "invalid");
        metrics.attempt(crate::domain::Purpose::Login, "invalid");
        metrics.observe_store("attempt", 0.001);
        metrics.observe_store("an_op_not_listed", 0.001);
        assert_eq!(
            sample(
                &metrics,
                "tessera_otp_attempts_total{outcome=\"invalid\",purpose=\"login\"}"
            )
            .as_deref(),
            Some("2")
        );
        for op in ["attempt", "an_op_not_listed"] {
            assert_eq!(
                sample(
                    &metrics,
                    &format!("tessera_store_duration_seconds_count{{op=\"{op}\"}}")
                )
                .as_deref(),
                Some("1"),
                "{op}"
            );
        }
    }
}
