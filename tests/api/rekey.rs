//! Retiring a seal key: rotate (a new key first), `tessera rekey` (the real binary), drop
//! the old key, and every user still logs in; on one Redis and on a 3-master cluster.

use std::process::Command;
use std::sync::Arc;

use base64::Engine;
use tessera::clock::ManualClock;
use tessera::domain::UnixMicros;

use crate::helpers::{Backend, PINNED_SECS, RedisCluster, RedisServer, Spawn, Token};

fn entry(id: &str, byte: u8) -> String {
    let key = base64::engine::general_purpose::STANDARD.encode([byte; 32]);
    format!("{id}:{key}")
}

/// Where the apps of one test keep their data.
#[derive(Clone)]
enum Shared {
    Redis(Arc<RedisServer>),
    Cluster(Arc<RedisCluster>),
}

impl Shared {
    fn start(backend: Backend) -> Self {
        match backend {
            Backend::Cluster => Self::Cluster(Arc::new(RedisCluster::start(3, 0))),
            _ => Self::Redis(Arc::new(RedisServer::start())),
        }
    }

    async fn app(&self, clock: &Arc<ManualClock>, ring: String) -> crate::helpers::TestApp {
        let spawn = match self {
            Self::Redis(redis) => Spawn::new(Backend::Redis).redis(redis.clone()),
            Self::Cluster(cluster) => Spawn::new(Backend::Cluster).cluster(cluster.clone()),
        };
        spawn
            .clock(clock.clone())
            .with(move |s| s.seal.keys = ring.into())
            .start()
            .await
    }

    /// `tessera rekey` with `ring`, as an operator runs it: its stdout, or its failure.
    fn rekey(&self, ring: &str) -> Result<String, String> {
        let (mode, url) = match self {
            Self::Redis(redis) => ("standalone", redis.url()),
            Self::Cluster(cluster) => ("cluster", cluster.seeds()),
        };
        let jwks = crate::helpers::fixture("jwks.json");
        let output = Command::new(env!("CARGO_BIN_EXE_tessera"))
            .args(["rekey", "--env", "none", "--page", "7"])
            .env("TESSERA__STORE__KIND", "redis")
            .env("TESSERA__REDIS__MODE", mode)
            .env("TESSERA__REDIS__URL", url)
            .env(
                "TESSERA__REDIS__KEY_PREFIX",
                crate::helpers::base_settings().redis.key_prefix,
            )
            .env("TESSERA__SEAL__KEYS", ring)
            .env("TESSERA__AUTH__JWKS_FILE", jwks)
            .env("TESSERA__AUTH__ISSUER", "https://issuer.test")
            .env("TESSERA__AUTH__AUDIENCE", "tessera")
            .env_remove("RUST_LOG")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if output.status.success() {
            Ok(stdout)
        } else {
            Err(format!(
                "{stdout}{}",
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    }
}

async fn a_seal_key_retires_after_a_rekey(backend: Backend) {
    let shared = Shared::start(backend);
    let clock = Arc::new(ManualClock::new(UnixMicros::from_secs(PINNED_SECS)));
    let (old, new) = (entry("old", 1), entry("new", 2));

    // Under the old key alone: 24 users in two organizations, ready, and one half enrolled.
    let before = shared.app(&clock, old.clone()).await;
    let mut users = Vec::new();
    for i in 0..24 {
        let (org, user) = (["acme", "globex"][i % 2], format!("u{i}"));
        let token = Token::user(org, &user).role("otp.check", org).sign();
        let secret = before.enroll_ready(&token).await;
        users.push((token, user, secret));
    }
    let pending_token = Token::user("acme", "pending").sign();
    let pending = before.add(&pending_token).await.assert_ok()["secret"]
        .as_str()
        .unwrap()
        .to_owned();

    // Rotated: the new key first. A key ring without the old key cannot rekey them.
    let rotated = shared.app(&clock, format!("{new},{old}")).await;
    let newcomer = Token::user("acme", "newcomer")
        .role("otp.check", "acme")
        .sign();
    let newcomer_secret = rotated.enroll_ready(&newcomer).await;
    let refused = shared.rekey(&new).unwrap_err();
    assert!(refused.contains("25 failed"), "{refused}");

    let first = shared.rekey(&format!("{new},{old}")).unwrap();
    assert!(first.contains("found under key \"old\": 25"), "{first}");
    let primaries = if matches!(shared, Shared::Cluster(_)) {
        "3 primaries"
    } else {
        "1 primary"
    };
    assert!(
        first.contains(&format!("26 scanned on {primaries}:")),
        "{first}"
    );
    assert!(
        first.contains("25 resealed, 1 already under the first key"),
        "{first}"
    );
    let second = shared.rekey(&format!("{new},{old}")).unwrap();
    assert!(
        second.contains("0 resealed, 26 already under the first key"),
        "{second}"
    );
    assert!(
        second.contains("every enrollment is under key \"new\""),
        "{second}"
    );
    drop(rotated);

    // The old key is gone: everyone logs in, the half-enrolled user can still verify.
    let retired = shared.app(&clock, new.clone()).await;
    clock.advance_secs(i64::from(retired.params.period_secs()));
    for (token, user, secret) in &users {
        retired
            .check(token, user, &retired.code(secret, 0))
            .await
            .assert_ok();
    }
    retired
        .check(&newcomer, "newcomer", &retired.code(&newcomer_secret, 0))
        .await
        .assert_ok();
    retired
        .verify(&pending_token, &retired.code(&pending, 0))
        .await
        .assert_ok();
}

#[actix_web::test]
async fn a_seal_key_retires_after_a_rekey_on_one_redis() {
    a_seal_key_retires_after_a_rekey(Backend::Redis).await;
}

#[actix_web::test]
async fn a_seal_key_retires_after_a_rekey_on_a_cluster() {
    a_seal_key_retires_after_a_rekey(Backend::Cluster).await;
}

/// Recovery codes keep only their hashes, so a rekey cannot move them: it counts those under
/// older keys, says the older keys are still needed, and a rotation keeps them working.
#[actix_web::test]
async fn a_rekey_counts_the_recovery_codes_that_still_need_an_older_key() {
    let shared = Shared::start(Backend::Redis);
    let clock = Arc::new(ManualClock::new(UnixMicros::from_secs(PINNED_SECS)));
    let (old, new) = (entry("old", 1), entry("new", 2));
    let before = shared.app(&clock, old.clone()).await;
    let alice = Token::user("acme", "alice").sign();
    let generated = before
        .post(
            Some(&alice),
            "/v2/users/alice/recovery_codes",
            serde_json::json!({ "count": 3 }),
        )
        .await;
    let codes = generated.assert_ok()["recoveryCodes"].clone();

    let rotated = shared.app(&clock, format!("{new},{old}")).await;
    let report = shared.rekey(&format!("{new},{old}")).unwrap();
    assert!(
        report.contains("recovery codes under key \"old\": 3"),
        "{report}"
    );
    assert!(
        report.contains("keep the older keys the recovery codes above need"),
        "{report}"
    );
    assert!(report.contains("0 scanned on 1 primary"), "{report}");
    // A code made under the old key works under the rotated ring, and the count goes down.
    let checker = Token::user("acme", "login")
        .role("otp.check", "acme")
        .sign();
    rotated
        .post(
            Some(&checker),
            "/management/v1/users/alice/auth_factors/otp/_check",
            serde_json::json!({ "recoveryCode": codes[0] }),
        )
        .await
        .assert_ok();
    let again = shared.rekey(&format!("{new},{old}")).unwrap();
    assert!(
        again.contains("recovery codes under key \"old\": 2"),
        "{again}"
    );
}
