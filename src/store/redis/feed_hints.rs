//! Which organizations this replica recently told the webhooks' slot it has a feed of (the
//! set `<prefix>:{webhooks}:orgs`, read by the webhook workers of every replica).
//!
//! The hint was one SADD after every copy into a feed: with a thousand organizations each
//! copy holds one or two checks, so it was a round trip per check for a set that changes
//! when an organization's first event arrives. Now it is sent when this replica has not sent
//! it for `RENEWAL`: a set lost with Redis's data learns each organization again within it.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lru::LruCache;

/// How long a hint stands before it is sent again.
pub(super) const RENEWAL: Duration = Duration::from_secs(60);
/// Organizations remembered, at most; one forgotten is only hinted again.
const REMEMBERED: NonZeroUsize = NonZeroUsize::new(10_000).unwrap();

pub(super) struct FeedHints {
    sent: Mutex<LruCache<Arc<str>, Instant>>,
}

impl FeedHints {
    pub(super) fn new() -> Self {
        Self {
            sent: Mutex::new(LruCache::new(REMEMBERED)),
        }
    }

    /// Whether `org`'s hint is to be sent at `now`.
    pub(super) fn due(&self, org: &str, now: Instant) -> bool {
        let mut sent = self
            .sent
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        sent.get(org)
            .is_none_or(|at| now.saturating_duration_since(*at) >= RENEWAL)
    }

    /// `org`'s hint was taken by Redis at `now`.
    pub(super) fn sent(&self, org: &str, now: Instant) {
        let mut sent = self
            .sent
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        sent.put(Arc::from(org), now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hint_is_sent_once_per_renewal() {
        let hints = FeedHints::new();
        let (acme, globex): (Arc<str>, Arc<str>) = ("acme".into(), "globex".into());
        let start = Instant::now();
        assert!(hints.due(&acme, start));
        hints.sent(&acme, start);
        assert!(!hints.due(&acme, start + RENEWAL / 2));
        assert!(hints.due(&globex, start + RENEWAL / 2), "per organization");
        assert!(hints.due(&acme, start + RENEWAL));
    }
}
