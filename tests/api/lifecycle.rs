//! Organization actors come and go; Redis credentials come from files.

use std::time::Duration;

use crate::helpers::{Backend, RedisServer, Spawn, Token, free_port, settings_with_env, spawn_app};

#[actix_web::test]
async fn idle_actors_are_evicted_but_never_while_held() {
    let app = spawn_app(Backend::Memory).await;
    let alice = Token::user("acme", "alice").sign();
    let bob = Token::user("globex", "bob").sign();
    app.enroll_ready(&alice).await;
    app.list(&bob).await.assert_ok();
    assert_eq!(app.registry.live(), 2);
    // A handle out (a call in flight) keeps its actor.
    let held = app.registry.org(&"acme".into()).unwrap();
    assert_eq!(app.registry.evict_idle(Duration::ZERO), 1);
    assert_eq!(app.registry.live(), 1);
    drop(held);
    assert_eq!(app.registry.evict_idle(Duration::ZERO), 1);
    assert_eq!(app.registry.live(), 0);
    let gauge = |text: &str| crate::metrics::sample(text, "tessera_org_actors", &[]);
    assert_eq!(gauge(&app.metrics_text().await), 0.0);
    // Not idle long enough: kept.
    app.list(&alice).await.assert_ok();
    assert_eq!(gauge(&app.metrics_text().await), 1.0);
    assert_eq!(app.registry.evict_idle(Duration::from_secs(3600)), 0);
    // A fresh actor serves the organization's state from the store.
    app.add(&alice).await.assert_error(409, 6, "COMMAND-do9se");
}

#[actix_web::test]
async fn redis_password_from_a_file() {
    let port = free_port();
    let _redis = RedisServer::start_with(port, &["--requirepass", "s3cret-pass"]);
    let url = format!("redis://127.0.0.1:{port}");
    let alice = Token::user("acme", "alice").sign();

    let without = Spawn::new(Backend::Redis)
        .external_redis(url.clone())
        .start()
        .await;
    without
        .list(&alice)
        .await
        .assert_error(503, 14, "TESSERA-unav1");

    let dir = crate::helpers::TempDir::new("redis-pass");
    let file = dir.0.join("password");
    std::fs::write(&file, "s3cret-pass\n").unwrap();
    let settings = settings_with_env(&[("TESSERA__REDIS__PASSWORD_FILE", file.to_str().unwrap())]);
    let with = Spawn::new(Backend::Redis)
        .settings(settings)
        .external_redis(url)
        .start()
        .await;
    with.enroll_ready(&alice).await;
}

#[actix_web::test]
async fn rediss_with_a_private_ca() {
    let port = free_port();
    let tls = |name: &str| {
        crate::helpers::fixture(&format!("redis-tls/{name}"))
            .to_string_lossy()
            .into_owned()
    };
    let mut server = std::process::Command::new("redis-server")
        .args([
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args([
            "--tls-cert-file",
            &tls("server.pem"),
            "--tls-key-file",
            &tls("server.key"),
        ])
        .args([
            "--tls-ca-cert-file",
            &tls("ca.pem"),
            "--tls-auth-clients",
            "no",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("rediss://127.0.0.1:{port}");
    let alice = Token::user("acme", "alice").sign();
    let trusted = Spawn::new(Backend::Redis)
        .external_redis(url.clone())
        .with(|s| s.redis.tls_ca_file = tls("ca.pem"))
        .start()
        .await;
    let mut ready = false;
    for _ in 0..100 {
        if trusted.ready().await.status().is_success() {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "tessera reaches Redis over TLS");
    trusted.enroll_ready(&alice).await;
    // Without the CA, the server's certificate is not trusted: fail closed.
    let untrusted = Spawn::new(Backend::Redis).external_redis(url).start().await;
    untrusted
        .list(&alice)
        .await
        .assert_error(503, 14, "TESSERA-unav1");
    server.kill().unwrap();
    server.wait().unwrap();
}

#[actix_web::test]
async fn a_replica_whose_clock_is_off_the_stores_is_not_ready() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;

    let redis = std::sync::Arc::new(RedisServer::start());
    let real_now = tessera::domain::UnixMicros(chrono::Utc::now().timestamp_micros());
    let in_sync = std::sync::Arc::new(tessera::clock::ManualClock::new(real_now));
    let app = Spawn::new(Backend::Redis)
        .with(|s| s.health.max_clock_offset_ms = 5_000)
        .redis(redis.clone())
        .clock(in_sync.clone())
        .start()
        .await;
    let ready = app.ready().await;
    assert_eq!(ready.status().as_u16(), 200);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["clockInBounds"], true);
    assert!(
        body["clockOffsetMs"].as_i64().unwrap().abs() < 5_000,
        "{body}"
    );
    // The replica's clock jumps a minute ahead: not ready, over HTTP and gRPC health.
    in_sync.advance_secs(60);
    let drifted = app.ready().await;
    assert_eq!(drifted.status().as_u16(), 503);
    let body: serde_json::Value = drifted.json().await.unwrap();
    assert_eq!(body["clockInBounds"], false);
    assert!(body["clockOffsetMs"].as_i64().unwrap() >= 55_000, "{body}");
    let metrics = app.metrics_text().await;
    let offset = crate::metrics::sample(&metrics, "tessera_clock_offset_seconds", &[]);
    assert!(offset >= 55.0, "{offset}");
    let connections = crate::metrics::sample(&metrics, "tessera_redis_connections", &[]);
    assert!(connections >= 1.0, "{connections}");
    let mut health = HealthClient::new(crate::grpc::channel(&app).await);
    let mut status = ServingStatus::Serving as i32;
    for _ in 0..40 {
        status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        if status == ServingStatus::NotServing as i32 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, ServingStatus::NotServing as i32);
}

/// `tessera_redis_connections` goes down as soon as Redis closes a connection, not only when
/// tessera next tries to use it.
#[actix_web::test]
async fn the_connection_gauge_goes_down_when_redis_closes_a_connection() {
    let redis = std::sync::Arc::new(RedisServer::start());
    let app = Spawn::new(Backend::Redis)
        // No background readiness check reconnects meanwhile.
        .with(|s| s.health.check_interval_secs = 3600)
        .redis(redis.clone())
        .start()
        .await;
    let alice = Token::user("acme", "alice").sign();
    app.list(&alice).await.assert_ok();
    let connections = |text: &str| crate::metrics::sample(text, "tessera_redis_connections", &[]);
    let before = connections(&app.metrics_text().await);
    assert!(before >= 1.0, "{before}");
    redis.cli(&["CLIENT", "KILL", "TYPE", "normal"]).unwrap();
    let mut now = before;
    for _ in 0..100 {
        now = connections(&app.metrics_text().await);
        if now == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(now, 0.0, "{before} connections before the kill");
    // The next call connects afresh, and counts it.
    app.list(&alice).await.assert_ok();
    assert!(connections(&app.metrics_text().await) >= 1.0);
}
