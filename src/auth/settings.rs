//! What token verification is configured with (`[auth]`); `settings.rs` loads it.

use secrecy::SecretString;
use serde::Deserialize;

/// The keys, claims and roles of token verification, as `config/default.toml` documents them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    pub jwks_file: String,
    pub jwks_url: String,
    pub jwks_refetch_min_interval_secs: u64,
    pub jwks_refresh_secs: u64,
    pub issuer: String,
    pub audience: String,
    pub leeway_secs: u64,
    pub token_cache_capacity: usize,
    pub hs256_secret: SecretString,
    pub hs256_secret_file: String,
    pub dev_key: bool,
    pub user_claim: String,
    pub org_claim: String,
    pub roles_claim: String,
    pub login_name_claim: String,
    pub check_role: String,
    pub admin_role: String,
}
