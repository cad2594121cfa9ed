//! The domain's clock: the wall clock the application hands the domain as `now` (dates, lock
//! expiry, time steps). Tests swap in a clock they can move. (Other readers of the wall clock
//! have reasons of their own: the token checks compare `exp` with it, `tessera token` mints
//! with it, the memory store floors its sequences with it as Redis does with `TIME`.)

use std::sync::Arc;
#[cfg(feature = "test-kit")]
use std::sync::atomic::{AtomicI64, Ordering};

use crate::domain::UnixMicros;

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> UnixMicros;
}

pub type SharedClock = Arc<dyn Clock>;

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> UnixMicros {
        UnixMicros(chrono::Utc::now().timestamp_micros())
    }
}

/// A clock that stands still until moved: for tests of lock expiry and time steps.
#[cfg(feature = "test-kit")]
#[derive(Debug)]
pub struct ManualClock(AtomicI64);

#[cfg(feature = "test-kit")]
impl ManualClock {
    pub fn new(now: UnixMicros) -> Self {
        Self(AtomicI64::new(now.0))
    }

    pub fn advance_secs(&self, secs: i64) {
        self.0
            .fetch_add(secs.saturating_mul(1_000_000), Ordering::SeqCst);
    }

    pub fn set(&self, now: UnixMicros) {
        self.0.store(now.0, Ordering::SeqCst);
    }
}

#[cfg(feature = "test-kit")]
impl Clock for ManualClock {
    fn now(&self) -> UnixMicros {
        UnixMicros(self.0.load(Ordering::SeqCst))
    }
}
