//! `zitadel.v1.ObjectDetails` as a value: what a change to a factor answers.

use std::sync::Arc;

use super::time::UnixMicros;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Details {
    /// The per-user sequence of the event the call added (starts at 1, only grows).
    pub sequence: u64,
    /// Filled by Add.
    pub creation_date: Option<UnixMicros>,
    /// Filled by Verify, the login check, Remove and Unlock.
    pub change_date: Option<UnixMicros>,
    /// The organization the factor belongs to.
    pub resource_owner: Arc<str>,
}

impl Details {
    pub fn created(sequence: u64, at: UnixMicros, resource_owner: Arc<str>) -> Self {
        Self {
            sequence,
            creation_date: Some(at),
            change_date: None,
            resource_owner,
        }
    }

    /// An organization's policy that is the instance's: nothing the organization changed.
    pub fn default_policy(resource_owner: Arc<str>) -> Self {
        Self {
            sequence: 0,
            creation_date: None,
            change_date: None,
            resource_owner,
        }
    }

    pub fn changed(sequence: u64, at: UnixMicros, resource_owner: Arc<str>) -> Self {
        Self {
            sequence,
            creation_date: None,
            change_date: Some(at),
            resource_owner,
        }
    }
}
