//! SIGTERM under load: the server stops accepting, finishes what it accepted, and exits;
//! no request is cut off between its commit and its answer.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;

use crate::helpers::{AUDIENCE, ISSUER, RedisServer, Token, fixture, free_port};

#[actix_web::test]
async fn sigterm_during_load_drops_no_accepted_request() {
    let redis = RedisServer::start();
    let port = free_port();
    let mut server = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["serve", "--env", "none"])
        .env("TESSERA__HTTP__ADDR", format!("127.0.0.1:{port}"))
        .env("TESSERA__GRPC__ADDR", "127.0.0.1:0")
        .env("TESSERA__STORE__KIND", "redis")
        .env("TESSERA__REDIS__URL", redis.url())
        .env("TESSERA__AUTH__JWKS_FILE", fixture("jwks.json"))
        .env("TESSERA__AUTH__ISSUER", ISSUER)
        .env("TESSERA__AUTH__AUDIENCE", AUDIENCE)
        .env(
            "TESSERA__SEAL__KEYS",
            "k1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        )
        .env("TESSERA__LIMITS__PER_ADDRESS_PER_SECOND", "0")
        .env("TESSERA__LIMITS__PER_ORG_PER_SECOND", "0")
        .env("TESSERA__HTTP__SHUTDOWN_GRACE_SECS", "10")
        .env("TESSERA__LOG__LEVEL", "warn")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let mut up = false;
    for _ in 0..100 {
        if client
            .get(format!("{base}/debug/ready"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "tessera serve becomes ready");

    let users = 600;
    let tokens: Vec<String> = (0..users)
        .map(|i| Token::user("acme", &format!("u{i}")).sign())
        .collect();
    let signalled = Arc::new(AtomicBool::new(false));
    let pid = server.id().to_string();
    let answers = futures::stream::iter(tokens.iter().enumerate())
        .map(|(i, token)| {
            let client = client.clone();
            let base = base.clone();
            let signalled = signalled.clone();
            let pid = pid.clone();
            async move {
                if i == users / 3 && !signalled.swap(true, Ordering::SeqCst) {
                    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
                }
                // A connection per request, so a refused connection is told apart from a
                // request cut off after it was accepted.
                let sent = client
                    .post(format!("{base}/auth/v1/users/me/auth_factors/otp"))
                    .bearer_auth(token)
                    .header("connection", "close")
                    .body("{}")
                    .send()
                    .await;
                let outcome = match sent {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        match response.bytes().await {
                            Ok(_) => Ok(status),
                            Err(e) => Err(format!("body cut off: {e}")),
                        }
                    }
                    Err(e) if e.is_connect() => Ok(0),
                    Err(e) => Err(format!("{e:?}")),
                };
                (i, outcome)
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;

    let status = tokio::task::spawn_blocking(move || server.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "exits cleanly after draining: {status:?}");

    let answered: BTreeSet<usize> = answers
        .iter()
        .filter(|(_, o)| *o == Ok(200))
        .map(|(i, _)| *i)
        .collect();
    let refused = answers.iter().filter(|(_, o)| *o == Ok(0)).count();
    let other: Vec<_> = answers
        .iter()
        .filter(|(_, o)| !matches!(o, Ok(200) | Ok(0)))
        .collect();
    assert!(
        answered.len() >= users / 3 - 32,
        "served until the signal: {}",
        answered.len()
    );
    assert!(refused > 0, "stopped accepting after the signal");
    // Every commit in Redis has its answer, every answer its commit.
    let keys = redis.cli(&["--scan", "--pattern", "tessera:{*}"]).unwrap();
    let committed: BTreeSet<usize> = keys
        .lines()
        .map(|key| {
            key.trim_start_matches("tessera:{acme:u")
                .trim_end_matches('}')
                .parse()
                .unwrap()
        })
        .collect();
    assert_eq!(
        committed, answered,
        "commits without answers, or answers without commits"
    );
    // Whatever else went wrong for a client (a connection reset in the listen backlog as the
    // listener closed) committed nothing, as the line above proves.
    for (i, outcome) in &other {
        assert!(
            !committed.contains(i),
            "request {i} committed but was answered {outcome:?}"
        );
    }
}

/// The gRPC server stopping by itself (its thread panicked, its runtime died) stops the whole
/// process with an error, HTTP drained first: half an API is not served.
#[actix_web::test]
async fn the_process_stops_with_an_error_when_the_grpc_server_dies() {
    let mut settings = crate::helpers::base_settings();
    settings.store.kind = tessera::settings::StoreKind::Memory;
    let config = settings.parse(tessera::settings::Mode::Dev).unwrap();
    let mut app = tessera::app::Application::build(config).await.unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    let kill_grpc = app.grpc_kill_switch();
    let running = actix_rt::spawn(app.run_until_stopped());
    let client = reqwest::Client::new();
    let healthy = client.get(format!("{base}/debug/healthz")).send().await;
    assert!(healthy.unwrap().status().is_success());
    kill_grpc();
    let stopped = tokio::time::timeout(Duration::from_secs(60), running)
        .await
        .expect("the process stops")
        .unwrap();
    let error = stopped.unwrap_err().to_string();
    assert!(error.contains("the gRPC server stopped"), "{error}");
    assert!(
        client
            .get(format!("{base}/debug/healthz"))
            .send()
            .await
            .is_err()
    );
}
