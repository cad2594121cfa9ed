//! `tessera grpc`: the walk-through's calls over native gRPC, from the binary itself, so that
//! a first try of the gRPC port needs neither grpcurl nor stubs generated for another
//! language. The client is the one tonic generates from the same protos the server serves;
//! each answer is printed as the JSON API would answer it (grpc-gateway's protojson), and an
//! error as its status, the contract's id in its message, and the attempts left.

use prost::Message;
use serde_json::{Value, json};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Request, Status};

use crate::api::grpc::pb::google::rpc::Status as RpcStatus;
use crate::api::grpc::pb::tessera::otp::v1::CheckOtpRequest;
use crate::api::grpc::pb::tessera::otp::v1::otp_check_service_client::OtpCheckServiceClient;
use crate::api::grpc::pb::zitadel::auth::v1 as auth;
use crate::api::grpc::pb::zitadel::auth::v1::auth_service_client::AuthServiceClient;
use crate::api::grpc::pb::zitadel::management::v1 as management;
use crate::api::grpc::pb::zitadel::management::v1::management_service_client::ManagementServiceClient;
use crate::api::grpc::pb::zitadel::v1::{CredentialsCheckError, ObjectDetails};

/// One call of the walk-through.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Call {
    /// grpc.health.v1.Health/Check of the whole server (no token).
    Health,
    /// zitadel.auth.v1.AuthService/AddMyAuthFactorOTP: enroll the token's user.
    Add,
    /// zitadel.auth.v1.AuthService/VerifyMyAuthFactorOTP: confirm the enrollment.
    Verify { code: String },
    /// zitadel.auth.v1.AuthService/ListMyAuthFactors.
    List,
    /// zitadel.auth.v1.AuthService/RemoveMyAuthFactorOTP.
    Remove,
    /// tessera.otp.v1.OtpCheckService/CheckOTP: the login check (role otp.check).
    Check { user: String, code: String },
    /// zitadel.management.v1.ManagementService/UnlockUser (role otp.admin).
    Unlock { user: String },
}

/// Makes `call` against `address` (e.g. `http://localhost:8081`) with the token and the
/// organization header; the answer as JSON, or the error as one line.
pub async fn run(
    address: &str,
    token: Option<&str>,
    org: Option<&str>,
    call: Call,
) -> Result<String, String> {
    let channel = Channel::from_shared(address.to_owned())
        .map_err(|e| format!("{address}: {e}"))?
        .connect()
        .await
        .map_err(|e| format!("connecting to {address}: {e}"))?;
    let answer = match call {
        Call::Health => {
            let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
            let status = client
                .check(tonic_health::pb::HealthCheckRequest::default())
                .await
                .map_err(|s| failure(&s))?
                .into_inner()
                .status();
            json!({ "status": status.as_str_name() })
        }
        Call::Add => {
            let added = AuthServiceClient::new(channel)
                .add_my_auth_factor_otp(with_metadata(
                    auth::AddMyAuthFactorOtpRequest {},
                    token,
                    org,
                )?)
                .await
                .map_err(|s| failure(&s))?
                .into_inner();
            json!({ "url": added.url, "secret": added.secret, "details": details(added.details) })
        }
        Call::Verify { code } => {
            let verified = AuthServiceClient::new(channel)
                .verify_my_auth_factor_otp(with_metadata(
                    auth::VerifyMyAuthFactorOtpRequest { code },
                    token,
                    org,
                )?)
                .await
                .map_err(|s| failure(&s))?
                .into_inner();
            json!({ "details": details(verified.details) })
        }
        Call::List => {
            let listed = AuthServiceClient::new(channel)
                .list_my_auth_factors(with_metadata(
                    auth::ListMyAuthFactorsRequest {},
                    token,
                    org,
                )?)
                .await
                .map_err(|s| failure(&s))?
                .into_inner();
            let result: Vec<Value> = listed
                .result
                .iter()
                .map(|factor| json!({ "state": factor.state().as_str_name(), "otp": {} }))
                .collect();
            json!({ "result": result })
        }
        Call::Remove => {
            let removed = AuthServiceClient::new(channel)
                .remove_my_auth_factor_otp(with_metadata(
                    auth::RemoveMyAuthFactorOtpRequest {},
                    token,
                    org,
                )?)
                .await
                .map_err(|s| failure(&s))?
                .into_inner();
            json!({ "details": details(removed.details) })
        }
        Call::Check { user, code } => {
            let checked = OtpCheckServiceClient::new(channel)
                .check_otp(with_metadata(
                    CheckOtpRequest {
                        user_id: user,
                        code,
                        recovery_code: String::new(),
                    },
                    token,
                    org,
                )?)
                .await
                .map_err(|s| failure(&s))?
                .into_inner();
            json!({ "details": details(checked.details) })
        }
        Call::Unlock { user } => {
            let unlocked = ManagementServiceClient::new(channel)
                .unlock_user(with_metadata(
                    management::UnlockUserRequest { id: user },
                    token,
                    org,
                )?)
                .await
                .map_err(|s| failure(&s))?
                .into_inner();
            json!({ "details": details(unlocked.details) })
        }
    };
    Ok(answer.to_string())
}

fn with_metadata<T>(
    message: T,
    token: Option<&str>,
    org: Option<&str>,
) -> Result<Request<T>, String> {
    let mut request = Request::new(message);
    if let Some(token) = token {
        let value: MetadataValue<_> = format!("Bearer {token}")
            .parse()
            .map_err(|_| "the token is not a valid header value".to_owned())?;
        request.metadata_mut().insert("authorization", value);
    }
    if let Some(org) = org {
        let value: MetadataValue<_> = org
            .parse()
            .map_err(|_| "--org is not a valid header value".to_owned())?;
        request.metadata_mut().insert("x-zitadel-orgid", value);
    }
    Ok(request)
}

/// `details` as the JSON API writes it: the sequence as a string, RFC 3339 dates, unset
/// fields left out.
fn details(details: Option<ObjectDetails>) -> Value {
    let Some(details) = details else {
        return Value::Null;
    };
    let mut object = serde_json::Map::new();
    if details.sequence != 0 {
        object.insert("sequence".into(), details.sequence.to_string().into());
    }
    for (name, date) in [
        ("creationDate", details.creation_date),
        ("changeDate", details.change_date),
    ] {
        if let Some(date) = date
            && let Some(time) = chrono::DateTime::from_timestamp(date.seconds, date.nanos as u32)
        {
            object.insert(
                name.into(),
                time.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
                    .into(),
            );
        }
    }
    object.insert("resourceOwner".into(), details.resource_owner.into());
    Value::Object(object)
}

/// An error status in one line: its code, its message (which ends with the contract's id),
/// and the attempts left when the status carries a `CredentialsCheckError`.
fn failure(status: &Status) -> String {
    let mut line = format!("{:?}: {}", status.code(), status.message());
    if let Ok(packed) = RpcStatus::decode(status.details()) {
        let check = packed
            .details
            .iter()
            .filter(|any| any.type_url.ends_with("zitadel.v1.CredentialsCheckError"))
            .find_map(|any| CredentialsCheckError::decode(any.value.as_slice()).ok());
        if let Some(check) = check {
            line.push_str(&format!(" [{}]", check.message));
        }
    }
    line
}
