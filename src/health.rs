//! Readiness: the store answers, and this replica's clock agrees with the store's. Time steps
//! come from each replica's clock; a replica whose clock drifted would accept the wrong codes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use crate::clock::SharedClock;
use crate::metrics::Metrics;
use crate::store::SharedStore;

/// An offset past this is worth a warning in the log.
const WARN_OFFSET_MICROS: i64 = 1_000_000;

pub struct Readiness {
    store: SharedStore,
    clock: SharedClock,
    metrics: Arc<Metrics>,
    max_offset_micros: i64,
    store_ok: AtomicBool,
    offset_micros: AtomicI64,
}

impl Readiness {
    pub fn new(
        store: SharedStore,
        clock: SharedClock,
        metrics: Arc<Metrics>,
        max_offset: Duration,
    ) -> Self {
        Self {
            store,
            clock,
            metrics,
            max_offset_micros: i64::try_from(max_offset.as_micros()).unwrap_or(i64::MAX),
            store_ok: AtomicBool::new(false),
            offset_micros: AtomicI64::new(0),
        }
    }

    /// Asks the store now: reachable, and its clock against ours (half the round trip
    /// taken off). Returns whether this replica is ready.
    pub async fn check(&self) -> bool {
        let before = self.clock.now();
        let answer = self.store.server_time().await;
        let after = self.clock.now();
        match answer {
            Ok(server) => {
                self.store_ok.store(true, Ordering::Relaxed);
                if let Some(server) = server {
                    let midpoint = before.0 + (after.0 - before.0) / 2;
                    let offset = midpoint - server.0;
                    self.offset_micros.store(offset, Ordering::Relaxed);
                    self.metrics.clock_offset.set(offset as f64 / 1e6);
                    if offset.abs() > WARN_OFFSET_MICROS {
                        tracing::warn!(
                            offset_ms = offset / 1000,
                            "this replica's clock is off the store's; run NTP"
                        );
                    }
                }
            }
            Err(err) => {
                self.store_ok.store(false, Ordering::Relaxed);
                tracing::warn!(error = %err, "not ready: store unreachable");
            }
        }
        self.is_ready()
    }

    /// The last check's verdict.
    pub fn is_ready(&self) -> bool {
        self.store_ok.load(Ordering::Relaxed) && self.clock_in_bounds()
    }

    pub fn store_reachable(&self) -> bool {
        self.store_ok.load(Ordering::Relaxed)
    }

    pub fn clock_in_bounds(&self) -> bool {
        self.offset_micros.load(Ordering::Relaxed).abs() <= self.max_offset_micros
    }

    pub fn offset_micros(&self) -> i64 {
        self.offset_micros.load(Ordering::Relaxed)
    }
}
