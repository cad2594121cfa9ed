//! What every HTTP call takes from its request before any work, in one place: the gates
//! (client address limit, token; see `OtpService::authenticate`) as an extractor, so that a
//! handler that needs a caller cannot forget them, and they run before the body is read.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpMessage, HttpRequest, web};

use super::{ApiError, HttpState};
use crate::domain::OtpError;
use crate::service::{Authenticated, Origin};
use crate::telemetry::RequestId;

/// Set on a TLS connection whose client presented a certificate that the configured CA
/// signed (`tls.client_ca_file`; rustls has verified it by the time a request arrives).
#[derive(Debug, Clone, Copy)]
pub struct ClientCertified;

fn origin<'a>(req: &'a HttpRequest, request_id: &'a str) -> Origin<'a> {
    Origin {
        peer: req.peer_addr().map(|addr| addr.ip()),
        forwarded_for: req
            .headers()
            .get_all("x-forwarded-for")
            .filter_map(|value| value.to_str().ok())
            .collect(),
        authorization: req
            .headers()
            .get(header::AUTHORIZATION)
            .map(|v| v.as_bytes()),
        client_certified: req.conn_data::<ClientCertified>().is_some(),
        request_id,
    }
}

impl FromRequest for Authenticated {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let state = req
                .app_data::<web::Data<HttpState>>()
                .ok_or(OtpError::Internal)?;
            // Set by `with_request_id`, which wraps every route.
            let request_id = req
                .extensions()
                .get::<RequestId>()
                .map(|id| id.0.clone())
                .unwrap_or_default();
            Ok(state
                .service
                .authenticate(&origin(&req, &request_id))
                .await?)
        })
    }
}

/// Notes, per connection, whether its TLS client presented a certificate (which rustls has
/// verified against the configured CA by now).
pub fn on_connect(connection: &dyn std::any::Any, data: &mut actix_web::dev::Extensions) {
    use actix_tls::accept::rustls_0_23::TlsStream;
    if let Some(tls) = connection.downcast_ref::<TlsStream<actix_web::rt::net::TcpStream>>()
        && tls.get_ref().1.peer_certificates().is_some()
    {
        data.insert(ClientCertified);
    }
}

/// `x-zitadel-orgid` as received; the service parses it.
pub fn org_header(req: &HttpRequest) -> Option<&[u8]> {
    req.headers().get("x-zitadel-orgid").map(|v| v.as_bytes())
}
