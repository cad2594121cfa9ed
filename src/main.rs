//! The `tessera` command.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use secrecy::ExposeSecret;
use tessera::app::Application;
use tessera::auth::{Signer, TokenClaims, generate_signing_key, mint_dev_token};
use tessera::seal::KeyRing;
use tessera::settings::{Config, Mode, Source};

/// mimalloc: glibc malloc showed up as a tenth of the CPU profile of the check path.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "tessera",
    version,
    about = "Multi-tenant TOTP factor server speaking ZITADEL's Auth API"
)]
struct Cli {
    /// Also accepted before the command (`tessera --config-dir … serve`, as manifests and
    /// images made for earlier releases say it); the command's own options win.
    #[command(flatten)]
    settings: SettingsArgs,
    #[command(subcommand)]
    command: Command,
}

/// Where the settings come from: only the commands that read settings take these, so that
/// `qr` or `gen-seal-key` do not offer options that would mean nothing to them.
#[derive(clap::Args, Clone, Default)]
struct SettingsArgs {
    /// Folder holding <env>.toml; by default `config/` here, else `../config` beside the binary.
    #[arg(long, env = "TESSERA_CONFIG_DIR")]
    config_dir: Option<PathBuf>,
    /// Which <env>.toml to layer over the defaults (its file must exist; `none`: the defaults
    /// and the environment only). Unset: production.toml, if there is one.
    #[arg(long = "env", env = "TESSERA_ENV")]
    environment: Option<String>,
}

impl SettingsArgs {
    /// These options given to the command, over those given before it.
    fn over(self, before: SettingsArgs) -> Source {
        Source {
            config_dir: self.config_dir.or(before.config_dir),
            environment: self.environment.or(before.environment),
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the server with the settings in config/ (Redis, real keys).
    Serve {
        #[command(flatten)]
        settings: SettingsArgs,
    },
    /// Run on the embedded default: memory store, development signing and seal keys.
    Dev {
        #[command(flatten)]
        settings: SettingsArgs,
    },
    /// Mint a token: signed with the development key (accepted by `tessera dev`), or with
    /// your own --key (accepted by `serve` with that key's JWKS, see gen-signing-key).
    Token {
        /// The settings give the claim names, and the development issuer and audience.
        #[command(flatten)]
        settings: SettingsArgs,
        #[arg(long, default_value = "acme")]
        org: String,
        #[arg(long, default_value = "alice")]
        user: String,
        /// A role granted for --org (repeatable), e.g. otp.check or otp.admin.
        #[arg(long = "role")]
        roles: Vec<String>,
        /// Lifetime in seconds.
        #[arg(long = "ttl", alias = "ttl-secs", default_value_t = 3600)]
        ttl_secs: i64,
        /// A PEM private key (Ed25519, P-256 or RSA) to sign with instead of the development key.
        #[arg(long, requires_all = ["issuer", "audience"])]
        key: Option<PathBuf>,
        /// The `kid` of --key, as its JWKS names it.
        #[arg(long, requires = "key")]
        kid: Option<String>,
        /// `iss`; by default the development issuer.
        #[arg(long)]
        issuer: Option<String>,
        /// `aud`; by default the development audience.
        #[arg(long)]
        audience: Option<String>,
    },
    /// Write a new ES256 signing key (signing-key.pem) and its JWKS (jwks.json) for trying
    /// `serve` without an identity provider: auth.jwks_file = jwks.json, then
    /// `tessera token --key signing-key.pem --kid <kid> ...`.
    GenSigningKey {
        #[arg(long, default_value = ".")]
        out_dir: PathBuf,
        #[arg(long, default_value = "tessera-1")]
        kid: String,
    },
    /// Validate the configuration (defaults < config/<env>.toml < TESSERA__*) and exit.
    CheckConfig {
        #[command(flatten)]
        settings: SettingsArgs,
    },
    /// Seal every enrollment in Redis anew under the first key of seal.keys, so that older
    /// keys can leave the ring. Safe while tessera runs; run it again to resume or to confirm.
    Rekey {
        #[command(flatten)]
        settings: SettingsArgs,
        /// Keys asked of each primary per SCAN page.
        #[arg(long, default_value_t = 500)]
        page: usize,
    },
    /// Print a new seal key entry `id:base64` for seal.keys.
    GenSealKey {
        #[arg(long, default_value = "k1")]
        id: String,
    },
    /// Draw an otpauth:// URI (argument or stdin) as a QR code in the terminal.
    Qr { uri: Option<String> },
    /// Call the gRPC port: the walk-through's calls without grpcurl (answers as JSON).
    Grpc {
        /// The gRPC port's address.
        #[arg(long, default_value = "http://localhost:8081")]
        address: String,
        /// The bearer token.
        #[arg(long, env = "TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// x-zitadel-orgid: the organization to act in, if not the token's.
        #[arg(long)]
        org: Option<String>,
        #[command(subcommand)]
        call: tessera::grpc_call::Call,
    },
}

#[actix_web::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command, cli.settings).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("tessera: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, before: SettingsArgs) -> Result<(), String> {
    match command {
        Command::Serve { settings } => {
            let source = settings.over(before);
            serve(
                Config::load(Mode::Serve, &source).map_err(|e| e.to_string())?,
                false,
            )
            .await
        }
        Command::Dev { settings } => {
            let source = settings.over(before);
            serve(
                Config::load(Mode::Dev, &source).map_err(|e| e.to_string())?,
                true,
            )
            .await
        }
        Command::Token {
            settings,
            org,
            user,
            roles,
            ttl_secs,
            key,
            kid,
            issuer,
            audience,
        } => {
            // The claim names (and the development issuer and audience) of the settings.
            let config =
                Config::load(Mode::Dev, &settings.over(before)).map_err(|e| e.to_string())?;
            let signer = match &key {
                Some(path) => {
                    let pem = std::fs::read(path)
                        .map_err(|e| format!("reading {}: {e}", path.display()))?;
                    Signer::from_pem(&pem, kid).map_err(|e| format!("{}: {e}", path.display()))?
                }
                None => Signer::development().map_err(|e| e.to_string())?,
            };
            let token = signer
                .mint(
                    &config.auth.claims,
                    &TokenClaims {
                        issuer: issuer.as_deref().unwrap_or(&config.auth.issuer),
                        audience: audience.as_deref().unwrap_or(&config.auth.audience),
                        org: &org,
                        user: &user,
                        roles: &roles,
                        ttl_secs,
                        now_unix_secs: chrono::Utc::now().timestamp(),
                    },
                )
                .map_err(|e| e.to_string())?;
            println!("{token}");
            Ok(())
        }
        Command::GenSigningKey { out_dir, kid } => {
            let (pem, jwks) = generate_signing_key(&kid)?;
            let key_path = out_dir.join("signing-key.pem");
            let jwks_path = out_dir.join("jwks.json");
            write_new(&key_path, pem.expose_secret().as_bytes(), 0o600)?;
            write_new(&jwks_path, jwks.as_bytes(), 0o644)?;
            println!(
                "wrote {} (private: keep it) and {} (set auth.jwks_file to it); kid {kid}",
                key_path.display(),
                jwks_path.display()
            );
            Ok(())
        }
        Command::CheckConfig { settings } => {
            let config =
                Config::load(Mode::Serve, &settings.over(before)).map_err(|e| e.to_string())?;
            for warning in &config.warnings {
                eprintln!("warning: {warning}");
            }
            // Every file `serve` reads, read as `serve` reads it.
            tessera::app::Dependencies::load(&config)
                .await
                .map_err(|e| e.to_string())?;
            println!(
                "configuration ok: {}; {}, http {}, grpc {}",
                config.loaded_from,
                config.store.describe(),
                config.http.addr,
                config.grpc.addr
            );
            Ok(())
        }
        Command::Rekey { settings, page } => {
            let config =
                Config::load(Mode::Serve, &settings.over(before)).map_err(|e| e.to_string())?;
            // It opens every secret: no core dump or debugger may read them.
            tessera::process::protect_memory(config.process.allow_core_dumps);
            let (store, keys) =
                tessera::app::store_for_rekey(&config).map_err(|e| e.to_string())?;
            eprintln!(
                "rekey: sealing every enrollment under key {:?} ({})",
                keys.sealing_key_id(),
                config.loaded_from
            );
            let report = tessera::rekey::rekey(&store, &keys, page.max(1), |primary, report| {
                eprintln!("rekey: {primary}: {}", report.summary());
            })
            .await
            .map_err(|e| format!("rekey stopped (run it again to resume): {e}"))?;
            for (key, found) in &report.found_by_older_key {
                println!("found under key {key:?}: {found}");
            }
            for (key, codes) in &report.codes_by_older_key {
                println!(
                    "recovery codes under key {key:?}: {codes} (they stop working when the key \
                     leaves the ring; they cannot be hashed anew)"
                );
            }
            for failure in &report.failures {
                println!("failed: {failure}");
            }
            println!("rekey: {}", report.summary());
            if report.failed > 0 {
                return Err(format!(
                    "{} enrollments do not open with this ring; keep its older keys",
                    report.failed
                ));
            }
            if report.resealed > 0 || report.changed_meanwhile > 0 {
                println!("run it once more: when it reseals nothing, the older keys can go");
            } else if report.codes_by_older_key.is_empty() {
                println!("every enrollment is under key {:?}", keys.sealing_key_id());
            } else {
                println!(
                    "every enrollment is under key {:?}; keep the older keys the recovery \
                     codes above need, or have their users generate new codes",
                    keys.sealing_key_id()
                );
            }
            Ok(())
        }
        Command::GenSealKey { id } => {
            let entry = KeyRing::generate_entry(&id).map_err(|e| e.to_string())?;
            println!("{}", entry.expose_secret());
            Ok(())
        }
        Command::Grpc {
            address,
            token,
            org,
            call,
        } => {
            let answer =
                tessera::grpc_call::run(&address, token.as_deref(), org.as_deref(), call).await?;
            println!("{answer}");
            Ok(())
        }
        Command::Qr { uri } => {
            let uri = match uri {
                Some(uri) => uri,
                None => {
                    let mut input = String::new();
                    std::io::stdin()
                        .read_to_string(&mut input)
                        .map_err(|e| e.to_string())?;
                    input.trim().to_owned()
                }
            };
            let code = qrcode::QrCode::new(uri.as_bytes()).map_err(|e| e.to_string())?;
            let picture = code
                .render::<qrcode::render::unicode::Dense1x2>()
                .dark_color(qrcode::render::unicode::Dense1x2::Light)
                .light_color(qrcode::render::unicode::Dense1x2::Dark)
                .build();
            println!("{picture}");
            Ok(())
        }
    }
}

/// Writes a file that must not exist yet (a key is never overwritten), with `mode`.
fn write_new(path: &std::path::Path, contents: &[u8], mode: u32) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    file.write_all(contents)
        .map_err(|e| format!("{}: {e}", path.display()))
}

async fn serve(config: Config, dev: bool) -> Result<(), String> {
    tessera::telemetry::init(config.log.format, &config.log.level, std::io::stdout);
    tracing::info!(configuration = %config.loaded_from, "settings loaded");
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    tessera::process::protect_memory(config.process.allow_core_dumps);
    let banner = dev.then(|| dev_banner(&config));
    let (mut http, mut grpc, mut metrics) =
        (config.http.addr, config.grpc.addr, config.http.metrics_addr);
    let app = Application::build(config)
        .await
        .map_err(|e| e.to_string())?;
    if let Some(banner) = banner {
        let banner = banner?
            .replace("{port}", &app.port().to_string())
            .replace("{grpc_port}", &app.grpc_port().to_string());
        println!("{banner}");
    }
    // Every port, as bound (a port 0 in the settings becomes the one the system chose).
    http.set_port(app.port());
    grpc.set_port(app.grpc_port());
    if let (Some(addr), Some(port)) = (metrics.as_mut(), app.metrics_port()) {
        addr.set_port(port);
    }
    tracing::info!(
        http = %http,
        grpc = %grpc,
        metrics = %metrics.map_or_else(|| format!("{http} (/metrics)"), |addr| addr.to_string()),
        "tessera listening"
    );
    app.run_until_stopped().await.map_err(|e| e.to_string())
}

fn dev_banner(config: &Config) -> Result<String, String> {
    let now = chrono::Utc::now().timestamp();
    let roles = [
        config.auth.check_role.clone(),
        config.auth.admin_role.clone(),
    ];
    let token = mint_dev_token(&config.auth, "acme", "alice", &roles, 12 * 3600, now)
        .map_err(|e| e.to_string())?;
    Ok(format!(
        r#"
tessera dev: {store}, development keys (never use them in production).
HTTP on {base}, gRPC on port {{grpc_port}}.

A token for user "alice" of organization "acme" (roles {check}, {admin} for acme; 12 h):

  export TOKEN={token}

In another shell, in a folder of its own (the answers hold secrets), as the README walks on:

  cd "$(mktemp -d)"
  curl -s -X POST {base}/auth/v1/users/me/auth_factors/otp -H "Authorization: Bearer $TOKEN" | tee otp.json
  tessera qr "$(jq -r .url otp.json)"
  curl -s {base}/auth/v1/users/me/auth_factors/otp/_verify -H "Authorization: Bearer $TOKEN" -d '{{"code":"<the code your app shows>"}}'

The login check (otp.check), the next code after the one that verified:

  curl -s {base}/management/v1/users/alice/auth_factors/otp/_check -H "Authorization: Bearer $TOKEN" -d '{{"code":"<the next code>"}}'

Over gRPC: tessera grpc --help. More tokens: tessera token --org acme --user bob --role otp.check --role otp.admin
"#,
        // With TLS, curl needs the CA (`--cacert ca.pem`) unless the system trusts it.
        base = if config.tls.is_none() {
            "localhost:{port}"
        } else {
            "--cacert <your CA> https://localhost:{port}"
        },
        check = config.auth.check_role,
        admin = config.auth.admin_role,
        store = config.store.describe(),
    ))
}
