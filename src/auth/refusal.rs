//! Why a token was refused. The client only ever hears AUTH-7fs1e (as from ZITADEL: the
//! reason would help whoever forges tokens); the reason is logged at debug level, with the
//! request's id from its span, for the operator who wonders why a client is refused.

use jsonwebtoken::errors::ErrorKind;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Not valid UTF-8, too long, or a JWS whose header does not decode.
    Malformed,
    /// The JOSE header names critical extensions (none are understood).
    CriticalExtensions,
    /// An algorithm no configured key verifies (HS256 without a shared secret, say).
    Algorithm,
    /// No key of the set carries the token's `kid`, even after a refetch.
    UnknownKid,
    BadSignature,
    Expired,
    NotYetValid,
    WrongIssuer,
    WrongAudience,
    /// A claim tessera needs is missing or not an id (subject, organization, exp, ...).
    Claims,
    /// Introspection said `active: false` (revoked, expired or unknown to the provider).
    Inactive,
    /// Not a JWS, and no introspection is configured.
    NotAJws,
}

impl Refusal {
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::CriticalExtensions => "critical_extensions",
            Self::Algorithm => "algorithm",
            Self::UnknownKid => "unknown_kid",
            Self::BadSignature => "bad_signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::WrongIssuer => "wrong_issuer",
            Self::WrongAudience => "wrong_audience",
            Self::Claims => "claims",
            Self::Inactive => "inactive",
            Self::NotAJws => "not_a_jws",
        }
    }

    /// jsonwebtoken's reason for refusing a token whose key was found.
    pub(crate) fn from_jwt(kind: &ErrorKind) -> Self {
        match kind {
            ErrorKind::InvalidSignature => Self::BadSignature,
            ErrorKind::ExpiredSignature => Self::Expired,
            ErrorKind::ImmatureSignature => Self::NotYetValid,
            ErrorKind::InvalidIssuer => Self::WrongIssuer,
            ErrorKind::InvalidAudience => Self::WrongAudience,
            ErrorKind::MissingRequiredClaim(_) | ErrorKind::InvalidClaimFormat(_) => Self::Claims,
            ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => Self::Algorithm,
            _ => Self::Malformed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each of jsonwebtoken's reasons is logged as its own, and every reason has its own name.
    #[test]
    fn jsonwebtoken_reasons_map_to_their_own_refusals() {
        let cases = [
            (ErrorKind::InvalidSignature, Refusal::BadSignature),
            (ErrorKind::ExpiredSignature, Refusal::Expired),
            (ErrorKind::ImmatureSignature, Refusal::NotYetValid),
            (ErrorKind::InvalidIssuer, Refusal::WrongIssuer),
            (ErrorKind::InvalidAudience, Refusal::WrongAudience),
            (
                ErrorKind::MissingRequiredClaim("exp".into()),
                Refusal::Claims,
            ),
            (ErrorKind::InvalidClaimFormat("exp".into()), Refusal::Claims),
            (ErrorKind::InvalidAlgorithm, Refusal::Algorithm),
            (ErrorKind::InvalidAlgorithmName, Refusal::Algorithm),
            (ErrorKind::InvalidToken, Refusal::Malformed),
        ];
        for (kind, refusal) in cases {
            assert_eq!(Refusal::from_jwt(&kind), refusal, "{kind:?}");
        }
        let all = [
            Refusal::Malformed,
            Refusal::CriticalExtensions,
            Refusal::Algorithm,
            Refusal::UnknownKid,
            Refusal::BadSignature,
            Refusal::Expired,
            Refusal::NotYetValid,
            Refusal::WrongIssuer,
            Refusal::WrongAudience,
            Refusal::Claims,
            Refusal::Inactive,
            Refusal::NotAJws,
        ];
        let names: std::collections::HashSet<&str> = all.iter().map(|r| r.as_str()).collect();
        assert_eq!(names.len(), all.len());
        assert!(names.iter().all(|name| !name.is_empty() && name.is_ascii()));
        assert_eq!(Refusal::BadSignature.as_str(), "bad_signature");
    }
}
