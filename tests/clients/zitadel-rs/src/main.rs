//! zitadel-rs-client HTTP_ENDPOINT USER_TOKEN ADMIN_TOKEN USER_ID NOW_UNIX_SECS
//! zitadel-rs-client lockout HTTP_ENDPOINT ADMIN_TOKEN USER_ID
//!
//! Walks ZITADEL's v2 user API (the TOTP part), or its management API's lockout policy (the
//! calls ZITADEL's Terraform provider makes for `zitadel_lockout_policy`), with the community
//! `zitadel` crate's client, one line per step, for tests/api/python.rs to compare.

use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use zitadel::api::zitadel::management::v1 as management;
use zitadel::api::zitadel::management::v1::management_service_client::ManagementServiceClient;
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

async fn lockout(endpoint: &str, admin_token: &str, user_id: &str) {
    let channel = Channel::from_shared(endpoint.to_owned())
        .expect("an endpoint")
        .connect()
        .await
        .expect("tessera's gRPC port answers");
    let mut management = ManagementServiceClient::new(channel);
    let show = |got: management::GetLockoutPolicyResponse| {
        let policy = got.policy.expect("policy");
        format!(
            "is_default={} policy.is_default={} max_otp={} max_password={} owner={}",
            got.is_default,
            policy.is_default,
            policy.max_otp_attempts,
            policy.max_password_attempts,
            policy.details.map_or(String::new(), |details| details.resource_owner)
        )
    };
    let got = management
        .get_lockout_policy(authorized(management::GetLockoutPolicyRequest {}, admin_token))
        .await
        .expect("GetLockoutPolicy")
        .into_inner();
    println!("default {}", show(got));
    let add = || management::AddCustomLockoutPolicyRequest {
        max_password_attempts: 10,
        max_otp_attempts: 3,
    };
    let added = management
        .add_custom_lockout_policy(authorized(add(), admin_token))
        .await
        .expect("AddCustomLockoutPolicy")
        .into_inner();
    let details = added.details.expect("details");
    println!(
        "added sequence={} owner={} created={}",
        details.sequence,
        details.resource_owner,
        details.creation_date.is_some()
    );
    let again = management
        .add_custom_lockout_policy(authorized(add(), admin_token))
        .await;
    println!("added again {}", again.err().map_or("ok".into(), |s| refusal(&s)));
    let same = management
        .update_custom_lockout_policy(authorized(
            management::UpdateCustomLockoutPolicyRequest {
                max_password_attempts: 10,
                max_otp_attempts: 3,
            },
            admin_token,
        ))
        .await;
    println!("updated same {}", same.err().map_or("ok".into(), |s| refusal(&s)));
    let updated = management
        .update_custom_lockout_policy(authorized(
            management::UpdateCustomLockoutPolicyRequest {
                max_password_attempts: 10,
                max_otp_attempts: 4,
            },
            admin_token,
        ))
        .await
        .expect("UpdateCustomLockoutPolicy")
        .into_inner();
    println!(
        "updated sequence={}",
        updated.details.expect("details").sequence
    );
    let got = management
        .get_lockout_policy(authorized(management::GetLockoutPolicyRequest {}, admin_token))
        .await
        .expect("GetLockoutPolicy")
        .into_inner();
    println!("custom {}", show(got));
    let factors = management
        .list_human_auth_factors(authorized(
            management::ListHumanAuthFactorsRequest {
                user_id: user_id.to_owned(),
            },
            admin_token,
        ))
        .await
        .expect("ListHumanAuthFactors")
        .into_inner();
    println!("factors {}", factors.result.len());
    let reset = management
        .reset_lockout_policy_to_default(authorized(
            management::ResetLockoutPolicyToDefaultRequest {},
            admin_token,
        ))
        .await
        .expect("ResetLockoutPolicyToDefault")
        .into_inner();
    println!("reset sequence={}", reset.details.expect("details").sequence);
    let reset_again = management
        .reset_lockout_policy_to_default(authorized(
            management::ResetLockoutPolicyToDefaultRequest {},
            admin_token,
        ))
        .await;
    println!(
        "reset again {}",
        reset_again.err().map_or("ok".into(), |s| refusal(&s))
    );
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let [_, mode, endpoint, admin_token, user_id] = args.as_slice()
        && mode == "lockout"
    {
        lockout(endpoint, admin_token, user_id).await;
        return;
    }
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
