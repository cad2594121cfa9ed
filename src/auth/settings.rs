//! What token verification is configured with (`[auth]`): as written (`AuthSettings`, which
//! `settings.rs` loads) and as parsed (`AuthConfig`, which the verifier starts from).

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
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

/// The claims a token's caller is read from.
#[derive(Debug, Clone)]
pub struct ClaimNames {
    pub user: String,
    pub org: String,
    pub roles: String,
    pub login_name: String,
}

/// Token verification as configured, parsed: "not set" is `None`, times are `Duration`s.
pub struct AuthConfig {
    pub jwks_file: Option<PathBuf>,
    pub jwks_url: Option<String>,
    /// At most this often is the JWKS URL fetched (an unknown kid, a short max-age); the
    /// file is looked at this often.
    pub jwks_refetch_min_interval: Duration,
    /// At least this often is the JWKS URL fetched.
    pub jwks_refresh: Duration,
    pub issuer: String,
    pub audience: String,
    /// Clock tolerance for `exp` and `nbf`, in seconds (at most 60).
    pub leeway_secs: u64,
    /// Verified tokens remembered; `None`: every call checks its signature.
    pub token_cache_capacity: Option<NonZeroUsize>,
    pub hs256_secret: Option<SecretString>,
    /// The embedded development key (`tessera dev` only).
    pub dev_key: bool,
    pub claims: ClaimNames,
    pub check_role: String,
    pub admin_role: String,
}

impl AuthSettings {
    /// The configuration, with every problem pushed onto `problems`. `dev` allows the
    /// development key.
    pub fn parse(self, dev: bool, problems: &mut Vec<String>) -> AuthConfig {
        let set = |value: String| (!value.trim().is_empty()).then_some(value);
        let jwks_file = set(self.jwks_file).map(PathBuf::from);
        let jwks_url = set(self.jwks_url);
        if let Some(url) = &jwks_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            problems.push(format!("auth.jwks_url {url:?} must be an http(s) URL"));
        }
        let hs256_secret =
            Some(self.hs256_secret).filter(|secret| !secret.expose_secret().is_empty());
        if self.jwks_refresh_secs == 0 {
            problems.push("auth.jwks_refresh_secs must be positive".into());
        }
        if self.leeway_secs > 60 {
            problems.push("auth.leeway_secs must be at most 60".into());
        }
        if jwks_file.is_none() && jwks_url.is_none() && hs256_secret.is_none() && !self.dev_key {
            problems.push(
                "auth: no token verification keys (set auth.jwks_file or auth.jwks_url)".into(),
            );
        }
        if self.dev_key && !dev {
            problems.push("auth.dev_key is only for `tessera dev`".into());
        }
        if self.issuer.is_empty() || self.audience.is_empty() {
            problems.push("auth.issuer and auth.audience are required".into());
        }
        AuthConfig {
            jwks_file,
            jwks_url,
            jwks_refetch_min_interval: Duration::from_secs(self.jwks_refetch_min_interval_secs),
            jwks_refresh: Duration::from_secs(self.jwks_refresh_secs),
            issuer: self.issuer,
            audience: self.audience,
            leeway_secs: self.leeway_secs,
            token_cache_capacity: NonZeroUsize::new(self.token_cache_capacity),
            hs256_secret,
            dev_key: self.dev_key,
            claims: ClaimNames {
                user: self.user_claim,
                org: self.org_claim,
                roles: self.roles_claim,
                login_name: self.login_name_claim,
            },
            check_role: self.check_role,
            admin_role: self.admin_role,
        }
    }
}
