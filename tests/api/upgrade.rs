//! A rolling upgrade, on a real redis-server: the previous release's scripts (format 1, kept
//! as fixtures in `tests/fixtures/format-1`) and this release share the users. Records the
//! old scripts wrote are served right by this release; records this release writes are
//! served right by the old scripts and parse as the old reader requires. (`scripts/rolling-
//! upgrade` runs the previous release's binary itself beside this one.)

use std::collections::HashMap;
use std::sync::Arc;

use rand::RngCore;
use redis::aio::MultiplexedConnection;
use redis::{Script, Value};
use secrecy::SecretString;
use tessera::seal::KeyRing;

use crate::helpers::{Backend, RedisServer, Spawn, TestApp, Token, base_settings, code_with};

/// The previous release's scripts, run as it ran them.
struct Format1 {
    connection: MultiplexedConnection,
    add: Script,
    attempt: Script,
    remove: Script,
}

impl Format1 {
    async fn new(redis: &RedisServer) -> Self {
        let client = redis::Client::open(redis.url()).unwrap();
        Self {
            connection: client.get_multiplexed_async_connection().await.unwrap(),
            add: Script::new(include_str!("../fixtures/format-1/add.lua")),
            attempt: Script::new(include_str!("../fixtures/format-1/attempt.lua")),
            remove: Script::new(include_str!("../fixtures/format-1/remove.lua")),
        }
    }

    async fn run(&mut self, script: &Script, key: &str, args: &[Vec<u8>]) -> Vec<Value> {
        let mut invocation = script.key(key);
        for arg in args {
            invocation.arg(arg.as_slice());
        }
        invocation.invoke_async(&mut self.connection).await.unwrap()
    }

    /// Enrolls with the old `add.lua`; returns the secret.
    async fn enroll(&mut self, app: &TestApp, user: &str) -> Vec<u8> {
        let mut secret = vec![0u8; 20];
        rand::rng().fill_bytes(&mut secret);
        let sealed = seal_key().seal(&secret, "acme", user).unwrap();
        let args = [
            sealed,
            b"SHA1".to_vec(),
            b"6".to_vec(),
            b"30".to_vec(),
            now_micros(app),
        ];
        let reply = self.run(&self.add.clone(), &key(user), &args).await;
        assert_eq!(status(&reply), "ok", "{reply:?}");
        secret
    }

    /// A code attempt with the old `attempt.lua`, against the id the old reader takes (`f`).
    async fn attempt(
        &mut self,
        redis: &RedisServer,
        app: &TestApp,
        user: &str,
        state: u8,
        step: Option<u64>,
    ) -> Vec<Value> {
        let id = redis.hget(&key(user), "f");
        let step = step.map_or_else(|| "-1".to_owned(), |s| s.to_string());
        let args = [
            id.into_bytes(),
            state.to_string().into_bytes(),
            step.into_bytes(),
            now_micros(app),
            b"5".to_vec(),
            b"300000000".to_vec(),
        ];
        self.run(&self.attempt.clone(), &key(user), &args).await
    }
}

fn seal_key() -> KeyRing {
    let keys: &SecretString = &base_settings().seal.keys;
    KeyRing::parse(keys).unwrap()
}

fn key(user: &str) -> String {
    format!("tessera:{{acme:{user}}}")
}

fn now_micros(app: &TestApp) -> Vec<u8> {
    (app.now_secs() * 1_000_000).to_string().into_bytes()
}

fn status(reply: &[Value]) -> String {
    match reply.first() {
        Some(Value::BulkString(bytes)) => String::from_utf8(bytes.clone()).unwrap(),
        Some(Value::SimpleString(text)) => text.clone(),
        other => panic!("no status: {other:?}"),
    }
}

fn checker(user: &str) -> String {
    Token::user("acme", user).role("otp.check", "acme").sign()
}

fn code(app: &TestApp, secret: &[u8], offset: i64) -> String {
    let base32 = data_encoding::BASE32_NOPAD.encode(secret);
    code_with(&app.params, &base32, app.now_secs(), offset)
}

async fn app_on(redis: &Arc<RedisServer>) -> TestApp {
    Spawn::new(Backend::Redis)
        .redis(redis.clone())
        .start()
        .await
}

#[actix_web::test]
async fn records_of_the_previous_format_are_served() {
    let redis = Arc::new(RedisServer::start());
    let app = app_on(&redis).await;
    let mut old = Format1::new(&redis).await;
    let admin = Token::user("acme", "root").role("otp.admin", "acme").sign();

    // Enrolled by the previous release, verified and checked by this one.
    let alice = old.enroll(&app, "alice").await;
    assert_eq!(
        redis.hget(&key("alice"), "v"),
        "",
        "format 1 has no version"
    );
    app.verify(&checker("alice"), &code(&app, &alice, 0))
        .await
        .assert_ok();
    app.clock.advance_secs(30);
    let next = code(&app, &alice, 0);
    app.check(&checker("alice"), "alice", &next)
        .await
        .assert_ok();
    app.check(&checker("alice"), "alice", &next)
        .await
        .assert_error(400, 3, "EVENT-8isk2");
    assert_eq!(redis.hget(&key("alice"), "v"), "", "still format 1");

    // Verified by the previous release: its replay marker holds here.
    let bob = old.enroll(&app, "bob").await;
    let step = app.params.step_at(app.now_secs());
    let verified = old.attempt(&redis, &app, "bob", 1, Some(step)).await;
    assert_eq!(status(&verified), "ok", "{verified:?}");
    app.check(&checker("bob"), "bob", &code(&app, &bob, 0))
        .await
        .assert_error(400, 3, "EVENT-8isk2");
    // Locked by the previous release: locked here, and unlocked here.
    for _ in 0..5 {
        old.attempt(&redis, &app, "bob", 2, None).await;
    }
    app.clock.advance_secs(30);
    app.check(&checker("bob"), "bob", &code(&app, &bob, 0))
        .await
        .assert_error(400, 9, "COMMAND-SF3fg");
    app.unlock(&admin, "bob").await.assert_ok();
    app.check(&checker("bob"), "bob", &code(&app, &bob, 0))
        .await
        .assert_ok();

    // Removed and enrolled again by this release: the new record has format 4, and its
    // sequence continues above the old ones.
    let before: u64 = redis.hget(&key("bob"), "q").parse().unwrap();
    let removed = app
        .delete(Some(&admin), "/management/v1/users/bob/auth_factors/otp")
        .await;
    assert!(removed.sequence() > before);
    let added = app.add(&checker("bob")).await;
    assert!(added.sequence() > removed.sequence());
    assert_eq!(redis.hget(&key("bob"), "v"), "4");
}

/// What the previous release's reader requires of a record (its `record_from`): these fields,
/// parsing as these types.
fn assert_format1_reader_accepts(fields: &HashMap<String, Vec<u8>>) {
    let text = |name: &str| -> String {
        String::from_utf8(
            fields
                .get(name)
                .unwrap_or_else(|| panic!("{name} missing"))
                .clone(),
        )
        .unwrap()
    };
    assert!(["1", "2"].contains(&text("s").as_str()));
    text("f").parse::<u64>().unwrap();
    assert!(["SHA1", "SHA256", "SHA512"].contains(&text("a").as_str()));
    text("d").parse::<u8>().unwrap();
    text("p").parse::<u32>().unwrap();
    assert!(fields.contains_key("k"));
    text("q").parse::<u64>().unwrap();
    text("c").parse::<i64>().unwrap();
    text("m").parse::<i64>().unwrap();
    for optional in ["l", "n", "u"] {
        if fields.contains_key(optional) {
            text(optional).parse::<i64>().unwrap();
        }
    }
}

/// During a rolling upgrade (`redis.record_format = 3`), this release writes what the
/// previous release reads.
#[actix_web::test]
async fn records_of_this_format_are_served_by_the_previous_release() {
    let redis = Arc::new(RedisServer::start());
    let app = Spawn::new(Backend::Redis)
        .redis(redis.clone())
        .with(|settings| settings.redis.record_format = 3)
        .start()
        .await;
    let mut old = Format1::new(&redis).await;
    let erin = checker("erin");

    let secret = app.enroll_ready(&erin).await;
    let fields: HashMap<String, Vec<u8>> = {
        let client = redis::Client::open(redis.url()).unwrap();
        let mut connection = client.get_multiplexed_async_connection().await.unwrap();
        redis::cmd("HGETALL")
            .arg(key("erin"))
            .query_async(&mut connection)
            .await
            .unwrap()
    };
    assert_format1_reader_accepts(&fields);

    // The old scripts check codes of this release's enrollment, by the id the old reader takes.
    app.clock.advance_secs(30);
    let step = app.params.step_at(app.now_secs());
    let accepted = old.attempt(&redis, &app, "erin", 2, Some(step)).await;
    assert_eq!(status(&accepted), "ok", "{accepted:?}");
    let replayed = old.attempt(&redis, &app, "erin", 2, Some(step)).await;
    assert_eq!(status(&replayed), "invalid", "{replayed:?}");
    // ... and this release sees what they did.
    app.check(&erin, "erin", &app.code(&secret, 0))
        .await
        .assert_error(400, 3, "EVENT-8isk2");

    // The old release re-enrolls while this one caches the enrollment: its cached copy is
    // stale, and the old secret's codes never commit.
    let removed = old
        .run(&old.remove.clone(), &key("erin"), &[now_micros(&app)])
        .await;
    assert_eq!(status(&removed), "ok");
    let renewed = old.enroll(&app, "erin").await;
    let verified = old
        .attempt(
            &redis,
            &app,
            "erin",
            1,
            Some(app.params.step_at(app.now_secs())),
        )
        .await;
    assert_eq!(status(&verified), "ok");
    app.clock.advance_secs(30);
    app.check(&erin, "erin", &app.code(&secret, 0))
        .await
        .assert_error(400, 3, "EVENT-8isk2");
    app.check(&erin, "erin", &code(&app, &renewed, 0))
        .await
        .assert_ok();
}

/// Format 4 (`redis.record_format = 4`, the default): an enrollment with the parameters every
/// app assumes leaves them out (and format 1's id, `f`), and keeps its format when it gains recovery codes (a format-3
/// release must go on refusing it); one with other parameters names them; a replica that did
/// not write the record reads it right. Format 3 names them always.
#[actix_web::test]
async fn compact_records_leave_the_implied_parameters_out() {
    let redis = Arc::new(RedisServer::start());
    let app = app_on(&redis).await;
    let erin = checker("erin");
    let secret = app.enroll_ready(&erin).await;
    let fields = |user: &str| ["v", "a", "d", "p", "f"].map(|name| redis.hget(&key(user), name));
    assert_eq!(fields("erin"), ["4", "", "", "", ""]);
    let owner = Token::user("acme", "erin").sign();
    app.clock.advance_secs(30);
    app.post(
        Some(&owner),
        "/v2/users/erin/recovery_codes",
        serde_json::json!({ "totpCode": app.code(&secret, 0) }),
    )
    .await
    .assert_ok();
    assert_eq!(fields("erin"), ["4", "", "", "", ""], "codes keep format 4");
    let other_replica = app_on(&redis).await;
    other_replica.clock.advance_secs(60);
    other_replica
        .check(&erin, "erin", &other_replica.code(&secret, 0))
        .await
        .assert_ok();
    other_replica
        .check(&erin, "erin", &other_replica.code(&secret, 0))
        .await
        .assert_error(400, 3, "EVENT-8isk2");

    let eight_digits = Spawn::new(Backend::Redis)
        .redis(redis.clone())
        .with(|settings| settings.totp.digits = 8)
        .start()
        .await;
    let frank = checker("frank");
    let secret = eight_digits.enroll_ready(&frank).await;
    let [v, a, d, p, f] = fields("frank");
    assert_eq!([v, a, d, p], ["2", "SHA1", "8", "30"]);
    assert!(f.parse::<u64>().is_ok(), "format 1's id: {f}");
    // The other replica's policy says 6 digits; the record says 8, and rules.
    let code = code_with(&eight_digits.params, &secret, other_replica.now_secs(), 0);
    assert_eq!(code.len(), 8);
    other_replica
        .check(&frank, "frank", &code)
        .await
        .assert_ok();

    let explicit = Spawn::new(Backend::Redis)
        .redis(redis.clone())
        .with(|settings| settings.redis.record_format = 3)
        .start()
        .await;
    explicit.enroll_ready(&checker("gina")).await;
    let [v, a, d, p, f] = fields("gina");
    assert_eq!([v, a, d, p], ["2", "SHA1", "6", "30"]);
    assert!(f.parse::<u64>().is_ok(), "format 1's id: {f}");
}
