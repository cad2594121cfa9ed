//! Time as a value. The domain never reads a clock: callers pass `now`.

/// Microseconds since the Unix epoch (the precision ZITADEL's timestamps carry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnixMicros(pub i64);

impl UnixMicros {
    pub const fn from_secs(secs: i64) -> Self {
        Self(secs.saturating_mul(1_000_000))
    }

    /// Whole seconds, clamped at zero: TOTP steps are only defined after the epoch.
    pub fn unsigned_secs(self) -> u64 {
        u64::try_from(self.0.div_euclid(1_000_000)).unwrap_or(0)
    }

    pub fn saturating_add_micros(self, micros: i64) -> Self {
        Self(self.0.saturating_add(micros))
    }
}
