//! Signed notifications against a real HTTP receiver: Standard Webhooks headers, at least
//! once through failures, each event accepted once (by `webhook-id`), and the endpoint API.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use serde_json::{Value, json};

use crate::helpers::{Backend, Spawn, TestApp, Token, free_port};

/// What a receiver saw: every request's headers and body, and the ids it accepted.
#[derive(Default)]
pub(crate) struct Seen {
    pub(crate) requests: Vec<(BTreeMap<String, String>, String)>,
    pub(crate) accepted: BTreeMap<String, String>,
    /// Answer 500 to this many requests first.
    pub(crate) fail_first: usize,
}

/// A receiver on 127.0.0.1 that fails its first `fail_first` requests, then accepts; a
/// message it already accepted is accepted again without counting twice (idempotent by
/// `webhook-id`, as the specification asks of receivers).
pub(crate) fn receiver(fail_first: usize) -> (String, Arc<Mutex<Seen>>) {
    let seen = Arc::new(Mutex::new(Seen {
        fail_first,
        ..Seen::default()
    }));
    let port = free_port();
    let state = web::Data::new(seen.clone());
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            HttpServer::new(move || {
                App::new().app_data(state.clone()).route(
                    "/hook",
                    web::post().to(
                        |req: HttpRequest, body: String, seen: web::Data<Arc<Mutex<Seen>>>| async move {
                            let headers: BTreeMap<String, String> = req
                                .headers()
                                .iter()
                                .map(|(name, value)| {
                                    (name.to_string(), value.to_str().unwrap_or("").to_owned())
                                })
                                .collect();
                            let mut seen = seen.lock().unwrap();
                            seen.requests.push((headers.clone(), body.clone()));
                            if seen.requests.len() <= seen.fail_first {
                                return HttpResponse::InternalServerError().finish();
                            }
                            let id = headers.get("webhook-id").cloned().unwrap_or_default();
                            seen.accepted.entry(id).or_insert(body);
                            HttpResponse::NoContent().finish()
                        },
                    ),
                )
            })
            .workers(1)
            .bind(("127.0.0.1", port))
            .unwrap()
            .run()
            .await
            .unwrap();
        });
    });
    (format!("http://127.0.0.1:{port}/hook"), seen)
}

fn root() -> String {
    Token::user("acme", "root").role("otp.admin", "acme").sign()
}

async fn app_with_webhooks(backend: Backend) -> TestApp {
    Spawn::new(backend)
        .with(|settings| {
            settings.webhooks.enabled = true;
            settings.webhooks.allow_private_targets = true;
            settings.webhooks.poll_ms = 20;
            settings.webhooks.retry_base_ms = 100;
        })
        .start()
        .await
}

async fn webhooks_are_delivered_at_least_once_and_accepted_once(backend: Backend) {
    let app = app_with_webhooks(backend).await;
    // Signed with tessera's clock: now, so that a receiver's timestamp check passes.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    app.clock.set(tessera::domain::UnixMicros(
        i64::try_from(now.as_micros()).unwrap(),
    ));
    let (url, seen) = receiver(3);
    let added = app
        .post(
            Some(&root()),
            "/management/v1/webhooks",
            json!({"url": url, "types": ["replay_refused", "locked"]}),
        )
        .await;
    let body = added.assert_ok().clone();
    let secret = body["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{body}");
    // Two events it wants (a replay, a lock) among others it does not.
    app.post(
        Some(&root()),
        "/management/v1/policies/lockout",
        json!({"maxOtpAttempts": 2}),
    )
    .await
    .assert_ok();
    let alice = Token::user("acme", "alice").sign();
    let secret_totp = app.ready_for_login(&alice).await;
    let page = Token::user("acme", "login")
        .role("otp.check", "acme")
        .sign();
    let code = app.code(&secret_totp, 1);
    app.check(&page, "alice", &code).await.assert_ok();
    app.check(&page, "alice", &code).await;
    app.check(&page, "alice", "000000").await;
    // Retries are due by the tessera clock: move it along while waiting.
    let started = Instant::now();
    loop {
        if seen.lock().unwrap().accepted.len() == 2 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "accepted {:?}",
            seen.lock().unwrap().accepted
        );
        app.clock.advance_secs(1);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seen = seen.lock().unwrap();
    let kinds: BTreeSet<String> = seen
        .accepted
        .values()
        .map(|body| {
            serde_json::from_str::<Value>(body).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        kinds,
        BTreeSet::from(["locked".to_owned(), "replay_refused".to_owned()])
    );
    assert!(seen.requests.len() >= 5, "3 failures, then 2 deliveries");
    // Every request signed as the specification says, with the endpoint's secret.
    let key = base64_decode(secret.trim_start_matches("whsec_"));
    for (headers, body) in &seen.requests {
        let id = &headers["webhook-id"];
        let timestamp: i64 = headers["webhook-timestamp"].parse().unwrap();
        assert_eq!(
            headers["webhook-signature"],
            tessera::domain::webhook::signature(&key, id, timestamp, body.as_bytes())
        );
        assert_eq!(headers["content-type"], "application/json");
    }
    // And by the specification's own library, independently, as a receiver would check the
    // last request (its tolerance is 5 minutes of the wall clock: this test set tessera's
    // clock to now).
    let (headers, body) = seen.requests.last().unwrap().clone();
    drop(seen);
    verified_by_standardwebhooks(&secret, &headers, &body);
}

/// The official `standardwebhooks` Python package verifies a request as a receiver would.
fn verified_by_standardwebhooks(secret: &str, headers: &BTreeMap<String, String>, body: &str) {
    let script = "import json, sys\n\
        from standardwebhooks.webhooks import Webhook\n\
        secret, headers, body = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]\n\
        print(json.dumps(Webhook(secret).verify(body, headers)))\n";
    let wanted: BTreeMap<&str, &str> = ["webhook-id", "webhook-timestamp", "webhook-signature"]
        .into_iter()
        .map(|name| (name, headers[name].as_str()))
        .collect();
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            script,
            secret,
            &serde_json::to_string(&wanted).unwrap(),
            body,
        ])
        .output()
        .expect("python3 with standardwebhooks (scripts/test installs it)");
    assert!(
        out.status.success(),
        "standardwebhooks refused it: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let payload: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(payload, serde_json::from_str::<Value>(body).unwrap());
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap()
}

#[actix_web::test]
async fn webhooks_are_delivered_at_least_once_and_accepted_once_on_redis() {
    webhooks_are_delivered_at_least_once_and_accepted_once(Backend::Redis).await;
}

#[actix_web::test]
async fn webhooks_are_delivered_at_least_once_and_accepted_once_in_memory() {
    webhooks_are_delivered_at_least_once_and_accepted_once(Backend::Memory).await;
}

#[actix_web::test]
async fn endpoints_refuse_private_and_plain_targets_unless_allowed() {
    let app = Spawn::new(Backend::Memory).start().await;
    for url in [
        "http://hooks.example.com/x",
        "https://10.0.0.5/x",
        "https://127.0.0.1/x",
        "not a url",
    ] {
        app.post(
            Some(&root()),
            "/management/v1/webhooks",
            json!({"url": url}),
        )
        .await
        .assert_error(400, 3, "TESSERA-hook1");
    }
    let added = app
        .post(
            Some(&root()),
            "/management/v1/webhooks",
            json!({"url": "https://hooks.example.com/tessera"}),
        )
        .await;
    let id = added.assert_ok()["id"].as_str().unwrap().to_owned();
    assert_eq!(
        added.body["types"],
        json!([
            "replay_refused",
            "locked",
            "removed",
            "recovery_code_used",
            "recovery_codes_generated"
        ])
    );
    let listed = app
        .send(
            app.client
                .get(app.url("/management/v1/webhooks"))
                .bearer_auth(root()),
        )
        .await;
    let body = listed.assert_ok();
    assert_eq!(body["result"][0]["id"], id.as_str());
    assert!(
        body["result"][0].get("secret").is_none(),
        "the secret is shown once"
    );
    app.delete(Some(&root()), &format!("/management/v1/webhooks/{id}"))
        .await
        .assert_ok();
    app.delete(Some(&root()), &format!("/management/v1/webhooks/{id}"))
        .await
        .assert_error(404, 5, "TESSERA-hook2");
    let alice = Token::user("acme", "alice").sign();
    app.post(
        Some(&alice),
        "/management/v1/webhooks",
        json!({"url": "https://x.example"}),
    )
    .await
    .assert_error(403, 7, "TESSERA-perm1");
}

/// A replica that took events to deliver and died before it finished leaves them pending in
/// the feed's consumer group: another replica claims them once they are idle long enough,
/// and delivers them.
async fn a_dead_replicas_deliveries_are_taken_over(backend: Backend) {
    let redis = (backend == Backend::Redis).then(|| Arc::new(crate::helpers::RedisServer::start()));
    let memory: tessera::store::SharedStore = Arc::new(tessera::store::MemoryStore::new());
    let shared = |spawn: Spawn| match &redis {
        Some(redis) => spawn.redis(redis.clone()),
        None => spawn.store(memory.clone()),
    };
    // The first replica serves the calls; its deliverer is off.
    let first = shared(Spawn::new(backend))
        .with(|settings| settings.webhooks.allow_private_targets = true)
        .start()
        .await;
    let (url, seen) = receiver(0);
    first
        .post(
            Some(&root()),
            "/management/v1/webhooks",
            json!({"url": url, "types": ["locked"]}),
        )
        .await
        .assert_ok();
    let page = Token::user("acme", "login")
        .role("otp.check", "acme")
        .sign();
    first
        .post(
            Some(&root()),
            "/management/v1/policies/lockout",
            json!({"maxOtpAttempts": 1}),
        )
        .await
        .assert_ok();
    first
        .ready_for_login(&Token::user("acme", "alice").sign())
        .await;
    first.check(&page, "alice", "000000").await;
    // A deliverer that took the feed's entries and died: read, never acknowledged.
    let store = &first.registry.deps().store;
    let deadline = Instant::now() + Duration::from_secs(2);
    let started = Instant::now();
    let taken = loop {
        let taken = store
            .take_feed(
                "acme",
                "replica-that-died",
                Duration::from_secs(3600),
                100,
                deadline,
            )
            .await
            .unwrap();
        if taken.iter().any(|event| event.kind.as_str() == "locked") {
            break taken;
        }
        assert!(started.elapsed() < Duration::from_secs(2), "{taken:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(!taken.is_empty());
    // A second replica with a deliverer, claiming what is idle for a second.
    let second = shared(Spawn::new(backend))
        .with(|settings| {
            settings.webhooks.enabled = true;
            settings.webhooks.allow_private_targets = true;
            settings.webhooks.poll_ms = 20;
            settings.webhooks.claim_idle_secs = 1;
        })
        .start()
        .await;
    let started = Instant::now();
    while seen.lock().unwrap().accepted.is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the second replica never took over"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seen = seen.lock().unwrap();
    let body: Value = serde_json::from_str(seen.accepted.values().next().unwrap()).unwrap();
    assert_eq!(body["type"], "locked");
    assert_eq!(body["data"]["userId"], "alice");
    drop(second);
}

#[actix_web::test]
async fn a_dead_replicas_deliveries_are_taken_over_on_redis() {
    a_dead_replicas_deliveries_are_taken_over(Backend::Redis).await;
}

#[actix_web::test]
async fn a_dead_replicas_deliveries_are_taken_over_in_memory() {
    a_dead_replicas_deliveries_are_taken_over(Backend::Memory).await;
}

/// A receiver that never answers 2xx: the delivery is tried again and again for the retry
/// period, then becomes a dead letter an admin reads and replays (to a receiver that has
/// recovered by then).
#[actix_web::test]
async fn deliveries_that_keep_failing_become_dead_letters_and_replay() {
    let app = Spawn::new(Backend::Redis)
        .with(|settings| {
            settings.webhooks.enabled = true;
            settings.webhooks.allow_private_targets = true;
            settings.webhooks.poll_ms = 20;
            settings.webhooks.retry_base_ms = 100;
            settings.webhooks.retry_for_secs = 5;
        })
        .start()
        .await;
    let (url, seen) = receiver(usize::MAX);
    app.post(
        Some(&root()),
        "/management/v1/webhooks",
        json!({"url": url, "types": ["recovery_codes_generated"]}),
    )
    .await
    .assert_ok();
    app.post(
        Some(&root()),
        "/v2/users/alice/recovery_codes",
        json!({"count": 1}),
    )
    .await
    .assert_ok();
    let started = Instant::now();
    let dead = loop {
        let listed = app
            .send(
                app.client
                    .get(app.url("/management/v1/webhooks/dead_letters"))
                    .bearer_auth(root()),
            )
            .await;
        let result = listed.assert_ok()["result"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if !result.is_empty() {
            break result;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no dead letter"
        );
        app.clock.advance_secs(1);
        tokio::time::sleep(Duration::from_millis(30)).await;
    };
    assert_eq!(dead.len(), 1);
    assert!(dead[0]["attempts"].as_u64().unwrap() >= 2, "{dead:?}");
    let tries = seen.lock().unwrap().requests.len();
    assert!(tries >= 2, "tried again before giving up: {tries}");
    // The receiver recovers; the admin replays.
    seen.lock().unwrap().fail_first = 0;
    let replayed = app
        .post(
            Some(&root()),
            "/management/v1/webhooks/dead_letters/_replay",
            json!({}),
        )
        .await;
    assert_eq!(replayed.assert_ok()["replayed"], 1);
    let started = Instant::now();
    while seen.lock().unwrap().accepted.is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the replay was not delivered"
        );
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains("tessera_webhook_dead_letters_total 1"),
        "{metrics}"
    );
}

/// The instance's own endpoint, from the configuration, hears every organization.
#[actix_web::test]
async fn the_instance_endpoint_hears_every_organization() {
    let (url, seen) = receiver(0);
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let app = Spawn::new(Backend::Redis)
        .with(|settings| {
            settings.webhooks.enabled = true;
            settings.webhooks.allow_private_targets = true;
            settings.webhooks.poll_ms = 20;
            settings.webhooks.instance_url = url.clone();
            settings.webhooks.instance_secret = secret.to_owned().into();
            settings.webhooks.instance_types = vec!["enrolled".into()];
        })
        .start()
        .await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    app.clock.set(tessera::domain::UnixMicros(
        i64::try_from(now.as_micros()).unwrap(),
    ));
    // Let the deliverer register the endpoint first: it hears what happens from then on.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for org in ["acme", "globex"] {
        app.add(&Token::user(org, "alice").sign()).await.assert_ok();
    }
    let started = Instant::now();
    while seen.lock().unwrap().accepted.len() < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            seen.lock().unwrap().accepted
        );
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let (orgs, headers, body) = {
        let seen = seen.lock().unwrap();
        let orgs: BTreeSet<String> = seen
            .accepted
            .values()
            .map(|body| {
                let body: Value = serde_json::from_str(body).unwrap();
                assert_eq!(body["type"], "enrolled");
                body["data"]["organizationId"].as_str().unwrap().to_owned()
            })
            .collect();
        let (headers, body) = seen.requests.last().unwrap().clone();
        (orgs, headers, body)
    };
    assert_eq!(
        orgs,
        BTreeSet::from(["acme".to_owned(), "globex".to_owned()])
    );
    verified_by_standardwebhooks(secret, &headers, &body);
    // Not an organization's: no admin lists or removes it.
    let listed = app
        .send(
            app.client
                .get(app.url("/management/v1/webhooks"))
                .bearer_auth(root()),
        )
        .await;
    assert_eq!(listed.assert_ok()["result"], json!([]));
}

#[test]
fn a_bad_instance_endpoint_is_named_at_start() {
    let mut settings = crate::helpers::base_settings();
    settings.webhooks.instance_url = "http://hooks.example.com/x".into();
    settings.webhooks.instance_secret = "nope".to_owned().into();
    settings.webhooks.instance_types = vec!["nope".into()];
    let Err(tessera::settings::SettingsError::Invalid(problems)) =
        settings.parse(tessera::settings::Mode::Dev)
    else {
        panic!("accepted");
    };
    let text = problems.join("\n");
    for wanted in [
        "webhooks.instance_url",
        "webhooks.instance_secret",
        "webhooks.instance_types",
    ] {
        assert!(text.contains(wanted), "{text}");
    }
}

#[test]
fn the_instance_endpoints_types_come_from_the_environment_comma_separated() {
    let mut settings = crate::helpers::settings_with_env(&[
        (
            "TESSERA__WEBHOOKS__INSTANCE_URL",
            "https://hooks.example.com/tessera",
        ),
        (
            "TESSERA__WEBHOOKS__INSTANCE_SECRET",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        ),
        ("TESSERA__WEBHOOKS__INSTANCE_TYPES", "locked,removed"),
    ]);
    assert_eq!(settings.webhooks.instance_types, ["locked", "removed"]);
    // (The tests' settings turn deliveries off.)
    settings.webhooks.enabled = true;
    let config = settings.parse(tessera::settings::Mode::Dev).unwrap();
    let instance = config.webhooks.unwrap().instance.unwrap();
    assert_eq!(instance.url, "https://hooks.example.com/tessera");
    assert_eq!(instance.kinds.len(), 2);
}
