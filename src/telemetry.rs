//! The tracing subscriber: readable in dev, JSON in production. `RUST_LOG` wins over settings.

use serde::Deserialize;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// How log lines are written (`log.format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

/// Installs the global subscriber once; later calls (tests) are no-ops.
pub fn init<W>(format: LogFormat, level: &str, writer: W)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let _already_set = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Pretty => builder.compact().try_init(),
    };
}

/// A request's id: the caller's `x-request-id` when it is a sane token (so ids can be
/// followed across services), else a fresh one. Returned in the response either way.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

impl RequestId {
    pub fn from_header(value: Option<&[u8]>) -> Self {
        let given = value.and_then(|v| std::str::from_utf8(v).ok()).filter(|v| {
            (1..=128).contains(&v.len())
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        });
        match given {
            Some(id) => Self(id.to_owned()),
            None => {
                use rand::RngCore;
                let mut bytes = [0u8; 16];
                rand::rng().fill_bytes(&mut bytes);
                Self(bytes.iter().map(|b| format!("{b:02x}")).collect())
            }
        }
    }
}

/// tracing-actix-web's root span, without its WARN line for every 4xx: a wrong code or an
/// expired token is routine for an OTP server (counted, not logged). 5xx are logged.
pub struct RequestSpans;

impl tracing_actix_web::RootSpanBuilder for RequestSpans {
    /// Fewer fields than `root_span!`, which asks the router for `http.route` and so runs
    /// every route's regex a second time per request.
    fn on_request_start(request: &actix_web::dev::ServiceRequest) -> tracing::Span {
        use actix_web::HttpMessage;
        // Ours (`api::http::with_request_id` runs first), not tracing-actix-web's own UUID:
        // the id in the response header is the id in the logs.
        let request_id = request
            .extensions()
            .get::<RequestId>()
            .map(|id| id.0.clone())
            .unwrap_or_default();
        tracing::info_span!(
            "HTTP request",
            http.method = %request.method(),
            http.target = %request.path(),
            request_id = %request_id,
            rpc = tracing::field::Empty,
            tenant = tracing::field::Empty,
            http.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        )
    }

    fn on_request_end<B: actix_web::body::MessageBody>(
        span: tracing::Span,
        outcome: &Result<actix_web::dev::ServiceResponse<B>, actix_web::Error>,
    ) {
        let status = match outcome {
            Ok(response) => response.status(),
            Err(error) => error.as_response_error().status_code(),
        };
        span.record("http.status_code", status.as_u16());
        if status.is_server_error() {
            span.record("otel.status_code", "ERROR");
            span.in_scope(|| tracing::error!(status = status.as_u16(), "request failed"));
        } else {
            span.record("otel.status_code", "OK");
        }
    }
}
