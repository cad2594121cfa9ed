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
        "added sequence=# owner=acme".to_owned(),
        "wrong code=INVALID_ARGUMENT id=EVENT-8isk2".to_owned(),
        format!(
            "verified sequence=# changed={}",
            crate::helpers::PINNED_SECS
        ),
        "listed states=[2] otp=[True]".to_owned(),
        "checked sequence=#".to_owned(),
        "anonymous code=UNAUTHENTICATED id=AUTH-hdr0m".to_owned(),
    ];
    // Sequences come from the store's clock: their order is fixed, their values are not.
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
