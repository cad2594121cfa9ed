//! The development signing key of `tessera dev` and `tessera token`. It is published in this
//! repository, so it proves nothing: `tessera serve` refuses to use it.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Map, Value, json};

use super::settings::AuthConfig;

pub const DEV_KEY_ID: &str = "tessera-dev";

pub(crate) const DEV_PRIVATE_PEM: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIMr1k2AgsuddXl+k8uqWu9e+KSfcogM9PPf/ZGRQto/g
-----END PRIVATE KEY-----
";

pub(crate) const DEV_PUBLIC_PEM: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAft4yMfz/dgraBnDIL+K20dQe0juXdPpm/V5J2aB93ss=
-----END PUBLIC KEY-----
";

/// A token for `user` of `org` holding `roles` for `org`, signed with the development key.
pub fn mint_dev_token(
    auth: &AuthConfig,
    org: &str,
    user: &str,
    roles: &[String],
    ttl_secs: i64,
    now_unix_secs: i64,
) -> Result<String, jsonwebtoken::errors::Error> {
    let mut role_claim = Map::new();
    for role in roles {
        role_claim.insert(role.clone(), json!({ org: format!("{org}.localhost") }));
    }
    let mut claims = Map::new();
    claims.insert("iss".into(), json!(auth.issuer));
    claims.insert("aud".into(), json!(auth.audience));
    claims.insert(auth.claims.user.clone(), json!(user));
    claims.insert(auth.claims.org.clone(), json!(org));
    claims.insert(auth.claims.roles.clone(), Value::Object(role_claim));
    claims.insert("iat".into(), json!(now_unix_secs));
    claims.insert("nbf".into(), json!(now_unix_secs));
    claims.insert("exp".into(), json!(now_unix_secs.saturating_add(ttl_secs)));
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(DEV_KEY_ID.into());
    let key = EncodingKey::from_ed_pem(DEV_PRIVATE_PEM.as_bytes())?;
    jsonwebtoken::encode(&header, &claims, &key)
}
