//! `tessera grpc`: the walk-through's calls over native gRPC, from the binary itself, so that
//! a first try of the gRPC port needs neither grpcurl nor stubs generated for another
//! language. The client is the one tonic generates from the same protos the server serves;
//! each answer is printed as the JSON API would answer it (grpc-gateway's protojson), and an
//! error as its status, the contract's id in its message, and the attempts left.

use prost::Message;
use serde_json::{Value, json};
use tonic::metadata::{Ascii, MetadataValue};
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
    let headers = Headers::new(token, org)?;
    let channel = Channel::from_shared(address.to_owned())
        .map_err(|e| format!("{address}: {e}"))?
        .connect()
        .await
        .map_err(|e| format!("connecting to {address}: {e}"))?;
    let mut auth = AuthServiceClient::new(channel.clone());
    let answer = match call {
        Call::Health => {
            let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
            let health = answer(
                client
                    .check(tonic_health::pb::HealthCheckRequest::default())
                    .await,
            )?;
            json!({ "status": health.status().as_str_name() })
        }
        Call::Add => {
            let request = headers.on(auth::AddMyAuthFactorOtpRequest {});
            let added = answer(auth.add_my_auth_factor_otp(request).await)?;
            json!({ "url": added.url, "secret": added.secret, "details": details(added.details) })
        }
        Call::Verify { code } => {
            let request = headers.on(auth::VerifyMyAuthFactorOtpRequest { code });
            let verified = answer(auth.verify_my_auth_factor_otp(request).await)?;
            json!({ "details": details(verified.details) })
        }
        Call::List => {
            let request = headers.on(auth::ListMyAuthFactorsRequest {});
            let listed = answer(auth.list_my_auth_factors(request).await)?;
            let result: Vec<Value> = listed
                .result
                .iter()
                .map(|factor| json!({ "state": factor.state().as_str_name(), "otp": {} }))
                .collect();
            json!({ "result": result })
        }
        Call::Remove => {
            let request = headers.on(auth::RemoveMyAuthFactorOtpRequest {});
            let removed = answer(auth.remove_my_auth_factor_otp(request).await)?;
            json!({ "details": details(removed.details) })
        }
        Call::Check { user, code } => {
            let request = headers.on(CheckOtpRequest {
                user_id: user,
                code,
                recovery_code: String::new(),
            });
            let checked = answer(OtpCheckServiceClient::new(channel).check_otp(request).await)?;
            json!({ "details": details(checked.details) })
        }
        Call::Unlock { user } => {
            let request = headers.on(management::UnlockUserRequest { id: user });
            let unlocked = answer(
                ManagementServiceClient::new(channel)
                    .unlock_user(request)
                    .await,
            )?;
            json!({ "details": details(unlocked.details) })
        }
    };
    Ok(answer.to_string())
}

/// `authorization: Bearer <token>` and `x-zitadel-orgid`, checked once and put on each call.
struct Headers {
    authorization: Option<MetadataValue<Ascii>>,
    org: Option<MetadataValue<Ascii>>,
}

impl Headers {
    fn new(token: Option<&str>, org: Option<&str>) -> Result<Self, String> {
        let authorization = token
            .map(|token| format!("Bearer {token}").parse())
            .transpose()
            .map_err(|_| "the token is not a valid header value".to_owned())?;
        let org = org
            .map(str::parse)
            .transpose()
            .map_err(|_| "--org is not a valid header value".to_owned())?;
        Ok(Self { authorization, org })
    }

    fn on<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        let metadata = request.metadata_mut();
        if let Some(value) = &self.authorization {
            metadata.insert("authorization", value.clone());
        }
        if let Some(value) = &self.org {
            metadata.insert("x-zitadel-orgid", value.clone());
        }
        request
    }
}

/// A call's message, or its error status in one line.
fn answer<T>(result: Result<tonic::Response<T>, Status>) -> Result<T, String> {
    result
        .map(tonic::Response::into_inner)
        .map_err(|status| failure(&status))
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
