//! One actor per organization. The actor is the unit of isolation, caching, rate limiting
//! and backpressure inside one process; it is not the lock (several replicas run at once):
//! Redis scripts are. Each call is an `Operation` (`operation.rs`), run as a future on the
//! actor's thread that does not hold the actor; `otp_factor.rs` holds the factor's.

mod actor;
mod limits;
mod operation;
mod otp_factor;
mod recovery_codes;
mod registry;

use std::sync::Arc;

pub use actor::OrgActor;
pub use limits::{AddressLimiter, LimitSettings, Limits};
pub use operation::{OnUser, Operation};
pub use otp_factor::{
    Enroll, Enrollment, FactorView, ListFactors, RemoveFactor, SubmitCode, UnlockFactor,
    UserFactors,
};
pub use recovery_codes::{
    GenerateCodes, GeneratedCodes, RedeemCode, Redeemed, RemoveCodes, Requester,
};
pub use registry::{OrgHandle, OrgRegistry};

use std::collections::HashMap;

use crate::domain::OtpPolicy;
use crate::seal::KeyRing;
use crate::store::SharedStore;

/// The instance's policy and the organizations that override it.
#[derive(Debug, Clone)]
pub struct Policies {
    pub default: Arc<OtpPolicy>,
    /// Keyed by organization id in lower case: the environment can give keys only so
    /// (`TESSERA__ORGS__ACME__…` must apply to the organization "ACME").
    pub by_org: HashMap<String, Arc<OtpPolicy>>,
}

impl Policies {
    /// Once per organization actor, so the lower-casing costs nothing per request.
    pub fn for_org(&self, org: &str) -> Arc<OtpPolicy> {
        self.by_org
            .get(&org.to_lowercase())
            .unwrap_or(&self.default)
            .clone()
    }
}

/// What every organization actor shares.
pub struct TenantDeps {
    pub store: SharedStore,
    pub keys: Arc<KeyRing>,
    pub policies: Policies,
    pub limits: Limits,
    pub cache_capacity: usize,
    pub metrics: Arc<crate::metrics::Metrics>,
}
