//! The one layer every gRPC call of tessera's API passes, in order, before its service runs:
//!
//! 1. its request id (the caller's `x-request-id` or a fresh one) and its span, which every
//!    log line it causes carries, down to the store;
//! 2. the gates (client address limit, token; `OtpService::authenticate`), from the headers
//!    alone: a refused call is answered before its body is read, so an unauthenticated body
//!    that trickles in holds nothing;
//! 3. its one message, read within the body timeout and up to the size limit, its frame
//!    checked (flag, length, exactly one) so that a malformed frame is INVALID_ARGUMENT with
//!    tessera's ErrorDetail rather than tonic's INTERNAL or OUT_OF_RANGE.
//!
//! Then the service (it takes the caller from the request's extensions), and on the way out
//! `x-request-id`, the call's metrics and, for a server-side failure, a log line. Health and
//! reflection pass through with a request id only.
//!
//! The gate sits inside tonic-web, so a gRPC-web request arrives here as native gRPC.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use futures_util::future::BoxFuture;
use http::{HeaderValue, Request, Response};
use http_body::Frame;
use http_body_util::BodyExt;
use tonic::body::Body;
use tracing::Instrument;

use super::listener::ConnInfo;
use super::status::status;
use crate::domain::OtpError;
use crate::metrics::code_name;
use crate::service::{Origin, OtpService};
use crate::telemetry::RequestId;

/// The unary calls of tessera's API, by path: the RPC name metrics and logs use.
fn rpc_of(path: &str) -> Option<&'static str> {
    Some(match path {
        "/zitadel.auth.v1.AuthService/AddMyAuthFactorOTP" => "AddMyAuthFactorOTP",
        "/zitadel.auth.v1.AuthService/VerifyMyAuthFactorOTP" => "VerifyMyAuthFactorOTP",
        "/zitadel.auth.v1.AuthService/RemoveMyAuthFactorOTP" => "RemoveMyAuthFactorOTP",
        "/zitadel.auth.v1.AuthService/ListMyAuthFactors" => "ListMyAuthFactors",
        "/zitadel.management.v1.ManagementService/RemoveHumanAuthFactorOTP" => {
            "RemoveHumanAuthFactorOTP"
        }
        "/zitadel.management.v1.ManagementService/UnlockUser" => "UnlockUser",
        "/tessera.otp.v1.OtpCheckService/CheckOTP" => "CheckOTP",
        "/zitadel.user.v2.UserService/RegisterTOTP" => "RegisterTOTP",
        "/zitadel.user.v2.UserService/VerifyTOTPRegistration" => "VerifyTOTPRegistration",
        "/zitadel.user.v2.UserService/RemoveTOTP" => "RemoveTOTP",
        "/zitadel.user.v2.UserService/UnlockUser" => "UnlockUserV2",
        "/zitadel.user.v2.UserService/ListAuthenticationMethodTypes" => {
            "ListAuthenticationMethodTypes"
        }
        "/zitadel.user.v2.UserService/ListAuthenticationFactors" => "ListAuthenticationFactors",
        "/zitadel.user.v2.UserService/GenerateRecoveryCodes" => "GenerateRecoveryCodes",
        "/zitadel.user.v2.UserService/RemoveRecoveryCodes" => "RemoveRecoveryCodes",
        "/tessera.otp.v1.RecoveryCodeService/GetRecoveryCodes" => "GetRecoveryCodes",
        "/zitadel.management.v1.ManagementService/ListHumanAuthFactors" => "ListHumanAuthFactors",
        "/zitadel.management.v1.ManagementService/GetLockoutPolicy" => "GetLockoutPolicy",
        "/zitadel.management.v1.ManagementService/GetDefaultLockoutPolicy" => {
            "GetDefaultLockoutPolicy"
        }
        "/zitadel.management.v1.ManagementService/AddCustomLockoutPolicy" => {
            "AddCustomLockoutPolicy"
        }
        "/zitadel.management.v1.ManagementService/UpdateCustomLockoutPolicy" => {
            "UpdateCustomLockoutPolicy"
        }
        "/zitadel.management.v1.ManagementService/ResetLockoutPolicyToDefault" => {
            "ResetLockoutPolicyToDefault"
        }
        "/tessera.otp.v1.PolicyService/GetOtpPolicy" => "GetOtpPolicy",
        "/tessera.otp.v1.PolicyService/SetOtpPolicy" => "SetOtpPolicy",
        "/tessera.otp.v1.PolicyService/ResetOtpPolicy" => "ResetOtpPolicy",
        "/tessera.otp.v1.UserAdminService/GetUserFactor" => "GetUserFactor",
        "/tessera.otp.v1.UserAdminService/ListLockedUsers" => "ListLockedUsers",
        "/tessera.otp.v1.AuditService/ListEvents" => "ListEvents",
        "/tessera.otp.v1.AuditService/ListUserEvents" => "ListUserEvents",
        _ => return None,
    })
}

/// The gRPC frame header: a flag byte and a four-byte length.
const FRAME_HEADER: usize = 5;

/// The one message of a unary call's body (its frame: a flag byte, a four-byte length, the
/// message). Exactly one frame, uncompressed (`compression_declared`: the request named a
/// `grpc-encoding`, which tessera does not take). (Also the frame fuzz target's entry.)
pub fn unary_message(body: &[u8], compression_declared: bool) -> Result<&[u8], OtpError> {
    let (&flag, rest) = body.split_first().ok_or(OtpError::MalformedMessage)?;
    let (length, message) = rest
        .split_at_checked(FRAME_HEADER - 1)
        .ok_or(OtpError::MalformedMessage)?;
    match flag {
        0 => {}
        1 if compression_declared => return Err(OtpError::UnsupportedCompression),
        _ => return Err(OtpError::MalformedMessage),
    }
    let length = u32::from_be_bytes(length.try_into().map_err(|_| OtpError::MalformedMessage)?);
    // Shorter than announced: truncated. Longer: a second frame, or garbage after the first.
    if usize::try_from(length).ok() != Some(message.len()) {
        return Err(OtpError::MalformedMessage);
    }
    Ok(message)
}

/// The declared length of the frame at the start of `received`, once its header is in.
fn declared_length(received: &[u8]) -> Option<usize> {
    let length: [u8; 4] = received.get(1..FRAME_HEADER)?.try_into().ok()?;
    usize::try_from(u32::from_be_bytes(length)).ok()
}

struct Shared {
    service: Arc<OtpService>,
    max_message_bytes: usize,
    body_timeout: Duration,
}

#[derive(Clone)]
pub struct GateLayer(Arc<Shared>);

impl GateLayer {
    pub fn new(service: Arc<OtpService>, max_message_bytes: usize, body_timeout: Duration) -> Self {
        Self(Arc::new(Shared {
            service,
            max_message_bytes,
            body_timeout,
        }))
    }
}

impl<S> tower_layer::Layer<S> for GateLayer {
    type Service = Gate<S>;

    fn layer(&self, inner: S) -> Gate<S> {
        Gate {
            inner,
            shared: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Gate<S> {
    inner: S,
    shared: Arc<Shared>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<S> tower_service::Service<Request<Body>> for Gate<S>
where
    S: tower_service::Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError> + Send,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        // The clone that was made ready is the one that serves (tower's convention).
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        let shared = self.shared.clone();
        let request_id =
            RequestId::from_header(request.headers().get("x-request-id").map(|v| v.as_bytes()));
        let Some(rpc) = rpc_of(request.uri().path()) else {
            return Box::pin(async move {
                let mut response = inner.call(request).await?;
                tag(&mut response, &request_id);
                Ok(response)
            });
        };
        let span = tracing::info_span!(
            "gRPC request",
            rpc,
            request_id = %request_id.0,
            tenant = tracing::field::Empty,
            grpc.code = tracing::field::Empty,
        );
        let activity = request
            .extensions()
            .get::<ConnInfo>()
            .map(|conn| conn.activity.clone());
        if let Some(activity) = &activity {
            activity.request_started();
        }
        let call = Call {
            rpc,
            started: Instant::now(),
            span: span.clone(),
            shared: shared.clone(),
            activity,
            code: None,
        };
        Box::pin(
            async move {
                let response = match admit(&shared, request, &request_id).await {
                    Ok(request) => inner.call(request).await?,
                    Err(refused) => status(&refused).into_http(),
                };
                let (parts, body) = response.into_parts();
                let mut call = call;
                call.code = grpc_status(&parts.headers);
                let mut response = Response::from_parts(parts, Body::new(Observed { body, call }));
                tag(&mut response, &request_id);
                Ok(response)
            }
            .instrument(span),
        )
    }
}

fn tag(response: &mut Response<Body>, request_id: &RequestId) {
    if let Ok(value) = HeaderValue::from_str(&request_id.0) {
        response.headers_mut().insert("x-request-id", value);
    }
}

fn grpc_status(headers: &http::HeaderMap) -> Option<i32> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// The gates, then the message: the request as the service takes it, or why it is refused.
async fn admit(
    shared: &Shared,
    request: Request<Body>,
    request_id: &RequestId,
) -> Result<Request<Body>, OtpError> {
    let (mut parts, body) = request.into_parts();
    let conn = parts.extensions.get::<ConnInfo>().cloned();
    let origin = Origin {
        peer: conn.as_ref().and_then(|c| c.remote).map(|addr| addr.ip()),
        forwarded_for: parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect(),
        authorization: parts.headers.get("authorization").map(|v| v.as_bytes()),
        client_certified: conn.is_some_and(|c| c.client_certified),
        request_id: &request_id.0,
    };
    let authenticated = shared.service.authenticate(&origin).await?;
    let compression_declared = parts
        .headers
        .get("grpc-encoding")
        .is_some_and(|v| v.as_bytes() != b"identity");
    let body = tokio::time::timeout(
        shared.body_timeout,
        read_frame(body, shared.max_message_bytes),
    )
    .await
    .map_err(|_| OtpError::BodyTimeout)??;
    unary_message(&body, compression_declared)?;
    parts.extensions.insert(Arc::new(authenticated));
    Ok(Request::from_parts(parts, Body::new(Full(Some(body)))))
}

/// Reads a unary call's body: one frame of at most `max_message` bytes. It stops reading as
/// soon as the frame's header announces more, or more has arrived.
pub(crate) async fn read_frame(mut body: Body, max_message: usize) -> Result<Bytes, OtpError> {
    let mut received = BytesMut::new();
    while let Some(frame) = body.frame().await {
        // tonic-web reports gRPC-web-text that is not base64 as a body error.
        let frame = frame.map_err(|_| OtpError::MalformedMessage)?;
        if let Ok(mut data) = frame.into_data() {
            while data.has_remaining() {
                let chunk = data.chunk();
                received.extend_from_slice(chunk);
                let advance = chunk.len();
                data.advance(advance);
            }
        }
        let announced_too_much = declared_length(&received).is_some_and(|l| l > max_message);
        if announced_too_much || received.len() > max_message + FRAME_HEADER {
            return Err(OtpError::BodyTooLarge);
        }
    }
    Ok(received.freeze())
}

/// A body already read.
struct Full(Option<Bytes>);

impl http_body::Body for Full {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Poll::Ready(self.get_mut().0.take().map(|data| Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_none()
    }
}

/// One call being answered: when its body is done (or dropped), it is counted and timed
/// under its RPC with its gRPC code, logged if it failed on the server's side, and the
/// connection learns that it ended.
struct Call {
    rpc: &'static str,
    started: Instant,
    span: tracing::Span,
    shared: Arc<Shared>,
    activity: Option<Arc<super::listener::Activity>>,
    /// From the headers of a trailers-only answer, or the trailers.
    code: Option<i32>,
}

impl Drop for Call {
    fn drop(&mut self) {
        // No status at all: the client went away before the answer was complete.
        let code = self.code.unwrap_or(tonic::Code::Cancelled as i32);
        self.span.record("grpc.code", code);
        let elapsed = self.started.elapsed().as_secs_f64();
        self.shared
            .service
            .metrics
            .observe_request("grpc", self.rpc, code_name(code), elapsed);
        let server_side = matches!(
            tonic::Code::from_i32(code),
            tonic::Code::Internal
                | tonic::Code::Unknown
                | tonic::Code::Unavailable
                | tonic::Code::DataLoss
                | tonic::Code::DeadlineExceeded
        );
        self.span.in_scope(|| {
            if server_side {
                tracing::error!(grpc.code = code, "request failed");
            } else {
                tracing::debug!(grpc.code = code, "request answered");
            }
        });
        if let Some(activity) = &self.activity {
            activity.request_ended();
        }
    }
}

/// The answer's body, watched for the trailers that carry its gRPC status.
struct Observed {
    body: Body,
    call: Call,
}

impl http_body::Body for Observed {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(trailers) = frame.trailers_ref()
            && let Some(code) = grpc_status(trailers)
        {
            this.call.code = Some(code);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(flag: u8, message: &[u8], length: u32) -> Vec<u8> {
        let mut framed = vec![flag];
        framed.extend_from_slice(&length.to_be_bytes());
        framed.extend_from_slice(message);
        framed
    }

    #[test]
    fn one_uncompressed_frame_exactly() {
        assert_eq!(unary_message(&frame(0, b"abc", 3), false), Ok(&b"abc"[..]));
        assert_eq!(unary_message(&frame(0, b"", 0), false), Ok(&b""[..]));
        let malformed = Err(OtpError::MalformedMessage);
        assert_eq!(unary_message(&[], false), malformed);
        assert_eq!(unary_message(&[0, 0, 0], false), malformed);
        assert_eq!(unary_message(&frame(0, b"abc", 4), false), malformed);
        assert_eq!(unary_message(&frame(0, b"abc", 2), false), malformed);
        let mut two = frame(0, b"a", 1);
        two.extend(frame(0, b"b", 1));
        assert_eq!(unary_message(&two, false), malformed);
        for flag in [1, 2, 0x7f, 0x80, 0xff] {
            assert_eq!(unary_message(&frame(flag, b"a", 1), false), malformed);
        }
        assert_eq!(
            unary_message(&frame(1, b"a", 1), true),
            Err(OtpError::UnsupportedCompression)
        );
    }
}
