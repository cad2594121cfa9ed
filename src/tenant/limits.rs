//! governor limits: a cheap first gate in each process. The failure counter and the lock in
//! the store are the hard bound across replicas.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::domain::OtpError;
use serde::Deserialize;

/// The rate limits (`[limits]`); `settings.rs` loads them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSettings {
    pub per_user_per_minute: u32,
    pub per_org_per_second: u32,
    pub per_address_per_second: u32,
}

/// Quotas from settings; `None` is a limit switched off (0).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub per_user: Option<Quota>,
    pub per_org: Option<Quota>,
    pub per_address: Option<Quota>,
}

impl Limits {
    pub fn from_settings(limits: &LimitSettings) -> Self {
        Self {
            per_user: NonZeroU32::new(limits.per_user_per_minute).map(Quota::per_minute),
            per_org: NonZeroU32::new(limits.per_org_per_second).map(Quota::per_second),
            per_address: NonZeroU32::new(limits.per_address_per_second).map(Quota::per_second),
        }
    }
}

/// RESOURCE_EXHAUSTED with the whole seconds until the next cell is free (at least 1).
pub(crate) fn exhausted(
    not_until: &governor::NotUntil<governor::clock::QuantaInstant>,
) -> OtpError {
    let wait = not_until.wait_time_from(DefaultClock::default().now());
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    OtpError::RateLimited {
        retry_after_secs: secs.max(1),
    }
}

pub(crate) fn check_direct(limiter: Option<&DefaultDirectRateLimiter>) -> Result<(), OtpError> {
    match limiter.map(RateLimiter::check) {
        Some(Err(not_until)) => Err(exhausted(&not_until)),
        _ => Ok(()),
    }
}

pub(crate) fn check_keyed<K: std::hash::Hash + Eq + Clone>(
    limiter: Option<&DefaultKeyedRateLimiter<K>>,
    key: &K,
) -> Result<(), OtpError> {
    match limiter.map(|l| l.check_key(key)) {
        Some(Err(not_until)) => Err(exhausted(&not_until)),
        _ => Ok(()),
    }
}

/// The key a client is limited by: its IPv4 address, or its IPv6 /64 (one end site holds a
/// whole /64 and can rotate through it at will).
fn client_key(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from_bits(
                v6.to_bits() & !u128::from(u64::MAX),
            )),
        },
    }
}

/// Per client address, shared by all workers of one process.
#[derive(Clone)]
pub struct AddressLimiter(Option<Arc<DefaultKeyedRateLimiter<IpAddr>>>);

impl AddressLimiter {
    pub fn new(quota: Option<Quota>) -> Self {
        Self(quota.map(|q| Arc::new(RateLimiter::keyed(q))))
    }

    pub fn check(&self, address: IpAddr) -> Result<(), OtpError> {
        check_keyed(self.0.as_deref(), &client_key(address))
    }

    /// Forgets addresses whose cells have refilled, so memory stays bounded.
    pub fn prune(&self) {
        if let Some(limiter) = &self.0 {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_are_limited_by_their_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(other));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(client_key(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
        let limiter = AddressLimiter::new(NonZeroU32::new(1).map(Quota::per_minute));
        assert!(limiter.check(a).is_ok());
        assert!(matches!(
            limiter.check(b),
            Err(OtpError::RateLimited { .. })
        ));
        assert!(limiter.check(other).is_ok());
    }
}
