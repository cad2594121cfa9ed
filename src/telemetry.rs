//! The tracing subscriber: readable in dev, JSON in production. `RUST_LOG` wins over settings.

use serde::Deserialize;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// How log lines are written (`log.format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

/// Installs the global subscriber once; later calls (tests) are no-ops. `RUST_LOG`, when set
/// and valid, wins over `level`.
pub fn init<W>(format: LogFormat, level: &str, writer: W)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let rust_log = std::env::var("RUST_LOG").ok();
    match filter_of(rust_log.as_deref(), level) {
        LogFilter::Targets(targets) => install(targets, format, writer),
        LogFilter::Env(env) => install(env, format, writer),
    }
}

/// Which events and spans are on. `Targets` for directives of targets and levels (a level
/// alone, as the settings give it, and most `RUST_LOG` values): `EnvFilter` consults its
/// table of spans on every enter and exit of every span, a lock and a lookup each time a
/// request's future is polled: at `info`, replacing it took a check from 28.7 to 24.4 µs of
/// tessera's CPU (`BENCHMARKS.md`). It is kept for what only it reads: directives about
/// spans or fields.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // made once, at start
enum LogFilter {
    Targets(Targets),
    Env(EnvFilter),
}

fn filter_of(rust_log: Option<&str>, level: &str) -> LogFilter {
    let given = rust_log
        .map(str::trim)
        .filter(|directives| !directives.is_empty());
    for directives in given.into_iter().chain([level]) {
        if let Ok(targets) = directives.parse::<Targets>() {
            return LogFilter::Targets(targets);
        }
        if let Ok(env) = EnvFilter::try_new(directives) {
            return LogFilter::Env(env);
        }
    }
    LogFilter::Env(EnvFilter::new(level))
}

fn install<F, W>(filter: F, format: LogFormat, writer: W)
where
    F: Layer<Registry> + Send + Sync + 'static,
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let lines = tracing_subscriber::fmt::layer().with_writer(writer);
    let subscriber = tracing_subscriber::registry().with(filter);
    let _already_set = match format {
        // The current span only (a request has one): its list would repeat it in every line.
        LogFormat::Json => subscriber
            .with(
                lines
                    .json()
                    .flatten_event(true)
                    .with_span_list(false)
                    .fmt_fields(AppendedJsonFields),
            )
            .try_init(),
        LogFormat::Pretty => subscriber.with(lines.compact()).try_init(),
    };
}

/// A span's fields as one JSON object, as tracing-subscriber's `JsonFields` writes them, but
/// a field recorded later (the RPC, the tenant, a gRPC code) is appended to the object rather
/// than merged into it: `JsonFields` parses the object and writes it anew on each record,
/// which at `info` cost every request more than its log lines did (`BENCHMARKS.md`). A field
/// recorded twice appears twice; a JSON reader keeps the later value.
pub struct AppendedJsonFields;

impl<'writer> tracing_subscriber::fmt::FormatFields<'writer> for AppendedJsonFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        writer: tracing_subscriber::fmt::format::Writer<'writer>,
        fields: R,
    ) -> std::fmt::Result {
        tracing_subscriber::fmt::format::JsonFields::new().format_fields(writer, fields)
    }

    fn add_fields(
        &self,
        current: &'writer mut tracing_subscriber::fmt::FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> std::fmt::Result {
        let mut added = String::new();
        tracing_subscriber::fmt::format::JsonFields::new().format_fields(
            tracing_subscriber::fmt::format::Writer::new(&mut added),
            fields,
        )?;
        append_json_members(&mut current.fields, &added);
        Ok(())
    }
}

/// `{"a":1}` and `{"b":2}` make `{"a":1,"b":2}`: the second object's members appended to the
/// first's. Either may be empty (`{}`, or no text at all before a span has fields).
fn append_json_members(object: &mut String, added: &str) {
    let members = added
        .strip_prefix('{')
        .and_then(|rest| rest.strip_suffix('}'))
        .unwrap_or_default();
    if members.is_empty() {
        return;
    }
    match object.strip_suffix('}') {
        Some(before) if before.len() > 1 => {
            object.truncate(before.len());
            object.push(',');
        }
        _ => {
            object.clear();
            object.push('{');
        }
    }
    object.push_str(members);
    object.push('}');
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
                Self(data_encoding::HEXLOWER.encode(&bytes))
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
        // The status goes with the one line a request may end with; recorded on the span, it
        // would be formatted for every request and read by nothing (no span-close events).
        if status.is_server_error() {
            span.in_scope(|| tracing::error!(status = status.as_u16(), "request failed"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Levels and targets take the filter without a table of spans; what names spans or
    /// fields keeps `EnvFilter`; `RUST_LOG` wins when it parses, else the settings' level.
    #[test]
    fn the_filter_is_the_lightest_that_reads_the_directives() {
        let targets = |filter: LogFilter| match filter {
            LogFilter::Targets(targets) => targets.to_string(),
            LogFilter::Env(env) => panic!("EnvFilter for {env}"),
        };
        assert_eq!(targets(filter_of(None, "info")), "info");
        assert_eq!(targets(filter_of(Some(" "), "warn")), "warn");
        assert_eq!(
            targets(filter_of(Some("tessera=debug,warn"), "info")),
            "tessera=debug,warn"
        );
        match filter_of(Some("[HTTP request{rpc=CheckOTP}]=debug"), "info") {
            LogFilter::Env(env) => assert!(env.to_string().contains("HTTP request"), "{env}"),
            LogFilter::Targets(targets) => panic!("Targets for a span directive: {targets}"),
        }
        assert_eq!(
            targets(filter_of(Some("tessera=nonsense=x"), "error")),
            "error"
        );
    }

    #[test]
    fn members_are_appended_to_an_object() {
        let mut object = String::new();
        append_json_members(&mut object, "{}");
        assert_eq!(object, "");
        append_json_members(&mut object, r#"{"a":1}"#);
        assert_eq!(object, r#"{"a":1}"#);
        append_json_members(&mut object, r#"{"b":"x,}"}"#);
        assert_eq!(object, r#"{"a":1,"b":"x,}"}"#);
        let mut empty = "{}".to_owned();
        append_json_members(&mut empty, r#"{"c":true}"#);
        assert_eq!(empty, r#"{"c":true}"#);
    }

    /// Through the real layers: a span's fields recorded after it opened are in its object on
    /// the event's line, as valid JSON, the later value of a field recorded twice winning.
    #[test]
    fn a_line_carries_the_span_fields_recorded_later() {
        #[derive(Clone, Default)]
        struct Lines(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Lines {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_span_list(false)
            .fmt_fields(AppendedJsonFields)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(
                "HTTP request",
                request_id = "r-1",
                rpc = tracing::field::Empty,
                tenant = tracing::field::Empty
            );
            span.record("rpc", "CheckOTP");
            span.record("tenant", "first");
            span.record("tenant", "acme");
            span.in_scope(|| tracing::warn!("a code that was already used came again"));
        });
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        let line: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(line["span"]["request_id"], "r-1", "{text}");
        assert_eq!(line["span"]["rpc"], "CheckOTP", "{text}");
        assert_eq!(line["span"]["tenant"], "acme", "{text}");
        assert!(line.get("spans").is_none(), "no span list: {text}");
    }
}
