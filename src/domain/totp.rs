//! RFC 6238 TOTP on top of totp-rs: parameters, code normalisation and the skew window.

use std::fmt;
use std::str::FromStr;

/// The HMAC of a factor, stored with it at enrollment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
pub enum HashAlgorithm {
    #[serde(rename = "SHA1")]
    Sha1,
    #[serde(rename = "SHA256")]
    Sha256,
    #[serde(rename = "SHA512")]
    Sha512,
}

impl HashAlgorithm {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Sha1 => "SHA1",
            Self::Sha256 => "SHA256",
            Self::Sha512 => "SHA512",
        }
    }

    const fn to_totp_rs(self) -> totp_rs::Algorithm {
        match self {
            Self::Sha1 => totp_rs::Algorithm::SHA1,
            Self::Sha256 => totp_rs::Algorithm::SHA256,
            Self::Sha512 => totp_rs::Algorithm::SHA512,
        }
    }
}

impl fmt::Display for HashAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for HashAlgorithm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_uppercase().as_str() {
            "SHA1" => Ok(Self::Sha1),
            "SHA256" => Ok(Self::Sha256),
            "SHA512" => Ok(Self::Sha512),
            other => Err(format!("unknown TOTP algorithm {other:?}")),
        }
    }
}

/// The parameters an authenticator app needs; chosen by policy at enrollment and stored.
/// Only `new` builds them, so every value in the program is one an app can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TotpParams {
    algorithm: HashAlgorithm,
    digits: u8,
    period_secs: u32,
}

impl Default for TotpParams {
    fn default() -> Self {
        Self::APP_DEFAULT
    }
}

impl TotpParams {
    /// What ZITADEL and every authenticator app assume: SHA1, 6 digits, 30 seconds.
    pub const APP_DEFAULT: Self = Self {
        algorithm: HashAlgorithm::Sha1,
        digits: 6,
        period_secs: 30,
    };

    /// 6 to 8 digits (RFC 6238's range that apps show), a period of 15 to 300 seconds.
    pub fn new(algorithm: HashAlgorithm, digits: u8, period_secs: u32) -> Result<Self, String> {
        if !(6..=8).contains(&digits) {
            return Err(format!("digits must be 6, 7 or 8, not {digits}"));
        }
        if !(15..=300).contains(&period_secs) {
            return Err(format!(
                "period must be between 15 and 300 seconds, not {period_secs}"
            ));
        }
        Ok(Self {
            algorithm,
            digits,
            period_secs,
        })
    }

    pub fn algorithm(&self) -> HashAlgorithm {
        self.algorithm
    }

    pub fn digits(&self) -> u8 {
        self.digits
    }

    pub fn period_secs(&self) -> u32 {
        self.period_secs
    }

    /// The time step that contains `unix_secs`.
    pub fn step_at(&self, unix_secs: u64) -> u64 {
        unix_secs / u64::from(self.period_secs)
    }

    fn generator(&self, secret: &[u8]) -> Option<totp_rs::Totp> {
        totp_rs::Builder::new()
            .with_algorithm(self.algorithm.to_totp_rs())
            .with_digits(self.digits)
            .with_skew(0)
            .with_step_duration(u64::from(self.period_secs))
            .with_secret(secret.to_vec())
            .build()
            .ok()
    }

    /// The code of `step` (for tests, the dev walkthrough and the load tool).
    pub fn code_for_step(&self, secret: &[u8], step: u64) -> Option<String> {
        let generator = self.generator(secret)?;
        Some(
            generator
                .generate(step.saturating_mul(u64::from(self.period_secs)))
                .to_string(),
        )
    }

    /// The newest step in `[now-skew, now+skew]` whose code equals `code`, compared in constant
    /// time. Newest first, so a coincidence with an already used older step cannot hide a fresh one.
    pub fn matching_step(
        &self,
        secret: &[u8],
        code: &NormalizedCode,
        now_unix_secs: u64,
        skew: u8,
    ) -> Option<u64> {
        let generator = self.generator(secret)?;
        let period = u64::from(self.period_secs);
        let current = self.step_at(now_unix_secs);
        let first = current.saturating_sub(u64::from(skew));
        let last = current.saturating_add(u64::from(skew));
        (first..=last).rev().find(|&step| {
            generator
                .check(code.as_str(), step.saturating_mul(period))
                .is_some()
        })
    }
}

/// A code as typed by a person, reduced to its digits.
#[derive(Clone, PartialEq, Eq)]
pub struct NormalizedCode(String);

impl fmt::Debug for NormalizedCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NormalizedCode(<redacted>)")
    }
}

impl NormalizedCode {
    /// Surrounding whitespace is trimmed and one space in the middle (`123 456`, as apps show
    /// codes) is accepted. Anything else that is not exactly `digits` ASCII digits is no code.
    pub fn parse(raw: &str, digits: u8) -> Option<Self> {
        let trimmed = raw.trim();
        let joined: String = match trimmed.split_once(' ') {
            // Trimmed, so neither half is empty; a second space stays and fails below.
            Some((left, right)) => format!("{left}{right}"),
            None => trimmed.to_owned(),
        };
        let well_formed =
            joined.len() == usize::from(digits) && joined.bytes().all(|byte| byte.is_ascii_digit());
        well_formed.then_some(Self(joined))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED_SHA1: &[u8] = b"12345678901234567890";
    const SEED_SHA256: &[u8] = b"12345678901234567890123456789012";
    const SEED_SHA512: &[u8] = b"1234567890123456789012345678901234567890123456789012345678901234";

    fn params(algorithm: HashAlgorithm, digits: u8, period_secs: u32) -> TotpParams {
        TotpParams::new(algorithm, digits, period_secs).unwrap()
    }

    #[test]
    fn rfc4226_hotp_vectors() {
        // HOTP(counter) is TOTP with a one-second step at time = counter.
        let expected = [
            "755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583",
            "399871", "520489",
        ];
        let generator = totp_rs::Builder::new()
            .with_algorithm(totp_rs::Algorithm::SHA1)
            .with_digits(6)
            .with_step_duration(1)
            .with_secret(SEED_SHA1.to_vec())
            .build()
            .unwrap();
        for (counter, code) in expected.iter().enumerate() {
            assert_eq!(generator.generate(counter as u64).to_string(), *code);
        }
    }

    #[test]
    fn rfc6238_totp_vectors_all_hashes() {
        let table: [(u64, &str, &str, &str); 6] = [
            (59, "94287082", "46119246", "90693936"),
            (1111111109, "07081804", "68084774", "25091201"),
            (1111111111, "14050471", "67062674", "99943326"),
            (1234567890, "89005924", "91819424", "93441116"),
            (2000000000, "69279037", "90698825", "38618901"),
            (20000000000, "65353130", "77737706", "47863826"),
        ];
        for (time, sha1, sha256, sha512) in table {
            for (algorithm, seed, code) in [
                (HashAlgorithm::Sha1, SEED_SHA1, sha1),
                (HashAlgorithm::Sha256, SEED_SHA256, sha256),
                (HashAlgorithm::Sha512, SEED_SHA512, sha512),
            ] {
                let eight = params(algorithm, 8, 30);
                let step = eight.step_at(time);
                assert_eq!(eight.code_for_step(seed, step).unwrap(), code);
                let normalized = NormalizedCode::parse(code, 8).unwrap();
                assert_eq!(eight.matching_step(seed, &normalized, time, 0), Some(step));
                // Six digits are the last six of the eight.
                let six = params(algorithm, 6, 30);
                let tail = &code[2..];
                assert_eq!(six.code_for_step(seed, step).unwrap(), tail);
            }
        }
    }

    #[test]
    fn skew_window_accepts_neighbours_only() {
        let p = TotpParams::default();
        let now = 1_700_000_015;
        let current = p.step_at(now);
        for (offset, expected) in [(-2i64, false), (-1, true), (0, true), (1, true), (2, false)] {
            let step = current.checked_add_signed(offset).unwrap();
            let code = p.code_for_step(SEED_SHA1, step).unwrap();
            let code = NormalizedCode::parse(&code, 6).unwrap();
            let found = p.matching_step(SEED_SHA1, &code, now, 1);
            assert_eq!(found == Some(step), expected, "offset {offset}");
        }
    }

    #[test]
    fn code_normalisation() {
        assert_eq!(
            NormalizedCode::parse(" 123456\n", 6).unwrap().as_str(),
            "123456"
        );
        assert_eq!(
            NormalizedCode::parse("123 456", 6).unwrap().as_str(),
            "123456"
        );
        for bad in [
            "",
            " ",
            "12345",
            "1234567",
            "12345a",
            "１２３４５６",
            "12 34 56",
            "123  456",
            " 123456 7",
            "+12345",
            "-12345",
            "12\t3456",
        ] {
            assert!(NormalizedCode::parse(bad, 6).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn a_code_never_prints_its_digits() {
        let code = NormalizedCode::parse("123456", 6).unwrap();
        assert_eq!(format!("{code:?}"), "NormalizedCode(<redacted>)");
    }

    #[test]
    fn only_usable_params_are_built() {
        let default = TotpParams::default();
        let rebuilt = TotpParams::new(default.algorithm(), default.digits(), default.period_secs());
        assert_eq!(rebuilt, Ok(default));
        for (digits, period) in [(6, 15), (8, 300), (7, 60)] {
            assert!(TotpParams::new(HashAlgorithm::Sha1, digits, period).is_ok());
        }
        for (digits, period) in [(5, 30), (9, 30), (6, 0), (6, 14), (6, 301)] {
            assert!(
                TotpParams::new(HashAlgorithm::Sha1, digits, period).is_err(),
                "{digits} digits, {period} s"
            );
        }
    }
}
