//! Verification keys from a JWKS: each key with the algorithms it may verify.

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey};

pub(crate) struct VerifyKey {
    pub kid: Option<String>,
    pub algorithms: Vec<Algorithm>,
    pub key: DecodingKey,
    /// What the key is (SHA-256 of its JWK or PEM), so that the tokens it verified can be
    /// forgotten when it leaves the set, whatever its `kid`.
    pub fingerprint: KeyFingerprint,
}

pub(crate) type KeyFingerprint = [u8; 32];

pub(crate) fn fingerprint(material: &[u8]) -> KeyFingerprint {
    use sha2::Digest;
    sha2::Sha256::digest(material).into()
}

/// The asymmetric algorithms a JWK may verify. A JWKS never yields an HMAC key: HS256 is
/// only ever checked against the configured shared secret (no RS256/HS256 confusion).
fn algorithms_for(params: &AlgorithmParameters, declared: Option<KeyAlgorithm>) -> Vec<Algorithm> {
    let by_type: Vec<Algorithm> = match params {
        AlgorithmParameters::RSA(_) => vec![
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
        ],
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => vec![Algorithm::ES256],
            EllipticCurve::P384 => vec![Algorithm::ES384],
            _ => vec![],
        },
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
            vec![Algorithm::EdDSA]
        }
        _ => vec![],
    };
    match declared.and_then(|alg| alg.to_string().parse::<Algorithm>().ok()) {
        // A declared `alg` narrows the key to that one algorithm.
        Some(alg) => by_type.into_iter().filter(|a| *a == alg).collect(),
        None => by_type,
    }
}

/// The usable keys of a JWKS document; keys of other types are skipped, not fatal.
pub(crate) fn parse_jwks(document: &str) -> Result<Vec<VerifyKey>, String> {
    let set: JwkSet = serde_json::from_str(document).map_err(|e| format!("not a JWKS: {e}"))?;
    let keys: Vec<VerifyKey> = set
        .keys
        .iter()
        .filter_map(|jwk| {
            let algorithms = algorithms_for(&jwk.algorithm, jwk.common.key_algorithm);
            if algorithms.is_empty() {
                return None;
            }
            let key = DecodingKey::from_jwk(jwk).ok()?;
            Some(VerifyKey {
                kid: jwk.common.key_id.clone(),
                algorithms,
                key,
                fingerprint: fingerprint(&serde_json::to_vec(jwk).ok()?),
            })
        })
        .collect();
    if keys.is_empty() {
        return Err("the JWKS holds no usable EdDSA, ES256, ES384 or RSA key".into());
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::jwk::Jwk;
    use serde_json::json;

    use super::*;

    /// The algorithms a JWK (as JSON) may verify. The coordinates are not read here.
    fn algorithms(jwk: serde_json::Value) -> Vec<Algorithm> {
        let jwk: Jwk = serde_json::from_value(jwk).unwrap();
        algorithms_for(&jwk.algorithm, jwk.common.key_algorithm)
    }

    #[test]
    fn each_key_type_verifies_its_own_algorithms_only() {
        let ec = |crv: &str| json!({"kty": "EC", "crv": crv, "x": "AA", "y": "AA"});
        assert_eq!(algorithms(ec("P-256")), vec![Algorithm::ES256]);
        assert_eq!(algorithms(ec("P-384")), vec![Algorithm::ES384]);
        let okp = |crv: &str| json!({"kty": "OKP", "crv": crv, "x": "AA"});
        assert_eq!(algorithms(okp("Ed25519")), vec![Algorithm::EdDSA]);
        // An octet key pair on any other curve verifies nothing: X25519 (key agreement,
        // which jsonwebtoken reads as an unknown key) or a curve that belongs to EC keys.
        assert_eq!(algorithms(okp("X25519")), vec![]);
        assert_eq!(algorithms(okp("P-256")), vec![]);
        let rsa = json!({"kty": "RSA", "n": "AQAB", "e": "AQAB"});
        assert_eq!(algorithms(rsa.clone()).len(), 6);
        let mut narrowed = rsa;
        narrowed["alg"] = json!("PS256");
        assert_eq!(algorithms(narrowed), vec![Algorithm::PS256]);
    }
}
