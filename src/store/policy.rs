//! Organizations' policies and the index of locked users, as the store keeps them.
//!
//! One hash per organization holds the parts of its policies it replaced (`StoredPolicies`),
//! each in its stored form (`stored_form`), with their dates and the organization's policy
//! sequence. Every change also notes the organization in a change index under a counter (the
//! epoch): each replica asks for the organizations changed since the epoch it last saw, a few
//! times a second, so that a change reaches every replica without a read per request and
//! without a message that could be lost.
//!
//! Fields of an organization's hash (format 1, `v`):
//!   lockout, otp      a part's stored form (JSON of `CustomLockout`, `OtpSettings`)
//!   lockout.c, .m     when the part was first set, last changed (Unix microseconds)
//!   q                 the organization's policy sequence (grows on every change, resets too)
//!   seeded            the configuration's seed was applied (see `PolicySeed`)

use std::collections::HashMap;
use std::sync::Arc;

use super::{StoreError, UserKey};
use crate::domain::UnixMicros;
use crate::domain::policy::{CustomLockout, OtpSettings, Stamped, StoredPolicies, WriteMode};

/// The newest format of an organization's hash that this release reads and writes.
pub const POLICY_FORMAT: i64 = 1;

/// The two parts an organization may replace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyPart {
    Lockout,
    Otp,
}

impl PolicyPart {
    /// Its field in the organization's hash.
    pub const fn field(self) -> &'static str {
        match self {
            Self::Lockout => "lockout",
            Self::Otp => "otp",
        }
    }
}

/// One change of one part: its stored form (empty for a reset).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyWrite {
    pub part: PolicyPart,
    pub mode: WriteMode,
    pub form: String,
}

impl PolicyWrite {
    pub fn lockout(mode: WriteMode, lockout: &CustomLockout) -> Self {
        Self {
            part: PolicyPart::Lockout,
            mode,
            form: stored_form(lockout),
        }
    }

    pub fn otp(mode: WriteMode, settings: &OtpSettings) -> Self {
        Self {
            part: PolicyPart::Otp,
            mode,
            form: stored_form(settings),
        }
    }

    pub fn reset(part: PolicyPart, mode: WriteMode) -> Self {
        Self {
            part,
            mode,
            form: String::new(),
        }
    }
}

/// What a write did (`decide_write`'s decision, with the sequence the caller reports).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyWritten {
    Written { sequence: u64 },
    Exists,
    Absent { sequence: u64 },
    Unchanged { sequence: u64 },
}

/// The configuration's `[orgs.<id>]` entries, written once: each part where the
/// organization has none, and never again once it was applied (the API's changes, resets
/// included, stand from then on).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PolicySeed {
    pub lockout: Option<CustomLockout>,
    pub otp: Option<OtpSettings>,
}

/// The organizations whose policies changed after an epoch, and the epoch now. An epoch
/// below the one asked about means the store lost its index (flushed, replaced): every
/// organization may have changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyChanges {
    pub epoch: u64,
    pub orgs: Vec<Arc<str>>,
}

/// A user to add to, or take out of, their organization's index of locked users.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockIndexChange {
    pub key: UserKey,
    pub locked: bool,
}

/// A part in the form the store keeps and compares ("unchanged" is equal forms): serde's
/// JSON of the part, whose field order is the struct's, so equal parts have equal forms.
pub fn stored_form<T: serde::Serialize>(part: &T) -> String {
    serde_json::to_string(part).unwrap_or_default()
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("policy field {what}"))
}

fn micros(fields: &HashMap<String, Vec<u8>>, name: &str) -> Result<UnixMicros, StoreError> {
    std::str::from_utf8(fields.get(name).ok_or_else(|| corrupt(name))?)
        .ok()
        .and_then(|text| text.parse().ok())
        .map(UnixMicros)
        .ok_or_else(|| corrupt(name))
}

fn part<T: serde::de::DeserializeOwned>(
    fields: &HashMap<String, Vec<u8>>,
    part: PolicyPart,
) -> Result<Option<Stamped<T>>, StoreError> {
    let name = part.field();
    let Some(form) = fields.get(name) else {
        return Ok(None);
    };
    let value = serde_json::from_slice(form).map_err(|_| corrupt(name))?;
    Ok(Some(Stamped {
        value,
        created_at: micros(fields, &format!("{name}.c"))?,
        changed_at: micros(fields, &format!("{name}.m"))?,
    }))
}

/// An organization's hash read back (empty: the organization never changed its policies).
pub fn policies_from(fields: &HashMap<String, Vec<u8>>) -> Result<StoredPolicies, StoreError> {
    let number = |name: &str| -> Result<Option<i64>, StoreError> {
        fields
            .get(name)
            .map(|bytes| {
                std::str::from_utf8(bytes)
                    .ok()
                    .and_then(|text| text.parse().ok())
                    .ok_or_else(|| corrupt(name))
            })
            .transpose()
    };
    let format = number("v")?.unwrap_or(1);
    if format > POLICY_FORMAT {
        return Err(StoreError::NewerFormat(format));
    }
    Ok(StoredPolicies {
        sequence: u64::try_from(number("q")?.unwrap_or(0)).map_err(|_| corrupt("q"))?,
        lockout: part(fields, PolicyPart::Lockout)?,
        otp: part(fields, PolicyPart::Otp)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::HashAlgorithm;

    #[test]
    fn a_hash_reads_back_as_the_parts_it_holds() {
        let lockout = CustomLockout {
            max_otp_attempts: 3,
            max_password_attempts: 0,
        };
        let otp = OtpSettings {
            issuer: "ACME".into(),
            algorithm: HashAlgorithm::Sha256,
            digits: 8,
            period_secs: 30,
            skew: 1,
            lock_duration_secs: 0,
            show_failures: false,
            recovery_codes: 12,
            retention: Some(crate::domain::audit::Retention::default()),
        };
        let mut fields: HashMap<String, Vec<u8>> = [
            ("v", "1".to_owned()),
            ("q", "7".to_owned()),
            ("lockout", stored_form(&lockout)),
            ("lockout.c", "10".to_owned()),
            ("lockout.m", "20".to_owned()),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value.into_bytes()))
        .collect();
        let read = policies_from(&fields).unwrap();
        assert_eq!(read.sequence, 7);
        assert_eq!(read.lockout.as_ref().unwrap().value, lockout);
        assert_eq!(read.lockout.unwrap().changed_at, UnixMicros(20));
        assert_eq!(read.otp, None);

        fields.insert("otp".into(), stored_form(&otp).into_bytes());
        assert!(policies_from(&fields).is_err(), "a part without its dates");
        fields.insert("otp.c".into(), b"1".to_vec());
        fields.insert("otp.m".into(), b"2".to_vec());
        assert_eq!(policies_from(&fields).unwrap().otp.unwrap().value, otp);

        fields.insert("v".into(), b"2".to_vec());
        assert!(matches!(
            policies_from(&fields),
            Err(StoreError::NewerFormat(2))
        ));
        assert_eq!(
            policies_from(&HashMap::new()).unwrap(),
            StoredPolicies::default()
        );
    }
}
