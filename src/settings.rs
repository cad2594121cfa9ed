//! Settings: embedded `config/default.toml` < the dev preset (for `tessera dev`)
//! < `config/<env>.toml` < `TESSERA__SECTION__KEY` environment variables.
//! Unknown keys are an error; every secret may come from a `*_file` path. `Settings` is the
//! layers as written; `Settings::parse` turns them once into `Config`, what the program
//! runs on, or names every problem at once.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use config::{Config as Layers, Environment, File, FileFormat};
use ipnet::IpNet;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::auth::AuthConfig;
use crate::domain::audit::{AddressRecording, Retention};
use crate::domain::policy::{CustomLockout, OtpSettings};
use crate::domain::recovery::{DEFAULT_CODES, MAX_CODES};
use crate::domain::{HashAlgorithm, LockoutPolicy, OtpPolicy, TotpParams};
use crate::seal::KeyRing;
use crate::store::{PolicySeed, RecordFormat, RedisConfig, RedisMode, RedisNodes};
use crate::tenant::{Limits, Policies};
use crate::tls::TlsFiles;

// Each part owns the type of its own settings; this entry only assembles them.
pub use crate::auth::AuthSettings;
pub use crate::telemetry::LogFormat;
pub use crate::tenant::LimitSettings;

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

/// The development seal key of the preset above (its base64 decoded): published, so `serve`
/// refuses it under any id.
const DEV_SEAL_KEY_BYTES: &[u8] = b"development-only-seal-key-32byte";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `tessera serve` and `check-config`.
    Serve,
    /// `tessera dev` and `tessera token`.
    Dev,
}

/// The settings as written, layer over layer (tests change them before `parse`).
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
    pub recovery_codes: RecoveryCodeSettings,
    pub limits: LimitSettings,
    pub seal: SealSettings,
    pub tls: TlsSettings,
    pub tenants: TenantSettings,
    pub health: HealthSettings,
    pub log: LogSettings,
    pub process: ProcessSettings,
    pub audit: AuditSettings,
    pub webhooks: WebhookSettings,
    /// Seeds of organizations' own policies, written to the store once each (`PolicySeed`);
    /// the API changes them from then on. Keyed by organization id in lower case (see
    /// `normalize_org_keys`).
    #[serde(default)]
    pub orgs: HashMap<String, OrgOverrides>,
    /// The layers read, for the start's log: the files and the config directory.
    #[serde(skip)]
    pub loaded_from: String,
    /// What loading found wrong but not fatal (stray variables), for the start's log.
    #[serde(skip)]
    pub warnings: Vec<String>,
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
    pub recovery_codes: Option<u32>,
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
    /// Worker threads of the gRPC server's own tokio runtime.
    pub threads: usize,
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
    /// The password (overrides the URL's); or from `password_file`. Empty: none.
    pub password: SecretString,
    /// The format new enrollments are written in: 3 or 4 (`RecordFormat`).
    pub record_format: u8,
    /// On one server, each change's script appends its events to the organization's feed.
    pub feed_in_script: bool,
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockoutSettings {
    pub max_otp_attempts: u32,
    pub lock_duration_secs: u64,
    pub show_failures: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecoveryCodeSettings {
    /// Codes a generation makes when the request names no count (1 to 20).
    pub count: u32,
}

fn secs_to_micros(secs: u64) -> i64 {
    i64::try_from(secs)
        .unwrap_or(i64::MAX)
        .saturating_mul(1_000_000)
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
    /// How often each replica asks the store which organizations' policies changed.
    pub policy_refresh_ms: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSettings {
    /// Not ready while this replica's clock is further than this from the store's.
    pub max_clock_offset_ms: u64,
    /// How often readiness (store reachable, clock offset) is checked in the background.
    pub check_interval_secs: u64,
}

/// See `process.rs`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessSettings {
    pub allow_core_dumps: bool,
}

/// Signed notifications (`webhooks.rs`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    pub enabled: bool,
    pub poll_ms: u64,
    pub claim_idle_secs: u64,
    pub lease_secs: u64,
    pub timeout_secs: u64,
    pub retry_base_ms: u64,
    pub retry_cap_secs: u64,
    pub retry_for_secs: u64,
    pub allow_private_targets: bool,
    /// The instance's own endpoint, which receives every organization's events of
    /// `instance_types`; empty: none.
    pub instance_url: String,
    /// Its secret, `whsec_` and base64 (a secret: from the environment or a file layer).
    pub instance_secret: SecretString,
    pub instance_types: Vec<String>,
}

impl WebhookSettings {
    /// The instance's endpoint, checked: its URL by the target rules, its secret as the
    /// specification writes one, its event types known (none: the defaults).
    fn instance(&self, problems: &mut Vec<String>) -> Option<crate::webhooks::InstanceEndpoint> {
        use crate::domain::audit::EventKind;
        use crate::domain::webhook::{DEFAULT_KINDS, check_target};
        if self.instance_url.is_empty() {
            return None;
        }
        let before = problems.len();
        match reqwest::Url::parse(&self.instance_url) {
            Ok(url) => {
                if let Err(refused) =
                    check_target(url.scheme(), url.host_str(), self.allow_private_targets)
                {
                    problems.push(format!("webhooks.instance_url: {refused}"));
                }
            }
            Err(_) => problems.push("webhooks.instance_url does not parse".into()),
        }
        let secret = self
            .instance_secret
            .expose_secret()
            .strip_prefix("whsec_")
            .and_then(|key| {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD.decode(key).ok()
            })
            .filter(|key| key.len() >= 16);
        if secret.is_none() {
            problems.push(
                "webhooks.instance_secret must be whsec_ and at least 16 bytes in base64".into(),
            );
        }
        let mut kinds = Vec::new();
        for name in &self.instance_types {
            match EventKind::parse(name) {
                Some(kind) => kinds.push(kind),
                None => problems.push(format!("webhooks.instance_types: unknown type {name:?}")),
            }
        }
        if kinds.is_empty() {
            kinds = DEFAULT_KINDS.to_vec();
        }
        (problems.len() == before).then(|| crate::webhooks::InstanceEndpoint {
            url: self.instance_url.clone(),
            secret: zeroize::Zeroizing::new(secret.unwrap_or_default()),
            kinds,
        })
    }
}

/// The audit trail (`domain::audit`): how much of the client's address an event keeps, and
/// the instance's retention, which an organization's OTP policy may replace.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSettings {
    pub client_address: AddressRecording,
    pub max_events_per_user: u32,
    pub max_events: u32,
    pub max_age_days: u32,
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

/// Where the configuration comes from: the folder of `<env>.toml` files, and which one.
#[derive(Debug, Clone, Default)]
pub struct Source {
    /// Given by `--config-dir` or `TESSERA_CONFIG_DIR` (it must exist); else `config/` in the
    /// working directory, else `../config` beside the binary.
    pub config_dir: Option<PathBuf>,
    /// Given by `--env` or `TESSERA_ENV`: its file must exist; `none` means no file at all.
    /// Unset: `production` for `serve`; `dev` and `token` always take `dev` (both optional).
    pub environment: Option<String>,
}

/// The pairs of a secret given directly and its `*_file` twin.
const SECRET_TWINS: &[(&str, &str)] = &[
    ("seal.keys", "seal.keys_file"),
    ("auth.hs256_secret", "auth.hs256_secret_file"),
    (
        "auth.introspection_client_secret",
        "auth.introspection_client_secret_file",
    ),
    ("redis.password", "redis.password_file"),
];

/// Variables of tessera's own that are not settings.
const OWN_VARIABLES: &[&str] = &["TESSERA_ENV", "TESSERA_CONFIG_DIR"];

/// One layer of the configuration, kept apart to know which layer set what.
struct Layer {
    name: String,
    config: Layers,
}

impl Layer {
    fn new(
        name: impl Into<String>,
        source: impl config::Source + Send + Sync + 'static,
    ) -> Result<Self, SettingsError> {
        Ok(Self {
            name: name.into(),
            config: Layers::builder().add_source(source).build()?,
        })
    }

    /// The value at `key`, if this layer sets it to something other than "".
    fn sets(&self, key: &str) -> Option<String> {
        self.config.get_string(key).ok().filter(|v| !v.is_empty())
    }
}

impl Source {
    /// The folder of the `<env>.toml` files.
    fn config_dir(&self) -> Result<Option<PathBuf>, SettingsError> {
        if let Some(dir) = &self.config_dir {
            return if dir.is_dir() {
                Ok(Some(dir.clone()))
            } else {
                Err(SettingsError::Invalid(vec![format!(
                    "the config directory {} does not exist",
                    dir.display()
                )]))
            };
        }
        let beside_binary = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|bin| bin.join("../config")));
        Ok([Some(PathBuf::from("config")), beside_binary]
            .into_iter()
            .flatten()
            .find(|dir| dir.is_dir()))
    }

    /// The environment's file, if one is to be read: an explicit environment must have it.
    fn env_file(&self, mode: Mode, dir: Option<&Path>) -> Result<Option<PathBuf>, SettingsError> {
        let (name, explicit) = match (&self.environment, mode) {
            (Some(name), _) if name == "none" => return Ok(None),
            // `dev` and `token` take dev.toml, when there is one.
            (_, Mode::Dev) => ("dev", false),
            (Some(name), Mode::Serve) => (name.as_str(), true),
            (None, Mode::Serve) => ("production", false),
        };
        let file = dir.map(|dir| dir.join(format!("{name}.toml")));
        match file {
            Some(file) if file.is_file() => Ok(Some(file)),
            _ if explicit => Err(SettingsError::Invalid(vec![format!(
                "environment {name:?}: no {name}.toml in {} (--env none: the defaults and the environment only)",
                dir.map_or_else(
                    || "any config directory".to_owned(),
                    |d| d.display().to_string()
                )
            )])),
            _ => Ok(None),
        }
    }
}

impl Settings {
    /// Loads the layers for `mode` and resolves `*_file` secrets; `parse` checks them.
    pub fn load(mode: Mode, source: &Source) -> Result<Self, SettingsError> {
        let mut settings = Self::load_with(mode, source, Environment::with_prefix("TESSERA"))?;
        let names = std::env::vars_os().filter_map(|(name, _)| name.into_string().ok());
        settings.warnings.extend(stray_variables(names));
        Ok(settings)
    }

    /// `load` with the environment source given, so tests can set overrides without touching
    /// the process environment. Layers, each over the ones before: the embedded defaults,
    /// the dev preset (`tessera dev`), the environment's file, the environment.
    pub fn load_with(
        mode: Mode,
        source: &Source,
        environment: Environment,
    ) -> Result<Self, SettingsError> {
        let dir = source.config_dir()?;
        let env_file = source.env_file(mode, dir.as_deref())?;
        let environment = environment
            .prefix_separator("__")
            .separator("__")
            .try_parsing(true)
            .list_separator(",")
            .with_list_parse_key("http.trusted_proxies")
            .with_list_parse_key("grpc.cors_allowed_origins")
            .with_list_parse_key("webhooks.instance_types");
        let defaults = || File::from_str(DEFAULTS, FileFormat::Toml);
        let preset = || File::from_str(DEV_PRESET, FileFormat::Toml);
        let file = |path: &PathBuf| File::from(path.clone()).format(FileFormat::Toml);
        let mut layers = vec![Layer::new("the defaults", defaults())?];
        let mut builder = Layers::builder().add_source(defaults());
        if mode == Mode::Dev {
            layers.push(Layer::new("the dev preset", preset())?);
            builder = builder.add_source(preset());
        }
        if let Some(path) = &env_file {
            layers.push(Layer::new(path.display().to_string(), file(path))?);
            builder = builder.add_source(file(path));
        }
        layers.push(Layer::new("the environment", environment.clone())?);
        let mut settings: Settings = builder.add_source(environment).build()?.try_deserialize()?;
        settings.resolve_secrets(&layers)?;
        settings.normalize_org_keys()?;
        let names: Vec<&str> = layers.iter().map(|l| l.name.as_str()).collect();
        settings.loaded_from = format!(
            "{} (config directory: {})",
            names.join(" < "),
            dir.map_or_else(|| "none found".to_owned(), |d| d.display().to_string())
        );
        Ok(settings)
    }

    /// The settings `tessera dev` starts with, ignoring the process environment (for tests).
    #[cfg(feature = "test-kit")]
    pub fn dev_defaults() -> Result<Self, SettingsError> {
        let mut settings = Self::load_with(
            Mode::Dev,
            &Source {
                config_dir: None,
                environment: Some("none".into()),
            },
            Environment::with_prefix("TESSERA_TEST_NOTHING_HERE"),
        )?;
        settings.warnings.clear();
        Ok(settings)
    }

    /// Each secret from the topmost layer that gives it, directly or as a `*_file` path: an
    /// environment variable beats a file path from a config file, and the other way round.
    /// Both in one layer is an error: which was meant?
    fn resolve_secrets(&mut self, layers: &[Layer]) -> Result<(), SettingsError> {
        let mut problems = Vec::new();
        for (value_key, file_key) in SECRET_TWINS {
            let top = layers
                .iter()
                .rev()
                .find(|layer| layer.sets(value_key).is_some() || layer.sets(file_key).is_some());
            let Some(layer) = top else {
                continue;
            };
            let secret = match (layer.sets(value_key), layer.sets(file_key)) {
                (Some(_), Some(_)) => {
                    problems.push(format!(
                        "{value_key} and {file_key} are both set in {}",
                        layer.name
                    ));
                    continue;
                }
                (Some(value), None) => SecretString::from(value),
                (None, Some(path)) => read_secret_file(&path)?,
                (None, None) => continue,
            };
            match *value_key {
                "seal.keys" => self.seal.keys = secret,
                "auth.hs256_secret" => self.auth.hs256_secret = secret,
                "auth.introspection_client_secret" => {
                    self.auth.introspection_client_secret = secret;
                }
                _ => self.redis.password = secret,
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(SettingsError::Invalid(problems))
        }
    }

    /// Organization ids as keys of `[orgs]` in lower case, looked up in lower case: the
    /// environment can only give them so (config-rs lowercases its keys), and an override
    /// set as TESSERA__ORGS__ACME__… must apply to the organization "ACME".
    fn normalize_org_keys(&mut self) -> Result<(), SettingsError> {
        let mut normalized = HashMap::with_capacity(self.orgs.len());
        for (org, overrides) in std::mem::take(&mut self.orgs) {
            if normalized.insert(org.to_lowercase(), overrides).is_some() {
                return Err(SettingsError::Invalid(vec![format!(
                    "orgs: {org:?} appears twice when case is ignored"
                )]));
            }
        }
        self.orgs = normalized;
        Ok(())
    }

    /// The settings as the program uses them, or every problem at once, so an operator
    /// fixes a config in one round. Nothing downstream parses or checks them again.
    pub fn parse(self, mode: Mode) -> Result<Config, SettingsError> {
        let mut problems = Vec::new();
        let http = self.http.parse(&mut problems);
        let grpc = self.grpc.parse(&mut problems);
        let tls = self.tls.parse(&mut problems);
        let store = parse_store(self.store, self.redis, &mut problems);
        let auth = self.auth.parse(mode == Mode::Dev, &mut problems);
        let retention = Retention {
            max_events_per_user: self.audit.max_events_per_user,
            max_events: self.audit.max_events,
            max_age_days: self.audit.max_age_days,
        };
        let retention_problems = retention.problems();
        problems.extend(
            retention_problems
                .iter()
                .map(|problem| format!("audit: {problem}")),
        );
        let policies = parse_policies(
            &self.totp,
            &self.lockout,
            &self.recovery_codes,
            retention,
            self.orgs,
            &mut problems,
        );
        let seal_keys = parse_seal_keys(&self.seal.keys, mode, &mut problems);
        let instance_webhook = self.webhooks.instance(&mut problems);
        if self.tenants.mailbox_capacity == 0 || self.tenants.cache_capacity == 0 {
            problems.push("tenants.mailbox_capacity and cache_capacity must be positive".into());
        }
        if self.tenants.call_timeout_ms == 0 {
            problems.push("tenants.call_timeout_ms must be positive".into());
        }
        // A change must reach every replica within a second (issue 15's promise, and the
        // README's); below 10 ms the polls would cost more than they save.
        if !(10..=1000).contains(&self.tenants.policy_refresh_ms) {
            problems.push(format!(
                "tenants.policy_refresh_ms must be 10 to 1000 (a policy change reaches every \
                 replica within it), not {}",
                self.tenants.policy_refresh_ms
            ));
        }
        let (Some(seal_keys), Some(policies), true) = (seal_keys, policies, problems.is_empty())
        else {
            return Err(SettingsError::Invalid(problems));
        };
        Ok(Config {
            http,
            grpc,
            tls,
            store,
            auth,
            policies,
            limits: Limits::from_settings(&self.limits),
            seal_keys,
            tenants: TenantConfig {
                mailbox_capacity: self.tenants.mailbox_capacity,
                call_timeout: Duration::from_millis(self.tenants.call_timeout_ms),
                idle_evict: Duration::from_secs(self.tenants.idle_evict_secs),
                cache_capacity: self.tenants.cache_capacity,
                policy_refresh: Duration::from_millis(self.tenants.policy_refresh_ms),
            },
            health: HealthConfig {
                max_clock_offset: Duration::from_millis(self.health.max_clock_offset_ms),
                check_interval: Duration::from_secs(self.health.check_interval_secs),
            },
            log: self.log,
            process: self.process,
            client_address: self.audit.client_address,
            webhooks: (self.webhooks.enabled).then(|| crate::webhooks::DeliveryConfig {
                poll: Duration::from_millis(self.webhooks.poll_ms.max(10)),
                claim_idle: Duration::from_secs(self.webhooks.claim_idle_secs.max(1)),
                lease: Duration::from_secs(self.webhooks.lease_secs.max(1)),
                timeout: Duration::from_secs(self.webhooks.timeout_secs.max(1)),
                retry_base: Duration::from_millis(self.webhooks.retry_base_ms.max(1)),
                retry_cap: Duration::from_secs(self.webhooks.retry_cap_secs.max(1)),
                retry_for: Duration::from_secs(self.webhooks.retry_for_secs),
                allow_private_targets: self.webhooks.allow_private_targets,
                instance: instance_webhook.map(Arc::new),
            }),
            webhook_private_targets: self.webhooks.allow_private_targets,
            loaded_from: self.loaded_from,
            warnings: self.warnings,
        })
    }
}

/// The settings parsed: typed, checked, with "not set" as `None` and times as `Duration`.
/// Each part owns the type of its own (`AuthConfig`, `RedisConfig`, `Limits`, `Policies`,
/// `KeyRing`); this entry builds them and hands them down.
pub struct Config {
    pub http: HttpConfig,
    pub grpc: GrpcConfig,
    /// TLS on the HTTP and gRPC listeners; `None`: plain TCP.
    pub tls: Option<TlsConfig>,
    pub store: StoreConfig,
    pub auth: AuthConfig,
    pub policies: Policies,
    pub limits: Limits,
    pub seal_keys: Arc<KeyRing>,
    pub tenants: TenantConfig,
    pub health: HealthConfig,
    pub log: LogSettings,
    pub process: ProcessSettings,
    /// How much of the client's address audit events keep.
    pub client_address: AddressRecording,
    /// Webhook deliveries, when on.
    pub webhooks: Option<crate::webhooks::DeliveryConfig>,
    /// Webhook endpoints may name private, loopback and link-local targets.
    pub webhook_private_targets: bool,
    /// The layers read, for the start's log: the files and the config directory.
    pub loaded_from: String,
    /// What loading found wrong but not fatal (stray variables), for the start's log.
    pub warnings: Vec<String>,
}

impl Config {
    /// Loads the layers for `mode`, resolves `*_file` secrets and parses.
    pub fn load(mode: Mode, source: &Source) -> Result<Self, SettingsError> {
        Settings::load(mode, source)?.parse(mode)
    }
}

/// What a slow or silent client may hold on a listener.
#[derive(Debug, Clone, Copy)]
pub struct ListenerTimeouts {
    pub header: Duration,
    pub body: Duration,
    pub idle: Duration,
}

impl ListenerTimeouts {
    fn parse(name: &str, secs: [u64; 3], problems: &mut Vec<String>) -> Self {
        if secs.contains(&0) {
            problems.push(format!(
                "{name}: header_timeout_secs, body_timeout_secs and idle_timeout_secs must be positive"
            ));
        }
        let [header, body, idle] = secs.map(Duration::from_secs);
        Self { header, body, idle }
    }
}

pub struct HttpConfig {
    pub addr: SocketAddr,
    /// Actix workers, one per core unless set.
    pub workers: Option<NonZeroUsize>,
    pub body_limit_bytes: usize,
    pub trusted_proxies: Vec<IpNet>,
    pub shutdown_grace: Duration,
    /// A separate listener for `/metrics` alone.
    pub metrics_addr: Option<SocketAddr>,
    pub timeouts: ListenerTimeouts,
    pub max_connections: NonZeroUsize,
}

pub struct GrpcConfig {
    pub addr: SocketAddr,
    pub threads: NonZeroUsize,
    pub max_message_bytes: usize,
    pub cors_allowed_origins: Vec<String>,
    pub timeouts: ListenerTimeouts,
    pub max_connections: NonZeroUsize,
    pub max_concurrent_streams: u32,
}

pub struct TlsConfig {
    pub files: TlsFiles,
    pub reload_interval: Duration,
}

/// Where factors are kept.
pub enum StoreConfig {
    /// In this process only, lost on exit: development and tests.
    Memory,
    Redis(Box<RedisConfig>),
}

impl StoreConfig {
    /// For the start's messages.
    pub fn describe(&self) -> &'static str {
        match self {
            Self::Memory => "memory store",
            Self::Redis(redis) if redis.nodes.is_cluster() => "Redis Cluster store",
            Self::Redis(_) => "Redis store",
        }
    }
}

pub struct TenantConfig {
    pub mailbox_capacity: usize,
    /// The request's deadline once handed to the actors (mailbox and store calls).
    pub call_timeout: Duration,
    pub idle_evict: Duration,
    pub cache_capacity: usize,
    pub policy_refresh: Duration,
}

pub struct HealthConfig {
    /// Not ready while this replica's clock is further than this from the store's.
    pub max_clock_offset: Duration,
    /// How often readiness (store reachable, clock offset) is checked in the background.
    pub check_interval: Duration,
}

/// `host:port`, or a problem named after its key.
fn socket_addr(key: &str, value: &str, problems: &mut Vec<String>) -> SocketAddr {
    value.parse().unwrap_or_else(|_| {
        problems.push(format!("{key} {value:?} is not host:port"));
        SocketAddr::from(([127, 0, 0, 1], 0))
    })
}

/// A count that must be positive.
fn positive(key: &str, value: usize, problems: &mut Vec<String>) -> NonZeroUsize {
    NonZeroUsize::new(value).unwrap_or_else(|| {
        problems.push(format!("{key} must be positive"));
        NonZeroUsize::MIN
    })
}

/// A path, where "" means none.
fn path(value: &str) -> Option<PathBuf> {
    (!value.trim().is_empty()).then(|| PathBuf::from(value))
}

impl HttpSettings {
    fn parse(self, problems: &mut Vec<String>) -> HttpConfig {
        if self.body_limit_bytes < 64 {
            problems.push("http.body_limit_bytes must be at least 64".into());
        }
        let metrics_addr = self.metrics_addr.trim();
        HttpConfig {
            addr: socket_addr("http.addr", &self.addr, problems),
            workers: NonZeroUsize::new(self.workers),
            body_limit_bytes: self.body_limit_bytes,
            trusted_proxies: self.trusted_proxies,
            shutdown_grace: Duration::from_secs(self.shutdown_grace_secs),
            metrics_addr: (!metrics_addr.is_empty())
                .then(|| socket_addr("http.metrics_addr", metrics_addr, problems)),
            timeouts: ListenerTimeouts::parse(
                "http",
                [
                    self.header_timeout_secs,
                    self.body_timeout_secs,
                    self.idle_timeout_secs,
                ],
                problems,
            ),
            max_connections: positive("http.max_connections", self.max_connections, problems),
        }
    }
}

impl GrpcSettings {
    fn parse(self, problems: &mut Vec<String>) -> GrpcConfig {
        if self.max_message_bytes < 64 {
            problems.push("grpc.max_message_bytes must be at least 64".into());
        }
        if self.max_concurrent_streams == 0 {
            problems.push("grpc.max_concurrent_streams must be positive".into());
        }
        GrpcConfig {
            addr: socket_addr("grpc.addr", &self.addr, problems),
            threads: positive("grpc.threads", self.threads, problems),
            max_message_bytes: self.max_message_bytes,
            cors_allowed_origins: self.cors_allowed_origins,
            timeouts: ListenerTimeouts::parse(
                "grpc",
                [
                    self.header_timeout_secs,
                    self.body_timeout_secs,
                    self.idle_timeout_secs,
                ],
                problems,
            ),
            max_connections: positive("grpc.max_connections", self.max_connections, problems),
            max_concurrent_streams: self.max_concurrent_streams,
        }
    }
}

impl TlsSettings {
    fn parse(self, problems: &mut Vec<String>) -> Option<TlsConfig> {
        if self.reload_interval_secs == 0 {
            problems.push("tls.reload_interval_secs must be positive".into());
        }
        let client_ca = path(&self.client_ca_file);
        match (path(&self.cert_file), path(&self.key_file)) {
            (Some(cert), Some(key)) => Some(TlsConfig {
                files: TlsFiles {
                    cert,
                    key,
                    client_ca,
                },
                reload_interval: Duration::from_secs(self.reload_interval_secs),
            }),
            (None, None) => {
                if client_ca.is_some() {
                    problems.push("tls.client_ca_file needs tls.cert_file and tls.key_file".into());
                }
                None
            }
            _ => {
                problems.push("tls.cert_file and tls.key_file go together".into());
                None
            }
        }
    }
}

fn parse_store(
    store: StoreSettings,
    redis: RedisSettings,
    problems: &mut Vec<String>,
) -> StoreConfig {
    if store.timeout_ms == 0 {
        problems.push("store.timeout_ms must be positive".into());
    }
    if redis.key_prefix.is_empty() || redis.key_prefix.contains(['{', '}']) {
        problems.push("redis.key_prefix must be non-empty and free of braces".into());
    }
    if redis.wait_connections == 0 {
        problems.push("redis.wait_connections must be positive".into());
    }
    let record_format = match redis.record_format {
        3 => RecordFormat::Explicit,
        4 => RecordFormat::Compact,
        other => {
            problems.push(format!("redis.record_format must be 3 or 4, not {other}"));
            RecordFormat::Compact
        }
    };
    if store.kind == StoreKind::Memory {
        return StoreConfig::Memory;
    }
    let nodes = match RedisNodes::parse(redis.mode, &redis.url) {
        Ok(nodes) => nodes,
        Err(problem) => {
            problems.push(problem);
            return StoreConfig::Memory;
        }
    };
    let password = redis.password;
    StoreConfig::Redis(Box::new(RedisConfig {
        nodes,
        // Empty: none (a passwordless Redis refuses AUTH with an empty one).
        password: (!password.expose_secret().is_empty()).then_some(password),
        tls_ca_file: path(&redis.tls_ca_file),
        key_prefix: redis.key_prefix,
        timeout: Duration::from_millis(store.timeout_ms),
        wait_replicas: redis.wait_replicas,
        wait_connections: redis.wait_connections,
        record_format,
        feed_in_script: redis.feed_in_script,
    }))
}

/// The instance's policy and each organization's, every one checked under its own name.
fn parse_policies(
    totp: &TotpSettings,
    lockout: &LockoutSettings,
    recovery: &RecoveryCodeSettings,
    retention: Retention,
    orgs: HashMap<String, OrgOverrides>,
    problems: &mut Vec<String>,
) -> Option<Policies> {
    // Every scope is checked, even after one failed: all problems at once.
    let before = problems.len();
    // Checked here, in its own key's words; the policies then start from a valid count, so
    // that the problem is not named again for every organization that inherits it.
    let recovery_codes = if (1..=MAX_CODES).contains(&recovery.count) {
        recovery.count
    } else {
        problems.push(format!(
            "recovery_codes.count must be 1 to {MAX_CODES}, not {}",
            recovery.count
        ));
        DEFAULT_CODES
    };
    let instance = Instance {
        totp,
        lockout,
        recovery_codes,
        retention,
    };
    let default = policy("totp", &OrgOverrides::default(), &instance, problems);
    let mut seeds = HashMap::with_capacity(orgs.len());
    for (org, overrides) in orgs {
        let scope = format!("orgs.{org}");
        if let Some(policy) = policy(&scope, &overrides, &instance, problems) {
            seeds.insert(org, seed(&overrides, &policy));
        }
    }
    let default = default.filter(|_| problems.len() == before)?;
    Some(Policies {
        default: Arc::new(default),
        seeds,
    })
}

/// The parts of an organization's policy that its overrides set, as the API would store
/// them: the lockout part for `max_otp_attempts`, tessera's OTP part (whole, the instance's
/// values where the overrides name none) for any other key.
fn seed(overrides: &OrgOverrides, policy: &OtpPolicy) -> PolicySeed {
    let OrgOverrides {
        issuer,
        algorithm,
        digits,
        period_secs,
        skew,
        max_otp_attempts,
        lock_duration_secs,
        show_failures,
        recovery_codes,
    } = overrides;
    let sets_otp = issuer.is_some()
        || algorithm.is_some()
        || digits.is_some()
        || period_secs.is_some()
        || skew.is_some()
        || lock_duration_secs.is_some()
        || show_failures.is_some()
        || recovery_codes.is_some();
    PolicySeed {
        lockout: max_otp_attempts.map(|max_otp_attempts| CustomLockout {
            max_otp_attempts,
            max_password_attempts: 0,
        }),
        otp: sets_otp.then(|| OtpSettings::of(policy)),
    }
}

/// The instance's policy settings, which an organization's overrides start from.
struct Instance<'a> {
    totp: &'a TotpSettings,
    lockout: &'a LockoutSettings,
    recovery_codes: u32,
    retention: Retention,
}

/// The instance's policy with one organization's overrides (none for the instance's own).
fn policy(
    scope: &str,
    o: &OrgOverrides,
    instance: &Instance<'_>,
    problems: &mut Vec<String>,
) -> Option<OtpPolicy> {
    let Instance {
        totp,
        lockout,
        recovery_codes,
        retention,
    } = instance;
    let params = TotpParams::new(
        o.algorithm.unwrap_or(totp.algorithm),
        o.digits.unwrap_or(totp.digits),
        o.period_secs.unwrap_or(totp.period_secs),
    );
    let lock_secs = o.lock_duration_secs.unwrap_or(lockout.lock_duration_secs);
    let lockout = LockoutPolicy {
        max_attempts: o.max_otp_attempts.unwrap_or(lockout.max_otp_attempts),
        lock_duration_micros: secs_to_micros(lock_secs),
        show_failures: o.show_failures.unwrap_or(lockout.show_failures),
    };
    let policy = OtpPolicy::new(
        // Checked alike whether the params are valid, so every problem shows at once.
        params.clone().unwrap_or_default(),
        o.skew.unwrap_or(totp.skew),
        o.issuer.clone().unwrap_or_else(|| totp.issuer.clone()),
        lockout,
        o.recovery_codes.unwrap_or(*recovery_codes),
    )
    // The retention was checked under its own name, once (`parse`).
    .map(|policy| policy.clone().with_retention(*retention).unwrap_or(policy));
    let policy_problems = policy.as_ref().err().into_iter().flatten();
    let found = params.as_ref().err().into_iter().chain(policy_problems);
    let before = problems.len();
    problems.extend(found.map(|problem| format!("{scope}: {problem}")));
    policy.ok().filter(|_| problems.len() == before)
}

fn parse_seal_keys(
    keys: &SecretString,
    mode: Mode,
    problems: &mut Vec<String>,
) -> Option<Arc<KeyRing>> {
    if keys.expose_secret().trim().is_empty() {
        problems.push(
            "seal: no key (set seal.keys or seal.keys_file; `tessera gen-seal-key` makes one)"
                .into(),
        );
        return None;
    }
    match KeyRing::parse(keys) {
        Err(err) => {
            problems.push(format!("seal.keys: {err}"));
            None
        }
        Ok(ring) if mode == Mode::Serve && ring.holds_key(DEV_SEAL_KEY_BYTES) => {
            problems.push(
                "seal.keys holds the development seal key, which is published in tessera's \
                 repository and protects nothing (`tessera gen-seal-key` makes one)"
                    .into(),
            );
            None
        }
        Ok(ring) => Some(Arc::new(ring)),
    }
}

fn read_secret_file(path: &str) -> Result<SecretString, SettingsError> {
    let contents =
        std::fs::read_to_string(Path::new(path)).map_err(|source| SettingsError::SecretFile {
            path: PathBuf::from(path),
            source,
        })?;
    Ok(SecretString::from(contents.trim().to_owned()))
}

/// Every setting of `default.toml`, as `section.key`.
fn known_settings() -> Vec<String> {
    let Ok(defaults) = Layers::builder()
        .add_source(File::from_str(DEFAULTS, FileFormat::Toml))
        .build()
        .and_then(|config| config.try_deserialize::<HashMap<String, config::Value>>())
    else {
        return Vec::new();
    };
    let mut keys = Vec::new();
    for (section, value) in defaults {
        if let Ok(table) = value.into_table() {
            keys.extend(table.into_keys().map(|key| format!("{section}.{key}")));
        }
    }
    keys
}

/// Variables that look like tessera's but set nothing: `TESSERA_` with one underscore where
/// settings take two (`TESSERA_HTTP_ADDR` for `TESSERA__HTTP__ADDR`); they would be ignored.
pub fn stray_variables(names: impl Iterator<Item = String>) -> Vec<String> {
    let known = known_settings();
    let mut stray: Vec<String> = names
        .filter(|name| name.starts_with("TESSERA_") && !name.starts_with("TESSERA__"))
        .filter(|name| !OWN_VARIABLES.contains(&name.as_str()))
        .map(|name| {
            // HTTP_ADDR: try each underscore as the one between section and key.
            let rest = name.trim_start_matches("TESSERA_").to_lowercase();
            let meant = rest
                .match_indices('_')
                .map(|(at, _)| format!("{}.{}", &rest[..at], &rest[at + 1..]))
                .find(|key| known.contains(key))
                .map_or_else(String::new, |key| {
                    let variable = key.replace('.', "__").to_uppercase();
                    format!(" (did you mean TESSERA__{variable}?)")
                });
            format!("{name} sets nothing: settings are TESSERA__SECTION__KEY, with two underscores{meant}")
        })
        .collect();
    stray.sort();
    stray
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

    /// Loaded as `serve` loads, layered and then parsed; the raw settings are returned for
    /// the assertions to read.
    fn checked(mode: Mode, source: &Source, env: Environment) -> Result<Settings, SettingsError> {
        Settings::load_with(mode, source, env.clone())?.parse(mode)?;
        Settings::load_with(mode, source, env)
    }

    /// The policies the organization actors get.
    fn policies(settings: Settings) -> Policies {
        settings.parse(Mode::Dev).unwrap().policies
    }

    fn nowhere() -> Source {
        Source {
            config_dir: None,
            environment: Some("none".into()),
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
        let settings = checked(
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
            checked(
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
        let settings = checked(
            Mode::Dev,
            &nowhere(),
            env(&[
                ("TESSERA__ORGS__ACME__DIGITS", "8"),
                ("TESSERA__ORGS__ACME__LOCK_DURATION_SECS", "0"),
            ]),
        )
        .unwrap();
        let policies = policies(settings);
        let acme = &policies.seeds["acme"];
        let otp = acme.otp.as_ref().unwrap();
        assert_eq!(otp.digits, 8);
        assert_eq!(otp.lock_duration_secs, 0);
        assert_eq!(otp.issuer, "tessera", "not overridden: the instance's");
        assert_eq!(acme.lockout, None, "no max_otp_attempts: no lockout part");
        assert!(!policies.seeds.contains_key("other"));
        let bad = checked(
            Mode::Dev,
            &nowhere(),
            env(&[("TESSERA__ORGS__ACME__DIGITS", "12")]),
        );
        assert!(bad.unwrap_err().to_string().contains("orgs.acme: digits"));
        let typo = checked(
            Mode::Dev,
            &nowhere(),
            env(&[("TESSERA__ORGS__ACME__DIGTS", "8")]),
        );
        assert!(typo.is_err());
    }

    #[test]
    fn every_problem_is_named_at_once() {
        let err = checked(
            Mode::Dev,
            &nowhere(),
            env(&[
                ("TESSERA__HTTP__ADDR", "nope"),
                ("TESSERA__TOTP__DIGITS", "9"),
                ("TESSERA__ORGS__ACME__SKEW", "5"),
                ("TESSERA__TENANTS__CALL_TIMEOUT_MS", "0"),
                ("TESSERA__RECOVERY_CODES__COUNT", "21"),
                ("TESSERA__ORGS__GLOBEX__RECOVERY_CODES", "0"),
                ("TESSERA__REDIS__RECORD_FORMAT", "5"),
            ]),
        )
        .unwrap_err()
        .to_string();
        for problem in [
            "http.addr \"nope\" is not host:port",
            "totp: digits must be 6, 7 or 8, not 9",
            "orgs.acme: skew above 2",
            "tenants.call_timeout_ms must be positive",
            "recovery_codes.count must be 1 to 20",
            "orgs.globex: recovery_codes must be 1 to 20",
            "redis.record_format must be 3 or 4, not 5",
        ] {
            assert!(err.contains(problem), "{problem:?} missing from {err}");
        }
        // Each once: the instance's count is not blamed again on every organization.
        assert_eq!(err.matches("must be 1 to 20").count(), 2, "{err}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = checked(Mode::Dev, &nowhere(), env(&[("TESSERA__HTTP__ADRR", "x")])).unwrap_err();
        assert!(err.to_string().contains("adrr"), "{err}");
    }

    #[test]
    fn serve_needs_keys_and_refuses_the_dev_key() {
        let err = checked(Mode::Serve, &nowhere(), env(&[])).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("seal: no key"), "{text}");
        assert!(text.contains("no way to verify tokens"), "{text}");
        let err = checked(
            Mode::Serve,
            &nowhere(),
            env(&[("TESSERA__AUTH__DEV_KEY", "true")]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("only for `tessera dev`"));
    }

    /// Introspection takes one way of client authentication, and an endpoint it is given or
    /// can discover; with the issuer's URL alone, discovery supplies the keys.
    #[test]
    fn introspection_needs_one_client_authentication_and_an_endpoint() {
        let problems = |vars: &[(&str, &str)]| match checked(Mode::Dev, &nowhere(), env(vars)) {
            Ok(_) => String::new(),
            Err(err) => err.to_string(),
        };
        let text = problems(&[
            ("TESSERA__AUTH__INTROSPECTION_CLIENT_SECRET", "s"),
            ("TESSERA__AUTH__INTROSPECTION_KEY_FILE", "/k.json"),
        ]);
        assert!(text.contains("not both"), "{text}");
        let text = problems(&[("TESSERA__AUTH__INTROSPECTION_CLIENT_SECRET", "s")]);
        assert!(
            text.contains("introspection_client_id is required"),
            "{text}"
        );
        let text = problems(&[("TESSERA__AUTH__INTROSPECTION_CLIENT_ID", "tessera")]);
        assert!(text.contains("needs introspection_client_secret"), "{text}");
        // The dev issuer is no URL: nothing to discover the endpoint from.
        let text = problems(&[
            ("TESSERA__AUTH__INTROSPECTION_CLIENT_ID", "tessera"),
            ("TESSERA__AUTH__INTROSPECTION_CLIENT_SECRET", "s"),
        ]);
        assert!(text.contains("introspection_url is required"), "{text}");
        let config = Settings::load_with(
            Mode::Dev,
            &nowhere(),
            env(&[
                ("TESSERA__AUTH__ISSUER", "https://acme.zitadel.cloud"),
                ("TESSERA__AUTH__DEV_KEY", "false"),
                ("TESSERA__AUTH__INTROSPECTION_KEY_FILE", "/zitadel-key.json"),
            ]),
        )
        .unwrap()
        .parse(Mode::Dev)
        .unwrap();
        assert!(config.auth.discover);
        let introspection = config.auth.introspection.unwrap();
        assert!(introspection.endpoint.is_none());
        assert!(matches!(
            introspection.client,
            crate::auth::IntrospectionClient::KeyFile {
                client_id: None,
                ..
            }
        ));
    }

    #[test]
    fn secrets_from_files() {
        let dir = std::env::temp_dir().join(format!("tessera-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let keys = dir.join("keys");
        std::fs::write(&keys, "k1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n").unwrap();
        let settings = checked(
            Mode::Dev,
            &nowhere(),
            env(&[("TESSERA__SEAL__KEYS_FILE", keys.to_str().unwrap())]),
        )
        .unwrap();
        assert!(settings.seal.keys.expose_secret().starts_with("k1:"));
        let missing = checked(
            Mode::Dev,
            &nowhere(),
            env(&[("TESSERA__SEAL__KEYS_FILE", "/nonexistent/keys")]),
        );
        assert!(missing.is_err());
        std::fs::remove_dir_all(dir).ok();
    }

    /// A config folder of the test's own with these files; removed on drop.
    struct ConfigDir(PathBuf);

    impl ConfigDir {
        fn with(files: &[(&str, &str)]) -> Self {
            use std::sync::atomic::{AtomicU32, Ordering};
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let dir = std::env::temp_dir().join(format!(
                "tessera-config-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).unwrap();
            for (name, text) in files {
                std::fs::write(dir.join(name), text).unwrap();
            }
            Self(dir)
        }

        fn source(&self, environment: Option<&str>) -> Source {
            Source {
                config_dir: Some(self.0.clone()),
                environment: environment.map(str::to_owned),
            }
        }
    }

    impl Drop for ConfigDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const KEY: &str = "k1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

    /// What `serve` needs besides the seal key, from the environment.
    const SERVE: &[(&str, &str)] = &[
        ("TESSERA__AUTH__JWKS_URL", "https://issuer.example/jwks"),
        ("TESSERA__AUTH__ISSUER", "https://issuer.example"),
        ("TESSERA__AUTH__AUDIENCE", "tessera"),
    ];

    fn with_serve(vars: &[(&'static str, &'static str)]) -> Environment {
        let all: Vec<(&str, &str)> = SERVE.iter().chain(vars).copied().collect();
        env(&all)
    }

    #[test]
    fn the_environment_beats_a_secret_file_from_a_config_file() {
        let dir = ConfigDir::with(&[(
            "production.toml",
            "[seal]\nkeys_file = \"/nonexistent/keys\"\n",
        )]);
        let settings = checked(
            Mode::Serve,
            &dir.source(None),
            with_serve(&[("TESSERA__SEAL__KEYS", KEY)]),
        )
        .unwrap();
        assert_eq!(settings.seal.keys.expose_secret(), KEY);
        // And a file from the environment beats a value from a config file.
        let keys = dir.0.join("keys");
        std::fs::write(&keys, format!("{KEY}\n")).unwrap();
        let dir2 = ConfigDir::with(&[("production.toml", "[seal]\nkeys = \"not:a key\"\n")]);
        let path = keys.to_string_lossy().into_owned();
        let vars = [SERVE, &[("TESSERA__SEAL__KEYS_FILE", path.as_str())]].concat();
        let settings = checked(Mode::Serve, &dir2.source(None), env(&vars)).unwrap();
        assert_eq!(settings.seal.keys.expose_secret(), KEY);
    }

    #[test]
    fn a_value_and_its_file_in_one_layer_is_an_error() {
        for (value, file) in SECRET_TWINS {
            let upper = |key: &str| format!("TESSERA__{}", key.replace('.', "__").to_uppercase());
            let (value_var, file_var) = (upper(value), upper(file));
            let err = checked(
                Mode::Dev,
                &nowhere(),
                env(&[
                    (value_var.as_str(), "x"),
                    (file_var.as_str(), "/nonexistent"),
                ]),
            )
            .unwrap_err()
            .to_string();
            assert!(
                err.contains(&format!(
                    "{value} and {file} are both set in the environment"
                )),
                "{err}"
            );
        }
    }

    #[test]
    fn an_explicit_environment_must_have_its_file() {
        let dir = ConfigDir::with(&[("production.toml", "[log]\nformat = \"json\"\n")]);
        let vars = [SERVE, &[("TESSERA__SEAL__KEYS", KEY)]].concat();
        let load =
            |environment: Option<&str>| checked(Mode::Serve, &dir.source(environment), env(&vars));
        let err = load(Some("staging")).unwrap_err().to_string();
        assert!(err.contains("no staging.toml in"), "{err}");
        assert_eq!(
            load(Some("production")).unwrap().log.format,
            LogFormat::Json
        );
        assert_eq!(load(None).unwrap().log.format, LogFormat::Json);
        // `none`: the defaults and the environment only.
        assert_eq!(load(Some("none")).unwrap().log.format, LogFormat::Pretty);
        // Without a production.toml, an implicit production is the defaults.
        let empty = ConfigDir::with(&[]);
        let settings = checked(Mode::Serve, &empty.source(None), env(&vars));
        assert_eq!(settings.unwrap().log.format, LogFormat::Pretty);
        // `dev` keeps dev.toml optional whatever the environment says.
        assert!(checked(Mode::Dev, &dir.source(Some("staging")), env(&[])).is_ok());
        // An explicit config folder must exist.
        let missing = Source {
            config_dir: Some(PathBuf::from("/nonexistent/config")),
            environment: None,
        };
        let err = checked(Mode::Dev, &missing, env(&[])).unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
    }

    #[test]
    fn the_start_says_which_files_were_read() {
        let dir = ConfigDir::with(&[("dev.toml", "")]);
        let settings = checked(Mode::Dev, &dir.source(None), env(&[])).unwrap();
        let file = dir.0.join("dev.toml").display().to_string();
        assert_eq!(
            settings.loaded_from,
            format!(
                "the defaults < the dev preset < {file} < the environment (config directory: {})",
                dir.0.display()
            )
        );
    }

    #[test]
    fn org_overrides_apply_whatever_the_case_of_the_id() {
        let settings = checked(
            Mode::Dev,
            &nowhere(),
            env(&[("TESSERA__ORGS__ACME__DIGITS", "8")]),
        )
        .unwrap();
        let policies = policies(settings);
        assert_eq!(policies.seeds["acme"].otp.as_ref().unwrap().digits, 8);
        assert!(!policies.seeds.contains_key("ACME"), "keys in lower case");
        let dir = ConfigDir::with(&[(
            "dev.toml",
            "[orgs.Acme]\ndigits = 7\n[orgs.acme]\ndigits = 8\n",
        )]);
        let err = checked(Mode::Dev, &dir.source(None), env(&[])).unwrap_err();
        assert!(
            err.to_string()
                .contains("appears twice when case is ignored"),
            "{err}"
        );
    }

    #[test]
    fn stray_variables_are_named_with_what_was_meant() {
        let names = [
            "TESSERA_HTTP_ADDR",
            "TESSERA__HTTP__ADDR",
            "TESSERA_ENV",
            "TESSERA_CONFIG_DIR",
            "PATH",
        ];
        let stray = stray_variables(names.iter().map(|n| (*n).to_owned()));
        assert_eq!(stray.len(), 1, "{stray:?}");
        assert!(
            stray[0].contains("did you mean TESSERA__HTTP__ADDR?"),
            "{stray:?}"
        );
        let unknown = stray_variables(["TESSERA_NOTHING_AT_ALL".to_owned()].into_iter());
        assert!(!unknown[0].contains("did you mean"), "{unknown:?}");
    }

    #[test]
    fn serve_refuses_the_development_seal_key() {
        use base64::Engine;
        let preset = Settings::dev_defaults().unwrap().parse(Mode::Dev).unwrap();
        assert!(preset.seal_keys.holds_key(DEV_SEAL_KEY_BYTES));
        let encoded = base64::engine::general_purpose::STANDARD.encode(DEV_SEAL_KEY_BYTES);
        let dev_key = format!("renamed:{encoded}");
        let vars = [SERVE, &[("TESSERA__SEAL__KEYS", dev_key.as_str())]].concat();
        let err = checked(Mode::Serve, &nowhere(), env(&vars)).unwrap_err();
        assert!(err.to_string().contains("development seal key"), "{err}");
        let vars = [SERVE, &[("TESSERA__SEAL__KEYS", KEY)]].concat();
        assert!(checked(Mode::Serve, &nowhere(), env(&vars)).is_ok());
    }
}
