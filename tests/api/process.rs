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
    let missing = tessera(&["check-config", "--env", "nonexistent"], &[]);
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
        &["check-config", "--env", "nonexistent"],
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

#[test]
fn serve_refuses_to_start_without_a_seal_key() {
    let jwks = crate::helpers::fixture("jwks.json");
    let output = tessera(
        &["serve", "--env", "nonexistent"],
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
