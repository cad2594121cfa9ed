//! One actor per organization. The actor is the unit of isolation, caching, rate limiting
//! and backpressure inside one process; it is not the lock (several replicas run at once):
//! Redis scripts are. Its I/O runs as futures that do not hold the actor.

mod actor;
mod limits;
mod messages;
mod registry;
mod usecases;

use std::sync::Arc;

pub use actor::OrgActor;
pub use limits::{AddressLimiter, Limits};
pub use messages::{
    Enroll, Enrollment, FactorView, ListFactors, RemoveFactor, SubmitCode, UnlockFactor,
};
pub use registry::{OrgHandle, OrgRegistry};

use crate::domain::{LockoutPolicy, TotpParams};
use crate::seal::KeyRing;
use crate::store::SharedStore;

/// The TOTP rules an organization's factors follow.
#[derive(Debug, Clone)]
pub struct OtpPolicy {
    pub params: TotpParams,
    pub skew: u8,
    pub issuer: String,
    pub lockout: LockoutPolicy,
}

/// What every organization actor shares.
pub struct TenantDeps {
    pub store: SharedStore,
    pub keys: Arc<KeyRing>,
    pub policy: OtpPolicy,
    pub limits: Limits,
    pub cache_capacity: usize,
}
