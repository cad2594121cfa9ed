//! AEAD sealing of OTP secrets (AES-256-GCM) with a key ring.
//!
//! Sealed form: `version (1) | key id length (1) | key id | nonce (12) | ciphertext+tag`.
//! The associated data binds the organization and the user, so a sealed secret copied to
//! another user's record does not open. The first key of the ring seals; every key opens,
//! which is how keys rotate: add a new key in front, run `tessera rekey` (which reseals every
//! enrollment under it), then drop the old key.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rand::{RngCore, TryRngCore};
use secrecy::{ExposeSecret, SecretBox, SecretString};

use crate::domain::recovery::NormalizedCode;

const FORMAT_VERSION: u8 = 1;
const NONCE_LEN: usize = 12;
const KEY_LEN: usize = 32;

/// A new secret of `len` bytes straight from the operating system into a buffer that is
/// wiped on drop: the thread's `rand::rng()` would keep a copy of it in its output buffer
/// until it refills. `Internal` (logged) when the operating system gives none.
pub fn fresh_secret(len: usize) -> Result<zeroize::Zeroizing<Vec<u8>>, crate::domain::OtpError> {
    use rand::TryRngCore;
    let mut secret = zeroize::Zeroizing::new(vec![0u8; len]);
    rand::rngs::OsRng
        .try_fill_bytes(&mut secret)
        .map_err(|err| {
            tracing::error!(error = %err, "the operating system gave no random bytes");
            crate::domain::OtpError::Internal
        })?;
    Ok(secret)
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error("the seal key ring is empty")]
    EmptyRing,
    #[error("seal key entry {0} is not `id:base64-of-32-bytes`")]
    MalformedEntry(usize),
    #[error("seal key id {0:?} appears twice")]
    DuplicateId(String),
    #[error("sealed secret is malformed")]
    Malformed,
    #[error("sealed secret names key id {0:?}, which is not in the ring")]
    UnknownKey(String),
    #[error("sealed secret does not open (wrong key, owner or tampering)")]
    Open,
    #[error("the operating system gave no random bytes")]
    NoRandomness,
}

struct RingKey {
    id: String,
    cipher: Aes256Gcm,
    /// Hashes recovery codes: HMAC-SHA-256 under a key derived from this one (HKDF), so a
    /// code's hash says nothing without the seal key, and the seal key itself is never used
    /// for two purposes.
    recovery: ring::hmac::Key,
    /// SHA-256 of the key: tells a known key (the published development key) without
    /// keeping the key's bytes.
    fingerprint: [u8; 32],
}

fn key_fingerprint(key: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(key).into()
}

/// The key ring. Holds ciphers, never prints keys.
pub struct KeyRing {
    keys: Vec<RingKey>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|k| k.id.as_str()).collect();
        f.debug_struct("KeyRing").field("key_ids", &ids).finish()
    }
}

/// A plain OTP secret, zeroed on drop and never printed.
pub type PlainSecret = SecretBox<Vec<u8>>;

impl KeyRing {
    /// Parses `id:base64,id2:base64` (whitespace and newlines allowed between entries).
    pub fn parse(spec: &SecretString) -> Result<Self, SealError> {
        let mut keys: Vec<RingKey> = Vec::new();
        let entries = spec
            .expose_secret()
            .split([',', '\n'])
            .map(str::trim)
            .filter(|entry| !entry.is_empty());
        for (index, entry) in entries.enumerate() {
            let (id, encoded) = entry
                .split_once(':')
                .ok_or(SealError::MalformedEntry(index))?;
            let id = id.trim();
            let bytes = zeroize::Zeroizing::new(
                STANDARD
                    .decode(encoded.trim())
                    .map_err(|_| SealError::MalformedEntry(index))?,
            );
            if id.is_empty() || id.len() > 64 || bytes.len() != KEY_LEN {
                return Err(SealError::MalformedEntry(index));
            }
            if keys.iter().any(|k| k.id == id) {
                return Err(SealError::DuplicateId(id.to_owned()));
            }
            let cipher =
                Aes256Gcm::new_from_slice(&bytes).map_err(|_| SealError::MalformedEntry(index))?;
            let recovery = recovery_key(&bytes).map_err(|()| SealError::MalformedEntry(index))?;
            keys.push(RingKey {
                id: id.to_owned(),
                cipher,
                recovery,
                fingerprint: key_fingerprint(&bytes),
            });
        }
        if keys.is_empty() {
            return Err(SealError::EmptyRing);
        }
        Ok(Self { keys })
    }

    /// A fresh `id:base64` entry for `tessera gen-seal-key`.
    pub fn generate_entry(id: &str) -> Result<SecretString, SealError> {
        let mut key = zeroize::Zeroizing::new([0u8; KEY_LEN]);
        // From the operating system directly: no generator's buffer keeps a copy of the key.
        rand::rngs::OsRng
            .try_fill_bytes(key.as_mut())
            .map_err(|_| SealError::NoRandomness)?;
        Ok(SecretString::from(format!(
            "{id}:{}",
            STANDARD.encode(key.as_ref())
        )))
    }

    /// Whether the ring holds `key`, under any id.
    pub fn holds_key(&self, key: &[u8]) -> bool {
        let wanted = key_fingerprint(key);
        self.keys.iter().any(|k| k.fingerprint == wanted)
    }

    /// The keyed hash of a recovery code of `user` of `org`, under the key `key_id` (the id
    /// stored beside a user's codes, so that rotating the ring does not orphan them); `None`
    /// when that key has left the ring. The owner is hashed in, so a hash copied to another
    /// user's codes matches nothing.
    pub fn recovery_hash(
        &self,
        key_id: &str,
        org: &str,
        user: &str,
        code: &NormalizedCode,
    ) -> Option<[u8; 32]> {
        let key = self.keys.iter().find(|k| k.id == key_id)?;
        let mut context = ring::hmac::Context::with_key(&key.recovery);
        context.update(&owner(b"tessera/recovery-code/v1", org, user));
        context.update(code.as_bytes());
        let tag = context.sign();
        tag.as_ref().try_into().ok()
    }

    /// The ids of the ring's keys, the sealing key first.
    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| k.id.as_str())
    }

    pub fn sealing_key_id(&self) -> &str {
        self.keys.first().map(|k| k.id.as_str()).unwrap_or_default()
    }

    pub fn seal(&self, secret: &[u8], org: &str, user: &str) -> Result<Vec<u8>, SealError> {
        let key = self.keys.first().ok_or(SealError::EmptyRing)?;
        let id_len = u8::try_from(key.id.len()).map_err(|_| SealError::Malformed)?;
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let aad = associated_data(org, user);
        let ciphertext = key
            .cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: secret,
                    aad: &aad,
                },
            )
            .map_err(|_| SealError::Open)?;
        let mut sealed = Vec::with_capacity(2 + key.id.len() + NONCE_LEN + ciphertext.len());
        sealed.push(FORMAT_VERSION);
        sealed.push(id_len);
        sealed.extend_from_slice(key.id.as_bytes());
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        Ok(sealed)
    }

    pub fn open(&self, sealed: &[u8], org: &str, user: &str) -> Result<PlainSecret, SealError> {
        let Sealed {
            key_id: id,
            nonce,
            ciphertext,
        } = Sealed::parse(sealed)?;
        let key = self
            .keys
            .iter()
            .find(|k| k.id == id)
            .ok_or_else(|| SealError::UnknownKey(id.to_owned()))?;
        let aad = associated_data(org, user);
        key.cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .map(|plain| SecretBox::new(Box::new(plain)))
            .map_err(|_| SealError::Open)
    }
}

impl KeyRing {
    /// The id of the key that sealed `sealed`, as the sealed form names it.
    pub fn sealed_by(sealed: &[u8]) -> Result<&str, SealError> {
        Sealed::parse(sealed).map(|parts| parts.key_id)
    }

    /// `sealed` sealed again under the first key of the ring (`tessera rekey`), or `None` if
    /// the first key sealed it already. The plain secret is wiped before this returns.
    pub fn reseal(
        &self,
        sealed: &[u8],
        org: &str,
        user: &str,
    ) -> Result<Option<Vec<u8>>, SealError> {
        if Self::sealed_by(sealed)? == self.sealing_key_id() {
            return Ok(None);
        }
        let plain = self.open(sealed, org, user)?;
        self.seal(plain.expose_secret(), org, user).map(Some)
    }
}

/// The parts of the sealed form: `version | key id length | key id | nonce | ciphertext+tag`.
struct Sealed<'a> {
    key_id: &'a str,
    nonce: [u8; NONCE_LEN],
    ciphertext: &'a [u8],
}

impl<'a> Sealed<'a> {
    fn parse(sealed: &'a [u8]) -> Result<Self, SealError> {
        let (&version, rest) = sealed.split_first().ok_or(SealError::Malformed)?;
        let (&id_len, rest) = rest.split_first().ok_or(SealError::Malformed)?;
        if version != FORMAT_VERSION {
            return Err(SealError::Malformed);
        }
        let (id, rest) = rest
            .split_at_checked(usize::from(id_len))
            .ok_or(SealError::Malformed)?;
        let (nonce, ciphertext) = rest
            .split_at_checked(NONCE_LEN)
            .ok_or(SealError::Malformed)?;
        Ok(Self {
            key_id: std::str::from_utf8(id).map_err(|_| SealError::Malformed)?,
            nonce: nonce.try_into().map_err(|_| SealError::Malformed)?,
            ciphertext,
        })
    }
}

/// Length-prefixed so that ("ab","c") and ("a","bc") bind differently.
/// The recovery-code hashing key of a seal key: HKDF-SHA-256 with its own label.
fn recovery_key(seal_key: &[u8]) -> Result<ring::hmac::Key, ()> {
    struct HmacKeyLen;
    impl ring::hkdf::KeyType for HmacKeyLen {
        fn len(&self) -> usize {
            KEY_LEN
        }
    }
    let salt = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, b"tessera");
    let prk = salt.extract(seal_key);
    let info = [b"tessera recovery codes v1".as_slice()];
    let okm = prk.expand(&info, HmacKeyLen).map_err(|_| ())?;
    let mut derived = zeroize::Zeroizing::new([0u8; KEY_LEN]);
    okm.fill(derived.as_mut()).map_err(|_| ())?;
    Ok(ring::hmac::Key::new(
        ring::hmac::HMAC_SHA256,
        derived.as_ref(),
    ))
}

fn associated_data(org: &str, user: &str) -> Vec<u8> {
    owner(b"tessera/otp-secret/v1", org, user)
}

/// `label`, then the organization and the user, each with its length (no two owners encode
/// alike).
fn owner(label: &[u8], org: &str, user: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(label.len() + 16 + org.len() + user.len());
    aad.extend_from_slice(label);
    for part in [org, user] {
        aad.extend_from_slice(&(part.len() as u64).to_be_bytes());
        aad.extend_from_slice(part.as_bytes());
    }
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(spec: &str) -> KeyRing {
        KeyRing::parse(&SecretString::from(spec.to_owned())).unwrap()
    }

    fn entry(id: &str, byte: u8) -> String {
        format!("{id}:{}", STANDARD.encode([byte; 32]))
    }

    #[test]
    fn reseal_moves_a_secret_to_the_first_key_once() {
        let old = ring(&entry("old", 1));
        let sealed = old.seal(b"secret-bytes-20-long", "org", "user").unwrap();
        let rotated = ring(&format!("{},{}", entry("new", 2), entry("old", 1)));
        let resealed = rotated.reseal(&sealed, "org", "user").unwrap().unwrap();
        assert_eq!(KeyRing::sealed_by(&resealed), Ok("new"));
        assert_eq!(rotated.reseal(&resealed, "org", "user"), Ok(None));
        let retired = ring(&entry("new", 2));
        let opened = retired.open(&resealed, "org", "user").unwrap();
        assert_eq!(opened.expose_secret().as_slice(), b"secret-bytes-20-long");
        assert!(matches!(
            retired.open(&sealed, "org", "user"),
            Err(SealError::UnknownKey(_))
        ));
        assert!(rotated.reseal(&sealed, "org", "other").is_err());
    }

    /// A code's hash depends on the code, its owner and the key named; an older key of the
    /// ring still hashes as it did, so codes survive a rotation.
    #[test]
    fn recovery_hashes_bind_code_owner_and_key() {
        use crate::domain::recovery::normalize;
        let code = normalize("ABCDE-12345").unwrap();
        let other = normalize("ABCDE-12346").unwrap();
        let old = ring(&entry("old", 1));
        let hash = |ring: &KeyRing, id: &str, org: &str, user: &str, code| {
            ring.recovery_hash(id, org, user, code)
        };
        let original = hash(&old, "old", "acme", "alice", &code).unwrap();
        assert_eq!(hash(&old, "old", "acme", "alice", &code), Some(original));
        assert_ne!(hash(&old, "old", "acme", "alice", &other), Some(original));
        assert_ne!(hash(&old, "old", "acme", "bob", &code), Some(original));
        assert_ne!(hash(&old, "old", "globex", "alice", &code), Some(original));
        assert_ne!(hash(&old, "old", "acmea", "lice", &code), Some(original));
        assert_eq!(hash(&old, "gone", "acme", "alice", &code), None);
        let rotated = ring(&format!("{},{}", entry("new", 2), entry("old", 1)));
        assert_eq!(
            hash(&rotated, "old", "acme", "alice", &code),
            Some(original)
        );
        assert_ne!(
            hash(&rotated, "new", "acme", "alice", &code),
            Some(original)
        );
        // Not the seal key itself, nor a plain SHA-256 of the code.
        use sha2::Digest;
        assert_ne!(
            <[u8; 32]>::from(sha2::Sha256::digest(code.as_bytes())),
            original
        );
    }

    #[test]
    fn seal_and_open_bind_the_owner() {
        let keys = ring(&entry("k1", 7));
        let sealed = keys.seal(b"secret-bytes-20-long", "org", "user").unwrap();
        assert!(!sealed.windows(8).any(|w| w == b"secret-b"));
        let opened = keys.open(&sealed, "org", "user").unwrap();
        assert_eq!(opened.expose_secret().as_slice(), b"secret-bytes-20-long");
        assert!(matches!(
            keys.open(&sealed, "org", "other"),
            Err(SealError::Open)
        ));
        assert!(keys.open(&sealed, "orgu", "ser").is_err());
        let mut tampered = sealed.clone();
        if let Some(last) = tampered.last_mut() {
            *last ^= 1;
        }
        assert!(keys.open(&tampered, "org", "user").is_err());
        assert!(keys.open(&sealed[..5], "org", "user").is_err());
        assert!(keys.open(&[], "org", "user").is_err());
    }

    #[test]
    fn rotation_newest_seals_older_still_open() {
        let old = ring(&entry("old", 1));
        let sealed_by_old = old.seal(b"0123456789abcdefghij", "o", "u").unwrap();
        let rotated = ring(&format!("{},{}", entry("new", 2), entry("old", 1)));
        assert_eq!(rotated.sealing_key_id(), "new");
        assert!(rotated.open(&sealed_by_old, "o", "u").is_ok());
        let sealed_by_new = rotated.seal(b"0123456789abcdefghij", "o", "u").unwrap();
        assert!(matches!(
            old.open(&sealed_by_new, "o", "u"),
            Err(SealError::UnknownKey(id)) if id == "new"
        ));
    }

    #[test]
    fn malformed_rings_are_refused() {
        for bad in ["", "nokey", "k:notbase64!", "k:AAAA", ":AAAA"] {
            assert!(
                KeyRing::parse(&SecretString::from(bad.to_owned())).is_err(),
                "{bad}"
            );
        }
        let dup = format!("{},{}", entry("a", 1), entry("a", 2));
        assert_eq!(
            KeyRing::parse(&SecretString::from(dup)).err(),
            Some(SealError::DuplicateId("a".into()))
        );
    }

    #[test]
    fn a_ring_prints_its_key_ids_and_never_its_keys() {
        let spec = format!("{},{}", entry("new", 1), entry("old", 2));
        let printed = format!("{:?}", KeyRing::parse(&SecretString::from(spec)).unwrap());
        assert_eq!(printed, r#"KeyRing { key_ids: ["new", "old"] }"#);
    }

    #[test]
    fn a_ring_knows_its_keys_under_any_id() {
        let ring = KeyRing::parse(&SecretString::from(format!(
            "{},{}",
            entry("new", 1),
            entry("old", 2)
        )))
        .unwrap();
        assert!(ring.holds_key(&[1; 32]));
        assert!(ring.holds_key(&[2; 32]));
        assert!(!ring.holds_key(&[3; 32]));
    }

    #[test]
    fn key_ids_are_one_to_64_characters() {
        let parse = |id: &str| KeyRing::parse(&SecretString::from(entry(id, 7)));
        assert_eq!(parse("").err(), Some(SealError::MalformedEntry(0)));
        assert_eq!(
            parse(&"k".repeat(65)).err(),
            Some(SealError::MalformedEntry(0))
        );
        let longest = "k".repeat(64);
        assert_eq!(parse(&longest).unwrap().sealing_key_id(), longest);
        assert_eq!(parse("k").unwrap().sealing_key_id(), "k");
    }

    #[test]
    fn generated_entries_are_fresh_keys_that_parse() {
        let first = KeyRing::generate_entry("new").unwrap();
        let second = KeyRing::generate_entry("new").unwrap();
        assert_ne!(first.expose_secret(), second.expose_secret());
        let ring = KeyRing::parse(&first).unwrap();
        assert_eq!(ring.sealing_key_id(), "new");
        let sealed = ring.seal(b"secret", "org", "user").unwrap();
        let other = KeyRing::parse(&second).unwrap();
        assert!(other.open(&sealed, "org", "user").is_err());
    }
}
