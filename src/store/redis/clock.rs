//! Redis's clock as seen from this replica: deadlines are sent to the scripts in it.
//!
//! A script compares its own `TIME` with the deadline it is given and changes nothing past
//! it. The deadline is the replica's monotonic clock mapped onto Redis's with the offset
//! taken from Redis's `TIME` replies (readiness asks every few seconds). The domain's
//! `now` (the wall clock, which tests pin and operators may skew) plays no part.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Instant;

const UNKNOWN: i64 = i64::MIN;

pub(super) struct RedisClock {
    base: Instant,
    /// Redis's time in microseconds minus the microseconds since `base`; `UNKNOWN` until a
    /// `TIME` reply has been seen.
    offset: AtomicI64,
}

impl RedisClock {
    pub(super) fn new() -> Self {
        Self {
            base: Instant::now(),
            offset: AtomicI64::new(UNKNOWN),
        }
    }

    fn micros_since_base(&self, at: Instant) -> i64 {
        i64::try_from(at.saturating_duration_since(self.base).as_micros()).unwrap_or(i64::MAX)
    }

    /// Records a `TIME` reply received at `received`. Redis read its clock somewhere between
    /// sending and `received`; pinning it to `received` makes every mapped time at most the
    /// true one, so a deadline can only err early (by one round trip), never late.
    pub(super) fn observe(&self, redis_micros: i64, received: Instant) {
        let offset = redis_micros.saturating_sub(self.micros_since_base(received));
        self.offset.store(offset, Ordering::Relaxed);
    }

    /// Redis's time at `at` (a lower bound), once a `TIME` reply has been seen.
    pub(super) fn at(&self, at: Instant) -> Option<i64> {
        match self.offset.load(Ordering::Relaxed) {
            UNKNOWN => None,
            offset => Some(offset.saturating_add(self.micros_since_base(at))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn maps_the_monotonic_clock_onto_redis_time() {
        let clock = RedisClock::new();
        let received = Instant::now();
        assert_eq!(clock.at(received), None);
        clock.observe(1_000_000_000, received);
        assert_eq!(clock.at(received), Some(1_000_000_000));
        let later = received + Duration::from_millis(1_500);
        assert_eq!(clock.at(later), Some(1_001_500_000));
    }
}
