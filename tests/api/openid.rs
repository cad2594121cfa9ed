//! Against a real OpenID provider (node-oidc-provider, `tests/oidc/provider.mjs`) on loopback:
//! opaque tokens by introspection, JWT access tokens through the discovered `jwks_uri`,
//! revocation, key rotation, and the provider going away and coming back; and, against a
//! stand-in endpoint that stalls, the cap on calls in number and in time.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tessera::settings::Settings;

use crate::helpers::{Answer, Backend, Spawn, TempDir, TestApp, base_settings};

/// The audience of the provider's access tokens: the project id, as with ZITADEL.
const AUDIENCE: &str = "290146371530489879";

/// The provider as a child process; its keys and the introspection key file live in
/// `state`, which outlives restarts (its tokens do not: its store is in memory).
struct Provider {
    child: Option<Child>,
    port: u16,
    state: TempDir,
    http: reqwest::Client,
}

impl Provider {
    /// Started with these signing key ids (the first signs).
    fn start(kids: &str) -> Self {
        let mut provider = Self {
            child: None,
            port: 0,
            state: TempDir::new("openid"),
            // No pooled connections: they would outlive a restarted provider.
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .unwrap(),
        };
        provider.run(kids);
        provider
    }

    fn run(&mut self, kids: &str) {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/oidc");
        assert!(
            dir.join("node_modules/oidc-provider").exists(),
            "the test OpenID provider is not installed: run `npm ci --prefix tests/oidc` (scripts/test does)"
        );
        // Its output goes to a file: a pipe closed by the test would kill it at its next
        // line (EPIPE).
        let log_path = self.state.0.join(format!("provider-{kids}.log"));
        let log = std::fs::File::create(&log_path).unwrap();
        let child = Command::new("node")
            .arg(dir.join("provider.mjs"))
            .env("PORT", self.port.to_string())
            .env("STATE_DIR", &self.state.0)
            .env("SIGNING_KIDS", kids)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("node runs");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        self.port = loop {
            let output = std::fs::read_to_string(&log_path).unwrap_or_default();
            if let Some(port) = output
                .lines()
                .find_map(|line| line.strip_prefix("listening ")?.trim().parse().ok())
            {
                break port;
            }
            assert!(
                Instant::now() < deadline,
                "the provider did not start:\n{output}"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stopped and started again on the same port with these signing keys.
    fn restart(&mut self, kids: &str) {
        self.stop();
        self.run(kids);
    }

    fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A client-credentials access token of `client` (a user of the provider's fixture):
    /// opaque, or a JWT.
    async fn token(&self, client: &str, jwt: bool) -> String {
        let mut form = vec![("grant_type", "client_credentials"), ("scope", "otp")];
        if jwt {
            form.push(("resource", "https://tessera.test/jwt"));
        }
        let answer: Value = self
            .http
            .post(format!("{}/token", self.issuer()))
            .basic_auth(client, Some(format!("{client}-secret")))
            .form(&form)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        answer["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no token: {answer}"))
            .to_owned()
    }

    /// RFC 7009 revocation, by the client the token was issued to.
    async fn revoke(&self, client: &str, token: &str) {
        let response = self
            .http
            .post(format!("{}/token/revocation", self.issuer()))
            .basic_auth(client, Some(format!("{client}-secret")))
            .form(&[("token", token)])
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{response:?}");
    }

    /// ZITADEL's JSON key file of the `tessera-key` API application.
    fn key_file(&self) -> PathBuf {
        self.state.0.join("tessera-key.json")
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        self.stop();
    }
}

/// tessera discovering `provider` (no JWKS file), introspecting with client_secret_basic.
fn settings_for(provider: &Provider) -> Settings {
    let mut s = base_settings();
    s.auth.jwks_file = String::new();
    s.auth.issuer = provider.issuer();
    s.auth.audience = AUDIENCE.into();
    s.auth.introspection_client_id = "tessera".into();
    s.auth.introspection_client_secret = "tessera-secret".to_owned().into();
    s
}

async fn start(settings: Settings) -> TestApp {
    Spawn::new(Backend::Memory).settings(settings).start().await
}

async fn search(app: &TestApp, token: &str) -> Answer {
    app.post(
        Some(token),
        "/auth/v1/users/me/auth_factors/_search",
        json!({}),
    )
    .await
}

/// A counter of `/metrics` with these labels (zero when absent).
async fn counter(app: &TestApp, name: &str, labels: &str) -> u64 {
    let wanted = format!("{name}{{{labels}}} ");
    app.metrics_text()
        .await
        .lines()
        .find_map(|line| line.strip_prefix(&wanted)?.trim().parse().ok())
        .unwrap_or(0)
}

/// Polls `probe` until it holds, for at most `within` (a bound for a slow machine, not a
/// timing claim: the README says when each change takes effect).
async fn eventually<F, Fut>(within: Duration, what: &str, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !probe().await {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Enrolls the token's user and verifies the factor; the answers name its organization.
async fn enroll_and_verify(app: &TestApp, token: &str, org: &str) {
    let added = app.add(token).await;
    let secret = added.assert_ok()["secret"].as_str().unwrap().to_owned();
    assert_eq!(added.body["details"]["resourceOwner"], org);
    let verified = app.verify(token, &app.code(&secret, 0)).await;
    assert_eq!(verified.assert_ok()["details"]["resourceOwner"], org);
}

#[actix_web::test]
async fn an_opaque_token_from_the_provider_enrolls_and_verifies() {
    let provider = Provider::start("k1");
    let app = start(settings_for(&provider)).await;
    let token = provider.token("alice", false).await;
    assert_eq!(token.matches('.').count(), 0, "an opaque token: {token}");
    enroll_and_verify(&app, &token, "acme").await;
    // The organization comes from the token's claim: mallory of globex sees no factor of
    // alice's, and has none of her own.
    let other = provider.token("mallory", false).await;
    let listed = search(&app, &other).await;
    assert_eq!(listed.assert_ok().get("result"), None, "{listed:?}");
    // A token the provider never issued is refused as ZITADEL refuses it.
    search(&app, "made-up-opaque-token")
        .await
        .assert_error(401, 16, "AUTH-7fs1e");
}

/// ZITADEL's JWT profile: an API application's JSON key file, `private_key_jwt`.
#[actix_web::test]
async fn zitadels_key_file_authenticates_the_introspection_calls() {
    let provider = Provider::start("k1");
    let mut settings = settings_for(&provider);
    settings.auth.introspection_client_id = String::new();
    settings.auth.introspection_client_secret = String::new().into();
    settings.auth.introspection_key_file = provider.key_file().to_string_lossy().into_owned();
    let app = start(settings).await;
    enroll_and_verify(&app, &provider.token("bob", false).await, "acme").await;
    // A second token is a second call with a fresh assertion: the provider refuses an
    // assertion's `jti` it has seen (RFC 7523's replay rule).
    search(&app, &provider.token("alice", false).await)
        .await
        .assert_ok();
    assert_eq!(
        counter(
            &app,
            "tessera_introspection_calls_total",
            "outcome=\"active\""
        )
        .await,
        2
    );
}

#[actix_web::test]
async fn a_jwt_from_the_provider_verifies_through_the_discovered_keys_and_is_never_introspected() {
    let provider = Provider::start("k1");
    let app = start(settings_for(&provider)).await;
    let token = provider.token("alice", true).await;
    assert_eq!(token.matches('.').count(), 2, "a JWT: {token}");
    enroll_and_verify(&app, &token, "acme").await;
    // A forged JWT (the signature of another token) is refused without asking the provider.
    let real = provider.token("ops", true).await;
    let forged = format!(
        "{}.{}",
        token.rsplit_once('.').unwrap().0,
        real.rsplit_once('.').unwrap().1
    );
    search(&app, &forged)
        .await
        .assert_error(401, 16, "AUTH-7fs1e");
    let calls = app.metrics_text().await;
    for outcome in ["active", "inactive", "error"] {
        assert!(
            calls.contains(&format!(
                "tessera_introspection_calls_total{{outcome=\"{outcome}\"}} 0"
            )),
            "{calls}"
        );
    }
}

#[actix_web::test]
async fn one_token_asked_for_at_once_is_introspected_once_and_then_remembered() {
    let provider = Provider::start("k1");
    let mut settings = settings_for(&provider);
    settings.auth.introspection_negative_cache_secs = 600;
    let app = start(settings).await;
    let token = provider.token("alice", false).await;
    let answers = futures::future::join_all((0..24).map(|_| search(&app, &token))).await;
    for answer in &answers {
        answer.assert_ok();
    }
    search(&app, &token).await.assert_ok();
    let active = "outcome=\"active\"";
    assert_eq!(
        counter(&app, "tessera_introspection_calls_total", active).await,
        1
    );
    assert!(counter(&app, "tessera_introspection_cache_total", "result=\"hit\"").await >= 1);
    // A flood of one made-up token is one call too.
    for _ in 0..10 {
        search(&app, "garbage")
            .await
            .assert_error(401, 16, "AUTH-7fs1e");
    }
    let inactive = "outcome=\"inactive\"";
    assert_eq!(
        counter(&app, "tessera_introspection_calls_total", inactive).await,
        1
    );
}

#[actix_web::test]
async fn a_revoked_token_is_refused_once_its_remembered_answer_runs_out() {
    let provider = Provider::start("k1");
    let mut settings = settings_for(&provider);
    settings.auth.introspection_cache_secs = 1;
    let app = start(settings).await;
    let token = provider.token("alice", false).await;
    search(&app, &token).await.assert_ok();
    provider.revoke("alice", &token).await;
    eventually(
        Duration::from_secs(20),
        "the revoked token is refused",
        || async { search(&app, &token).await.status == 401 },
    )
    .await;
    search(&app, &token)
        .await
        .assert_error(401, 16, "AUTH-7fs1e");
    // Another token of the same user still works.
    search(&app, &provider.token("alice", false).await)
        .await
        .assert_ok();
}

#[actix_web::test]
async fn rotated_keys_are_taken_without_a_restart_and_removed_keys_stop_verifying() {
    let mut provider = Provider::start("k1");
    let mut settings = settings_for(&provider);
    settings.auth.jwks_refetch_min_interval_secs = 1;
    settings.auth.jwks_refresh_secs = 1;
    let app = start(settings).await;
    let old = provider.token("alice", true).await;
    search(&app, &old).await.assert_ok();
    // A new key signs; the old one is still published.
    provider.restart("k2,k1");
    let new = provider.token("alice", true).await;
    assert!(kid(&new) == "k2" && kid(&old) == "k1");
    eventually(
        Duration::from_secs(20),
        "a token of the new key works",
        || async { search(&app, &new).await.status == 200 },
    )
    .await;
    search(&app, &old).await.assert_ok();
    // The old key leaves the set: its token stops working without any token of a new kid
    // being presented (the periodic refresh forgets the key and its remembered tokens).
    provider.restart("k2");
    eventually(
        Duration::from_secs(20),
        "the old key's token is refused",
        || async { search(&app, &old).await.status == 401 },
    )
    .await;
    search(&app, &new).await.assert_ok();
}

fn kid(token: &str) -> String {
    use base64::Engine;
    let header = token.split('.').next().unwrap();
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .unwrap();
    serde_json::from_slice::<Value>(&header).unwrap()["kid"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[actix_web::test]
async fn with_the_provider_down_remembered_tokens_work_and_new_ones_are_unavailable() {
    let mut provider = Provider::start("k1");
    let app = start(settings_for(&provider)).await;
    let remembered = provider.token("alice", false).await;
    let unseen = provider.token("bob", false).await;
    let jwt = provider.token("ops", true).await;
    search(&app, &remembered).await.assert_ok();
    search(&app, &jwt).await.assert_ok();
    provider.stop();
    search(&app, &remembered).await.assert_ok();
    search(&app, &jwt).await.assert_ok();
    let unavailable = search(&app, &unseen).await;
    unavailable.assert_error(503, 14, "TESSERA-idp1");
    assert!(
        counter(
            &app,
            "tessera_token_verification_failures_total",
            "reason=\"unchecked\""
        )
        .await
            >= 1
    );
    // Back (with an empty store: it forgets the tokens it issued before): what it issues
    // now works, without a restart of tessera.
    provider.restart("k1");
    let fresh = provider.token("bob", false).await;
    search(&app, &fresh).await.assert_ok();
}

/// An introspection endpoint that holds each call for `hold`, answering every token active
/// for alice of acme, and counts the calls it holds at once (the peak).
async fn slow_introspection(hold: Duration, peak: Arc<AtomicUsize>) -> String {
    use actix_web::{App, HttpResponse, HttpServer, web};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let in_flight = Arc::new(AtomicUsize::new(0));
    let server = HttpServer::new(move || {
        let (in_flight, peak) = (in_flight.clone(), peak.clone());
        App::new().route(
            "/introspect",
            web::post().to(move || {
                let (in_flight, peak) = (in_flight.clone(), peak.clone());
                async move {
                    let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(hold).await;
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                    HttpResponse::Ok().json(json!({
                        "active": true, "sub": "alice", "aud": crate::helpers::AUDIENCE,
                        "iss": crate::helpers::ISSUER,
                        "urn:zitadel:iam:user:resourceowner:id": "acme",
                    }))
                }
            }),
        )
    })
    .workers(1)
    .listen(listener)
    .unwrap()
    .run();
    actix_rt::spawn(server);
    format!("http://127.0.0.1:{port}/introspect")
}

fn settings_with_introspection(
    endpoint: String,
    max_concurrent: usize,
    timeout_ms: u64,
) -> Settings {
    let mut s = base_settings();
    s.auth.introspection_url = endpoint;
    s.auth.introspection_client_id = "tessera".into();
    s.auth.introspection_client_secret = "tessera-secret".to_owned().into();
    s.auth.introspection_max_concurrent = max_concurrent;
    s.auth.introspection_timeout_ms = timeout_ms;
    s
}

/// Many new tokens at once never make more calls to the provider than the cap allows; the
/// rest wait for a slot.
#[actix_web::test]
async fn introspection_calls_are_capped_in_number() {
    let peak = Arc::new(AtomicUsize::new(0));
    let endpoint = slow_introspection(Duration::from_millis(300), peak.clone()).await;
    let app = start(settings_with_introspection(endpoint, 2, 20_000)).await;
    let answers = futures::future::join_all((0..8).map(|n| {
        let app = &app;
        async move { search(app, &format!("opaque-token-{n}")).await }
    }))
    .await;
    for answer in &answers {
        answer.assert_ok();
    }
    let peak = peak.load(Ordering::SeqCst);
    assert!((1..=2).contains(&peak), "{peak} calls at once");
}

/// A provider that does not answer in time is UNAVAILABLE for a token it has not vouched
/// for, never a refusal and never a way in.
#[actix_web::test]
async fn a_provider_that_does_not_answer_in_time_is_unavailable() {
    let peak = Arc::new(AtomicUsize::new(0));
    let endpoint = slow_introspection(Duration::from_secs(10), peak).await;
    let app = start(settings_with_introspection(endpoint, 4, 300)).await;
    search(&app, "opaque-token")
        .await
        .assert_error(503, 14, "TESSERA-idp1");
    assert_eq!(
        counter(
            &app,
            "tessera_introspection_calls_total",
            "outcome=\"error\""
        )
        .await,
        1
    );
}

/// The binary, run to completion with these `TESSERA__*` variables only (no config files).
fn tessera(args: &[&str], env: &[(&str, String)]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("the tessera binary runs")
}

/// `check-config` asks the provider what `serve` would: the discovery document, its keys
/// and the introspection key file; and names what is wrong.
#[actix_web::test]
async fn check_config_discovers_the_provider_and_reads_the_key_file() {
    let provider = Provider::start("k1");
    let seal = String::from_utf8(tessera(&["gen-seal-key"], &[]).stdout).unwrap();
    let env = |issuer: String, key_file: String| {
        vec![
            ("TESSERA__AUTH__ISSUER", issuer),
            ("TESSERA__AUTH__AUDIENCE", AUDIENCE.to_owned()),
            ("TESSERA__AUTH__INTROSPECTION_KEY_FILE", key_file),
            ("TESSERA__SEAL__KEYS", seal.trim().to_owned()),
        ]
    };
    let key_file = provider.key_file().to_string_lossy().into_owned();
    let ok = tessera(
        &["check-config", "--env", "none"],
        &env(provider.issuer(), key_file.clone()),
    );
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    // An issuer that differs from the document's by a slash is not the provider's.
    let slash = tessera(
        &["check-config", "--env", "none"],
        &env(format!("{}/", provider.issuer()), key_file),
    );
    assert!(!slash.status.success());
    let said = String::from_utf8_lossy(&slash.stderr);
    assert!(said.contains("names issuer"), "{said}");
    // A key file that is not an API application's is named, its key never shown.
    let service_user = provider.state.0.join("service-user.json");
    std::fs::write(
        &service_user,
        r#"{"type":"serviceaccount","keyId":"1","key":"PRIVATE-KEY-TEXT","userId":"2"}"#,
    )
    .unwrap();
    let wrong = tessera(
        &["check-config", "--env", "none"],
        &env(
            provider.issuer(),
            service_user.to_string_lossy().into_owned(),
        ),
    );
    let said = String::from_utf8_lossy(&wrong.stderr);
    assert!(
        !wrong.status.success() && said.contains("serviceaccount"),
        "{said}"
    );
    assert!(!said.contains("PRIVATE-KEY-TEXT"), "{said}");
}

/// `gen-signing-key` and `token --key`: a key of one's own, trusted through its JWKS file,
/// signs tokens the server takes; the development key's tokens are not those.
#[actix_web::test]
async fn a_generated_signing_key_signs_tokens_its_jwks_verifies() {
    let dir = TempDir::new("signing-key");
    let out = dir.0.to_string_lossy().into_owned();
    let made = tessera(
        &["gen-signing-key", "--out-dir", &out, "--kid", "trial-1"],
        &[],
    );
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let again = tessera(&["gen-signing-key", "--out-dir", &out], &[]);
    assert!(!again.status.success(), "a key is never overwritten");
    use std::os::unix::fs::PermissionsExt;
    let key = dir.0.join("signing-key.pem");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    let mut settings = base_settings();
    settings.auth.jwks_file = dir.0.join("jwks.json").to_string_lossy().into_owned();
    settings.auth.issuer = "https://trial.test".into();
    settings.auth.audience = "tessera".into();
    let app = start(settings).await;
    let mint = |kid: &str, issuer: &str| {
        let key = key.to_string_lossy().into_owned();
        let output = tessera(
            &[
                "token",
                "--key",
                &key,
                "--kid",
                kid,
                "--issuer",
                issuer,
                "--audience",
                "tessera",
                "--ttl",
                "600",
                "--org",
                "acme",
                "--user",
                "alice",
            ],
            &[],
        );
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap().trim().to_owned()
    };
    search(&app, &mint("trial-1", "https://trial.test"))
        .await
        .assert_ok();
    search(&app, &mint("trial-1", "https://other.test"))
        .await
        .assert_error(401, 16, "AUTH-7fs1e");
    let dev = String::from_utf8(tessera(&["token"], &[]).stdout).unwrap();
    search(&app, dev.trim())
        .await
        .assert_error(401, 16, "AUTH-7fs1e");
}
