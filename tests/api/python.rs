//! Independent clients talk to tessera: Python's grpcio with stubs generated from proto/,
//! codes from pyotp (the v1 Auth API, the login check, the v2 user API, the audit trail); and
//! the community `zitadel` crate, whose client is generated from ZITADEL's own protos (the v2
//! user API and the management API's lockout policy).

use std::process::Command;

use crate::helpers::{Backend, Token, spawn_app};

#[actix_web::test]
async fn python_grpcio_client_walks_through_enrollment_and_check() {
    let app = spawn_app(Backend::Memory).await;
    let alice = Token::user("acme", "alice")
        .role("otp.check", "acme")
        .sign();
    let now = app.now_secs().to_string();
    let stdout = run_client(&app, "grpc_client.py", vec![alice, now]).await;
    let expected = [
        "added sequence=# owner=acme",
        "wrong code=INVALID_ARGUMENT id=EVENT-8isk2",
        &format!(
            "verified sequence=# changed={}",
            crate::helpers::PINNED_SECS
        ),
        "listed states=[2] otp=[True]",
        "checked sequence=#",
        "anonymous code=UNAUTHENTICATED id=AUTH-hdr0m",
    ];
    assert_lines_with_rising_sequences(&stdout, &expected);
}

/// ZITADEL's v2 user API from Python stubs of its messages: register, the pending factor,
/// verify, both listings, recovery codes (generated with a TOTP code, one used at the login
/// check, counted, removed), unlock (by an admin; refused to the user), remove.
#[actix_web::test]
async fn python_grpcio_client_walks_through_the_v2_user_api() {
    let app = spawn_app(Backend::Memory).await;
    let alice = Token::user("acme", "alice").sign();
    let admin = Token::user("acme", "ops")
        .role("otp.admin", "acme")
        .role("otp.check", "acme")
        .sign();
    let now = app.now_secs().to_string();
    let args = vec![alice, admin, "alice".to_owned(), now];
    let stdout = run_client(&app, "user_v2_client.py", args).await;
    assert_lines_with_rising_sequences(
        &stdout,
        &[
            "registered sequence=# owner=acme",
            "pending states=['AUTH_FACTOR_STATE_NOT_READY']",
            "verified sequence=#",
            "methods ['AUTHENTICATION_METHOD_TYPE_TOTP'] total=1",
            "ready states=['AUTH_FACTOR_STATE_READY'] otp=[True]",
            "codes without a TOTP code=INVALID_ARGUMENT id=TESSERA-code3",
            "recovery codes 3 sequence=#",
            "recovery code used sequence=# remaining=2",
            "used again code=INVALID_ARGUMENT id=DOMAIN-6uvh0",
            "recovery codes left 2",
            "unlock code=FAILED_PRECONDITION id=COMMAND-4M0ds",
            "self unlock code=PERMISSION_DENIED id=TESSERA-perm1",
            "removed sequence=#",
            "methods after ['AUTHENTICATION_METHOD_TYPE_RECOVERY_CODE']",
            "recovery codes removed sequence=#",
            "methods at last []",
        ],
    );
}

/// The community `zitadel` crate's client (`tests/clients/zitadel-rs`, its own crate, lock
/// file and target folder; scripts/test builds it before the tests run).
#[actix_web::test]
async fn the_zitadel_crate_client_walks_through_the_v2_user_api() {
    let app = spawn_app(Backend::Memory).await;
    let alice = Token::user("acme", "alice").sign();
    let admin = Token::user("acme", "ops").role("otp.admin", "acme").sign();
    let endpoint = app.grpc_address.clone();
    let now = app.now_secs().to_string();
    let stdout = run_zitadel_crate_client(vec![endpoint, alice, admin, "alice".into(), now]).await;
    assert_lines_with_rising_sequences(
        &stdout,
        &[
            "registered sequence=# owner=acme",
            "pending states=[\"AUTH_FACTOR_STATE_NOT_READY\"]",
            "verified sequence=#",
            "methods [\"AUTHENTICATION_METHOD_TYPE_TOTP\"] total=1",
            "unlock FailedPrecondition User is not locked (COMMAND-4M0ds)",
            "self unlock PermissionDenied No matching permissions found (TESSERA-perm1)",
            "removed sequence=#",
            "removed again NotFound Multifactor OTP (OneTimePassword) doesn't exist (COMMAND-Hd9sd)",
        ],
    );
}

/// The calls ZITADEL's Terraform provider makes for `zitadel_lockout_policy`, with the
/// messages of ZITADEL's own management.proto as the `zitadel` crate generates them.
#[actix_web::test]
async fn the_zitadel_crate_client_manages_the_lockout_policy() {
    let app = spawn_app(Backend::Memory).await;
    let alice = Token::user("acme", "alice").sign();
    app.ready_for_login(&alice).await;
    let admin = Token::user("acme", "ops").role("otp.admin", "acme").sign();
    let endpoint = app.grpc_address.clone();
    let stdout =
        run_zitadel_crate_client(vec!["lockout".into(), endpoint, admin, "alice".into()]).await;
    assert_lines_with_rising_sequences(
        &stdout,
        &[
            "default is_default=true policy.is_default=true max_otp=5 max_password=0 owner=acme",
            "added sequence=# owner=acme created=true",
            "added again AlreadyExists Lockout Policy already exists (ORG-0olDf)",
            "updated same FailedPrecondition Lockout Policy has not been changed (ORG-0JFSr)",
            "updated sequence=#",
            "custom is_default=false policy.is_default=false max_otp=4 max_password=10 owner=acme",
            "factors 1",
            "reset sequence=#",
            "reset again NotFound Lockout Policy not found (ORG-D4zuz)",
        ],
    );
}

/// What the community `zitadel` crate's client (tests/clients/zitadel-rs) printed given
/// `args`; it must succeed. scripts/test builds it beforehand into target/clients.
async fn run_zitadel_crate_client(args: Vec<String>) -> String {
    let root = env!("CARGO_MANIFEST_DIR");
    let output = actix_rt::task::spawn_blocking(move || {
        Command::new(env!("CARGO"))
            .args(["run", "--quiet", "--locked", "--manifest-path"])
            .arg(format!("{root}/tests/clients/zitadel-rs/Cargo.toml"))
            .arg("--target-dir")
            .arg(format!("{root}/target/clients"))
            .arg("--")
            .args(args)
            .output()
    })
    .await
    .unwrap()
    .expect("cargo runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// The audit trail through grpcio: one user's events page by page, the organization's feed
/// filtered, and an unknown type refused.
#[actix_web::test]
async fn python_grpcio_client_reads_the_audit_trail() {
    let app = spawn_app(Backend::Memory).await;
    let alice = Token::user("acme", "alice").sign();
    app.ready_for_login(&alice).await;
    let login = Token::user("acme", "login")
        .role("otp.check", "acme")
        .sign();
    app.check(&login, "alice", "000000")
        .await
        .assert_error(400, 3, "EVENT-8isk2");
    let admin = Token::user("acme", "ops").role("otp.admin", "acme").sign();
    let stdout = run_client(&app, "audit_client.py", vec![admin, "alice".into()]).await;
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "user events ['enrolled', 'verified', 'check_invalid'] pages=2",
            "newest by=login/acme address=127.0.0.0/24 dated=True",
            "feed ['check_invalid', 'verified']",
            "unknown type=INVALID_ARGUMENT id=TESSERA-query1",
        ]
    );
}

/// What `tests/clients/<script>` printed, given the app's gRPC address and then `args`; it
/// must succeed.
async fn run_client(app: &crate::helpers::TestApp, script: &str, args: Vec<String>) -> String {
    let script = format!("{}/tests/clients/{script}", env!("CARGO_MANIFEST_DIR"));
    let target = app.grpc_address.trim_start_matches("http://").to_owned();
    let output = actix_rt::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(script)
            .arg(target)
            .args(args)
            .output()
    })
    .await
    .unwrap()
    .expect("python3 with grpcio, grpcio-tools and pyotp (scripts/test installs them)");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// The client's lines, with each `sequence=N` written `sequence=#`; the sequences rise.
/// (They come from the store's clock: their order is fixed, their values are not.)
#[track_caller]
fn assert_lines_with_rising_sequences(stdout: &str, expected: &[&str]) {
    let mut sequences = Vec::new();
    let lines: Vec<String> = stdout
        .lines()
        .map(|line| match line.split_once("sequence=") {
            Some((head, rest)) => {
                let (number, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                sequences.push(number.parse::<u64>().unwrap());
                format!("{head}sequence=# {tail}").trim_end().to_owned()
            }
            None => line.to_owned(),
        })
        .collect();
    assert_eq!(lines, expected);
    assert!(
        sequences.windows(2).all(|pair| pair[0] < pair[1]),
        "{sequences:?}"
    );
}
