//! Bearer tokens: every way a token can be wrong is UNAUTHENTICATED in the contract's shape.

use std::sync::{Arc, Mutex};

use actix_web::{App, HttpResponse, HttpServer, web};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::helpers::{Backend, Spawn, Token, spawn_app};

const SEARCH: &str = "/auth/v1/users/me/auth_factors/_search";

async fn search_with(
    app: &crate::helpers::TestApp,
    authorization: Option<&str>,
) -> crate::helpers::Answer {
    let mut request = app.client.post(app.url(SEARCH)).json(&json!({}));
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    app.send(request).await
}

#[actix_web::test]
async fn every_supported_algorithm_verifies() {
    let app = spawn_app(Backend::Memory).await;
    for alg in [Algorithm::EdDSA, Algorithm::ES256, Algorithm::RS256] {
        let token = Token::user("acme", "alice").alg(alg).sign();
        search_with(&app, Some(&format!("Bearer {token}")))
            .await
            .assert_ok();
    }
}

#[actix_web::test]
async fn missing_and_malformed_headers() {
    let app = spawn_app(Backend::Memory).await;
    let answer = search_with(&app, None).await;
    answer.assert_error(401, 16, "AUTH-hdr0m");
    assert_eq!(answer.body["message"], "auth header missing (AUTH-hdr0m)");
    let token = Token::user("acme", "alice").sign();
    search_with(&app, Some(&format!("Basic {token}")))
        .await
        .assert_error(401, 16, "AUTH-toLo1");
    search_with(&app, Some(&format!("bearer{token}")))
        .await
        .assert_error(401, 16, "AUTH-toLo1");
    search_with(&app, Some("Bearer x"))
        .await
        .assert_error(401, 16, "AUTH-7fs1e");
    search_with(&app, Some("Bearer not.a.jwt"))
        .await
        .assert_error(401, 16, "AUTH-7fs1e");
}

#[actix_web::test]
async fn claims_that_do_not_hold_are_refused() {
    let app = spawn_app(Backend::Memory).await;
    let now = chrono::Utc::now().timestamp();
    let cases: Vec<(&str, Token)> = vec![
        (
            "expired beyond leeway",
            Token::user("acme", "alice").claim("exp", json!(now - 120)),
        ),
        (
            "not yet valid",
            Token::user("acme", "alice").claim("nbf", json!(now + 600)),
        ),
        (
            "wrong issuer",
            Token::user("acme", "alice").claim("iss", json!("https://evil.test")),
        ),
        (
            "wrong audience",
            Token::user("acme", "alice").claim("aud", json!("someone-else")),
        ),
        (
            "no organization",
            Token::user("acme", "alice")
                .claim("urn:zitadel:iam:user:resourceowner:id", Value::Null),
        ),
        ("empty subject", Token::user("acme", "")),
        (
            "unknown kid",
            Token::user("acme", "alice").kid("rotated-away"),
        ),
    ];
    for (why, token) in cases {
        let answer = search_with(&app, Some(&format!("Bearer {}", token.sign()))).await;
        assert_eq!(answer.status.as_u16(), 401, "{why}: {answer:?}");
        assert_eq!(answer.body["details"][0]["id"], "AUTH-7fs1e", "{why}");
    }
    // Within the leeway, an expired token still passes (clock skew between issuer and us).
    let barely = Token::user("acme", "alice")
        .claim("exp", json!(now - 5))
        .sign();
    search_with(&app, Some(&format!("Bearer {barely}")))
        .await
        .assert_ok();
}

#[actix_web::test]
async fn forged_tokens_are_refused() {
    let app = spawn_app(Backend::Memory).await;
    let good = Token::user("acme", "alice").sign();
    let claims = good.split('.').nth(1).unwrap().to_owned();
    // alg none, no signature.
    let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    for forged in [
        format!("{none_header}.{claims}."),
        format!("{none_header}.{claims}"),
    ] {
        search_with(&app, Some(&format!("Bearer {forged}")))
            .await
            .assert_error(401, 16, "AUTH-7fs1e");
    }
    // Another user's claims under alice's signature.
    let mallory = Token::user("acme", "mallory").sign();
    let parts: Vec<&str> = good.split('.').collect();
    let spliced = format!(
        "{}.{}.{}",
        parts[0],
        mallory.split('.').nth(1).unwrap(),
        parts[2]
    );
    search_with(&app, Some(&format!("Bearer {spliced}")))
        .await
        .assert_error(401, 16, "AUTH-7fs1e");
    // HS256 signed with the RSA public key (algorithm confusion), while HS256 is not configured.
    let public_pem = std::fs::read(crate::helpers::fixture("rs256.pub.pem")).unwrap();
    let confused = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &Token::user("acme", "alice").claims(),
        &EncodingKey::from_secret(&public_pem),
    )
    .unwrap();
    search_with(&app, Some(&format!("Bearer {confused}")))
        .await
        .assert_error(401, 16, "AUTH-7fs1e");
}

#[actix_web::test]
async fn hs256_only_when_configured() {
    let secret = "a-shared-secret-of-enough-length-for-hs256";
    let hs = |key: &str| {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &Token::user("acme", "alice").claims(),
            &EncodingKey::from_secret(key.as_bytes()),
        )
        .unwrap()
    };
    let plain = spawn_app(Backend::Memory).await;
    search_with(&plain, Some(&format!("Bearer {}", hs(secret))))
        .await
        .assert_error(401, 16, "AUTH-7fs1e");
    let configured = Spawn::new(Backend::Memory)
        .with(|s| s.auth.hs256_secret = secret.to_owned().into())
        .start()
        .await;
    search_with(&configured, Some(&format!("Bearer {}", hs(secret))))
        .await
        .assert_ok();
    search_with(
        &configured,
        Some(&format!(
            "Bearer {}",
            hs("another-secret-entirely-wrong-one")
        )),
    )
    .await
    .assert_error(401, 16, "AUTH-7fs1e");
}

/// A JWKS endpoint whose document the test can change (the issuer rotating keys).
async fn jwks_server(document: Arc<Mutex<String>>) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = HttpServer::new(move || {
        let document = document.clone();
        App::new().route(
            "/jwks",
            web::get().to(move || {
                let body = document.lock().unwrap().clone();
                async move {
                    HttpResponse::Ok()
                        .content_type("application/json")
                        .body(body)
                }
            }),
        )
    })
    .workers(1)
    .listen(listener)
    .unwrap()
    .run();
    actix_rt::spawn(server);
    format!("http://127.0.0.1:{port}/jwks")
}

#[actix_web::test]
async fn jwks_url_is_fetched_again_for_an_unknown_kid() {
    let full: Value = serde_json::from_str(
        &std::fs::read_to_string(crate::helpers::fixture("jwks.json")).unwrap(),
    )
    .unwrap();
    let only_ed = json!({ "keys": [full["keys"][0].clone()] });
    let document = Arc::new(Mutex::new(only_ed.to_string()));
    let url = jwks_server(document.clone()).await;
    let app = Spawn::new(Backend::Memory)
        .with(|s| {
            s.auth.jwks_file = String::new();
            s.auth.jwks_url = url;
            s.auth.jwks_refetch_min_interval_secs = 0;
        })
        .start()
        .await;
    let ed = Token::user("acme", "alice").sign();
    search_with(&app, Some(&format!("Bearer {ed}")))
        .await
        .assert_ok();
    let es = Token::user("acme", "alice").alg(Algorithm::ES256).sign();
    search_with(&app, Some(&format!("Bearer {es}")))
        .await
        .assert_error(401, 16, "AUTH-7fs1e");
    // The issuer publishes the new key: the next token with that kid triggers a fetch.
    *document.lock().unwrap() = full.to_string();
    search_with(&app, Some(&format!("Bearer {es}")))
        .await
        .assert_ok();
}

/// Sends `token` until it is refused (the key set changed in the background), for at most
/// 30 s; returns whether it was.
async fn refused_in_time(app: &crate::helpers::TestApp, token: &str) -> bool {
    for _ in 0..150 {
        let answer = search_with(app, Some(&format!("Bearer {token}"))).await;
        if answer.status == 401 {
            return true;
        }
        assert_eq!(answer.status, 200, "{:?}", answer.body);
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    false
}

fn fixture_jwks() -> (Value, Value) {
    let full: Value = serde_json::from_str(
        &std::fs::read_to_string(crate::helpers::fixture("jwks.json")).unwrap(),
    )
    .unwrap();
    let only_ed = json!({ "keys": [full["keys"][0].clone()] });
    (full, only_ed)
}

/// The issuer drops a key from its JWKS: the tokens that key verified, cached until their
/// `exp`, are refused once the URL has been fetched again, though no token with a new `kid`
/// ever asks for a fetch. The key that stays keeps its tokens.
#[actix_web::test]
async fn a_key_that_leaves_the_jwks_url_takes_its_cached_tokens_along() {
    let (full, only_ed) = fixture_jwks();
    let document = Arc::new(Mutex::new(full.to_string()));
    let url = jwks_server(document.clone()).await;
    let app = Spawn::new(Backend::Memory)
        .with(|s| {
            s.auth.jwks_file = String::new();
            s.auth.jwks_url = url;
            s.auth.jwks_refetch_min_interval_secs = 1;
            s.auth.jwks_refresh_secs = 1;
        })
        .start()
        .await;
    let ed = Token::user("acme", "alice").sign();
    let es = Token::user("acme", "alice").alg(Algorithm::ES256).sign();
    for token in [&ed, &es] {
        search_with(&app, Some(&format!("Bearer {token}")))
            .await
            .assert_ok();
    }
    *document.lock().unwrap() = only_ed.to_string();
    assert!(
        refused_in_time(&app, &es).await,
        "the ES256 token outlived its key"
    );
    search_with(&app, Some(&format!("Bearer {ed}")))
        .await
        .assert_ok();
}

/// The same for a JWKS file, rewritten in place (as an operator edits it) and replaced by a
/// rename (as Kubernetes updates a mounted Secret).
#[actix_web::test]
async fn a_key_that_leaves_the_jwks_file_takes_its_cached_tokens_along() {
    let (full, only_ed) = fixture_jwks();
    let dir = crate::helpers::TempDir::new("jwks");
    let file = dir.0.join("jwks.json");
    std::fs::write(&file, full.to_string()).unwrap();
    let path = file.to_string_lossy().into_owned();
    let app = Spawn::new(Backend::Memory)
        .with(|s| {
            s.auth.jwks_file = path;
            s.auth.jwks_refetch_min_interval_secs = 1;
        })
        .start()
        .await;
    let ed = Token::user("acme", "alice").sign();
    let es = Token::user("acme", "alice").alg(Algorithm::ES256).sign();
    let rsa = Token::user("acme", "alice").alg(Algorithm::RS256).sign();
    for token in [&ed, &es, &rsa] {
        search_with(&app, Some(&format!("Bearer {token}")))
            .await
            .assert_ok();
    }
    let without_es = json!({ "keys": [full["keys"][0].clone(), full["keys"][2].clone()] });
    std::fs::write(&file, without_es.to_string()).unwrap();
    assert!(
        refused_in_time(&app, &es).await,
        "the ES256 token outlived its key"
    );
    let staged = dir.0.join("staged.json");
    std::fs::write(&staged, only_ed.to_string()).unwrap();
    std::fs::rename(&staged, &file).unwrap();
    assert!(
        refused_in_time(&app, &rsa).await,
        "the RS256 token outlived its key"
    );
    search_with(&app, Some(&format!("Bearer {ed}")))
        .await
        .assert_ok();
}

#[actix_web::test]
async fn a_cached_token_still_expires() {
    let app = Spawn::new(Backend::Memory)
        .with(|s| s.auth.leeway_secs = 0)
        .start()
        .await;
    let now = chrono::Utc::now().timestamp();
    let short = Token::user("acme", "alice")
        .claim("exp", json!(now + 1))
        .sign();
    // Verified once, then served from the cache.
    search_with(&app, Some(&format!("Bearer {short}")))
        .await
        .assert_ok();
    search_with(&app, Some(&format!("Bearer {short}")))
        .await
        .assert_ok();
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    search_with(&app, Some(&format!("Bearer {short}")))
        .await
        .assert_error(401, 16, "AUTH-7fs1e");
}
