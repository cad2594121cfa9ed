//! Recovery codes, the way back for a user who lost the authenticator: what a code is, how it
//! is written and read back, and how many a user may hold. Pure: the caller brings the random
//! bytes, and the keyed hash that stores a code lives with the seal keys (`seal.rs`).
//!
//! A code is 10 characters of Crockford's base32 (50 bits), shown as `XXXXX-XXXXX`. Read
//! back, case, dashes and spaces do not matter, and the letters people confuse with digits
//! (I, L, O) are taken for the digits (1, 1, 0), as Crockford's alphabet intends.

use zeroize::Zeroizing;

/// Characters of a code, without the dash.
pub const CODE_CHARS: usize = 10;
/// The most codes a user may hold at once.
pub const MAX_CODES: u32 = 20;
/// Codes made at once when the organization's policy says nothing else.
pub const DEFAULT_CODES: u32 = 10;

/// Crockford's base32: digits and letters without I, L, O and U.
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// Random bytes one code is drawn from: 50 bits are used.
pub const RANDOM_BYTES_PER_CODE: usize = 7;

/// A code as the user is shown it once, `XXXXX-XXXXX`; wiped on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct RecoveryCode(Zeroizing<String>);

impl RecoveryCode {
    /// The code of 7 random bytes (the low 50 bits of them).
    pub fn from_random(bytes: [u8; RANDOM_BYTES_PER_CODE]) -> Self {
        let mut value = 0u64;
        for byte in bytes {
            value = (value << 8) | u64::from(byte);
        }
        let mut shown = Zeroizing::new(String::with_capacity(CODE_CHARS + 1));
        for index in 0..CODE_CHARS {
            if index == CODE_CHARS / 2 {
                shown.push('-');
            }
            let shift = 5 * (CODE_CHARS - 1 - index);
            let symbol = usize::try_from((value >> shift) & 0x1f).unwrap_or(0);
            shown.push(char::from(ALPHABET.get(symbol).copied().unwrap_or(b'0')));
        }
        Self(shown)
    }

    /// As shown to the user.
    pub fn shown(&self) -> &str {
        &self.0
    }

    /// As stored (hashed) and compared: the normalized form.
    pub fn normalized(&self) -> NormalizedCode {
        normalize(&self.0).unwrap_or_else(|| NormalizedCode(Zeroizing::new(String::new())))
    }
}

impl std::fmt::Debug for RecoveryCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecoveryCode(..)")
    }
}

/// A code in the one form that is hashed: 10 symbols of the alphabet, upper case, no dash.
#[derive(PartialEq, Eq)]
pub struct NormalizedCode(Zeroizing<String>);

impl NormalizedCode {
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl std::fmt::Debug for NormalizedCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NormalizedCode(..)")
    }
}

/// A typed code read back: `None` when it cannot be a code (a wrong code, which the caller
/// counts as a failed attempt like any other wrong code).
pub fn normalize(typed: &str) -> Option<NormalizedCode> {
    let mut normalized = Zeroizing::new(String::with_capacity(CODE_CHARS));
    for c in typed.chars() {
        let symbol = match c.to_ascii_uppercase() {
            '-' | ' ' => continue,
            'I' | 'L' => '1',
            'O' => '0',
            other if other.is_ascii() && ALPHABET.contains(&(other as u8)) => other,
            _ => return None,
        };
        if normalized.len() == CODE_CHARS {
            return None;
        }
        normalized.push(symbol);
    }
    (normalized.len() == CODE_CHARS).then_some(NormalizedCode(normalized))
}

/// How many codes a generation may add to the `held` ones: ZITADEL's rule (PR #9954) is that
/// new codes are added to those left, and the total may not pass the maximum.
pub fn may_add(held: u32, asked: u32, max: u32) -> Result<(), u32> {
    if asked == 0 || held.saturating_add(asked) > max {
        Err(max.saturating_sub(held))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_is_ten_crockford_symbols_in_two_groups() {
        let code = RecoveryCode::from_random([0xff; 7]);
        assert_eq!(code.shown(), "ZZZZZ-ZZZZZ");
        let code = RecoveryCode::from_random([0; 7]);
        assert_eq!(code.shown(), "00000-00000");
        // The low 50 bits, most significant symbol first: 1 is the last symbol's 1.
        let code = RecoveryCode::from_random([0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(code.shown(), "00000-00001");
        let code = RecoveryCode::from_random([0, 0, 0, 0, 0, 0, 32]);
        assert_eq!(code.shown(), "00000-00010");
        // Bits above the 50th do not show: the first byte's top 6 bits are dropped.
        let code = RecoveryCode::from_random([0xfc, 0, 0, 0, 0, 0, 0]);
        assert_eq!(code.shown(), "00000-00000");
        assert_eq!(format!("{code:?}"), "RecoveryCode(..)");
        assert_eq!(format!("{:?}", code.normalized()), "NormalizedCode(..)");
    }

    #[test]
    fn codes_read_back_whatever_the_case_dashes_and_look_alikes() {
        let code = RecoveryCode::from_random([0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd]);
        let wanted = code.normalized();
        assert_eq!(wanted.as_bytes().len(), CODE_CHARS);
        let shown = code.shown().to_owned();
        for typed in [
            shown.clone(),
            shown.to_lowercase(),
            shown.replace('-', ""),
            shown.replace('-', " - "),
        ] {
            assert_eq!(normalize(&typed), Some(code.normalized()), "{typed}");
        }
        assert_eq!(
            normalize("ilo0i-LLOOL"),
            normalize("11001-11001"),
            "I and L read as 1, O as 0"
        );
        for wrong in [
            "",
            "12345",
            "12345-123456",
            "12345-1234U",
            "12345-1234é",
            "12345_12345",
        ] {
            assert_eq!(normalize(wrong), None, "{wrong}");
        }
    }

    #[test]
    fn generations_add_up_to_the_maximum_and_no_further() {
        assert_eq!(may_add(0, 10, 20), Ok(()));
        assert_eq!(may_add(10, 10, 20), Ok(()));
        assert_eq!(may_add(11, 10, 20), Err(9));
        assert_eq!(may_add(20, 1, 20), Err(0));
        assert_eq!(may_add(0, 0, 20), Err(20));
    }
}
