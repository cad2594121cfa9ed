//! One actor per organization. The actor is the unit of isolation, caching, rate limiting
//! and backpressure inside one process; it is not the lock (several replicas run at once):
//! Redis scripts are. Each call is an `Operation` (`operation.rs`), run as a future on the
//! actor's thread that does not hold the actor; `otp_factor.rs` holds the factor's.

mod actor;
mod audit_feed;
mod limits;
mod lock_index;
mod operation;
mod otp_factor;
pub mod policies;
mod recovery_codes;
mod registry;

use std::sync::Arc;

pub use actor::OrgActor;
pub use audit_feed::{AuditFeed, AuditFeedCopier};
pub use limits::{AddressLimiter, LimitSettings, Limits};
pub use lock_index::{LockIndexFeed, LockIndexWriter, LockedPage, LockedUser, locked_users};
pub use operation::{OnUser, Operation, store_error};
pub use otp_factor::{
    Enroll, Enrollment, FactorView, InspectUser, ListFactors, RemoveFactor, SubmitCode,
    UnlockFactor, UserFactors,
};
pub use policies::{OrgPolicies, PolicyDirectory};
pub use recovery_codes::{
    GenerateCodes, GeneratedCodes, RedeemCode, Redeemed, RemoveCodes, Requester,
};
pub use registry::{OrgHandle, OrgRegistry};

use std::collections::HashMap;

use crate::domain::OtpPolicy;
use crate::seal::KeyRing;
use crate::store::{PolicySeed, SharedStore};

/// The instance's policy, and the configuration's seeds of organizations' own (written to
/// the store once: see `PolicySeed`), keyed by organization id.
#[derive(Debug, Clone)]
pub struct Policies {
    pub default: Arc<OtpPolicy>,
    pub seeds: HashMap<String, PolicySeed>,
}

/// What every organization actor shares.
pub struct TenantDeps {
    pub store: SharedStore,
    pub keys: Arc<KeyRing>,
    /// What an organization follows where it set no policy of its own.
    pub default_policy: Arc<OtpPolicy>,
    pub lock_index: LockIndexFeed,
    pub audit_feed: AuditFeed,
    pub limits: Limits,
    pub cache_capacity: usize,
    pub metrics: Arc<crate::metrics::Metrics>,
}
