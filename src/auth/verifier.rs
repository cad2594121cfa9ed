//! Bearer token verification: signature against the configured keys, issuer, audience,
//! `exp`/`nbf` with a bounded leeway. Unsigned tokens never verify (`alg: none` does not parse).

use std::collections::{HashMap, HashSet};
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use lru::LruCache;
use secrecy::ExposeSecret;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tokio::sync::{Mutex, RwLock};

use super::caller::Caller;
use super::dev::{DEV_KEY_ID, DEV_PUBLIC_PEM};
use super::jwks::{VerifyKey, parse_jwks};
use crate::domain::OtpError;
use crate::domain::ids::is_valid_id;
use crate::settings::AuthSettings;

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
}

struct Remote {
    url: String,
    client: reqwest::Client,
    min_interval: Duration,
    last_fetch: Mutex<Instant>,
}

struct ClaimNames {
    user: String,
    org: String,
    roles: String,
    login_name: String,
}

/// Verified tokens, keyed by the SHA-256 of the token, each kept until its `exp`: a
/// signature check costs tens of microseconds, a login page sends the same token all day.
type VerifiedCache = std::sync::Mutex<LruCache<[u8; 32], (Arc<Caller>, i64)>>;

pub struct TokenVerifier {
    keys: RwLock<Arc<Vec<VerifyKey>>>,
    verified: Option<VerifiedCache>,
    remote: Option<Remote>,
    hs256: Option<DecodingKey>,
    issuer: String,
    audience: String,
    leeway_secs: u64,
    claims: ClaimNames,
}

impl TokenVerifier {
    pub async fn from_settings(auth: &AuthSettings) -> Result<Self, VerifierError> {
        let mut keys = Vec::new();
        if auth.dev_key {
            keys.push(VerifyKey {
                kid: Some(DEV_KEY_ID.into()),
                algorithms: vec![Algorithm::EdDSA],
                key: DecodingKey::from_ed_pem(DEV_PUBLIC_PEM.as_bytes())
                    .map_err(|e| VerifierError::DevKey(e.to_string()))?,
            });
        }
        if !auth.jwks_file.is_empty() {
            let document = std::fs::read_to_string(&auth.jwks_file)
                .map_err(|e| VerifierError::File(auth.jwks_file.clone(), e))?;
            keys.extend(parse_jwks(&document).map_err(VerifierError::Jwks)?);
        }
        let remote = if auth.jwks_url.is_empty() {
            None
        } else {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .map_err(|e| VerifierError::Fetch(auth.jwks_url.clone(), e.to_string()))?;
            let fetched = fetch(&client, &auth.jwks_url).await?;
            keys.extend(fetched);
            Some(Remote {
                url: auth.jwks_url.clone(),
                client,
                min_interval: Duration::from_secs(auth.jwks_refetch_min_interval_secs),
                last_fetch: Mutex::new(Instant::now()),
            })
        };
        let secret = auth.hs256_secret.expose_secret();
        let hs256 = (!secret.is_empty()).then(|| DecodingKey::from_secret(secret.as_bytes()));
        Ok(Self {
            keys: RwLock::new(Arc::new(keys)),
            verified: NonZeroUsize::new(auth.token_cache_capacity)
                .map(|n| std::sync::Mutex::new(LruCache::new(n))),
            remote,
            hs256,
            issuer: auth.issuer.clone(),
            audience: auth.audience.clone(),
            leeway_secs: auth.leeway_secs.min(60),
            claims: ClaimNames {
                user: auth.user_claim.clone(),
                org: auth.org_claim.clone(),
                roles: auth.roles_claim.clone(),
                login_name: auth.login_name_claim.clone(),
            },
        })
    }

    /// The caller behind an `Authorization` header value (`None`: no header).
    pub async fn authenticate(&self, header: Option<&[u8]>) -> Result<Arc<Caller>, OtpError> {
        let header = header.ok_or(OtpError::AuthHeaderMissing)?;
        let token = header
            .strip_prefix(b"Bearer ")
            .ok_or(OtpError::AuthHeaderNotBearer)?;
        let token = std::str::from_utf8(token)
            .map_err(|_| OtpError::TokenInvalid)?
            .trim();
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = chrono::Utc::now().timestamp();
        if let Some(caller) = self.cached(&digest, now) {
            return Ok(caller);
        }
        let claims = self.verify(token).await?;
        let expires = claims.get("exp").and_then(Value::as_i64).unwrap_or(now);
        let caller = Arc::new(self.caller_from(claims).ok_or(OtpError::TokenInvalid)?);
        if let Some(cache) = &self.verified
            && let Ok(mut cache) = cache.lock()
        {
            cache.put(digest, (caller.clone(), expires));
        }
        Ok(caller)
    }

    /// A cached caller whose token has not expired (without the leeway: stricter than a
    /// full check, which then decides).
    fn cached(&self, digest: &[u8; 32], now: i64) -> Option<Arc<Caller>> {
        let mut cache = self.verified.as_ref()?.lock().ok()?;
        match cache.get(digest) {
            Some((caller, expires)) if *expires > now => Some(caller.clone()),
            Some(_) => {
                cache.pop(digest);
                None
            }
            None => None,
        }
    }

    async fn verify(&self, token: &str) -> Result<Map<String, Value>, OtpError> {
        if names_critical_extensions(token) {
            return Err(OtpError::TokenInvalid);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| OtpError::TokenInvalid)?;
        let validation = self.validation(header.alg);
        if header.alg == Algorithm::HS256 {
            let key = self.hs256.as_ref().ok_or(OtpError::TokenInvalid)?;
            return decode(token, key, &validation).ok_or(OtpError::TokenInvalid);
        }
        let keys = self.keys.read().await.clone();
        let kid_known = header
            .kid
            .as_deref()
            .is_none_or(|kid| keys.iter().any(|k| k.kid.as_deref() == Some(kid)));
        if let Some(claims) = try_keys(&keys, token, &header, &validation) {
            return Ok(claims);
        }
        if !kid_known && let Some(keys) = self.refetch().await {
            return try_keys(&keys, token, &header, &validation).ok_or(OtpError::TokenInvalid);
        }
        Err(OtpError::TokenInvalid)
    }

    /// Fetches the JWKS again for an unknown `kid` (key rotation at the issuer), at most once
    /// per `min_interval` so that tokens with made-up kids cannot hammer the issuer.
    async fn refetch(&self) -> Option<Arc<Vec<VerifyKey>>> {
        let remote = self.remote.as_ref()?;
        let mut last = remote.last_fetch.lock().await;
        if last.elapsed() < remote.min_interval {
            return None;
        }
        *last = Instant::now();
        match fetch(&remote.client, &remote.url).await {
            Ok(fetched) => {
                let fetched = Arc::new(fetched);
                *self.keys.write().await = fetched.clone();
                Some(fetched)
            }
            Err(err) => {
                tracing::warn!(error = %err, "JWKS refetch failed; keeping the current keys");
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
    pub(crate) fn caller_from_json(&self, json: &[u8]) -> Option<Caller> {
        self.caller_from(serde_json::from_slice(json).ok()?)
    }

    fn caller_from(&self, claims: Map<String, Value>) -> Option<Caller> {
        let text = |name: &str| {
            claims
                .get(name)
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|s| !s.is_empty())
        };
        let user = text(&self.claims.user).filter(|id| is_valid_id(id))?;
        let org = text(&self.claims.org).filter(|id| is_valid_id(id))?;
        let login_name = text(&self.claims.login_name).map(str::to_owned);
        let mut roles: HashMap<String, HashSet<String>> = HashMap::new();
        if let Some(Value::Object(granted)) = claims.get(&self.claims.roles) {
            for (role, orgs) in granted {
                if let Value::Object(orgs) = orgs {
                    roles.insert(role.clone(), orgs.keys().cloned().collect());
                }
            }
        }
        Some(Caller {
            user: Arc::from(user),
            org: Arc::from(org),
            login_name,
            roles,
        })
    }
}

/// Whether the JOSE header has `crit`: extensions the verifier must understand or refuse the
/// token (RFC 7515 4.1.11). tessera understands none, so any `crit` refuses it; jsonwebtoken
/// ignores header parameters it does not know. A header that does not decode is left to
/// `decode_header`, which refuses it.
fn names_critical_extensions(token: &str) -> bool {
    use base64::Engine;
    let Some(segment) = token.split('.').next() else {
        return false;
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(segment)
        .ok()
        .and_then(|json| serde_json::from_slice::<Map<String, Value>>(&json).ok())
        .is_some_and(|header| header.contains_key("crit"))
}

fn try_keys(
    keys: &[VerifyKey],
    token: &str,
    header: &jsonwebtoken::Header,
    validation: &Validation,
) -> Option<Map<String, Value>> {
    keys.iter()
        .filter(|k| k.algorithms.contains(&header.alg))
        .filter(|k| match (&header.kid, &k.kid) {
            (Some(wanted), Some(have)) => wanted == have,
            _ => true,
        })
        .find_map(|k| decode(token, &k.key, validation))
}

fn decode(token: &str, key: &DecodingKey, validation: &Validation) -> Option<Map<String, Value>> {
    jsonwebtoken::decode::<Map<String, Value>>(token, key, validation)
        .ok()
        .map(|data| data.claims)
}

async fn fetch(client: &reqwest::Client, url: &str) -> Result<Vec<VerifyKey>, VerifierError> {
    let failed = |e: String| VerifierError::Fetch(url.to_owned(), e);
    let response = client
        .get(url)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| failed(e.to_string()))?;
    let body = response.text().await.map_err(|e| failed(e.to_string()))?;
    parse_jwks(&body).map_err(failed)
}
