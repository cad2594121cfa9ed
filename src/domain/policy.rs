//! The rules one organization's factors follow: TOTP parameters for new enrollments, the
//! verification window and the lockout. Instance defaults, overridable per organization.

use super::factor::LockoutPolicy;
use super::totp::TotpParams;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtpPolicy {
    pub params: TotpParams,
    /// Steps accepted either side of the current one.
    pub skew: u8,
    /// The issuer authenticator apps show.
    pub issuer: String,
    pub lockout: LockoutPolicy,
}
