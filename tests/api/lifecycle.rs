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
    // Not idle long enough: kept.
    app.list(&alice).await.assert_ok();
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

    let file = std::env::temp_dir().join(format!("tessera-redis-pass-{port}"));
    std::fs::write(&file, "s3cret-pass\n").unwrap();
    let settings = settings_with_env(&[("TESSERA__REDIS__PASSWORD_FILE", file.to_str().unwrap())]);
    let with = Spawn::new(Backend::Redis)
        .settings(settings)
        .external_redis(url)
        .start()
        .await;
    with.enroll_ready(&alice).await;
    std::fs::remove_file(file).ok();
}
