//! The rules one organization's factors follow: TOTP parameters for new enrollments, the
//! verification window, the lockout and how many recovery codes a generation makes.
//! Instance defaults, overridable per organization.

use super::factor::LockoutPolicy;
use super::recovery::MAX_CODES;
use super::totp::TotpParams;

/// Only `new` builds a policy, so every policy in the program is one the rules allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtpPolicy {
    params: TotpParams,
    skew: u8,
    issuer: String,
    lockout: LockoutPolicy,
    recovery_codes: u32,
}

impl OtpPolicy {
    /// A skew of 0 to 2 steps either side (each one more widens the window a guess can hit);
    /// an issuer that is not empty and has no `:`, which separates issuer from account in
    /// the otpauth URI; 1 to `MAX_CODES` recovery codes per generation. Every problem, in the
    /// settings' words.
    pub fn new(
        params: TotpParams,
        skew: u8,
        issuer: String,
        lockout: LockoutPolicy,
        recovery_codes: u32,
    ) -> Result<Self, Vec<String>> {
        let mut problems = Vec::new();
        if skew > 2 {
            problems.push("skew above 2 widens the guessing window; use 0, 1 or 2".to_owned());
        }
        if issuer.is_empty() || issuer.contains(':') {
            problems.push("the issuer must be non-empty and free of ':'".to_owned());
        }
        if !(1..=MAX_CODES).contains(&recovery_codes) {
            problems.push(format!(
                "recovery_codes must be 1 to {MAX_CODES} (the most a user may hold), not \
                 {recovery_codes}"
            ));
        }
        if problems.is_empty() {
            Ok(Self {
                params,
                skew,
                issuer,
                lockout,
                recovery_codes,
            })
        } else {
            Err(problems)
        }
    }

    pub fn params(&self) -> TotpParams {
        self.params
    }

    /// Steps accepted either side of the current one.
    pub fn skew(&self) -> u8 {
        self.skew
    }

    /// The issuer authenticator apps show.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn lockout(&self) -> LockoutPolicy {
        self.lockout
    }

    /// How many recovery codes a generation makes when the caller names no count.
    pub fn recovery_codes(&self) -> u32 {
        self.recovery_codes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lockout() -> LockoutPolicy {
        LockoutPolicy {
            max_attempts: 5,
            lock_duration_micros: 0,
            show_failures: true,
        }
    }

    #[test]
    fn only_allowed_policies_are_built() {
        let params = TotpParams::default();
        let built = |skew, issuer: &str| OtpPolicy::new(params, skew, issuer.into(), lockout(), 10);
        for skew in 0..=2 {
            assert_eq!(built(skew, "ACME").unwrap().skew(), skew);
        }
        assert_eq!(built(1, "ACME").unwrap().issuer(), "ACME");
        assert_eq!(built(3, "ACME").unwrap_err().len(), 1);
        assert_eq!(built(1, "").unwrap_err().len(), 1);
        assert_eq!(built(1, "a:b").unwrap_err().len(), 1);
        assert_eq!(built(3, "a:b").unwrap_err().len(), 2);
        let codes = |count| OtpPolicy::new(params, 1, "ACME".into(), lockout(), count);
        assert_eq!(codes(1).unwrap().recovery_codes(), 1);
        assert_eq!(codes(20).unwrap().recovery_codes(), 20);
        assert_eq!(codes(0).unwrap_err().len(), 1);
        assert_eq!(codes(21).unwrap_err().len(), 1);
    }
}
