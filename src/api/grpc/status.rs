//! `OtpError` as a gRPC status: the contract's code, the message `"<text> (<ID>)"`, and the
//! `zitadel.v1.ErrorDetail` (plus `CredentialsCheckError` on a wrong code) packed into a
//! `google.rpc.Status` in `grpc-status-details-bin`.

use prost::Message;

use super::pb::google::rpc::Status as RpcStatus;
use super::pb::zitadel::object::v2 as object_v2;
use super::pb::zitadel::v1::{CredentialsCheckError, ErrorDetail, ObjectDetails};
use crate::api::wire::attempts_message;
use crate::domain::{Details, OtpError, UnixMicros};

const ERROR_DETAIL: &str = "type.googleapis.com/zitadel.v1.ErrorDetail";
const CREDENTIALS_CHECK_ERROR: &str = "type.googleapis.com/zitadel.v1.CredentialsCheckError";

pub fn status(err: &OtpError) -> tonic::Status {
    let code = tonic::Code::from_i32(err.grpc_code() as i32);
    let mut details = vec![prost_types::Any {
        type_url: ERROR_DETAIL.into(),
        value: ErrorDetail {
            id: err.id().into(),
            message: err.to_string(),
        }
        .encode_to_vec(),
    }];
    if let Some(attempts) = err.failed_attempts() {
        details.push(prost_types::Any {
            type_url: CREDENTIALS_CHECK_ERROR.into(),
            value: CredentialsCheckError {
                id: err.id().into(),
                message: attempts_message(err, &attempts),
                failed_attempts: i32::try_from(attempts.failed).unwrap_or(i32::MAX),
            }
            .encode_to_vec(),
        });
    }
    let message = err.client_message();
    let packed = RpcStatus {
        code: code as i32,
        message: message.clone(),
        details,
    };
    let mut status = tonic::Status::with_details(code, message, packed.encode_to_vec().into());
    if let OtpError::RateLimited { retry_after_secs } = err
        && let Ok(value) = retry_after_secs.to_string().parse()
    {
        status.metadata_mut().insert("retry-after", value);
    }
    status
}

pub(super) fn timestamp(at: UnixMicros) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.0.div_euclid(1_000_000),
        nanos: i32::try_from(at.0.rem_euclid(1_000_000) * 1_000).unwrap_or(0),
    }
}

pub fn details(details: &Details) -> ObjectDetails {
    ObjectDetails {
        sequence: details.sequence,
        creation_date: details.creation_date.map(timestamp),
        change_date: details.change_date.map(timestamp),
        resource_owner: details.resource_owner.to_string(),
    }
}

/// The same details as v2 `Details` (other field numbers, the same meaning).
pub fn details_v2(details: &Details) -> object_v2::Details {
    object_v2::Details {
        sequence: details.sequence,
        change_date: details.change_date.map(timestamp),
        resource_owner: details.resource_owner.to_string(),
        creation_date: details.creation_date.map(timestamp),
    }
}
