//! Opaque access tokens, checked with the provider (RFC 7662) and remembered: an active token
//! until the earlier of its `exp` and a setting, an inactive one briefly. Concurrent checks
//! of one token make one call (single flight); calls are capped in number and in time. When
//! the provider cannot answer, a token it has not vouched for is UNAVAILABLE, never let in.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use moka::Expiry;
use moka::future::Cache;
use prometheus::{Histogram, HistogramOpts, IntCounterVec, Opts};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::sync::Semaphore;

use super::caller::Caller;
use super::refusal::Refusal;
use super::settings::{ClaimNames, IntrospectionClient, IntrospectionConfig};
use super::verifier::VerifierError;

/// What the provider said of a token, as remembered.
#[derive(Clone)]
enum Introspected {
    /// Active, for this caller, until `exp` (Unix seconds; `None`: the response gave none).
    Active(Arc<Caller>, Option<i64>),
    /// Inactive, or active but not for tessera (issuer, audience, claims).
    Refused(Refusal),
}

/// Why the provider gave no answer; the token is neither let in nor remembered.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Unanswered {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Transport(String),
    #[error("HTTP {0}")]
    Status(u16),
    #[error("not an introspection response: {0}")]
    Malformed(String),
    #[error("signing the client assertion: {0}")]
    Assertion(String),
}

/// The lifetime of each remembered answer: an active token's is set when it is put in (the
/// earlier of its `exp` and the setting), an inactive one's is the negative setting.
struct Lifetimes {
    active: Duration,
    refused: Duration,
}

impl Expiry<[u8; 32], Introspected> for Lifetimes {
    fn expire_after_create(
        &self,
        _digest: &[u8; 32],
        answer: &Introspected,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(match answer {
            Introspected::Active(_, Some(exp)) => {
                let left = exp.saturating_sub(chrono::Utc::now().timestamp());
                self.active
                    .min(Duration::from_secs(u64::try_from(left).unwrap_or(0)))
            }
            Introspected::Active(_, None) => self.active,
            Introspected::Refused(_) => self.refused,
        })
    }
}

/// ZITADEL's key file of an API application ("JWT profile" client authentication).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeyFile {
    #[serde(rename = "type")]
    kind: String,
    key_id: String,
    key: SecretString,
    /// Absent from a service user's key file, which is the wrong kind here.
    client_id: Option<String>,
}

/// How tessera proves who it is to the endpoint.
enum ClientAuthentication {
    /// RFC 6749 2.3.1: id and secret, each form-encoded, as HTTP Basic.
    Basic { id: String, secret: SecretString },
    /// RFC 7523 2.2: a fresh signed assertion per call (providers refuse a reused `jti`).
    PrivateKeyJwt {
        client_id: String,
        key_id: String,
        key: EncodingKey,
        /// The provider's issuer: the audience ZITADEL and oidc-provider accept.
        audience: String,
    },
}

impl ClientAuthentication {
    fn from_config(client: &IntrospectionClient, issuer: &str) -> Result<Self, VerifierError> {
        match client {
            IntrospectionClient::Secret { id, secret } => Ok(Self::Basic {
                id: id.clone(),
                secret: secret.clone(),
            }),
            IntrospectionClient::KeyFile { path, client_id } => {
                let shown = path.display().to_string();
                let bad = |why: String| VerifierError::KeyFile(shown.clone(), why);
                // The file's text holds the private key: wiped once parsed.
                let text = zeroize::Zeroizing::new(
                    std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?,
                );
                // The file holds a private key: serde's messages quote the input, so only
                // the error's position is kept.
                let file: KeyFile = serde_json::from_str(&text).map_err(|e| {
                    bad(format!(
                        "not ZITADEL's JSON key file (line {}, column {})",
                        e.line(),
                        e.column()
                    ))
                })?;
                let file_client = match (file.kind.as_str(), file.client_id) {
                    ("application", Some(id)) => id,
                    (kind, _) => {
                        return Err(bad(format!(
                            "its type is {kind:?} without a clientId; introspection needs the key of an API application (\"application\")"
                        )));
                    }
                };
                if let Some(id) = client_id
                    && *id != file_client
                {
                    return Err(bad(format!(
                        "it is for client {file_client:?}, auth.introspection_client_id says {id:?}"
                    )));
                }
                let key = EncodingKey::from_rsa_pem(file.key.expose_secret().as_bytes())
                    .map_err(|_| bad("its key is not an RSA private key in PEM".into()))?;
                Ok(Self::PrivateKeyJwt {
                    client_id: file_client,
                    key_id: file.key_id,
                    key,
                    audience: issuer.to_owned(),
                })
            }
        }
    }

    fn apply(
        &self,
        request: reqwest::RequestBuilder,
        form: &mut Vec<(&'static str, String)>,
    ) -> Result<reqwest::RequestBuilder, Unanswered> {
        match self {
            Self::Basic { id, secret } => {
                let encode = |text: &str| form_urlencoded_component(text);
                Ok(request.basic_auth(encode(id), Some(encode(secret.expose_secret()))))
            }
            Self::PrivateKeyJwt {
                client_id,
                key_id,
                key,
                audience,
            } => {
                let now = chrono::Utc::now().timestamp();
                let mut header = Header::new(Algorithm::RS256);
                header.kid = Some(key_id.clone());
                let claims = json!({
                    "iss": client_id,
                    "sub": client_id,
                    "aud": audience,
                    "iat": now,
                    "exp": now + 60,
                    "jti": random_id(),
                });
                let assertion = jsonwebtoken::encode(&header, &claims, key)
                    .map_err(|e| Unanswered::Assertion(e.to_string()))?;
                form.push((
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into(),
                ));
                form.push(("client_assertion", assertion));
                Ok(request)
            }
        }
    }
}

/// `application/x-www-form-urlencoded` of one value (RFC 6749 2.3.1 asks it of the Basic
/// credentials, so that a `:` in a client id survives).
fn form_urlencoded_component(text: &str) -> String {
    use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
    const FORM: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'*')
        .remove(b'-')
        .remove(b'.')
        .remove(b'_');
    utf8_percent_encode(text, FORM).to_string()
}

fn random_id() -> String {
    use base64::Engine;
    let bytes: [u8; 16] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The counters and latency of introspection, registered with the process's metrics.
#[derive(Clone)]
pub(crate) struct IntrospectionMetrics {
    /// Calls to the provider by outcome: "active", "inactive", "error".
    calls: IntCounterVec,
    /// Lookups by "hit" (answered from memory, or by the call another request was making)
    /// and "miss" (this request asked the provider).
    cache: IntCounterVec,
    seconds: Histogram,
}

impl IntrospectionMetrics {
    fn new() -> Result<Self, prometheus::Error> {
        let calls = IntCounterVec::new(
            Opts::new(
                "tessera_introspection_calls_total",
                "Token introspection calls to the identity provider, by outcome.",
            ),
            &["outcome"],
        )?;
        let cache = IntCounterVec::new(
            Opts::new(
                "tessera_introspection_cache_total",
                "Opaque token lookups, by whether the remembered answer served them.",
            ),
            &["result"],
        )?;
        let seconds = Histogram::with_opts(
            HistogramOpts::new(
                "tessera_introspection_duration_seconds",
                "Time of a token introspection call to the identity provider.",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
        )?;
        for outcome in ["active", "inactive", "error"] {
            calls.with_label_values(&[outcome]);
        }
        for result in ["hit", "miss"] {
            cache.with_label_values(&[result]);
        }
        Ok(Self {
            calls,
            cache,
            seconds,
        })
    }

    pub(crate) fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![
            Box::new(self.calls.clone()),
            Box::new(self.cache.clone()),
            Box::new(self.seconds.clone()),
        ]
    }
}

/// What an active token must be to let its caller in: the checks a JWT's claims pass.
struct Expected {
    issuer: String,
    audience: String,
    leeway_secs: i64,
    claims: ClaimNames,
}

impl Expected {
    /// What an introspection response means for tessera: issuer, audience and time as for a
    /// JWT, and the same claim mapping.
    fn judge(&self, response: &Map<String, Value>, now: i64) -> Introspected {
        if response.get("active") != Some(&Value::Bool(true)) {
            return Introspected::Refused(Refusal::Inactive);
        }
        if let Some(issuer) = response.get("iss")
            && issuer.as_str() != Some(self.issuer.as_str())
        {
            return Introspected::Refused(Refusal::WrongIssuer);
        }
        let for_us = match response.get("aud") {
            Some(Value::String(aud)) => *aud == self.audience,
            Some(Value::Array(auds)) => auds.iter().any(|a| a.as_str() == Some(&self.audience)),
            _ => false,
        };
        if !for_us {
            return Introspected::Refused(Refusal::WrongAudience);
        }
        let exp = response.get("exp").and_then(Value::as_i64);
        if exp.is_some_and(|exp| self.expired(exp, now)) {
            return Introspected::Refused(Refusal::Expired);
        }
        let nbf = response.get("nbf").and_then(Value::as_i64);
        if nbf.is_some_and(|nbf| nbf.saturating_sub(self.leeway_secs) > now) {
            return Introspected::Refused(Refusal::NotYetValid);
        }
        match self.claims.caller(response) {
            Some(caller) => Introspected::Active(Arc::new(caller), exp),
            None => Introspected::Refused(Refusal::Claims),
        }
    }

    fn expired(&self, exp: i64, now: i64) -> bool {
        exp.saturating_add(self.leeway_secs) <= now
    }
}

pub(crate) struct Introspector {
    endpoint: String,
    http: reqwest::Client,
    authentication: ClientAuthentication,
    expected: Expected,
    answers: Cache<[u8; 32], Introspected>,
    slots: Semaphore,
    timeout: Duration,
    pub(crate) metrics: IntrospectionMetrics,
}

/// What introspection made of a token.
pub(crate) enum Outcome {
    Active(Arc<Caller>),
    Refused(Refusal),
    Unanswered,
}

impl Introspector {
    pub(crate) fn new(
        config: &IntrospectionConfig,
        endpoint: String,
        issuer: &str,
        audience: &str,
        leeway_secs: u64,
        claims: ClaimNames,
    ) -> Result<Self, VerifierError> {
        let authentication = ClientAuthentication::from_config(&config.client, issuer)?;
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .map_err(|e| VerifierError::Fetch(endpoint.clone(), e.to_string()))?;
        Ok(Self {
            endpoint,
            http,
            authentication,
            expected: Expected {
                issuer: issuer.to_owned(),
                audience: audience.to_owned(),
                leeway_secs: i64::try_from(leeway_secs).unwrap_or(60),
                claims,
            },
            answers: Cache::builder()
                .max_capacity(config.cache_capacity)
                .expire_after(Lifetimes {
                    active: config.cache_ttl,
                    refused: config.negative_cache_ttl,
                })
                .build(),
            slots: Semaphore::new(config.max_concurrent.get()),
            timeout: config.timeout,
            metrics: IntrospectionMetrics::new()
                .map_err(|e| VerifierError::Introspection(e.to_string()))?,
        })
    }

    /// The caller behind an opaque token whose SHA-256 is `digest`.
    pub(crate) async fn check(&self, token: &str, digest: [u8; 32]) -> Outcome {
        let entry = self
            .answers
            .entry(digest)
            .or_try_insert_with(self.ask(token))
            .await;
        let answer = match entry {
            Ok(entry) => {
                let result = if entry.is_fresh() { "miss" } else { "hit" };
                self.metrics.cache.with_label_values(&[result]).inc();
                entry.into_value()
            }
            Err(why) => {
                self.metrics.cache.with_label_values(&["miss"]).inc();
                tracing::warn!(endpoint = %self.endpoint, error = %why, "token introspection failed");
                return Outcome::Unanswered;
            }
        };
        match answer {
            // The provider's `exp` still holds when the remembered answer outlives it.
            Introspected::Active(_, Some(exp))
                if self.expected.expired(exp, chrono::Utc::now().timestamp()) =>
            {
                Outcome::Refused(Refusal::Expired)
            }
            Introspected::Active(caller, _) => Outcome::Active(caller),
            Introspected::Refused(refusal) => Outcome::Refused(refusal),
        }
    }

    /// One call to the provider, within the time and the slots allowed.
    async fn ask(&self, token: &str) -> Result<Introspected, Unanswered> {
        let started = Instant::now();
        let answered = tokio::time::timeout(self.timeout, async {
            let _slot = self
                .slots
                .acquire()
                .await
                .map_err(|e| Unanswered::Transport(e.to_string()))?;
            self.call(token).await
        })
        .await
        .unwrap_or(Err(Unanswered::Timeout(self.timeout)));
        self.metrics
            .seconds
            .observe(started.elapsed().as_secs_f64());
        let outcome = match &answered {
            Ok(Introspected::Active(..)) => "active",
            Ok(Introspected::Refused(_)) => "inactive",
            Err(_) => "error",
        };
        self.metrics.calls.with_label_values(&[outcome]).inc();
        answered
    }

    async fn call(&self, token: &str) -> Result<Introspected, Unanswered> {
        let mut form = vec![
            ("token", token.to_owned()),
            ("token_type_hint", "access_token".to_owned()),
        ];
        let request = self
            .authentication
            .apply(self.http.post(&self.endpoint), &mut form)?
            .header(reqwest::header::ACCEPT, "application/json")
            .form(&form);
        let response = request
            .send()
            .await
            .map_err(|e| Unanswered::Transport(e.without_url().to_string()))?;
        let status = response.status();
        if !status.is_success() {
            return Err(Unanswered::Status(status.as_u16()));
        }
        let body: Map<String, Value> = response
            .json()
            .await
            .map_err(|e| Unanswered::Malformed(e.without_url().to_string()))?;
        Ok(self.expected.judge(&body, chrono::Utc::now().timestamp()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expected() -> Expected {
        Expected {
            issuer: "https://idp.test".into(),
            audience: "project".into(),
            leeway_secs: 10,
            claims: ClaimNames {
                user: "sub".into(),
                org: "urn:zitadel:iam:user:resourceowner:id".into(),
                roles: "urn:zitadel:iam:org:project:roles".into(),
                login_name: "preferred_username".into(),
            },
        }
    }

    fn judged(changes: Value) -> Result<(String, Option<i64>), Refusal> {
        let mut response = json!({
            "active": true, "iss": "https://idp.test", "aud": "project", "sub": "alice",
            "exp": 2_000, "urn:zitadel:iam:user:resourceowner:id": "acme",
            "urn:zitadel:iam:org:project:roles": {"otp.check": {"acme": "acme.localhost"}},
        });
        for (name, value) in changes.as_object().unwrap() {
            if value.is_null() {
                response.as_object_mut().unwrap().remove(name);
            } else {
                response[name] = value.clone();
            }
        }
        match expected().judge(response.as_object().unwrap(), 1_000) {
            Introspected::Active(caller, exp) => {
                assert!(caller.has_role_for("otp.check", "acme"));
                Ok((format!("{}@{}", caller.user, caller.org), exp))
            }
            Introspected::Refused(refusal) => Err(refusal),
        }
    }

    /// An introspection response passes the checks a JWT's claims pass, and maps the same.
    #[test]
    fn an_active_answer_must_be_for_this_audience_issuer_and_time() {
        assert_eq!(judged(json!({})), Ok(("alice@acme".into(), Some(2_000))));
        assert_eq!(
            judged(json!({"exp": null})),
            Ok(("alice@acme".into(), None))
        );
        assert_eq!(
            judged(json!({"aud": ["other", "project"], "iss": null})),
            Ok(("alice@acme".into(), Some(2_000)))
        );
        assert_eq!(judged(json!({"active": false})), Err(Refusal::Inactive));
        assert_eq!(judged(json!({"active": "true"})), Err(Refusal::Inactive));
        assert_eq!(
            judged(json!({"iss": "https://other.test"})),
            Err(Refusal::WrongIssuer)
        );
        assert_eq!(
            judged(json!({"aud": ["other"]})),
            Err(Refusal::WrongAudience)
        );
        assert_eq!(judged(json!({"aud": null})), Err(Refusal::WrongAudience));
        // Within the leeway of ten seconds, and just past it.
        assert!(judged(json!({"exp": 991})).is_ok());
        assert_eq!(judged(json!({"exp": 990})), Err(Refusal::Expired));
        assert!(judged(json!({"nbf": 1_010})).is_ok());
        assert_eq!(judged(json!({"nbf": 1_011})), Err(Refusal::NotYetValid));
        assert_eq!(
            judged(json!({"urn:zitadel:iam:user:resourceowner:id": null})),
            Err(Refusal::Claims)
        );
    }

    /// An active answer is remembered no longer than its token lives, nor than the setting.
    #[test]
    fn remembered_answers_last_until_the_earlier_of_exp_and_the_setting() {
        let lifetimes = Lifetimes {
            active: Duration::from_secs(60),
            refused: Duration::from_secs(5),
        };
        let caller = |exp| {
            let caller = expected()
                .claims
                .caller(
                    json!({"sub": "a", "urn:zitadel:iam:user:resourceowner:id": "o"})
                        .as_object()
                        .unwrap(),
                )
                .unwrap();
            Introspected::Active(Arc::new(caller), exp)
        };
        let now = chrono::Utc::now().timestamp();
        let life = |answer: &Introspected| {
            lifetimes
                .expire_after_create(&[0; 32], answer, Instant::now())
                .unwrap()
        };
        assert_eq!(life(&caller(None)), Duration::from_secs(60));
        assert_eq!(life(&caller(Some(now + 3_600))), Duration::from_secs(60));
        let soon = life(&caller(Some(now + 20)));
        assert!(soon <= Duration::from_secs(20) && soon >= Duration::from_secs(18));
        assert_eq!(life(&caller(Some(now - 5))), Duration::ZERO);
        assert_eq!(
            life(&Introspected::Refused(Refusal::Inactive)),
            Duration::from_secs(5)
        );
    }

    /// A service user's key, another application's key, or a file that is not a key file is
    /// named at start, without quoting the file (it holds a private key).
    #[test]
    fn a_key_file_must_be_the_api_applications() {
        let dir = std::env::temp_dir().join(format!("tessera-keyfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let refused = |contents: &str, client_id: Option<&str>| {
            let path = dir.join("key.json");
            std::fs::write(&path, contents).unwrap();
            let client = IntrospectionClient::KeyFile {
                path,
                client_id: client_id.map(str::to_owned),
            };
            match ClientAuthentication::from_config(&client, "https://idp.test") {
                Ok(_) => panic!("accepted {contents}"),
                Err(err) => err.to_string(),
            }
        };
        let service_user =
            r#"{"type":"serviceaccount","keyId":"1","key":"SECRET-PEM","userId":"2"}"#;
        let text = refused(service_user, None);
        assert!(
            text.contains("\"serviceaccount\" without a clientId"),
            "{text}"
        );
        let other =
            r#"{"type":"application","keyId":"1","key":"SECRET-PEM","appId":"3","clientId":"a@p"}"#;
        let text = refused(other, Some("b@p"));
        assert!(text.contains("for client \"a@p\""), "{text}");
        let text = refused(other, None);
        assert!(text.contains("not an RSA private key"), "{text}");
        let text = refused(r#"{"type":"application","key":"SECRET-PEM""#, None);
        assert!(text.contains("line 1"), "{text}");
        for text in [refused(service_user, None), refused(other, None)] {
            assert!(!text.contains("SECRET-PEM"), "{text}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn basic_credentials_are_form_encoded() {
        assert_eq!(form_urlencoded_component("a:b c@d"), "a%3Ab%20c%40d");
        assert_eq!(form_urlencoded_component("Az09-._*"), "Az09-._*");
    }
}
