//! Typed settings: embedded `config/default.toml` < the dev preset (for `tessera dev`)
//! < `config/<env>.toml` < `TESSERA__SECTION__KEY` environment variables.
//! Unknown keys are an error; every secret may come from a `*_file` path.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use config::{Config, Environment, File, FileFormat};
use ipnet::IpNet;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::domain::{HashAlgorithm, LockoutPolicy, OtpPolicy, TotpParams};
use crate::store::RedisMode;

const DEFAULTS: &str = include_str!("../config/default.toml");

/// What `tessera dev` layers over the defaults: everything needed to run with no setup.
/// The keys here are published in this repository, so they protect nothing.
const DEV_PRESET: &str = r#"
[store]
kind = "memory"
[auth]
dev_key = true
issuer = "tessera-dev"
audience = "tessera"
[seal]
keys = "dev-2026:ZGV2ZWxvcG1lbnQtb25seS1zZWFsLWtleS0zMmJ5dGU="
"#;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `tessera serve` and `check-config`.
    Serve,
    /// `tessera dev` and `tessera token`.
    Dev,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub http: HttpSettings,
    pub grpc: GrpcSettings,
    pub store: StoreSettings,
    pub redis: RedisSettings,
    pub auth: AuthSettings,
    pub totp: TotpSettings,
    pub lockout: LockoutSettings,
    pub limits: LimitSettings,
    pub seal: SealSettings,
    pub tls: TlsSettings,
    pub tenants: TenantSettings,
    pub health: HealthSettings,
    pub log: LogSettings,
    /// Per-organization overrides of `[totp]` and `[lockout]`, keyed by organization id.
    #[serde(default)]
    pub orgs: HashMap<String, OrgOverrides>,
}

/// What one organization may set differently from the instance.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrgOverrides {
    pub issuer: Option<String>,
    pub algorithm: Option<HashAlgorithm>,
    pub digits: Option<u8>,
    pub period_secs: Option<u32>,
    pub skew: Option<u8>,
    pub max_otp_attempts: Option<u32>,
    pub lock_duration_secs: Option<u64>,
    pub show_failures: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    pub addr: String,
    pub workers: usize,
    pub body_limit_bytes: usize,
    pub trusted_proxies: Vec<IpNet>,
    /// On SIGTERM: stop accepting, then give in-flight requests this long to finish.
    pub shutdown_grace_secs: u64,
    /// A separate listener for `/metrics` alone; empty: only on the HTTP port.
    pub metrics_addr: String,
    pub header_timeout_secs: u64,
    pub body_timeout_secs: u64,
    pub idle_timeout_secs: u64,
    pub max_connections: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcSettings {
    pub addr: String,
    pub max_message_bytes: usize,
    pub cors_allowed_origins: Vec<String>,
    pub header_timeout_secs: u64,
    pub body_timeout_secs: u64,
    pub idle_timeout_secs: u64,
    pub max_connections: usize,
    pub max_concurrent_streams: u32,
}

/// TLS on the HTTP and gRPC listeners; both files empty: plain TCP.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    pub cert_file: String,
    pub key_file: String,
    /// A CA whose client certificates the management calls require (mTLS); empty: none.
    pub client_ca_file: String,
    pub reload_interval_secs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    Memory,
    Redis,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSettings {
    pub kind: StoreKind,
    pub timeout_ms: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    pub mode: RedisMode,
    /// One URL; in cluster mode one or more comma-separated seed nodes.
    pub url: SecretString,
    pub password_file: String,
    pub key_prefix: String,
    /// PEM of the CA that signed the Redis server's certificate (rediss:// with a private CA).
    pub tls_ca_file: String,
    /// Replicas that must acknowledge every acknowledged change (Redis `WAIT`) before
    /// tessera answers; 0 answers once the primary has committed.
    pub wait_replicas: u32,
    /// Connections per thread kept for writes that wait for replicas.
    pub wait_connections: usize,
    /// Filled from `password_file` by `load`.
    #[serde(skip)]
    pub password: Option<SecretString>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    pub jwks_file: String,
    pub jwks_url: String,
    pub jwks_refetch_min_interval_secs: u64,
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TotpSettings {
    pub issuer: String,
    pub algorithm: HashAlgorithm,
    pub digits: u8,
    pub period_secs: u32,
    pub skew: u8,
}

impl TotpSettings {
    pub fn params(&self) -> TotpParams {
        TotpParams {
            algorithm: self.algorithm,
            digits: self.digits,
            period_secs: self.period_secs,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockoutSettings {
    pub max_otp_attempts: u32,
    pub lock_duration_secs: u64,
    pub show_failures: bool,
}

fn secs_to_micros(secs: u64) -> i64 {
    i64::try_from(secs)
        .unwrap_or(i64::MAX)
        .saturating_mul(1_000_000)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSettings {
    pub per_user_per_minute: u32,
    pub per_org_per_second: u32,
    pub per_address_per_second: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealSettings {
    pub keys: SecretString,
    pub keys_file: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantSettings {
    pub mailbox_capacity: usize,
    /// The request's deadline once handed to the actors (mailbox and store calls).
    pub call_timeout_ms: u64,
    pub idle_evict_secs: u64,
    pub cache_capacity: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSettings {
    /// Not ready while this replica's clock is further than this from the store's.
    pub max_clock_offset_ms: u64,
    /// How often readiness (store reachable, clock offset) is checked in the background.
    pub check_interval_secs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    pub level: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("reading {path}: {source}")]
    SecretFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
}

/// Where to look for `config/<env>.toml`.
#[derive(Debug, Clone)]
pub struct Source {
    pub config_dir: PathBuf,
    pub environment: String,
}

impl Default for Source {
    fn default() -> Self {
        Self {
            config_dir: PathBuf::from("config"),
            environment: std::env::var("TESSERA_ENV").unwrap_or_else(|_| "production".into()),
        }
    }
}

impl Settings {
    /// Loads, resolves `*_file` secrets and validates for `mode`.
    pub fn load(mode: Mode, source: &Source) -> Result<Self, SettingsError> {
        Self::load_with(mode, source, Environment::with_prefix("TESSERA"))
    }

    /// `load` with the environment source given, so tests can set overrides without touching
    /// the process environment.
    pub fn load_with(
        mode: Mode,
        source: &Source,
        environment: Environment,
    ) -> Result<Self, SettingsError> {
        let mut builder = Config::builder().add_source(File::from_str(DEFAULTS, FileFormat::Toml));
        if mode == Mode::Dev {
            builder = builder.add_source(File::from_str(DEV_PRESET, FileFormat::Toml));
        }
        let env_file = source
            .config_dir
            .join(format!("{}.toml", source.environment));
        builder = builder.add_source(
            File::from(env_file)
                .format(FileFormat::Toml)
                .required(false),
        );
        let environment = environment
            .prefix_separator("__")
            .separator("__")
            .try_parsing(true)
            .list_separator(",")
            .with_list_parse_key("http.trusted_proxies")
            .with_list_parse_key("grpc.cors_allowed_origins");
        let mut settings: Settings = builder.add_source(environment).build()?.try_deserialize()?;
        settings.resolve_secret_files()?;
        settings.validate(mode)?;
        Ok(settings)
    }

    /// The settings `tessera dev` starts with, ignoring the process environment (for tests).
    pub fn dev_defaults() -> Result<Self, SettingsError> {
        Self::load_with(
            Mode::Dev,
            &Source {
                config_dir: PathBuf::from("/nonexistent"),
                environment: "none".into(),
            },
            Environment::with_prefix("TESSERA_TEST_NOTHING_HERE"),
        )
    }

    fn resolve_secret_files(&mut self) -> Result<(), SettingsError> {
        if let Some(keys) = read_secret_file(&self.seal.keys_file)? {
            self.seal.keys = keys;
        }
        if let Some(secret) = read_secret_file(&self.auth.hs256_secret_file)? {
            self.auth.hs256_secret = secret;
        }
        // An empty file is "no password" (a passwordless Redis refuses AUTH with an empty one).
        self.redis.password = read_secret_file(&self.redis.password_file)?
            .filter(|password| !password.expose_secret().is_empty());
        Ok(())
    }

    /// The instance's policy, with an organization's overrides when `org` names one.
    pub fn otp_policy(&self, org: Option<&str>) -> OtpPolicy {
        let none = OrgOverrides::default();
        let o = org.and_then(|org| self.orgs.get(org)).unwrap_or(&none);
        OtpPolicy {
            params: TotpParams {
                algorithm: o.algorithm.unwrap_or(self.totp.algorithm),
                digits: o.digits.unwrap_or(self.totp.digits),
                period_secs: o.period_secs.unwrap_or(self.totp.period_secs),
            },
            skew: o.skew.unwrap_or(self.totp.skew),
            issuer: o.issuer.clone().unwrap_or_else(|| self.totp.issuer.clone()),
            lockout: LockoutPolicy {
                max_attempts: o.max_otp_attempts.unwrap_or(self.lockout.max_otp_attempts),
                lock_duration_micros: secs_to_micros(
                    o.lock_duration_secs
                        .unwrap_or(self.lockout.lock_duration_secs),
                ),
                show_failures: o.show_failures.unwrap_or(self.lockout.show_failures),
            },
        }
    }

    /// Every problem at once, so an operator fixes a config in one round.
    pub fn validate(&self, mode: Mode) -> Result<(), SettingsError> {
        let mut problems = Vec::new();
        if self.http.addr.parse::<SocketAddr>().is_err() {
            problems.push(format!("http.addr {:?} is not host:port", self.http.addr));
        }
        if self.grpc.addr.parse::<SocketAddr>().is_err() {
            problems.push(format!("grpc.addr {:?} is not host:port", self.grpc.addr));
        }
        for (name, listener) in [
            (
                "http",
                [
                    self.http.header_timeout_secs,
                    self.http.body_timeout_secs,
                    self.http.idle_timeout_secs,
                ],
            ),
            (
                "grpc",
                [
                    self.grpc.header_timeout_secs,
                    self.grpc.body_timeout_secs,
                    self.grpc.idle_timeout_secs,
                ],
            ),
        ] {
            if listener.contains(&0) {
                problems.push(format!(
                    "{name}: header_timeout_secs, body_timeout_secs and idle_timeout_secs must be positive"
                ));
            }
        }
        if self.http.max_connections == 0 || self.grpc.max_connections == 0 {
            problems.push("http.max_connections and grpc.max_connections must be positive".into());
        }
        if self.grpc.max_concurrent_streams == 0 {
            problems.push("grpc.max_concurrent_streams must be positive".into());
        }
        if self.tls.cert_file.is_empty() != self.tls.key_file.is_empty() {
            problems.push("tls.cert_file and tls.key_file go together".into());
        }
        if !self.tls.client_ca_file.is_empty() && self.tls.cert_file.is_empty() {
            problems.push("tls.client_ca_file needs tls.cert_file and tls.key_file".into());
        }
        if self.tls.reload_interval_secs == 0 {
            problems.push("tls.reload_interval_secs must be positive".into());
        }
        if self.grpc.max_message_bytes < 64 {
            problems.push("grpc.max_message_bytes must be at least 64".into());
        }
        if self.http.body_limit_bytes < 64 {
            problems.push("http.body_limit_bytes must be at least 64".into());
        }
        if self.store.timeout_ms == 0 {
            problems.push("store.timeout_ms must be positive".into());
        }
        if self.store.kind == StoreKind::Redis {
            let urls: Vec<&str> = self
                .redis
                .url
                .expose_secret()
                .split(',')
                .map(str::trim)
                .collect();
            if urls
                .iter()
                .any(|url| !(url.starts_with("redis://") || url.starts_with("rediss://")))
            {
                problems.push("redis.url must start with redis:// or rediss://".into());
            }
            if self.redis.mode == RedisMode::Standalone && urls.len() > 1 {
                problems.push(
                    "redis.url holds several URLs: comma-separated seeds need redis.mode = \"cluster\""
                        .into(),
                );
            }
        }
        if self.redis.key_prefix.is_empty() || self.redis.key_prefix.contains(['{', '}']) {
            problems.push("redis.key_prefix must be non-empty and free of braces".into());
        }
        let scopes = std::iter::once(None).chain(self.orgs.keys().map(|org| Some(org.as_str())));
        for org in scopes {
            let policy = self.otp_policy(org);
            let scope = org.map_or_else(|| "totp".to_owned(), |org| format!("orgs.{org}"));
            if let Err(problem) = policy.params.validate() {
                problems.push(format!("{scope}: {problem}"));
            }
            if policy.skew > 2 {
                problems.push(format!(
                    "{scope}: skew above 2 widens the guessing window; use 0, 1 or 2"
                ));
            }
            if policy.issuer.is_empty() || policy.issuer.contains(':') {
                problems.push(format!(
                    "{scope}: the issuer must be non-empty and free of ':'"
                ));
            }
        }
        if self.auth.leeway_secs > 60 {
            problems.push("auth.leeway_secs must be at most 60".into());
        }
        let has_keys = !self.auth.jwks_file.is_empty()
            || !self.auth.jwks_url.is_empty()
            || !self.auth.hs256_secret.expose_secret().is_empty()
            || self.auth.dev_key;
        if !has_keys {
            problems.push(
                "auth: no token verification keys (set auth.jwks_file or auth.jwks_url)".into(),
            );
        }
        if self.auth.dev_key && mode == Mode::Serve {
            problems.push("auth.dev_key is only for `tessera dev`".into());
        }
        if self.auth.issuer.is_empty() || self.auth.audience.is_empty() {
            problems.push("auth.issuer and auth.audience are required".into());
        }
        if self.seal.keys.expose_secret().trim().is_empty() {
            problems.push(
                "seal: no key (set seal.keys or seal.keys_file; `tessera gen-seal-key` makes one)"
                    .into(),
            );
        } else if let Err(err) = crate::seal::KeyRing::parse(&self.seal.keys) {
            problems.push(format!("seal.keys: {err}"));
        }
        if self.tenants.mailbox_capacity == 0 || self.tenants.cache_capacity == 0 {
            problems.push("tenants.mailbox_capacity and cache_capacity must be positive".into());
        }
        if self.redis.wait_connections == 0 {
            problems.push("redis.wait_connections must be positive".into());
        }
        if self.tenants.call_timeout_ms == 0 {
            problems.push("tenants.call_timeout_ms must be positive".into());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(SettingsError::Invalid(problems))
        }
    }
}

fn read_secret_file(path: &str) -> Result<Option<SecretString>, SettingsError> {
    if path.is_empty() {
        return Ok(None);
    }
    let contents =
        std::fs::read_to_string(Path::new(path)).map_err(|source| SettingsError::SecretFile {
            path: PathBuf::from(path),
            source,
        })?;
    Ok(Some(SecretString::from(contents.trim().to_owned())))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(vars: &[(&str, &str)]) -> Environment {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Environment::with_prefix("TESSERA").source(Some(map))
    }

    fn nowhere() -> Source {
        Source {
            config_dir: PathBuf::from("/nonexistent"),
            environment: "none".into(),
        }
    }

    #[test]
    fn dev_preset_is_complete() {
        let settings = Settings::dev_defaults().unwrap();
        assert_eq!(settings.store.kind, StoreKind::Memory);
        assert!(settings.auth.dev_key);
    }

    #[test]
    fn environment_overrides_and_lists() {
        let settings = Settings::load_with(
            Mode::Dev,
            &nowhere(),
            env(&[
                ("TESSERA__HTTP__ADDR", "0.0.0.0:9999"),
                ("TESSERA__LOCKOUT__MAX_OTP_ATTEMPTS", "7"),
                ("TESSERA__LIMITS__PER_ORG_PER_SECOND", "0"),
                (
                    "TESSERA__HTTP__TRUSTED_PROXIES",
                    "10.0.0.0/8,192.168.1.1/32",
                ),
                ("TESSERA__STORE__KIND", "redis"),
            ]),
        )
        .unwrap();
        assert_eq!(settings.http.addr, "0.0.0.0:9999");
        assert_eq!(settings.lockout.max_otp_attempts, 7);
        assert_eq!(settings.limits.per_org_per_second, 0);
        assert_eq!(settings.http.trusted_proxies.len(), 2);
        assert_eq!(settings.store.kind, StoreKind::Redis);
    }

    #[test]
    fn seed_lists_need_cluster_mode() {
        let load = |mode: &str| {
            Settings::load_with(
                Mode::Dev,
                &nowhere(),
                env(&[
                    ("TESSERA__STORE__KIND", "redis"),
                    ("TESSERA__REDIS__MODE", mode),
                    (
                        "TESSERA__REDIS__URL",
                        "redis://10.0.0.1:6379, rediss://10.0.0.2:6379",
                    ),
                ]),
            )
        };
        let standalone = load("standalone").unwrap_err().to_string();
        assert!(
            standalone.contains("comma-separated seeds need"),
            "{standalone}"
        );
        let cluster = load("cluster").unwrap();
        assert_eq!(cluster.redis.mode, RedisMode::Cluster);
        assert!(load("sentinel").is_err());
    }

    #[test]
    fn organizations_override_the_instance_policy() {
        let settings = Settings::load_with(
            Mode::Dev,
            &nowhere(),
            env(&[
                ("TESSERA__ORGS__ACME__DIGITS", "8"),
                ("TESSERA__ORGS__ACME__LOCK_DURATION_SECS", "0"),
            ]),
        )
        .unwrap();
        let acme = settings.otp_policy(Some("acme"));
        assert_eq!(acme.params.digits, 8);
        assert_eq!(acme.lockout.lock_duration_micros, 0);
        assert_eq!(
            acme.lockout.max_attempts, 5,
            "not overridden: the instance's"
        );
        assert_eq!(
            settings.otp_policy(Some("other")),
            settings.otp_policy(None)
        );
        let bad = Settings::load_with(
            Mode::Dev,
            &nowhere(),
            env(&[("TESSERA__ORGS__ACME__DIGITS", "12")]),
        );
        assert!(bad.unwrap_err().to_string().contains("orgs.acme: digits"));
        let typo = Settings::load_with(
            Mode::Dev,
            &nowhere(),
            env(&[("TESSERA__ORGS__ACME__DIGTS", "8")]),
        );
        assert!(typo.is_err());
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = Settings::load_with(Mode::Dev, &nowhere(), env(&[("TESSERA__HTTP__ADRR", "x")]))
            .unwrap_err();
        assert!(err.to_string().contains("adrr"), "{err}");
    }

    #[test]
    fn serve_needs_keys_and_refuses_the_dev_key() {
        let err = Settings::load_with(Mode::Serve, &nowhere(), env(&[])).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("seal: no key"), "{text}");
        assert!(text.contains("no token verification keys"), "{text}");
        let err = Settings::load_with(
            Mode::Serve,
            &nowhere(),
            env(&[("TESSERA__AUTH__DEV_KEY", "true")]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("only for `tessera dev`"));
    }

    #[test]
    fn secrets_from_files() {
        let dir = std::env::temp_dir().join(format!("tessera-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let keys = dir.join("keys");
        std::fs::write(&keys, "k1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n").unwrap();
        let settings = Settings::load_with(
            Mode::Dev,
            &nowhere(),
            env(&[("TESSERA__SEAL__KEYS_FILE", keys.to_str().unwrap())]),
        )
        .unwrap();
        assert!(settings.seal.keys.expose_secret().starts_with("k1:"));
        let missing = Settings::load_with(
            Mode::Dev,
            &nowhere(),
            env(&[("TESSERA__SEAL__KEYS_FILE", "/nonexistent/keys")]),
        );
        assert!(missing.is_err());
        std::fs::remove_dir_all(dir).ok();
    }
}
