//! Request ids: taken from x-request-id when sane, generated otherwise, returned on both wires.

use tessera::api::grpc::pb::zitadel::auth::v1 as auth;
use tessera::api::grpc::pb::zitadel::auth::v1::auth_service_client::AuthServiceClient;

use crate::grpc::{channel, request};
use crate::helpers::{Backend, Token, spawn_app};

#[actix_web::test]
async fn request_ids_over_http_and_grpc() {
    let app = spawn_app(Backend::Memory).await;
    let alice = Token::user("acme", "alice").sign();
    let search = |id: Option<&str>| {
        let mut request = app
            .client
            .post(app.url("/auth/v1/users/me/auth_factors/_search"))
            .bearer_auth(&alice);
        if let Some(id) = id {
            request = request.header("x-request-id", id);
        }
        request.send()
    };
    let given = search(Some("req-42.a:b_c")).await.unwrap();
    assert_eq!(given.headers()["x-request-id"], "req-42.a:b_c");
    let generated = search(None).await.unwrap();
    let id = generated.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(id.len(), 32);
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_ne!(
        search(None).await.unwrap().headers()["x-request-id"]
            .to_str()
            .unwrap(),
        id
    );
    // Not a sane token (spaces, quotes): replaced, so logs cannot be forged through it.
    let insane = search(Some("x\" y=1")).await.unwrap();
    assert_ne!(insane.headers()["x-request-id"], "x\" y=1");
    // Errors carry it too.
    let refused = app
        .client
        .post(app.url("/auth/v1/users/me/auth_factors/_search"))
        .header("x-request-id", "r-1")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 401);
    assert_eq!(refused.headers()["x-request-id"], "r-1");

    let mut client = AuthServiceClient::new(channel(&app).await);
    let mut call = request(auth::ListMyAuthFactorsRequest {}, Some(&alice), None);
    call.metadata_mut()
        .insert("x-request-id", "grpc-7".parse().unwrap());
    let answer = client.list_my_auth_factors(call).await.unwrap();
    assert_eq!(answer.metadata().get("x-request-id").unwrap(), "grpc-7");
    let failed = client
        .list_my_auth_factors(request(auth::ListMyAuthFactorsRequest {}, None, None))
        .await
        .unwrap_err();
    assert_eq!(
        failed
            .metadata()
            .get("x-request-id")
            .unwrap()
            .to_str()
            .unwrap()
            .len(),
        32
    );
}
