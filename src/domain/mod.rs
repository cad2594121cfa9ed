//! The pure rules of the OTP factor: no I/O, no clock reads, no framework.
//!
//! ```text
//!  none/removed --add--> NOT_READY --add--> NOT_READY (new secret, "last added" wins)
//!                            |
//!                       verify ok
//!                            v
//!                          READY --remove--> removed
//! ```
//! Any state may also carry a lock (after too many failures) that expires or is lifted by an admin.

pub mod audit;
pub mod details;
pub mod error;
pub mod factor;
pub mod ids;
pub mod policy;
pub mod recovery;
pub mod time;
pub mod totp;
pub mod webhook;

pub use details::Details;
pub use error::{FailedAttempts, GrpcCode, OtpError};
pub use factor::{FactorId, FactorRecord, FactorState, Lock, LockoutPolicy, Purpose};
pub use policy::OtpPolicy;
pub use time::UnixMicros;
pub use totp::{HashAlgorithm, TotpParams};
