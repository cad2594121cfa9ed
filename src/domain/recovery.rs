//! Recovery codes, the way back for a user who lost the authenticator: what a code is, how it
//! is written and read back, and how many a user may hold. Pure: the caller brings the random
//! bytes, and the keyed hash that stores a code lives with the seal keys (`seal.rs`).
//!
//! A code is 10 characters of Crockford's base32 (50 bits), shown as `XXXXX-XXXXX`. Read
//! back, case, dashes and spaces do not matter, and the letters people confuse with digits
//! (I, L, O) are taken for the digits (1, 1, 0), as Crockford's alphabet intends.

use zeroize::Zeroizing;

use super::factor::{Lock, LockoutPolicy};
use super::time::UnixMicros;

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
    pub fn from_random(bytes: &[u8; RANDOM_BYTES_PER_CODE]) -> Self {
        let mut value = Zeroizing::new(0u64);
        for byte in bytes {
            *value = (*value << 8) | u64::from(*byte);
        }
        let mut shown = Zeroizing::new(String::with_capacity(CODE_CHARS + 1));
        for index in 0..CODE_CHARS {
            if index == CODE_CHARS / 2 {
                shown.push('-');
            }
            let shift = 5 * (CODE_CHARS - 1 - index);
            let symbol = usize::try_from((*value >> shift) & 0x1f).unwrap_or(0);
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

/// Bytes of a code's HMAC kept in its stored name: 128 bits, far past any chance of two codes
/// colliding or of a guess matching by accident (a code itself has 50). The full 256 bits in
/// hex would make each name 75 bytes, past Redis's 64-byte limit for a compact (listpack)
/// hash, and a user's record three times larger (measured: 10 codes, 2,384 bytes against 816).
pub const STORED_HASH_BYTES: usize = 16;

/// The name a stored code goes by in the user's record: its keyed hash (the first
/// `STORED_HASH_BYTES`) and the id of the seal key that made it, `r:<key id>:<hex>` (a key id
/// holds no `:`).
pub fn stored_field(key_id: &str, hash: &[u8; 32]) -> String {
    use std::fmt::Write;
    let mut field = String::with_capacity(3 + key_id.len() + 2 * STORED_HASH_BYTES);
    field.push_str("r:");
    field.push_str(key_id);
    field.push(':');
    for byte in hash.iter().take(STORED_HASH_BYTES) {
        let _ = write!(field, "{byte:02x}");
    }
    field
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

/// Where a user stands against lockout: the failures in a row and the lock they set. It is
/// the user's, shared by TOTP codes and recovery codes, and outlives re-enrollment and
/// removal of the TOTP factor (so that neither is a way around a lock).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Standing {
    pub failures: u32,
    pub lock: Option<Lock>,
}

/// What the redeem rule decides about a recovery code typed at login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedeemDecision {
    /// Locked: nothing compared, nothing consumed.
    Locked(Lock),
    /// The user holds no codes: nothing to compare, nothing counted (ZITADEL: not added).
    NoCodes,
    /// The code is one of the user's: it is used up, the failures reset, the lock lifted.
    Accept { remaining: u32 },
    /// Not one of the user's codes (or one already used): a failure, which locks at the
    /// policy's maximum like a wrong TOTP code.
    Reject { failures: u32, lock: Option<Lock> },
}

/// The redeem rule, `(standing, codes held, whether the code is among them, policy, now) ->
/// decision`. In order, as ZITADEL checks: an active lock refuses; an expired one starts a
/// fresh count; a user without codes has nothing to guess; then the code is used or counted.
/// `store/lua/redeem_code.lua` is its transcription for Redis.
pub fn decide_redeem(
    standing: Standing,
    held: u32,
    found: bool,
    policy: &LockoutPolicy,
    now: UnixMicros,
) -> RedeemDecision {
    if let Some(lock) = standing.lock.filter(|lock| lock.is_active(now)) {
        return RedeemDecision::Locked(lock);
    }
    if held == 0 {
        return RedeemDecision::NoCodes;
    }
    if found {
        return RedeemDecision::Accept {
            remaining: held - 1,
        };
    }
    let failures = if standing.lock.is_some() {
        0
    } else {
        standing.failures
    }
    .saturating_add(1);
    RedeemDecision::Reject {
        failures,
        lock: policy.lock_after(failures, now),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: UnixMicros = UnixMicros::from_secs(1_700_000_000);
    const POLICY: LockoutPolicy = LockoutPolicy {
        max_attempts: 3,
        lock_duration_micros: 60_000_000,
        show_failures: true,
    };

    #[test]
    fn a_code_is_used_once_and_wrong_codes_lock_like_wrong_totp_codes() {
        let fresh = Standing::default();
        assert_eq!(
            decide_redeem(fresh, 10, true, &POLICY, NOW),
            RedeemDecision::Accept { remaining: 9 }
        );
        assert_eq!(
            decide_redeem(fresh, 0, false, &POLICY, NOW),
            RedeemDecision::NoCodes
        );
        let two = Standing {
            failures: 2,
            lock: None,
        };
        let until = Lock::Until(NOW.saturating_add_micros(60_000_000));
        assert_eq!(
            decide_redeem(two, 5, false, &POLICY, NOW),
            RedeemDecision::Reject {
                failures: 3,
                lock: Some(until)
            }
        );
        let locked = Standing {
            failures: 3,
            lock: Some(until),
        };
        // Locked: even a right code is refused, and the lock comes before "no codes".
        assert_eq!(
            decide_redeem(locked, 5, true, &POLICY, NOW),
            RedeemDecision::Locked(until)
        );
        assert_eq!(
            decide_redeem(locked, 0, false, &POLICY, NOW),
            RedeemDecision::Locked(until)
        );
        // An expired lock starts a fresh count.
        let later = NOW.saturating_add_micros(60_000_000);
        assert_eq!(
            decide_redeem(locked, 5, false, &POLICY, later),
            RedeemDecision::Reject {
                failures: 1,
                lock: None
            }
        );
    }

    #[test]
    fn a_code_is_ten_crockford_symbols_in_two_groups() {
        let code = RecoveryCode::from_random(&[0xff; 7]);
        assert_eq!(code.shown(), "ZZZZZ-ZZZZZ");
        let code = RecoveryCode::from_random(&[0; 7]);
        assert_eq!(code.shown(), "00000-00000");
        // The low 50 bits, most significant symbol first: 1 is the last symbol's 1.
        let code = RecoveryCode::from_random(&[0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(code.shown(), "00000-00001");
        let code = RecoveryCode::from_random(&[0, 0, 0, 0, 0, 0, 32]);
        assert_eq!(code.shown(), "00000-00010");
        // Bits above the 50th do not show: the first byte's top 6 bits are dropped.
        let code = RecoveryCode::from_random(&[0xfc, 0, 0, 0, 0, 0, 0]);
        assert_eq!(code.shown(), "00000-00000");
        assert_eq!(format!("{code:?}"), "RecoveryCode(..)");
        assert_eq!(format!("{:?}", code.normalized()), "NormalizedCode(..)");
    }

    #[test]
    fn codes_read_back_whatever_the_case_dashes_and_look_alikes() {
        let code = RecoveryCode::from_random(&[0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd]);
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
    fn a_stored_name_is_the_key_id_and_128_bits_of_the_hash() {
        let mut hash = [0u8; 32];
        hash[0] = 0xab;
        hash[15] = 0x01;
        hash[16] = 0xff;
        let field = stored_field("2026-11", &hash);
        assert_eq!(field, format!("r:2026-11:ab{}01", "00".repeat(14)));
        assert!(
            field.len() <= 64,
            "a compact Redis hash takes names up to 64 bytes"
        );
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
