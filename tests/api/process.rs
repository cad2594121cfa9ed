//! The real binary, as a user runs it: `tessera dev`, `tessera token`, `check-config`, and
//! `serve` refusing to start without keys. Its logs, at trace level, never hold a secret.

use std::process::Command;

use serde_json::json;
use tessera::domain::TotpParams;

use crate::helpers::{DevBinary, code_with};

const BIN: &str = env!("CARGO_BIN_EXE_tessera");

fn tessera(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .envs(env.iter().copied())
        .env_remove("RUST_LOG")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap()
}

#[actix_web::test]
async fn dev_server_walkthrough_and_no_secret_in_any_log_line() {
    let dev = DevBinary::start(&[("TESSERA__LOG__LEVEL", "trace".into())]).await;
    let (base, grpc_port) = (dev.base.clone(), dev.grpc_port);
    let client = reqwest::Client::new();
    let token = dev.token("acme", "alice", &["otp.check"]);
    let post = |path: &str, body: serde_json::Value| {
        client
            .post(format!("{base}{path}"))
            .bearer_auth(&token)
            .json(&body)
            .send()
    };
    let added: serde_json::Value = post("/auth/v1/users/me/auth_factors/otp", json!({}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let secret = added["secret"].as_str().unwrap().to_owned();
    let now = chrono::Utc::now().timestamp() as u64;
    let params = TotpParams::default();
    // Codes for the previous and next steps: both inside the window, whatever second it is.
    let code = code_with(&params, &secret, now, -1);
    let verified = post(
        "/auth/v1/users/me/auth_factors/otp/_verify",
        json!({ "code": code }),
    )
    .await
    .unwrap();
    assert_eq!(verified.status().as_u16(), 200);
    let next = code_with(&params, &secret, now, 1);
    let checked = post(
        "/management/v1/users/alice/auth_factors/otp/_check",
        json!({ "code": next }),
    )
    .await
    .unwrap();
    assert_eq!(checked.status().as_u16(), 200);
    let wrong = post(
        "/management/v1/users/alice/auth_factors/otp/_check",
        json!({ "code": "000000" }),
    )
    .await
    .unwrap();
    assert_eq!(wrong.status().as_u16(), 400);

    // The same over gRPC, for another user.
    let grpc_token = dev.token("acme", "bob", &[]);
    let channel = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{grpc_port}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc =
        tessera::api::grpc::pb::zitadel::auth::v1::auth_service_client::AuthServiceClient::new(
            channel,
        );
    let bearer = crate::grpc::request(
        tessera::api::grpc::pb::zitadel::auth::v1::AddMyAuthFactorOtpRequest {},
        Some(&grpc_token),
        None,
    );
    let grpc_secret = grpc
        .add_my_auth_factor_otp(bearer)
        .await
        .unwrap()
        .into_inner()
        .secret;
    let grpc_code = code_with(&params, &grpc_secret, now, 0);
    let verify = crate::grpc::request(
        tessera::api::grpc::pb::zitadel::auth::v1::VerifyMyAuthFactorOtpRequest {
            code: grpc_code.clone(),
        },
        Some(&grpc_token),
        None,
    );
    grpc.verify_my_auth_factor_otp(verify).await.unwrap();

    let raw = dev.stop();
    // Timestamps carry six-digit fractions that could equal a code by chance: drop them.
    let logs: String = raw
        .lines()
        .map(
            |line| match serde_json::from_str::<serde_json::Value>(line) {
                Ok(serde_json::Value::Object(mut event)) => {
                    event.remove("timestamp");
                    serde_json::Value::Object(event).to_string()
                }
                _ => line.to_owned(),
            },
        )
        .collect::<Vec<_>>()
        .join("\n");
    assert!(logs.contains("tessera listening"), "the log was captured");
    assert!(
        logs.contains("TRACE") || logs.contains("DEBUG"),
        "at a verbose level"
    );
    let signature = token.rsplit('.').next().unwrap();
    for (what, needle) in [
        ("secret", secret.as_str()),
        ("token signature", signature),
        ("code", code.as_str()),
        ("next code", next.as_str()),
    ] {
        assert!(
            !contains_token(&logs, needle),
            "the {what} appears in the logs"
        );
    }
}

#[test]
fn check_config_reports_problems_and_accepts_a_good_config() {
    let missing = tessera(&["check-config", "--env", "none"], &[]);
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("seal: no key"), "{stderr}");
    let unknown = tessera(
        &["check-config"],
        &[("TESSERA__LOCKOUT__MAX_ATTEMPTS_TYPO", "3")],
    );
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("max_attempts_typo"));
    let jwks = crate::helpers::fixture("jwks.json");
    let good = tessera(
        &["check-config", "--env", "none"],
        &[
            ("TESSERA__AUTH__JWKS_FILE", jwks.to_str().unwrap()),
            ("TESSERA__AUTH__ISSUER", "https://issuer.test"),
            ("TESSERA__AUTH__AUDIENCE", "tessera"),
            (
                "TESSERA__SEAL__KEYS",
                "k1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
            ),
        ],
    );
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
}

/// A good configuration for `check-config --env none`, with one setting replaced or added.
fn good_config_with(name: &'static str, value: &str) -> Vec<(&'static str, String)> {
    let jwks = crate::helpers::fixture("jwks.json");
    let mut vars = vec![
        (
            "TESSERA__AUTH__JWKS_FILE",
            jwks.to_string_lossy().into_owned(),
        ),
        ("TESSERA__AUTH__ISSUER", "https://issuer.test".to_owned()),
        ("TESSERA__AUTH__AUDIENCE", "tessera".to_owned()),
        (
            "TESSERA__SEAL__KEYS",
            "k1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".to_owned(),
        ),
    ];
    vars.retain(|(existing, _)| *existing != name);
    vars.push((name, value.to_owned()));
    vars
}

fn check_config(args: &[&str], vars: &[(&'static str, String)]) -> (bool, String) {
    let env: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let output = tessera(args, &env);
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `check-config` reads every file `serve` reads, and fails where `serve` would.
#[test]
fn check_config_reads_every_file_serve_reads() {
    let dir = crate::helpers::TempDir::new("check-config");
    let not_a_jwks = dir.0.join("object.json");
    std::fs::write(&not_a_jwks, "{}").unwrap();
    let no_keys = dir.0.join("empty.json");
    std::fs::write(&no_keys, r#"{"keys": []}"#).unwrap();
    let cases = [
        (
            "TESSERA__AUTH__JWKS_FILE",
            not_a_jwks.to_str().unwrap(),
            "not a JWKS",
        ),
        (
            "TESSERA__AUTH__JWKS_FILE",
            no_keys.to_str().unwrap(),
            "JWKS",
        ),
        (
            "TESSERA__AUTH__JWKS_FILE",
            "/nonexistent/jwks.json",
            "/nonexistent/jwks.json",
        ),
        (
            "TESSERA__SEAL__KEYS_FILE",
            "/nonexistent/seal",
            "/nonexistent/seal",
        ),
        (
            "TESSERA__REDIS__TLS_CA_FILE",
            "/nonexistent/ca.pem",
            "/nonexistent/ca.pem",
        ),
        (
            "TESSERA__REDIS__PASSWORD_FILE",
            "/nonexistent/pw",
            "/nonexistent/pw",
        ),
        ("TESSERA__TLS__CERT_FILE", "/nonexistent/cert.pem", "tls"),
    ];
    for (name, value, expected) in cases {
        let mut vars = good_config_with(name, value);
        if name == "TESSERA__SEAL__KEYS_FILE" {
            vars.retain(|(existing, _)| *existing != "TESSERA__SEAL__KEYS");
        }
        let (ok, stderr) = check_config(&["check-config", "--env", "none"], &vars);
        assert!(!ok, "{name}={value} passed check-config");
        assert!(stderr.contains(expected), "{name}={value}: {stderr}");
    }
}

/// An environment named explicitly must have its file; `none` means no file; a
/// single-underscore variable is named in a warning.
#[test]
fn check_config_holds_to_the_environment_rules() {
    let vars = good_config_with("TESSERA__LOG__FORMAT", "json");
    let (ok, stderr) = check_config(&["check-config", "--env", "staging"], &vars);
    assert!(!ok);
    assert!(stderr.contains("staging.toml"), "{stderr}");
    let mut from_variable = vars.clone();
    from_variable.push(("TESSERA_ENV", "staging".to_owned()));
    let (ok, stderr) = check_config(&["check-config"], &from_variable);
    assert!(!ok);
    assert!(stderr.contains("staging.toml"), "{stderr}");
    let mut stray = vars.clone();
    stray.push(("TESSERA_HTTP_ADDR", "0.0.0.0:9".to_owned()));
    let (ok, stderr) = check_config(&["check-config", "--env", "none"], &stray);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("TESSERA_HTTP_ADDR"), "{stderr}");
    assert!(stderr.contains("TESSERA__HTTP__ADDR"), "{stderr}");
}

/// The environment is the top layer: production.toml's `seal.keys_file` loses to
/// `TESSERA__SEAL__KEYS`, so the production environment checks out from the checkout.
#[test]
fn the_environment_beats_production_toml_files() {
    let jwks = crate::helpers::fixture("jwks.json");
    let vars = good_config_with("TESSERA__AUTH__JWKS_FILE", jwks.to_str().unwrap());
    let (ok, stderr) = check_config(&["check-config", "--env", "production"], &vars);
    assert!(ok, "{stderr}");
}

#[test]
fn serve_refuses_to_start_without_a_seal_key() {
    let jwks = crate::helpers::fixture("jwks.json");
    let output = tessera(
        &["serve", "--env", "none"],
        &[
            ("TESSERA__AUTH__JWKS_FILE", jwks.to_str().unwrap()),
            ("TESSERA__AUTH__ISSUER", "https://issuer.test"),
            ("TESSERA__AUTH__AUDIENCE", "tessera"),
            ("TESSERA__HTTP__ADDR", "127.0.0.1:0"),
            ("TESSERA__GRPC__ADDR", "127.0.0.1:0"),
        ],
    );
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("seal: no key"));
}

#[test]
fn gen_seal_key_makes_a_usable_entry() {
    let output = tessera(&["gen-seal-key", "--id", "2026-11"], &[]);
    let entry = String::from_utf8(output.stdout).unwrap();
    let ring = tessera::seal::KeyRing::parse(&entry.trim().to_owned().into()).unwrap();
    assert_eq!(ring.sealing_key_id(), "2026-11");
}

#[test]
fn qr_draws_an_enrollment_uri() {
    let output = tessera(
        &[
            "qr",
            "otpauth://totp/tessera:alice?secret=JBSWY3DPEHPK3PXP&issuer=tessera",
        ],
        &[],
    );
    assert!(output.status.success());
    let picture = String::from_utf8(output.stdout).unwrap();
    assert!(picture.lines().count() > 10, "{picture}");
    assert!(
        picture.contains('█') || picture.contains('▀') || picture.contains('▄'),
        "{picture}"
    );
}

/// `needle` in `text` as a whole: a code must not be part of a longer number to count.
fn contains_token(text: &str, needle: &str) -> bool {
    let is_digit = |c: Option<char>| c.is_some_and(|c| c.is_ascii_digit());
    let numeric = needle.bytes().all(|b| b.is_ascii_digit());
    text.match_indices(needle).any(|(at, _)| {
        !numeric
            || (!is_digit(text[..at].chars().next_back())
                && !is_digit(text[at + needle.len()..].chars().next()))
    })
}

/// The process holds no opened OTP secret once its checks are done: the organization actors
/// cache sealed bytes and open them per check, and the plain copy is wiped. The test reads
/// every writable mapping of the real binary (dumps allowed, so that it may) and looks for
/// the 20 raw bytes of each user's secret.
#[actix_web::test]
async fn no_opened_secret_stays_in_memory_after_the_checks() {
    let dev = DevBinary::start(&[("TESSERA__PROCESS__ALLOW_CORE_DUMPS", "true".into())]).await;
    let checker = dev.token("acme", "checker", &["otp.check"]);
    let params = TotpParams::default();
    let mut secrets = Vec::new();
    for i in 0..20 {
        let user = format!("u{i}");
        let token = dev.token("acme", &user, &[]);
        let secret = dev.enroll(&token).await;
        let now = chrono::Utc::now().timestamp() as u64;
        let verify = json!({ "code": code_with(&params, &secret, now, -1) });
        let (status, _) = dev
            .post(
                "/auth/v1/users/me/auth_factors/otp/_verify",
                &token,
                None,
                verify,
            )
            .await;
        assert_eq!(status, 200);
        let check = format!("/management/v1/users/{user}/auth_factors/otp/_check");
        for code in [code_with(&params, &secret, now, 1), "000000".to_owned()] {
            let (status, _) = dev
                .post(&check, &checker, None, json!({ "code": code }))
                .await;
            assert!(status < 500);
        }
        secrets.push(
            data_encoding::BASE32_NOPAD
                .decode(secret.as_bytes())
                .unwrap(),
        );
    }
    let memory = writable_memory(dev.pid());
    drop(dev.stop());
    let read: usize = memory.iter().map(|(_, bytes)| bytes.len()).sum();
    assert!(read > 1 << 20, "read {read} bytes only");
    let found: Vec<String> = secrets
        .iter()
        .enumerate()
        .filter_map(|(user, secret)| {
            let (mapping, _) = memory
                .iter()
                .find(|(_, bytes)| memchr::memmem::find(bytes, secret).is_some())?;
            Some(format!("u{user} in {mapping}"))
        })
        .collect();
    assert!(found.is_empty(), "secrets in memory: {found:?}");
}

/// Every readable, writable mapping of `pid` (heap, stacks, data): its line in
/// `/proc/<pid>/maps` and its bytes.
fn writable_memory(pid: u32) -> Vec<(String, Vec<u8>)> {
    use std::io::{Read, Seek, SeekFrom};
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let mut mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    let mut mappings = Vec::new();
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
            continue;
        };
        if !perms.starts_with("rw") {
            continue;
        }
        let (start, end) = range.split_once('-').unwrap();
        let start = u64::from_str_radix(start, 16).unwrap();
        let end = u64::from_str_radix(end, 16).unwrap();
        let mut region = vec![0; usize::try_from(end - start).unwrap()];
        // A mapping can vanish or be unreadable (guard pages): skip what does not read.
        if mem.seek(SeekFrom::Start(start)).is_ok() && mem.read_exact(&mut region).is_ok() {
            mappings.push((line.to_owned(), region));
        }
    }
    mappings
}

/// The real binary runs with no core dumps (`RLIMIT_CORE` 0) unless dumps are allowed, in
/// which case it keeps the limit it inherited.
#[actix_web::test]
async fn the_binary_runs_without_core_dumps() {
    let core_limit = |pid: &str| {
        let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
        let line = limits
            .lines()
            .find(|line| line.starts_with("Max core file size"))
            .unwrap()
            .to_owned();
        line.split_whitespace()
            .skip(4)
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
    };
    let dev = DevBinary::start(&[]).await;
    let protected = core_limit(&dev.pid().to_string());
    drop(dev.stop());
    assert_eq!(protected, "0 0");
    let allowed = DevBinary::start(&[("TESSERA__PROCESS__ALLOW_CORE_DUMPS", "true".into())]).await;
    let inherited = core_limit(&allowed.pid().to_string());
    drop(allowed.stop());
    assert_eq!(inherited, core_limit("self"));
}

/// `--env` and `--config-dir` choose settings: only the commands that read settings offer
/// them, and the older spelling before the command (the image's entrypoint) still works.
#[test]
fn settings_options_appear_only_where_settings_are_read() {
    let help = |command: &str| {
        let out = tessera(&[command, "--help"], &[("TESSERA_ENV", "")]);
        assert!(out.status.success(), "{command} --help");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    for command in ["serve", "dev", "token", "check-config", "rekey"] {
        let text = help(command);
        assert!(
            text.contains("--env <ENVIRONMENT>") && text.contains("--config-dir"),
            "{command} --help offers the settings options:\n{text}"
        );
    }
    for command in ["qr", "gen-seal-key", "gen-signing-key"] {
        let text = help(command);
        assert!(
            !text.contains("--env") && !text.contains("--config-dir"),
            "{command} reads no settings, yet its help offers them:\n{text}"
        );
    }
    let config_dir = format!("{}/config", env!("CARGO_MANIFEST_DIR"));
    for args in [
        [
            "--config-dir",
            config_dir.as_str(),
            "check-config",
            "--env",
            "nosuch",
        ],
        [
            "check-config",
            "--config-dir",
            config_dir.as_str(),
            "--env",
            "nosuch",
        ],
    ] {
        let out = tessera(&args, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains("no nosuch.toml"),
            "{args:?} reads the settings named: {stderr}"
        );
    }
}

/// An operator reads from the first lines where to point clients, probes and scrapers.
#[actix_web::test]
async fn the_startup_log_names_every_port_it_listens_on() {
    let metrics_port = crate::helpers::free_port();
    let dev = DevBinary::start(&[(
        "TESSERA__HTTP__METRICS_ADDR",
        format!("127.0.0.1:{metrics_port}"),
    )])
    .await;
    let http = dev.base.trim_start_matches("http://").to_owned();
    let grpc = format!("127.0.0.1:{}", dev.grpc_port);
    let metrics = format!("127.0.0.1:{metrics_port}");
    let logs = dev.stop();
    let line = logs
        .lines()
        .find(|line| line.contains("tessera listening"))
        .unwrap_or_else(|| panic!("no startup line in:\n{logs}"));
    for (port, addr) in [("http", &http), ("grpc", &grpc), ("metrics", &metrics)] {
        assert!(
            line.contains(&format!("\"{port}\":\"{addr}\"")),
            "the {port} port {addr} in {line}"
        );
    }
}

/// `tessera grpc`: the walk-through over native gRPC with nothing else installed; answers as
/// the JSON API's, errors as the status with the contract's id and the attempts left.
#[actix_web::test]
async fn the_grpc_subcommand_walks_through_enrollment_check_and_errors() {
    let dev = DevBinary::start(&[]).await;
    let address = format!("http://127.0.0.1:{}", dev.grpc_port);
    let token = dev.token("acme", "dora", &["otp.check", "otp.admin"]);
    let grpc = |args: &[&str]| {
        let address = address.clone();
        let token = token.clone();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        async move {
            tokio::task::spawn_blocking(move || {
                let mut all = vec!["grpc".to_owned(), "--address".to_owned(), address];
                all.extend(args);
                let all: Vec<&str> = all.iter().map(String::as_str).collect();
                tessera(&all, &[("TOKEN", token.as_str())])
            })
            .await
            .unwrap()
        }
    };
    let stdout = |out: &std::process::Output| String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = |out: &std::process::Output| String::from_utf8_lossy(&out.stderr).into_owned();

    let health = grpc(&["health"]).await;
    assert_eq!(stdout(&health).trim(), r#"{"status":"SERVING"}"#);
    let added = grpc(&["add"]).await;
    assert!(added.status.success(), "{}", stderr(&added));
    let added: serde_json::Value = serde_json::from_str(&stdout(&added)).unwrap();
    assert_eq!(added["details"]["resourceOwner"], "acme");
    assert!(
        added["url"]
            .as_str()
            .unwrap()
            .starts_with("otpauth://totp/")
    );
    let secret = added["secret"].as_str().unwrap().to_owned();

    let wrong = grpc(&["verify", "000000"]).await;
    assert!(!wrong.status.success());
    assert!(
        stderr(&wrong).contains(
            "InvalidArgument: Invalid code (EVENT-8isk2) [Invalid code; 4 attempts remaining]"
        ),
        "{}",
        stderr(&wrong)
    );
    let now = chrono::Utc::now().timestamp() as u64;
    let params = TotpParams::default();
    let verified = grpc(&["verify", &code_with(&params, &secret, now, -1)]).await;
    assert!(verified.status.success(), "{}", stderr(&verified));
    let verified: serde_json::Value = serde_json::from_str(&stdout(&verified)).unwrap();
    assert!(
        verified["details"]["sequence"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .is_ok()
    );
    let listed = grpc(&["list"]).await;
    assert!(
        stdout(&listed).contains("AUTH_FACTOR_STATE_READY"),
        "{}",
        stdout(&listed)
    );
    let checked = grpc(&["check", "dora", &code_with(&params, &secret, now, 1)]).await;
    assert!(checked.status.success(), "{}", stderr(&checked));
    let unlocked = grpc(&["unlock", "dora"]).await;
    assert!(
        stderr(&unlocked).contains("(COMMAND-4M0ds)"),
        "not locked: {}",
        stderr(&unlocked)
    );
    let refused = grpc(&["--token", "not-a-token", "list"]).await;
    assert!(
        stderr(&refused).contains("Unauthenticated") && stderr(&refused).contains("AUTH-7fs1e")
    );
    drop(dev);
}
