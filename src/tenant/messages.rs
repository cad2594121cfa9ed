//! The typed messages the HTTP handlers and gRPC services (through the service) send to an
//! organization's actor. Each
//! carries its request's deadline: the actor call and every store call end by it.

use std::sync::Arc;
use std::time::Instant;

use actix::Message;
use secrecy::SecretString;

use crate::domain::{Details, FactorState, OtpError, Purpose, UnixMicros};

/// AddMyAuthFactorOTP.
#[derive(Message)]
#[rtype(result = "Result<Enrollment, OtpError>")]
pub struct Enroll {
    pub user: Arc<str>,
    /// The account shown by authenticator apps.
    pub account: String,
    pub now: UnixMicros,
    pub deadline: Instant,
}

pub struct Enrollment {
    /// Base32 without padding; returned once, never again.
    pub secret: SecretString,
    pub uri: SecretString,
    pub details: Details,
}

/// VerifyMyAuthFactorOTP (`Purpose::Enrollment`) or the login check (`Purpose::Login`).
#[derive(Message)]
#[rtype(result = "Result<Details, OtpError>")]
pub struct SubmitCode {
    pub user: Arc<str>,
    pub code: SecretString,
    pub purpose: Purpose,
    pub now: UnixMicros,
    pub deadline: Instant,
}

/// RemoveMyAuthFactorOTP and RemoveHumanAuthFactorOTP.
#[derive(Message)]
#[rtype(result = "Result<Details, OtpError>")]
pub struct RemoveFactor {
    pub user: Arc<str>,
    pub now: UnixMicros,
    pub deadline: Instant,
}

/// UnlockUser (the OTP factor's lock).
#[derive(Message)]
#[rtype(result = "Result<Details, OtpError>")]
pub struct UnlockFactor {
    pub user: Arc<str>,
    pub now: UnixMicros,
    pub deadline: Instant,
}

/// ListMyAuthFactors: READY factors only.
#[derive(Message)]
#[rtype(result = "Result<Vec<FactorView>, OtpError>")]
pub struct ListFactors {
    pub user: Arc<str>,
    pub deadline: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FactorView {
    pub state: FactorState,
}
