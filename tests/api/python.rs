//! An independent implementation talks to tessera: Python's grpcio with stubs generated
//! from proto/, codes from pyotp.

use std::process::Command;

use crate::helpers::{Backend, Token, spawn_app};

#[actix_web::test]
async fn python_grpcio_client_walks_through_enrollment_and_check() {
    let app = spawn_app(Backend::Memory).await;
    let alice = Token::user("acme", "alice")
        .role("otp.check", "acme")
        .sign();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/grpc_client.py");
    let target = app.grpc_address.trim_start_matches("http://").to_owned();
    let now = app.now_secs().to_string();
    let output = actix_rt::task::spawn_blocking(move || {
        Command::new("python3")
            .args([script, &target, &alice, &now])
            .output()
    })
    .await
    .unwrap()
    .expect("python3 with grpcio, grpcio-tools and pyotp (scripts/test installs them)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let expected = [
        "added sequence=1 owner=acme".to_owned(),
        "wrong code=INVALID_ARGUMENT id=EVENT-8isk2".to_owned(),
        format!(
            "verified sequence=3 changed={}",
            crate::helpers::PINNED_SECS
        ),
        "listed states=[2] otp=[True]".to_owned(),
        "checked sequence=4".to_owned(),
        "anonymous code=UNAUTHENTICATED id=AUTH-hdr0m".to_owned(),
    ];
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        expected.iter().map(String::as_str).collect::<Vec<_>>()
    );
}
