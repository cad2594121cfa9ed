//! Entry points for the fuzz targets (`fuzz/`) and for the test that replays their corpora
//! under stable cargo (`tests/api/fuzz_corpus.rs`): every decoder of outside input, called
//! as the server calls it. Each takes arbitrary bytes, and must neither panic nor hang.

use std::sync::OnceLock;

use secrecy::SecretString;

use crate::api::grpc::codec::decode_message;
use crate::api::grpc::gate::{read_frame, unary_message};
use crate::api::grpc::pb::tessera::otp::v1 as check;
use crate::api::grpc::pb::zitadel::auth::v1 as auth;
use crate::api::grpc::pb::zitadel::management::v1 as management;
use crate::api::http::{CodeRequest, NoFields, parse_json_body};
use crate::auth::TokenVerifier;

/// A target: arbitrary bytes in, nothing out; it must neither panic nor hang.
pub type Target = fn(&[u8]);

/// The targets, by name (the fuzz crate's binaries and the corpus folders).
pub const TARGETS: &[(&str, Target)] = &[
    ("json_body", json_body),
    ("authorization", authorization),
    ("claims", claims),
    ("grpc_frame", grpc_frame),
    ("grpc_web", grpc_web),
    ("protobuf", protobuf),
    ("settings", settings),
];

fn runtime() -> Option<&'static tokio::runtime::Runtime> {
    static RUNTIME: OnceLock<Option<tokio::runtime::Runtime>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()
        })
        .as_ref()
}

/// The verifier `tessera dev` runs (the development key, its issuer and audience), with
/// HS256 switched on as well, so that every path of the token check is reachable.
fn verifier() -> Option<&'static TokenVerifier> {
    static VERIFIER: OnceLock<Option<TokenVerifier>> = OnceLock::new();
    VERIFIER
        .get_or_init(|| {
            let mut settings = crate::settings::Settings::dev_defaults().ok()?;
            settings.auth.hs256_secret = SecretString::from("fuzzing-hs256-secret".to_owned());
            let config = settings.parse(crate::settings::Mode::Dev).ok()?;
            runtime()?
                .block_on(TokenVerifier::from_config(&config.auth))
                .ok()
        })
        .as_ref()
}

/// Whether the targets have what they need (a runtime, the verifier); a target without it
/// would test nothing, so the fuzz targets and the corpus test call this first.
pub fn self_check() -> Result<(), &'static str> {
    runtime().ok_or("no tokio runtime")?;
    verifier().ok_or("no token verifier")?;
    Ok(())
}

/// JSON request bodies into the request types.
pub fn json_body(data: &[u8]) {
    let _ = parse_json_body::<CodeRequest>(data);
    let _ = parse_json_body::<NoFields>(data);
}

/// An `Authorization` header value: the scheme, then the JWT (header, signing input,
/// signature, claims).
pub fn authorization(data: &[u8]) {
    if let (Some(runtime), Some(verifier)) = (runtime(), verifier()) {
        let _ = runtime.block_on(verifier.authenticate(Some(data)));
    }
}

/// Whether `data` authenticates: the corpus test checks that the seed tokens reach past the
/// signature, so that mutations of them explore the whole check.
pub fn authenticates(data: &[u8]) -> bool {
    match (runtime(), verifier()) {
        (Some(runtime), Some(verifier)) => {
            runtime.block_on(verifier.authenticate(Some(data))).is_ok()
        }
        _ => false,
    }
}

/// A token's claims, past its signature.
pub fn claims(data: &[u8]) {
    if let Some(verifier) = verifier() {
        let _ = verifier.caller_from_json(data);
    }
}

/// A unary call's body: its gRPC frame.
pub fn grpc_frame(data: &[u8]) {
    let _ = unary_message(data, false);
    let _ = unary_message(data, true);
}

/// A gRPC-web body, binary and text (base64), through tonic-web and the gate's reading of
/// the message.
pub fn grpc_web(data: &[u8]) {
    let Some(runtime) = runtime() else {
        return;
    };
    for content_type in ["application/grpc-web+proto", "application/grpc-web-text"] {
        runtime.block_on(grpc_web_call(content_type, data));
    }
}

async fn grpc_web_call(content_type: &str, data: &[u8]) {
    use tower_layer::Layer;
    use tower_service::Service;
    let mut service = tonic_web::GrpcWebLayer::new().layer(ReadMessage);
    let request = http::Request::builder()
        .method(http::Method::POST)
        .uri("/tessera.otp.v1.OtpCheckService/CheckOTP")
        .header(http::header::CONTENT_TYPE, content_type)
        .body(tonic::body::Body::new(http_body_util::Full::new(
            bytes::Bytes::copy_from_slice(data),
        )));
    if let Ok(request) = request {
        let _ = service.call(request).await;
    }
}

/// What the gate does with a call's body once tonic-web has translated it.
#[derive(Clone)]
struct ReadMessage;

impl tower_service::Service<http::Request<tonic::body::Body>> for ReadMessage {
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = futures_util::future::BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(async move {
            if let Ok(body) = read_frame(request.into_body(), 4096).await
                && let Ok(message) = unary_message(&body, false)
            {
                let _ = decode_message::<check::CheckOtpRequest>(message);
            }
            Ok(http::Response::new(tonic::body::Body::empty()))
        })
    }
}

/// Every request message of the API.
pub fn protobuf(data: &[u8]) {
    let _ = decode_message::<auth::VerifyMyAuthFactorOtpRequest>(data);
    let _ = decode_message::<auth::AddMyAuthFactorOtpRequest>(data);
    let _ = decode_message::<auth::ListMyAuthFactorsRequest>(data);
    let _ = decode_message::<auth::RemoveMyAuthFactorOtpRequest>(data);
    let _ = decode_message::<management::RemoveHumanAuthFactorOtpRequest>(data);
    let _ = decode_message::<management::UnlockUserRequest>(data);
    let _ = decode_message::<check::CheckOtpRequest>(data);
}

/// The seal key ring and the Redis seed list, as settings give them.
pub fn settings(data: &[u8]) {
    let text = String::from_utf8_lossy(data).into_owned();
    let _ = crate::seal::KeyRing::parse(&SecretString::from(text.clone()));
    let _ = crate::store::RedisNodes::parse(crate::store::RedisMode::Cluster, &text.into());
}
