//! Bearer token verification. A token that is a JWS is verified here: signature against the
//! configured keys, issuer, audience, `exp`/`nbf` with a bounded leeway; unsigned tokens
//! never verify (`alg: none` does not parse). It is never sent to the provider, so forged
//! JWTs cost the provider nothing. Any other token is an opaque access token, checked by
//! introspection when it is configured (`introspection.rs`).

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use lru::LruCache;
use secrecy::ExposeSecret;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tokio::sync::{Mutex, RwLock};

use super::caller::Caller;
use super::dev::{DEV_KEY_ID, DEV_PUBLIC_PEM};
use super::discovery::discover;
use super::introspection::{Introspector, Outcome};
use super::jwks::{KeyFingerprint, VerifyKey, fingerprint, parse_jwks};
use super::refusal::Refusal;
use super::settings::{AuthConfig, ClaimNames};
use crate::domain::OtpError;
use crate::tls::{Stamp, stamp};

#[derive(Debug, thiserror::Error)]
pub enum VerifierError {
    #[error("reading JWKS file {0}: {1}")]
    File(String, std::io::Error),
    #[error("JWKS: {0}")]
    Jwks(String),
    #[error("fetching JWKS from {0}: {1}")]
    Fetch(String, String),
    #[error("development key: {0}")]
    DevKey(String),
    #[error("OpenID discovery at {0}: {1}")]
    Discovery(String, String),
    #[error("introspection key file {0}: {1}")]
    KeyFile(String, String),
    #[error("introspection: {0}")]
    Introspection(String),
}

/// Longer than any opaque token a provider issues (ZITADEL's and oidc-provider's are under a
/// hundred bytes): what is longer is refused without bothering the provider.
const MAX_OPAQUE_TOKEN_BYTES: usize = 4096;

/// A JWKS URL: fetched at start, again when its time comes (its `Cache-Control: max-age`,
/// within `[refetch_min_interval, refresh]`), and for an unknown `kid`, at most once per
/// `refetch_min_interval` so that tokens with made-up kids cannot hammer the issuer.
struct Remote {
    url: String,
    client: reqwest::Client,
    min_interval: Duration,
    max_interval: Duration,
    last_fetch: Mutex<Instant>,
    next_fetch: std::sync::Mutex<Instant>,
}

/// A JWKS file: read at start and again when its modification time or size changes (a
/// Kubernetes Secret mounted as a volume is replaced by a rename).
struct JwksFile {
    path: PathBuf,
    stamp: std::sync::Mutex<Stamp>,
}

/// The verification keys, by where they come from: each part is replaced on its own.
#[derive(Default, Clone)]
struct KeySet {
    dev: Vec<Arc<VerifyKey>>,
    file: Vec<Arc<VerifyKey>>,
    remote: Vec<Arc<VerifyKey>>,
}

#[derive(Clone, Copy, Debug)]
enum KeySource {
    File,
    Remote,
}

impl KeySet {
    fn iter(&self) -> impl Iterator<Item = &VerifyKey> {
        self.dev
            .iter()
            .chain(&self.file)
            .chain(&self.remote)
            .map(Arc::as_ref)
    }

    fn with(&self, source: KeySource, keys: Vec<VerifyKey>) -> Self {
        let keys = keys.into_iter().map(Arc::new).collect();
        let mut next = self.clone();
        match source {
            KeySource::File => next.file = keys,
            KeySource::Remote => next.remote = keys,
        }
        next
    }
}

/// What a cached token stands for: its caller, its `exp`, and the key that verified it.
type CachedToken = (Arc<Caller>, i64, KeyFingerprint);

/// Verified tokens, keyed by the SHA-256 of the token, each kept until its `exp` or until the
/// key that verified it leaves the set: a signature check costs tens of microseconds, a
/// login page sends the same token all day.
type VerifiedCache = std::sync::Mutex<LruCache<[u8; 32], CachedToken>>;

/// The shared HS256 secret never changes while the process runs: tokens it verified stay.
const HS256_FINGERPRINT: KeyFingerprint = [0; 32];

pub struct TokenVerifier {
    keys: RwLock<Arc<KeySet>>,
    /// Counts key set changes, so that a token verified under keys that changed meanwhile is
    /// not cached after the cache was purged of those keys' tokens.
    generation: AtomicU64,
    verified: Option<VerifiedCache>,
    remote: Option<Remote>,
    file: Option<JwksFile>,
    refresh_every: Duration,
    hs256: Option<DecodingKey>,
    issuer: String,
    audience: String,
    leeway_secs: u64,
    claims: ClaimNames,
    introspector: Option<Introspector>,
}

impl TokenVerifier {
    pub async fn from_config(auth: &AuthConfig) -> Result<Self, VerifierError> {
        let mut keys = KeySet::default();
        if auth.dev_key {
            keys.dev.push(Arc::new(VerifyKey {
                kid: Some(DEV_KEY_ID.into()),
                algorithms: vec![Algorithm::EdDSA],
                key: DecodingKey::from_ed_pem(DEV_PUBLIC_PEM.as_bytes())
                    .map_err(|e| VerifierError::DevKey(e.to_string()))?,
                fingerprint: fingerprint(DEV_PUBLIC_PEM.as_bytes()),
            }));
        }
        let file = if let Some(path) = &auth.jwks_file {
            let stamp = stamp(path);
            let document = std::fs::read_to_string(path)
                .map_err(|e| VerifierError::File(path.display().to_string(), e))?;
            keys.file = parse_jwks(&document)
                .map_err(VerifierError::Jwks)?
                .into_iter()
                .map(Arc::new)
                .collect();
            Some(JwksFile {
                path: path.clone(),
                stamp: std::sync::Mutex::new(stamp),
            })
        } else {
            None
        };
        let min_interval = auth.jwks_refetch_min_interval;
        let max_interval = auth.jwks_refresh.max(min_interval);
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| VerifierError::Fetch(auth.issuer.clone(), e.to_string()))?;
        let discovered = if auth.discover {
            Some(discover(&client, &auth.issuer).await?)
        } else {
            None
        };
        // A JWKS file or URL that is set wins over the discovered one.
        let jwks_url = auth.jwks_url.clone().or_else(|| {
            discovered
                .as_ref()
                .filter(|_| auth.jwks_file.is_none())
                .and_then(|metadata| metadata.jwks_uri.clone())
        });
        let remote = if let Some(url) = &jwks_url {
            let (fetched, max_age) = fetch(&client, url).await?;
            keys.remote = fetched.into_iter().map(Arc::new).collect();
            let now = Instant::now();
            Some(Remote {
                url: url.clone(),
                client,
                min_interval,
                max_interval,
                last_fetch: Mutex::new(now),
                next_fetch: std::sync::Mutex::new(next_fetch(
                    now,
                    max_age,
                    min_interval,
                    max_interval,
                )),
            })
        } else {
            None
        };
        let introspector = match &auth.introspection {
            None => None,
            Some(config) => {
                let endpoint = config
                    .endpoint
                    .clone()
                    .or_else(|| discovered.as_ref()?.introspection_endpoint.clone())
                    .ok_or_else(|| {
                        VerifierError::Introspection(format!(
                            "{} publishes no introspection_endpoint; set auth.introspection_url",
                            auth.issuer
                        ))
                    })?;
                Some(Introspector::new(
                    config,
                    endpoint,
                    &auth.issuer,
                    &auth.audience,
                    auth.leeway_secs.min(60),
                    auth.claims.clone(),
                )?)
            }
        };
        let hs256 = auth
            .hs256_secret
            .as_ref()
            .map(|secret| DecodingKey::from_secret(secret.expose_secret().as_bytes()));
        Ok(Self {
            keys: RwLock::new(Arc::new(keys)),
            generation: AtomicU64::new(0),
            verified: auth
                .token_cache_capacity
                .map(|n| std::sync::Mutex::new(LruCache::new(n))),
            remote,
            file,
            refresh_every: min_interval.max(Duration::from_secs(1)),
            hs256,
            issuer: auth.issuer.clone(),
            audience: auth.audience.clone(),
            leeway_secs: auth.leeway_secs.min(60),
            claims: auth.claims.clone(),
            introspector,
        })
    }

    /// The metrics of introspection, to register with the process's (none without it).
    pub fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        self.introspector
            .as_ref()
            .map(|introspector| introspector.metrics.collectors())
            .unwrap_or_default()
    }

    /// How often `refresh` should run (`jwks_refetch_min_interval_secs`, at least a second):
    /// the file is looked at, and the URL fetched when due.
    pub fn refresh_every(&self) -> Option<Duration> {
        (self.file.is_some() || self.remote.is_some()).then_some(self.refresh_every)
    }

    /// Reads the JWKS file again if it changed, and fetches the JWKS URL if its time has
    /// come. A source that fails keeps its keys (a half-written file, an issuer that is
    /// down): the next round retries.
    pub async fn refresh(&self) {
        if let Some(file) = &self.file {
            let now = stamp(&file.path);
            let changed = file.stamp.lock().is_ok_and(|seen| *seen != now);
            if changed {
                let read = std::fs::read_to_string(&file.path)
                    .map_err(|e| e.to_string())
                    .and_then(|document| parse_jwks(&document));
                match read {
                    Ok(keys) => {
                        self.replace(KeySource::File, keys).await;
                        if let Ok(mut seen) = file.stamp.lock() {
                            *seen = now;
                        }
                    }
                    Err(err) => tracing::error!(
                        file = %file.path.display(), error = %err,
                        "the JWKS file changed but does not load; keeping its keys"
                    ),
                }
            }
        }
        if let Some(remote) = &self.remote {
            let due = remote
                .next_fetch
                .lock()
                .is_ok_and(|next| Instant::now() >= *next);
            if due {
                self.refetch().await;
            }
        }
    }

    /// Puts `keys` in place of `source`'s and forgets the tokens that keys no longer in the
    /// set verified, whether or not a token with a new `kid` ever arrives.
    async fn replace(&self, source: KeySource, keys: Vec<VerifyKey>) -> Arc<KeySet> {
        let mut current = self.keys.write().await;
        let next = Arc::new(current.with(source, keys));
        let kept: HashSet<KeyFingerprint> = next.iter().map(|key| key.fingerprint).collect();
        let removed: HashSet<KeyFingerprint> = current
            .iter()
            .map(|key| key.fingerprint)
            .filter(|fingerprint| !kept.contains(fingerprint))
            .collect();
        let added = next
            .iter()
            .filter(|key| !current.iter().any(|k| k.fingerprint == key.fingerprint))
            .count();
        if !removed.is_empty() {
            // Before the swap: a check that read the old keys caches nothing after this.
            self.generation.fetch_add(1, Ordering::SeqCst);
        }
        *current = next.clone();
        drop(current);
        let dropped = self.forget_tokens_of(&removed);
        if !removed.is_empty() || added > 0 {
            tracing::info!(
                source = ?source,
                keys = next.iter().count(),
                added,
                removed = removed.len(),
                cached_tokens_dropped = dropped,
                "verification keys changed"
            );
        }
        next
    }

    fn forget_tokens_of(&self, removed: &HashSet<KeyFingerprint>) -> usize {
        if removed.is_empty() {
            return 0;
        }
        let Some(Ok(mut cache)) = self.verified.as_ref().map(|cache| cache.lock()) else {
            return 0;
        };
        let stale: Vec<[u8; 32]> = cache
            .iter()
            .filter(|(_, (_, _, key))| removed.contains(key))
            .map(|(digest, _)| *digest)
            .collect();
        for digest in &stale {
            cache.pop(digest);
        }
        stale.len()
    }

    /// The caller behind an `Authorization` header value (`None`: no header). A refused
    /// token is AUTH-7fs1e to the client whatever the reason, which is logged at debug
    /// level; a token the provider could not be asked about is UNAVAILABLE.
    pub async fn authenticate(&self, header: Option<&[u8]>) -> Result<Arc<Caller>, OtpError> {
        let header = header.ok_or(OtpError::AuthHeaderMissing)?;
        let token = header
            .strip_prefix(b"Bearer ")
            .ok_or(OtpError::AuthHeaderNotBearer)?;
        let checked = match std::str::from_utf8(token) {
            Ok(token) => self.check(token.trim()).await,
            Err(_) => Err(Checked::Refused(Refusal::Malformed)),
        };
        checked.map_err(|failure| match failure {
            Checked::Refused(refusal) => {
                tracing::debug!(reason = refusal.as_str(), "token refused");
                OtpError::TokenInvalid
            }
            Checked::Unanswered => OtpError::TokenCheckUnavailable,
        })
    }

    async fn check(&self, token: &str) -> Result<Arc<Caller>, Checked> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = chrono::Utc::now().timestamp();
        if let Some(caller) = self.cached(&digest, now) {
            return Ok(caller);
        }
        let Some(jose_header) = jws_header(token) else {
            let introspector = self
                .introspector
                .as_ref()
                .ok_or(Checked::Refused(Refusal::NotAJws))?;
            if token.len() > MAX_OPAQUE_TOKEN_BYTES || token.is_empty() {
                return Err(Checked::Refused(Refusal::Malformed));
            }
            return match introspector.check(token, digest).await {
                Outcome::Active(caller) => Ok(caller),
                Outcome::Refused(refusal) => Err(Checked::Refused(refusal)),
                Outcome::Unanswered => Err(Checked::Unanswered),
            };
        };
        let generation = self.generation.load(Ordering::SeqCst);
        let (claims, key) = self
            .verify(token, &jose_header)
            .await
            .map_err(Checked::Refused)?;
        let expires = claims.get("exp").and_then(Value::as_i64).unwrap_or(now);
        let caller = Arc::new(
            self.claims
                .caller(&claims)
                .ok_or(Checked::Refused(Refusal::Claims))?,
        );
        if let Some(cache) = &self.verified
            && let Ok(mut cache) = cache.lock()
            // Keys that changed during the check may have taken this token's key away.
            && self.generation.load(Ordering::SeqCst) == generation
        {
            cache.put(digest, (caller.clone(), expires, key));
        }
        Ok(caller)
    }

    /// A cached caller whose token has not expired (without the leeway: stricter than a
    /// full check, which then decides).
    fn cached(&self, digest: &[u8; 32], now: i64) -> Option<Arc<Caller>> {
        let mut cache = self.verified.as_ref()?.lock().ok()?;
        match cache.get(digest) {
            Some((caller, expires, _)) if *expires > now => Some(caller.clone()),
            Some(_) => {
                cache.pop(digest);
                None
            }
            None => None,
        }
    }

    /// The token's claims and the fingerprint of the key that verified them. `jose_header`
    /// is its header as JSON: one with `crit` names extensions the verifier must understand
    /// or refuse the token (RFC 7515 4.1.11); tessera understands none, and jsonwebtoken
    /// ignores header parameters it does not know, so `crit` refuses it here.
    async fn verify(
        &self,
        token: &str,
        jose_header: &Map<String, Value>,
    ) -> Result<(Map<String, Value>, KeyFingerprint), Refusal> {
        if jose_header.contains_key("crit") {
            return Err(Refusal::CriticalExtensions);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| Refusal::Malformed)?;
        let validation = self.validation(header.alg);
        if header.alg == Algorithm::HS256 {
            let key = self.hs256.as_ref().ok_or(Refusal::Algorithm)?;
            return decode(token, key, &validation).map(|claims| (claims, HS256_FINGERPRINT));
        }
        let keys = self.keys.read().await.clone();
        let kid_known = header
            .kid
            .as_deref()
            .is_none_or(|kid| keys.iter().any(|k| k.kid.as_deref() == Some(kid)));
        let first = try_keys(&keys, token, &header, &validation);
        if first.is_err()
            && !kid_known
            && let Some(keys) = self.refetch().await
        {
            return try_keys(&keys, token, &header, &validation);
        }
        first
    }

    /// Fetches the JWKS URL again, unless it was fetched less than `min_interval` ago.
    async fn refetch(&self) -> Option<Arc<KeySet>> {
        let remote = self.remote.as_ref()?;
        let mut last = remote.last_fetch.lock().await;
        if last.elapsed() < remote.min_interval {
            return None;
        }
        *last = Instant::now();
        let fetched = fetch(&remote.client, &remote.url).await;
        let max_age = fetched.as_ref().ok().and_then(|(_, max_age)| *max_age);
        if let Ok(mut next) = remote.next_fetch.lock() {
            *next = next_fetch(*last, max_age, remote.min_interval, remote.max_interval);
        }
        match fetched {
            Ok((keys, _)) => Some(self.replace(KeySource::Remote, keys).await),
            Err(err) => {
                tracing::warn!(error = %err, "JWKS fetch failed; keeping the current keys");
                None
            }
        }
    }

    fn validation(&self, alg: Algorithm) -> Validation {
        let mut validation = Validation::new(alg);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.leeway = self.leeway_secs;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation
    }

    /// A token's claims, as JSON, mapped to a caller. (The claims fuzz target's entry: past
    /// the signature, where a fuzzer's mutated tokens never get.)
    #[cfg(feature = "test-kit")]
    pub(crate) fn caller_from_json(&self, json: &[u8]) -> Option<Caller> {
        self.claims.caller(&serde_json::from_slice(json).ok()?)
    }
}

/// Why `check` gave no caller.
enum Checked {
    Refused(Refusal),
    /// The provider could not be asked (introspection only).
    Unanswered,
}

/// The header of a JWS in compact form (three segments, the first a JSON object once
/// base64url-decoded); `None`: not a JWS. A JWS is verified here or refused, whatever its
/// header says (`alg: none` included); anything else is an opaque token for the provider.
fn jws_header(token: &str) -> Option<Map<String, Value>> {
    use base64::Engine;
    let mut segments = token.split('.');
    let (Some(header), Some(_), Some(_), None) = (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) else {
        return None;
    };
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .ok()?;
    serde_json::from_slice(&json).ok()
}

/// The claims of the first key that verifies the token; else why the last candidate refused
/// it, or `UnknownKid` when no key could be tried.
fn try_keys(
    keys: &KeySet,
    token: &str,
    header: &jsonwebtoken::Header,
    validation: &Validation,
) -> Result<(Map<String, Value>, KeyFingerprint), Refusal> {
    let mut refusal = Refusal::UnknownKid;
    let candidates = keys
        .iter()
        .filter(|k| k.algorithms.contains(&header.alg))
        .filter(|k| match (&header.kid, &k.kid) {
            (Some(wanted), Some(have)) => wanted == have,
            _ => true,
        });
    for key in candidates {
        match decode(token, &key.key, validation) {
            Ok(claims) => return Ok((claims, key.fingerprint)),
            Err(why) => refusal = why,
        }
    }
    Err(refusal)
}

fn decode(
    token: &str,
    key: &DecodingKey,
    validation: &Validation,
) -> Result<Map<String, Value>, Refusal> {
    jsonwebtoken::decode::<Map<String, Value>>(token, key, validation)
        .map(|data| data.claims)
        .map_err(|e| Refusal::from_jwt(e.kind()))
}

/// The keys of the JWKS at `url`, and the `max-age` its response allows caching it for.
async fn fetch(
    client: &reqwest::Client,
    url: &str,
) -> Result<(Vec<VerifyKey>, Option<Duration>), VerifierError> {
    let failed = |e: String| VerifierError::Fetch(url.to_owned(), e);
    let response = client
        .get(url)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| failed(e.to_string()))?;
    let max_age = response
        .headers()
        .get(reqwest::header::CACHE_CONTROL)
        .and_then(|value| value.to_str().ok())
        .and_then(max_age);
    let body = response.text().await.map_err(|e| failed(e.to_string()))?;
    Ok((parse_jwks(&body).map_err(failed)?, max_age))
}

/// `max-age` of a `Cache-Control` value (RFC 9111 5.2.2.1); `no-store` and `no-cache` count
/// as zero, which the caller raises to its minimum interval. Only this one directive is
/// read, which is why no HTTP caching crate is pulled in for it.
fn max_age(cache_control: &str) -> Option<Duration> {
    cache_control
        .split(',')
        .map(str::trim)
        .find_map(|directive| {
            let lower = directive.to_ascii_lowercase();
            if lower == "no-store" || lower == "no-cache" {
                return Some(Duration::ZERO);
            }
            let seconds = lower.strip_prefix("max-age=")?.trim_matches('"');
            seconds.parse::<u64>().ok().map(Duration::from_secs)
        })
}

/// When to fetch the JWKS URL next: after its `max-age`, kept within `[min, max]`, or after
/// `max` when the response said nothing.
fn next_interval(max_age: Option<Duration>, min: Duration, max: Duration) -> Duration {
    max_age.unwrap_or(max).clamp(min, max)
}

/// The time of the next fetch after one at `fetched` (see `next_interval`).
fn next_fetch(
    fetched: Instant,
    max_age: Option<Duration>,
    min: Duration,
    max: Duration,
) -> Instant {
    fetched + next_interval(max_age, min, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev_config() -> AuthConfig {
        AuthConfig {
            jwks_file: None,
            jwks_url: None,
            jwks_refetch_min_interval: Duration::from_secs(5),
            jwks_refresh: Duration::from_secs(300),
            issuer: "tessera-dev".into(),
            audience: "tessera".into(),
            leeway_secs: 0,
            token_cache_capacity: std::num::NonZeroUsize::new(10),
            hs256_secret: None,
            dev_key: true,
            claims: ClaimNames {
                user: "sub".into(),
                org: "urn:zitadel:iam:user:resourceowner:id".into(),
                roles: "urn:zitadel:iam:org:project:roles".into(),
                login_name: "preferred_username".into(),
            },
            check_role: "otp.check".into(),
            admin_role: "otp.admin".into(),
            policy_read_role: "policy.read".into(),
            policy_write_role: "policy.write".into(),
            discover: false,
            introspection: None,
        }
    }

    /// A verified token is remembered under the key that verified it, so that the key's
    /// removal forgets it.
    #[tokio::test]
    async fn a_verified_token_is_cached_under_its_key() {
        let verifier = TokenVerifier::from_config(&dev_config()).await.unwrap();
        let now = chrono::Utc::now().timestamp();
        let token = crate::auth::mint_dev_token(&dev_config(), "acme", "alice", &[], 600, now);
        let bearer = format!("Bearer {}", token.unwrap());
        let dev_key: HashSet<KeyFingerprint> =
            [fingerprint(super::super::dev::DEV_PUBLIC_PEM.as_bytes())].into();
        assert_eq!(verifier.forget_tokens_of(&dev_key), 0);
        verifier
            .authenticate(Some(bearer.as_bytes()))
            .await
            .unwrap();
        assert_eq!(verifier.forget_tokens_of(&dev_key), 1);
        assert_eq!(verifier.forget_tokens_of(&dev_key), 0);
    }

    /// RFC 7515 4.1.11: a header naming critical extensions that tessera does not know (it
    /// knows none) refuses the token, although its signature and claims are right.
    #[tokio::test]
    async fn a_token_with_critical_extensions_is_refused() {
        use base64::Engine;
        let encode = |value: serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
        };
        let now = chrono::Utc::now().timestamp();
        let claims = serde_json::json!({
            "iss": "tessera-dev", "aud": "tessera", "sub": "alice",
            "urn:zitadel:iam:user:resourceowner:id": "acme", "exp": now + 600,
        });
        let key =
            jsonwebtoken::EncodingKey::from_ed_pem(super::super::dev::DEV_PRIVATE_PEM.as_bytes())
                .unwrap();
        let bearer = |header: serde_json::Value| {
            let input = format!("{}.{}", encode(header), encode(claims.clone()));
            let signature = jsonwebtoken::crypto::sign(input.as_bytes(), &key, Algorithm::EdDSA);
            format!("Bearer {input}.{}", signature.unwrap())
        };
        let verifier = TokenVerifier::from_config(&dev_config()).await.unwrap();
        let plain = bearer(serde_json::json!({"alg": "EdDSA", "kid": DEV_KEY_ID}));
        assert!(verifier.authenticate(Some(plain.as_bytes())).await.is_ok());
        let critical = bearer(serde_json::json!({
            "alg": "EdDSA", "kid": DEV_KEY_ID, "crit": ["exp"], "exp": now + 600,
        }));
        assert_eq!(
            verifier.authenticate(Some(critical.as_bytes())).await.err(),
            Some(OtpError::TokenInvalid)
        );
    }

    fn is_jws(token: &str) -> bool {
        jws_header(token).is_some()
    }

    /// A JWS is verified or refused here; only what is not one may go to the provider.
    #[test]
    fn only_a_compact_jws_is_taken_for_one() {
        use base64::Engine;
        let segment = |json: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json);
        let none = format!("{}.{}.", segment(r#"{"alg":"none"}"#), segment("{}"));
        assert!(is_jws(&none), "an unsigned token is a JWS, refused as one");
        assert!(is_jws(&format!("{}.x.y", segment("{}"))));
        assert!(!is_jws("M3I_VDsMvuEEPKLuTVzK6FpQFChLJtpWLw_MoXHiWSs"));
        assert!(!is_jws("not.a.jwt"));
        assert!(!is_jws(&format!(
            "{}.x.y.z.w",
            segment(r#"{"alg":"RSA-OAEP"}"#)
        )));
        assert!(!is_jws(&format!("{}.x", segment("{}"))));
    }

    #[test]
    fn max_age_is_read_from_cache_control() {
        assert_eq!(
            max_age("public, max-age=300"),
            Some(Duration::from_secs(300))
        );
        assert_eq!(max_age("Max-Age=\"60\""), Some(Duration::from_secs(60)));
        assert_eq!(max_age("no-store"), Some(Duration::ZERO));
        assert_eq!(max_age("public"), None);
        assert_eq!(max_age("max-age=soon"), None);
    }

    #[test]
    fn the_next_fetch_stays_within_the_bounds() {
        let (min, max) = (Duration::from_secs(5), Duration::from_secs(300));
        assert_eq!(next_interval(None, min, max), max);
        let fetched = Instant::now();
        assert_eq!(next_fetch(fetched, None, min, max), fetched + max);
        assert_eq!(next_interval(Some(Duration::ZERO), min, max), min);
        assert_eq!(
            next_interval(Some(Duration::from_secs(60)), min, max),
            Duration::from_secs(60)
        );
        assert_eq!(
            next_interval(Some(Duration::from_secs(86_400)), min, max),
            max
        );
    }
}
