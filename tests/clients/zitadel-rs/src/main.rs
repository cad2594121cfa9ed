//! zitadel-rs-client HTTP_ENDPOINT USER_TOKEN ADMIN_TOKEN USER_ID NOW_UNIX_SECS
//!
//! Walks ZITADEL's v2 user API (the TOTP part) with the community `zitadel` crate's client,
//! one line per step, for tests/api/independent.rs to compare.

use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use zitadel::api::zitadel::user::v2 as user;
use zitadel::api::zitadel::user::v2::user_service_client::UserServiceClient;

fn authorized<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let bearer: MetadataValue<_> = format!("Bearer {token}").parse().expect("a header value");
    request.metadata_mut().insert("authorization", bearer);
    request
}

/// The code of an otpauth URI's secret at `now` (SHA-1, 6 digits, 30 s: tessera's default).
fn code(uri: &str, now: u64) -> String {
    let secret = uri
        .split(['?', '&'])
        .find_map(|part| part.strip_prefix("secret="))
        .expect("a secret in the URI");
    let key = data_encoding::BASE32_NOPAD
        .decode(secret.as_bytes())
        .expect("base32");
    let totp = totp_rs::TOTP::new_unchecked(totp_rs::Algorithm::SHA1, 6, 1, 30, key);
    totp.generate(now)
}

fn refusal(status: &tonic::Status) -> String {
    format!("{:?} {}", status.code(), status.message())
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, endpoint, user_token, admin_token, user_id, now] = args.as_slice() else {
        panic!("usage: zitadel-rs-client ENDPOINT USER_TOKEN ADMIN_TOKEN USER_ID NOW");
    };
    let now: u64 = now.parse().expect("now in Unix seconds");
    let channel = Channel::from_shared(endpoint.clone())
        .expect("an endpoint")
        .connect()
        .await
        .expect("tessera's gRPC port answers");
    let mut users = UserServiceClient::new(channel);
    let id = || user_id.clone();

    let registered = users
        .register_totp(authorized(
            user::RegisterTotpRequest { user_id: id() },
            user_token,
        ))
        .await
        .expect("RegisterTOTP")
        .into_inner();
    let details = registered.details.expect("details");
    println!(
        "registered sequence={} owner={}",
        details.sequence, details.resource_owner
    );

    let pending = users
        .list_authentication_factors(authorized(
            user::ListAuthenticationFactorsRequest {
                user_id: id(),
                auth_factors: vec![user::AuthFactors::Otp as i32],
                states: vec![user::AuthFactorState::NotReady as i32],
            },
            user_token,
        ))
        .await
        .expect("ListAuthenticationFactors")
        .into_inner();
    let states: Vec<&str> = pending
        .result
        .iter()
        .map(|factor| {
            user::AuthFactorState::try_from(factor.state).map_or("?", |s| s.as_str_name())
        })
        .collect();
    println!("pending states={states:?}");

    let verified = users
        .verify_totp_registration(authorized(
            user::VerifyTotpRegistrationRequest {
                user_id: id(),
                code: code(&registered.uri, now),
            },
            user_token,
        ))
        .await
        .expect("VerifyTOTPRegistration")
        .into_inner();
    println!(
        "verified sequence={}",
        verified.details.expect("details").sequence
    );

    let methods = users
        .list_authentication_method_types(authorized(
            user::ListAuthenticationMethodTypesRequest {
                user_id: id(),
                domain_query: None,
            },
            admin_token,
        ))
        .await
        .expect("ListAuthenticationMethodTypes")
        .into_inner();
    let names: Vec<&str> = methods
        .auth_method_types
        .iter()
        .map(|m| user::AuthenticationMethodType::try_from(*m).map_or("?", |t| t.as_str_name()))
        .collect();
    println!(
        "methods {names:?} total={}",
        methods.details.expect("details").total_result
    );

    let unlock = users
        .unlock_user(authorized(
            user::UnlockUserRequest { user_id: id() },
            admin_token,
        ))
        .await;
    println!(
        "unlock {}",
        unlock.err().map_or("ok".into(), |s| refusal(&s))
    );
    let own_unlock = users
        .unlock_user(authorized(
            user::UnlockUserRequest { user_id: id() },
            user_token,
        ))
        .await;
    println!(
        "self unlock {}",
        own_unlock.err().map_or("ok".into(), |s| refusal(&s))
    );

    let removed = users
        .remove_totp(authorized(
            user::RemoveTotpRequest { user_id: id() },
            admin_token,
        ))
        .await
        .expect("RemoveTOTP")
        .into_inner();
    println!(
        "removed sequence={}",
        removed.details.expect("details").sequence
    );
    let again = users
        .remove_totp(authorized(
            user::RemoveTotpRequest { user_id: id() },
            user_token,
        ))
        .await;
    println!(
        "removed again {}",
        again.err().map_or("ok".into(), |s| refusal(&s))
    );
}
