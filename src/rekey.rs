//! `tessera rekey`: seals every enrollment anew under the first key of the ring, so that the
//! older keys can then leave it. It walks every primary with SCAN and replaces each secret
//! with a compare-and-set (`store/lua/reseal.lua`), so it is safe while the service runs:
//! an enrollment that changes meanwhile is left as it is (it was sealed by a running
//! replica, with that replica's first key). A record already under the first key is
//! skipped, so a second run resumes an interrupted one, and a run that reseals nothing
//! proves that no enrollment needs an older key. Recovery codes cannot be hashed anew (only
//! their hashes are kept): the run counts those still under older keys, which stop working
//! when their key leaves the ring.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::seal::KeyRing;
use crate::store::{Primary, RedisStore, Resealed, StoreError};

/// What a run found and did.
#[derive(Debug, Default, Clone)]
pub struct RekeyReport {
    pub primaries: usize,
    pub scanned: u64,
    pub resealed: u64,
    /// Sealed under the first key already.
    pub current: u64,
    /// Changed between the read and the compare-and-set: left alone.
    pub changed_meanwhile: u64,
    /// Do not open with any key of the ring (a key missing from it, a damaged record).
    pub failed: u64,
    /// The first few of those, by Redis key, with why.
    pub failures: Vec<String>,
    /// Records found sealed by each older key (before this run resealed them).
    pub found_by_older_key: BTreeMap<String, u64>,
    /// Unused recovery codes hashed under each older key (or a key the ring lacks).
    pub codes_by_older_key: BTreeMap<String, u64>,
}

impl RekeyReport {
    /// One line: what was done so far.
    pub fn summary(&self) -> String {
        format!(
            "{} scanned on {} {}: {} resealed, {} already under the first key, \
             {} changed meanwhile (left alone), {} failed",
            self.scanned,
            self.primaries,
            if self.primaries == 1 {
                "primary"
            } else {
                "primaries"
            },
            self.resealed,
            self.current,
            self.changed_meanwhile,
            self.failed
        )
    }
}

const FAILURES_SHOWN: usize = 20;
/// Each store call's deadline; the store's own timeout bounds it too.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the rekey; `progress` is told after every page of every primary.
pub async fn rekey(
    store: &RedisStore,
    keys: &KeyRing,
    page: usize,
    mut progress: impl FnMut(&Primary, &RekeyReport),
) -> Result<RekeyReport, StoreError> {
    let primaries = store.primaries(Instant::now() + CALL_TIMEOUT).await?;
    let mut report = RekeyReport {
        primaries: primaries.len(),
        ..RekeyReport::default()
    };
    for primary in &primaries {
        let mut cursor = 0;
        loop {
            let (next, records) = store
                .scan_sealed(primary, cursor, page, Instant::now() + CALL_TIMEOUT)
                .await?;
            for record in records {
                for key_id in &record.recovery_code_keys {
                    if key_id != keys.sealing_key_id() {
                        *report.codes_by_older_key.entry(key_id.clone()).or_default() += 1;
                    }
                }
                let Some(sealed_secret) = record.sealed_secret else {
                    continue;
                };
                report.scanned += 1;
                let user = &record.user;
                let resealed = match keys.reseal(&sealed_secret, &user.org, &user.user) {
                    Ok(None) => {
                        report.current += 1;
                        continue;
                    }
                    Ok(Some(resealed)) => resealed,
                    Err(err) => {
                        report.failed += 1;
                        if report.failures.len() < FAILURES_SHOWN {
                            report
                                .failures
                                .push(format!("{}: {err}", store.key_of(user)));
                        }
                        continue;
                    }
                };
                if let Ok(older) = KeyRing::sealed_by(&sealed_secret) {
                    *report
                        .found_by_older_key
                        .entry(older.to_owned())
                        .or_default() += 1;
                }
                let outcome = store
                    .reseal(
                        user,
                        &sealed_secret,
                        &resealed,
                        Instant::now() + CALL_TIMEOUT,
                    )
                    .await?;
                match outcome {
                    Resealed::Done => report.resealed += 1,
                    Resealed::Changed => report.changed_meanwhile += 1,
                }
            }
            progress(primary, &report);
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
    }
    Ok(report)
}
