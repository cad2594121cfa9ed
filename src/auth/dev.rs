//! Signing tokens for trials: with the development key of `tessera dev` (published in this
//! repository, so it proves nothing: `tessera serve` refuses it), or with a key of one's own
//! that `tessera gen-signing-key` makes, for trying `serve` end to end without a provider.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use secrecy::SecretString;
use serde_json::{Map, Value, json};

use super::settings::{AuthConfig, ClaimNames};

pub const DEV_KEY_ID: &str = "tessera-dev";

pub(crate) const DEV_PRIVATE_PEM: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIMr1k2AgsuddXl+k8uqWu9e+KSfcogM9PPf/ZGRQto/g
-----END PRIVATE KEY-----
";

pub(crate) const DEV_PUBLIC_PEM: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAft4yMfz/dgraBnDIL+K20dQe0juXdPpm/V5J2aB93ss=
-----END PUBLIC KEY-----
";

/// A private key that signs tokens, with the algorithm it signs with and its `kid`.
pub struct Signer {
    key: EncodingKey,
    algorithm: Algorithm,
    kid: Option<String>,
}

/// Who a minted token is for and how long it lasts.
pub struct TokenClaims<'a> {
    pub issuer: &'a str,
    pub audience: &'a str,
    pub org: &'a str,
    pub user: &'a str,
    /// Granted for `org`, as ZITADEL grants project roles.
    pub roles: &'a [String],
    pub ttl_secs: i64,
    pub now_unix_secs: i64,
}

impl Signer {
    pub fn development() -> Result<Self, jsonwebtoken::errors::Error> {
        Ok(Self {
            key: EncodingKey::from_ed_pem(DEV_PRIVATE_PEM.as_bytes())?,
            algorithm: Algorithm::EdDSA,
            kid: Some(DEV_KEY_ID.into()),
        })
    }

    /// A PEM private key: Ed25519 signs EdDSA, P-256 ES256, RSA RS256. The key is tried
    /// with each, since a PKCS#8 PEM does not say which kind it holds.
    pub fn from_pem(pem: &[u8], kid: Option<String>) -> Result<Self, String> {
        type Reader = fn(&[u8]) -> jsonwebtoken::errors::Result<EncodingKey>;
        let candidates: [(Algorithm, Reader); 3] = [
            (Algorithm::EdDSA, EncodingKey::from_ed_pem),
            (Algorithm::ES256, EncodingKey::from_ec_pem),
            (Algorithm::RS256, EncodingKey::from_rsa_pem),
        ];
        candidates
            .into_iter()
            .find_map(|(algorithm, read)| {
                let key = read(pem).ok()?;
                jsonwebtoken::crypto::sign(b"probe", &key, algorithm).ok()?;
                Some(Self {
                    key,
                    algorithm,
                    kid: kid.clone(),
                })
            })
            .ok_or_else(|| "not an Ed25519, P-256 or RSA private key in PEM".to_owned())
    }

    /// A token whose claims are named as `claims` says, as ZITADEL's access tokens carry them.
    pub fn mint(
        &self,
        claims: &ClaimNames,
        token: &TokenClaims<'_>,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let mut role_claim = Map::new();
        for role in token.roles {
            role_claim.insert(
                role.clone(),
                json!({ token.org: format!("{}.localhost", token.org) }),
            );
        }
        let mut body = Map::new();
        body.insert("iss".into(), json!(token.issuer));
        body.insert("aud".into(), json!(token.audience));
        body.insert(claims.user.clone(), json!(token.user));
        body.insert(claims.org.clone(), json!(token.org));
        body.insert(claims.roles.clone(), Value::Object(role_claim));
        body.insert("iat".into(), json!(token.now_unix_secs));
        body.insert("nbf".into(), json!(token.now_unix_secs));
        body.insert(
            "exp".into(),
            json!(token.now_unix_secs.saturating_add(token.ttl_secs)),
        );
        let mut header = Header::new(self.algorithm);
        header.kid.clone_from(&self.kid);
        jsonwebtoken::encode(&header, &body, &self.key)
    }
}

/// A token for `user` of `org` holding `roles` for `org`, signed with the development key.
pub fn mint_dev_token(
    auth: &AuthConfig,
    org: &str,
    user: &str,
    roles: &[String],
    ttl_secs: i64,
    now_unix_secs: i64,
) -> Result<String, jsonwebtoken::errors::Error> {
    Signer::development()?.mint(
        &auth.claims,
        &TokenClaims {
            issuer: &auth.issuer,
            audience: &auth.audience,
            org,
            user,
            roles,
            ttl_secs,
            now_unix_secs,
        },
    )
}

/// A new ES256 signing key: the private key as PKCS#8 PEM, and the JWKS of its public key
/// for `auth.jwks_file`.
pub fn generate_signing_key(kid: &str) -> Result<(SecretString, String), String> {
    use ring::rand::SystemRandom;
    use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
    let random = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &random)
        .map_err(|_| "no key could be generated".to_owned())?;
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &random)
        .map_err(|_| "the generated key does not load".to_owned())?;
    // An uncompressed point: 0x04, then x and y of 32 bytes each.
    let point = pair.public_key().as_ref();
    let (x, y) = point
        .get(1..)
        .filter(|coordinates| coordinates.len() == 64)
        .ok_or_else(|| "the generated public key is not a P-256 point".to_owned())?
        .split_at(32);
    let jwks = json!({"keys": [{
        "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
        "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y),
    }]});
    // The private key's text, wiped when dropped, as the PEM built from it is.
    let body =
        zeroize::Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(pkcs8.as_ref()));
    // Room for every line break and both markers: no reallocation leaves a copy behind.
    let mut pem =
        zeroize::Zeroizing::new(String::with_capacity(body.len() + body.len() / 64 + 128));
    pem.push_str("-----BEGIN PRIVATE KEY-----\n");
    for line in body.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).map_err(|e| e.to_string())?);
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    Ok((SecretString::from(pem.to_string()), jwks.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A generated key signs tokens that its JWKS verifies, and no other JWKS does.
    #[test]
    fn a_generated_key_verifies_against_its_own_jwks() {
        use secrecy::ExposeSecret;
        let (pem, jwks) = generate_signing_key("trial").unwrap();
        let signer = Signer::from_pem(pem.expose_secret().as_bytes(), Some("trial".into()));
        let signer = signer.unwrap();
        assert_eq!(signer.algorithm, Algorithm::ES256);
        let names = ClaimNames {
            user: "sub".into(),
            org: "org".into(),
            roles: "roles".into(),
            login_name: "name".into(),
        };
        let token = signer.mint(
            &names,
            &TokenClaims {
                issuer: "https://issuer.test",
                audience: "tessera",
                org: "acme",
                user: "alice",
                roles: &["otp.check".to_owned()],
                ttl_secs: 600,
                now_unix_secs: chrono::Utc::now().timestamp(),
            },
        );
        let token = token.unwrap();
        let verify = |jwks: &str| {
            let keys = super::super::jwks::parse_jwks(jwks).unwrap();
            let mut validation = jsonwebtoken::Validation::new(Algorithm::ES256);
            validation.set_audience(&["tessera"]);
            jsonwebtoken::decode::<Value>(&token, &keys[0].key, &validation).is_ok()
        };
        assert!(verify(&jwks));
        let (_, other) = generate_signing_key("trial").unwrap();
        assert!(!verify(&other));
        assert!(
            Signer::from_pem(
                b"-----BEGIN PRIVATE KEY-----\nAA==\n-----END PRIVATE KEY-----\n",
                None
            )
            .is_err()
        );
    }
}
