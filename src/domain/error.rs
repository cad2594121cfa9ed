//! The one error enum of tessera. Every variant has a stable id (ZITADEL's own id where
//! the contract names one, so clients that match on ids keep working) and a gRPC code.
//! The HTTP status and `tonic::Status` are derived from the code in `api`, in one place each.

/// The gRPC status codes that tessera answers with (values are the wire numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrpcCode {
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    Unauthenticated = 16,
}

impl GrpcCode {
    /// The HTTP status grpc-gateway uses for this code (contract section 3).
    pub const fn http_status(self) -> u16 {
        match self {
            Self::InvalidArgument | Self::FailedPrecondition => 400,
            Self::Unauthenticated => 401,
            Self::PermissionDenied => 403,
            Self::NotFound => 404,
            Self::AlreadyExists => 409,
            Self::ResourceExhausted => 429,
            Self::Internal => 500,
            Self::Unimplemented => 501,
            Self::Unavailable => 503,
            Self::DeadlineExceeded => 504,
        }
    }
}

/// What a failed wrong-code attempt tells the caller when the policy shows lockout failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailedAttempts {
    pub failed: u32,
    /// Attempts left before the factor locks; zero means this failure locked it.
    pub remaining: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OtpError {
    #[error("auth header missing")]
    AuthHeaderMissing,
    #[error("invalid auth header")]
    AuthHeaderNotBearer,
    #[error("invalid token")]
    TokenInvalid,
    #[error("No matching permissions found")]
    PermissionDenied,
    #[error("code is required and must be at most 200 characters")]
    CodeLength,
    #[error("x-zitadel-orgid is not a valid organization id")]
    MalformedOrgHeader,
    #[error("The user id is missing or malformed")]
    MalformedUserId,
    #[error("A client certificate is required for this call")]
    ClientCertificateRequired,
    #[error("Invalid code")]
    InvalidCode(Option<FailedAttempts>),
    #[error("Multifactor OTP (OneTimePassword) doesn't exist")]
    FactorNotFound,
    #[error("Multifactor OTP (OneTimePassword) is already set up")]
    FactorAlreadyReady,
    #[error("Multifactor OTP (OneTimePassword) already exists")]
    FactorAlreadyExists,
    #[error("Multifactor OTP (OneTimePassword) doesn't exist")]
    RemoveNotFound,
    #[error("Multifactor OTP (OneTimePassword) is locked")]
    FactorLocked,
    #[error("Multifactor OTP (OneTimePassword) isn't ready")]
    FactorNotReady,
    #[error("User is not locked")]
    NotLocked,
    #[error("Too many requests")]
    RateLimited { retry_after_secs: u64 },
    #[error("Service unavailable")]
    Unavailable,
    #[error("The identity provider cannot check the token now")]
    TokenCheckUnavailable,
    #[error("Request body is not valid JSON")]
    MalformedBody,
    #[error("Request body too large")]
    BodyTooLarge,
    #[error("Request body not received in time")]
    BodyTimeout,
    #[error("Request message is malformed")]
    MalformedMessage,
    #[error("Compressed messages are not supported")]
    UnsupportedCompression,
    #[error("Not Found")]
    RouteNotFound,
    #[error("Method not allowed")]
    MethodNotAllowed,
    #[error("Exactly one of code and recoveryCode is required")]
    CodeOrRecoveryCode,
    #[error("Recovery code is invalid")]
    InvalidRecoveryCode(Option<FailedAttempts>),
    #[error("Recovery codes not added")]
    RecoveryCodesNotAdded,
    #[error("Recovery codes are locked")]
    RecoveryCodesLocked,
    #[error("Recovery code count is invalid")]
    RecoveryCodeCountInvalid,
    #[error("Recovery codes would exceed the maximum count")]
    RecoveryCodesMaxExceeded,
    #[error("A current TOTP code is required to generate recovery codes")]
    TotpCodeRequired,
    #[error("Lockout Policy already exists")]
    LockoutPolicyExists,
    /// ZITADEL's Update of a lockout policy the organization does not have.
    #[error("Lockout Policy not found")]
    LockoutPolicyNotFound,
    /// ZITADEL's Reset of a lockout policy the organization does not have (another id).
    #[error("Lockout Policy not found")]
    LockoutPolicyNotFoundOnReset,
    #[error("Lockout Policy has not been changed")]
    LockoutPolicyNotChanged,
    #[error("The policy is invalid: {0}")]
    PolicyInvalid(String),
    #[error("The webhook target is refused: {0}")]
    WebhookTargetRefused(String),
    #[error("Webhook endpoint not found")]
    WebhookNotFound,
    #[error("The page token is not one this listing gave")]
    PageTokenInvalid,
    #[error("The query string is malformed")]
    MalformedQuery,
    #[error("Internal error")]
    Internal,
}

impl OtpError {
    /// The stable id: ZITADEL's where the contract gives one, tessera's own (`TESSERA-…`) otherwise.
    pub const fn id(&self) -> &'static str {
        match self {
            Self::AuthHeaderMissing => "AUTH-hdr0m",
            Self::AuthHeaderNotBearer => "AUTH-toLo1",
            Self::TokenInvalid => "AUTH-7fs1e",
            Self::PermissionDenied => "TESSERA-perm1",
            Self::CodeLength => "TESSERA-code1",
            Self::MalformedOrgHeader => "TESSERA-org1",
            Self::MalformedUserId => "TESSERA-user1",
            Self::ClientCertificateRequired => "TESSERA-mtls1",
            Self::InvalidCode(_) => "EVENT-8isk2",
            Self::FactorNotFound | Self::FactorNotReady => "COMMAND-3Mif9s",
            Self::FactorAlreadyReady => "COMMAND-qx4ls",
            Self::FactorAlreadyExists => "COMMAND-do9se",
            Self::RemoveNotFound => "COMMAND-Hd9sd",
            Self::FactorLocked => "COMMAND-SF3fg",
            Self::NotLocked => "COMMAND-4M0ds",
            Self::RateLimited { .. } => "TESSERA-rate1",
            Self::Unavailable => "TESSERA-unav1",
            Self::TokenCheckUnavailable => "TESSERA-idp1",
            Self::MalformedBody => "TESSERA-body1",
            Self::BodyTooLarge => "TESSERA-body2",
            Self::BodyTimeout => "TESSERA-body3",
            Self::MalformedMessage => "TESSERA-msg1",
            Self::UnsupportedCompression => "TESSERA-msg2",
            Self::RouteNotFound => "TESSERA-route1",
            Self::MethodNotAllowed => "TESSERA-route2",
            Self::CodeOrRecoveryCode => "TESSERA-code2",
            Self::InvalidRecoveryCode(_) => "DOMAIN-6uvh0",
            Self::RecoveryCodesNotAdded => "COMMAND-84rgg",
            Self::RecoveryCodesLocked => "COMMAND-d9u8q",
            Self::RecoveryCodeCountInvalid => "COMMAND-7c0nx",
            Self::RecoveryCodesMaxExceeded => "COMMAND-8f2k9",
            Self::TotpCodeRequired => "TESSERA-code3",
            // ZITADEL's ids (internal/command/org_policy_lockout.go).
            Self::LockoutPolicyExists => "ORG-0olDf",
            Self::LockoutPolicyNotFound => "ORG-ADfs1",
            Self::LockoutPolicyNotFoundOnReset => "ORG-D4zuz",
            Self::LockoutPolicyNotChanged => "ORG-0JFSr",
            Self::PolicyInvalid(_) => "TESSERA-policy1",
            Self::WebhookTargetRefused(_) => "TESSERA-hook1",
            Self::WebhookNotFound => "TESSERA-hook2",
            Self::PageTokenInvalid => "TESSERA-page1",
            Self::MalformedQuery => "TESSERA-query1",
            Self::Internal => "TESSERA-int1",
        }
    }

    pub const fn grpc_code(&self) -> GrpcCode {
        match self {
            Self::AuthHeaderMissing
            | Self::AuthHeaderNotBearer
            | Self::TokenInvalid
            | Self::ClientCertificateRequired => GrpcCode::Unauthenticated,
            Self::PermissionDenied => GrpcCode::PermissionDenied,
            Self::CodeLength
            | Self::InvalidCode(_)
            | Self::MalformedBody
            | Self::MalformedOrgHeader
            | Self::MalformedUserId
            | Self::MalformedMessage
            | Self::CodeOrRecoveryCode
            | Self::InvalidRecoveryCode(_)
            | Self::RecoveryCodesNotAdded
            | Self::RecoveryCodeCountInvalid
            | Self::TotpCodeRequired
            | Self::PolicyInvalid(_)
            | Self::WebhookTargetRefused(_)
            | Self::PageTokenInvalid
            | Self::MalformedQuery => GrpcCode::InvalidArgument,
            // ZITADEL's code for a locked user's recovery codes.
            Self::FactorNotFound
            | Self::RemoveNotFound
            | Self::RouteNotFound
            | Self::RecoveryCodesLocked
            | Self::LockoutPolicyNotFound
            | Self::LockoutPolicyNotFoundOnReset
            | Self::WebhookNotFound => GrpcCode::NotFound,
            Self::FactorAlreadyReady
            | Self::FactorLocked
            | Self::FactorNotReady
            | Self::NotLocked
            | Self::LockoutPolicyNotChanged => GrpcCode::FailedPrecondition,
            Self::FactorAlreadyExists
            | Self::RecoveryCodesMaxExceeded
            | Self::LockoutPolicyExists => GrpcCode::AlreadyExists,
            Self::RateLimited { .. } | Self::BodyTooLarge => GrpcCode::ResourceExhausted,
            Self::Unavailable | Self::TokenCheckUnavailable => GrpcCode::Unavailable,
            Self::MethodNotAllowed | Self::UnsupportedCompression => GrpcCode::Unimplemented,
            Self::BodyTimeout => GrpcCode::DeadlineExceeded,
            Self::Internal => GrpcCode::Internal,
        }
    }

    /// What a wrong code (TOTP or recovery) tells of the lockout, when the policy shows it.
    pub const fn failed_attempts(&self) -> Option<FailedAttempts> {
        match self {
            Self::InvalidCode(shown) | Self::InvalidRecoveryCode(shown) => *shown,
            _ => None,
        }
    }

    /// The client-facing message: `"<text> (<ID>)"`, as ZITADEL formats it.
    pub fn client_message(&self) -> String {
        format!("{self} ({})", self.id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_ids_and_codes() {
        let cases = [
            (OtpError::InvalidCode(None), "EVENT-8isk2", 3),
            (OtpError::FactorNotFound, "COMMAND-3Mif9s", 5),
            (OtpError::FactorAlreadyReady, "COMMAND-qx4ls", 9),
            (OtpError::FactorAlreadyExists, "COMMAND-do9se", 6),
            (OtpError::RemoveNotFound, "COMMAND-Hd9sd", 5),
            (OtpError::FactorLocked, "COMMAND-SF3fg", 9),
            (OtpError::FactorNotReady, "COMMAND-3Mif9s", 9),
            (OtpError::AuthHeaderNotBearer, "AUTH-toLo1", 16),
            (OtpError::TokenInvalid, "AUTH-7fs1e", 16),
            // ZITADEL's recovery-code ids and codes (PR #9954).
            (OtpError::InvalidRecoveryCode(None), "DOMAIN-6uvh0", 3),
            (OtpError::RecoveryCodesNotAdded, "COMMAND-84rgg", 3),
            (OtpError::RecoveryCodesLocked, "COMMAND-d9u8q", 5),
            (OtpError::RecoveryCodeCountInvalid, "COMMAND-7c0nx", 3),
            (OtpError::RecoveryCodesMaxExceeded, "COMMAND-8f2k9", 6),
            // ZITADEL's lockout-policy ids and codes.
            (OtpError::LockoutPolicyExists, "ORG-0olDf", 6),
            (OtpError::LockoutPolicyNotFound, "ORG-ADfs1", 5),
            (OtpError::LockoutPolicyNotFoundOnReset, "ORG-D4zuz", 5),
            (OtpError::LockoutPolicyNotChanged, "ORG-0JFSr", 9),
        ];
        for (err, id, code) in cases {
            assert_eq!(err.id(), id);
            assert_eq!(err.grpc_code() as i32, code, "{err:?}");
        }
        assert_eq!(
            OtpError::InvalidCode(None).client_message(),
            "Invalid code (EVENT-8isk2)"
        );
    }

    #[test]
    fn http_statuses_follow_the_contract() {
        assert_eq!(GrpcCode::FailedPrecondition.http_status(), 400);
        assert_eq!(GrpcCode::ResourceExhausted.http_status(), 429);
        assert_eq!(GrpcCode::Unavailable.http_status(), 503);
        assert_eq!(GrpcCode::AlreadyExists.http_status(), 409);
    }
}
