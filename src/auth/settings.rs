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
    /// Reads of an organization's policies, besides `admin_role` (ZITADEL's `policy.read`).
    pub policy_read_role: String,
    /// Changes of an organization's policies, besides `admin_role` (ZITADEL's `policy.write`).
    pub policy_write_role: String,
    /// RFC 7662 introspection of opaque tokens: on when a client id or a key file is set.
    pub introspection_url: String,
    pub introspection_client_id: String,
    pub introspection_client_secret: SecretString,
    pub introspection_client_secret_file: String,
    pub introspection_key_file: String,
    pub introspection_cache_secs: u64,
    pub introspection_negative_cache_secs: u64,
    pub introspection_cache_capacity: u64,
    pub introspection_timeout_ms: u64,
    pub introspection_max_concurrent: usize,
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
    /// Reads of an organization's policies, besides `admin_role` (ZITADEL's `policy.read`).
    pub policy_read_role: String,
    /// Changes of an organization's policies, besides `admin_role` (ZITADEL's `policy.write`).
    pub policy_write_role: String,
    /// Read `{issuer}/.well-known/openid-configuration` at start, for the JWKS URL (when no
    /// JWKS file or URL is set) and the introspection endpoint (when it is not set).
    pub discover: bool,
    pub introspection: Option<IntrospectionConfig>,
}

/// How opaque tokens are checked with the provider (RFC 7662).
pub struct IntrospectionConfig {
    /// `None`: the discovered `introspection_endpoint`.
    pub endpoint: Option<String>,
    pub client: IntrospectionClient,
    /// An active token is remembered until the earlier of its `exp` and this.
    pub cache_ttl: Duration,
    /// An inactive or unusable token is remembered this long.
    pub negative_cache_ttl: Duration,
    pub cache_capacity: u64,
    /// Per call, waiting for a free slot included.
    pub timeout: Duration,
    pub max_concurrent: NonZeroUsize,
}

/// How tessera authenticates itself to the introspection endpoint.
pub enum IntrospectionClient {
    /// `client_secret_basic`.
    Secret { id: String, secret: SecretString },
    /// `private_key_jwt` with ZITADEL's JSON key file of an API application, read at start
    /// (`client_id` must match the file's when both are set).
    KeyFile {
        path: PathBuf,
        client_id: Option<String>,
    },
}

fn is_http_url(value: &str) -> bool {
    value.starts_with("https://") || value.starts_with("http://")
}

impl AuthSettings {
    /// The configuration, with every problem pushed onto `problems`. `dev` allows the
    /// development key.
    pub fn parse(self, dev: bool, problems: &mut Vec<String>) -> AuthConfig {
        let introspection = self.introspection(problems);
        let set = |value: String| (!value.trim().is_empty()).then_some(value);
        let jwks_file = set(self.jwks_file).map(PathBuf::from);
        let jwks_url = set(self.jwks_url);
        if let Some(url) = &jwks_url
            && !is_http_url(url)
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
        let needs_endpoint = introspection.as_ref().is_some_and(|i| i.endpoint.is_none());
        let keys_unset = jwks_file.is_none() && jwks_url.is_none();
        let discover = (keys_unset || needs_endpoint) && is_http_url(&self.issuer);
        if needs_endpoint && !discover {
            problems.push(
                "auth.introspection_url is required when auth.issuer is not an http(s) URL to discover it from"
                    .into(),
            );
        }
        if keys_unset
            && !discover
            && hs256_secret.is_none()
            && introspection.is_none()
            && !self.dev_key
        {
            problems.push(
                "auth: no way to verify tokens (set auth.issuer to the provider's URL, or auth.jwks_file or auth.jwks_url)"
                    .into(),
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
            policy_read_role: self.policy_read_role,
            policy_write_role: self.policy_write_role,
            discover,
            introspection,
        }
    }

    fn introspection(&self, problems: &mut Vec<String>) -> Option<IntrospectionConfig> {
        let set = |value: &str| (!value.trim().is_empty()).then(|| value.trim().to_owned());
        let client_id = set(&self.introspection_client_id);
        let key_file = set(&self.introspection_key_file).map(PathBuf::from);
        let secret = Some(self.introspection_client_secret.clone())
            .filter(|secret| !secret.expose_secret().is_empty());
        let client = match (key_file, secret, client_id) {
            (None, None, None) => return None,
            (Some(_), Some(_), _) => {
                problems.push(
                    "auth: set introspection_key_file or introspection_client_secret, not both"
                        .into(),
                );
                return None;
            }
            (Some(path), None, client_id) => IntrospectionClient::KeyFile { path, client_id },
            (None, Some(secret), Some(id)) => IntrospectionClient::Secret { id, secret },
            (None, Some(_), None) => {
                problems.push("auth.introspection_client_id is required with its secret".into());
                return None;
            }
            (None, None, Some(_)) => {
                problems.push(
                    "auth: introspection needs introspection_client_secret or introspection_key_file"
                        .into(),
                );
                return None;
            }
        };
        let endpoint = set(&self.introspection_url);
        if let Some(url) = &endpoint
            && !is_http_url(url)
        {
            problems.push(format!(
                "auth.introspection_url {url:?} must be an http(s) URL"
            ));
        }
        if self.introspection_timeout_ms == 0 {
            problems.push("auth.introspection_timeout_ms must be positive".into());
        }
        let Some(max_concurrent) = NonZeroUsize::new(self.introspection_max_concurrent) else {
            problems.push("auth.introspection_max_concurrent must be positive".into());
            return None;
        };
        Some(IntrospectionConfig {
            endpoint,
            client,
            cache_ttl: Duration::from_secs(self.introspection_cache_secs),
            negative_cache_ttl: Duration::from_secs(self.introspection_negative_cache_secs),
            cache_capacity: self.introspection_cache_capacity,
            timeout: Duration::from_millis(self.introspection_timeout_ms),
            max_concurrent,
        })
    }
}
