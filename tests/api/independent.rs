//! Codes from independent implementations (oathtool, pyotp) verify against tessera.

use std::process::Command;

use crate::helpers::{Backend, Spawn, Token};

fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} must be installed (README: tests): {e}"));
    assert!(
        output.status.success(),
        "{program}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

#[actix_web::test]
async fn oathtool_codes_verify() {
    let app = Spawn::new(Backend::Memory).start().await;
    let alice = Token::user("acme", "alice")
        .role("otp.check", "acme")
        .sign();
    let secret = app.add(&alice).await.body["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let at = |secs: u64| format!("@{secs}");
    let code = run(
        "oathtool",
        &[
            "--totp",
            "-b",
            &format!("--now={}", at(app.now_secs())),
            &secret,
        ],
    );
    app.verify(&alice, &code).await.assert_ok();
    let next = run(
        "oathtool",
        &[
            "--totp",
            "-b",
            &format!("--now={}", at(app.now_secs() + 30)),
            &secret,
        ],
    );
    app.check(&alice, "alice", &next).await.assert_ok();
}

#[actix_web::test]
async fn pyotp_codes_verify_for_every_algorithm() {
    for (algorithm, digest, digits) in [
        (tessera::domain::HashAlgorithm::Sha1, "sha1", 6),
        (tessera::domain::HashAlgorithm::Sha256, "sha256", 8),
        (tessera::domain::HashAlgorithm::Sha512, "sha512", 8),
    ] {
        let app = Spawn::new(Backend::Memory)
            .with(|s| {
                s.totp.algorithm = algorithm;
                s.totp.digits = digits;
            })
            .start()
            .await;
        let alice = Token::user("acme", "alice").sign();
        let added = app.add(&alice).await;
        let uri = added.body["url"].as_str().unwrap();
        // pyotp reads the otpauth URI as an authenticator app would.
        let script = format!(
            "import pyotp,hashlib; t=pyotp.parse_uri('{uri}'); assert t.digest is hashlib.{digest}, t.digest; print(t.at({}))",
            app.now_secs()
        );
        let code = run("python3", &["-c", &script]);
        assert_eq!(code.len(), usize::from(digits));
        app.verify(&alice, &code).await.assert_ok();
    }
}
