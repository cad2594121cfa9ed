//! The tracing subscriber: readable in dev, JSON in production. `RUST_LOG` wins over settings.

use std::fmt::Write as _;

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

/// A span's fields as one JSON object, written straight from the values into the span's
/// text. A field recorded later (the RPC, the tenant, a gRPC code) is appended to the object.
/// tracing-subscriber's `JsonFields` gathers the values into a map of `serde_json::Value`s,
/// an allocation each, and serializes the map into a string of its own, and on each later
/// record it parses the object and writes it anew: at `info`, where every request has a span
/// and hardly any logs a line, that cost a check 2–3 µs of tessera's CPU, most of what logs
/// at `info` cost over `warn` (`BENCHMARKS.md`). A field recorded twice appears twice; a JSON
/// reader keeps the later value, as `JsonFields` would.
pub struct AppendedJsonFields;

impl<'writer> tracing_subscriber::fmt::FormatFields<'writer> for AppendedJsonFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        mut writer: tracing_subscriber::fmt::format::Writer<'writer>,
        fields: R,
    ) -> std::fmt::Result {
        writer.write_char('{')?;
        let mut members = JsonMembers::new(&mut writer, true);
        fields.record(&mut members);
        members.result?;
        writer.write_char('}')
    }

    fn add_fields(
        &self,
        current: &'writer mut tracing_subscriber::fmt::FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> std::fmt::Result {
        let object = &mut current.fields;
        // Reopens the object: "{…}" loses its brace; anything else (nothing yet) starts anew.
        let empty = match object.strip_suffix('}') {
            Some(open) if open.starts_with('{') => {
                object.pop();
                object.len() == 1
            }
            _ => {
                object.clear();
                object.push('{');
                true
            }
        };
        let mut members = JsonMembers::new(object, empty);
        fields.record(&mut members);
        let result = members.result;
        object.push('}');
        result
    }
}

/// Writes each field it visits as a JSON member (`"name":value`, a comma before all but the
/// first) into `out`, as tracing-subscriber's JSON visitor names them: a raw identifier
/// without its `r#`, and the `log.` fields of records from the `log` crate left out.
struct JsonMembers<'out, W: std::fmt::Write> {
    out: &'out mut W,
    first: bool,
    result: std::fmt::Result,
}

impl<'out, W: std::fmt::Write> JsonMembers<'out, W> {
    fn new(out: &'out mut W, first: bool) -> Self {
        Self {
            out,
            first,
            result: Ok(()),
        }
    }

    /// Writes `"name":`, then the value with `value`, unless the field is left out or an
    /// earlier write failed.
    fn member(
        &mut self,
        field: &tracing::field::Field,
        value: impl FnOnce(&mut W) -> std::fmt::Result,
    ) {
        let name = field.name();
        if self.result.is_err() || name.starts_with("log.") {
            return;
        }
        let name = name.strip_prefix("r#").unwrap_or(name);
        let separator = if std::mem::take(&mut self.first) {
            ""
        } else {
            ","
        };
        self.result = (|| {
            self.out.write_str(separator)?;
            self.out.write_char('"')?;
            JsonEscaped(&mut *self.out).write_str(name)?;
            self.out.write_str("\":")?;
            value(self.out)
        })();
    }

    fn string(&mut self, field: &tracing::field::Field, text: std::fmt::Arguments<'_>) {
        self.member(field, |out| {
            out.write_char('"')?;
            JsonEscaped(&mut *out).write_fmt(text)?;
            out.write_char('"')
        });
    }

    fn bare(&mut self, field: &tracing::field::Field, value: impl std::fmt::Display) {
        self.member(field, |out| write!(out, "{value}"));
    }
}

impl<W: std::fmt::Write> tracing::field::Visit for JsonMembers<'_, W> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.string(field, format_args!("{value}"));
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        // A `%` value's Debug is its Display.
        self.string(field, format_args!("{value:?}"));
    }

    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.bare(field, value);
    }

    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.bare(field, value);
    }

    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.bare(field, value);
    }

    fn record_i128(&mut self, field: &tracing::field::Field, value: i128) {
        self.bare(field, value);
    }

    fn record_u128(&mut self, field: &tracing::field::Field, value: u128) {
        self.bare(field, value);
    }

    /// JSON has no NaN nor infinity: those are `null`, as `serde_json` writes them.
    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        if value.is_finite() {
            // Debug keeps a whole number's ".0", so that it reads back as a float.
            self.member(field, |out| write!(out, "{value:?}"));
        } else {
            self.bare(field, "null");
        }
    }
}

/// Text written through it lands in `out` escaped for the inside of a JSON string: quotes,
/// backslashes and control characters (RFC 8259, section 7); everything else as it is.
struct JsonEscaped<'out, W: std::fmt::Write + ?Sized>(&'out mut W);

impl<W: std::fmt::Write + ?Sized> std::fmt::Write for JsonEscaped<'_, W> {
    fn write_str(&mut self, text: &str) -> std::fmt::Result {
        let mut clean_from = 0;
        // Every byte escaped is ASCII, so each cut falls between characters.
        for (at, byte) in text.bytes().enumerate() {
            let escape = match byte {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0x00..=0x1f => "",
                _ => continue,
            };
            self.0.write_str(&text[clean_from..at])?;
            if escape.is_empty() {
                write!(self.0, "\\u{byte:04x}")?;
            } else {
                self.0.write_str(escape)?;
            }
            clean_from = at + 1;
        }
        self.0.write_str(&text[clean_from..])
    }
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
        let extensions = request.extensions();
        let request_id = extensions.get::<RequestId>().map_or("", |id| id.0.as_str());
        // Strings as they are, borrowed: nothing copied for a span that may never be written.
        tracing::info_span!(
            "HTTP request",
            http.method = request.method().as_str(),
            http.target = request.path(),
            request_id,
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

    /// What a writer of log lines received.
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

    /// Runs `log` under the production layers (JSON, this crate's span fields) and returns the
    /// one line it wrote, parsed.
    fn json_line(log: impl FnOnce()) -> serde_json::Value {
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_span_list(false)
            .fmt_fields(AppendedJsonFields)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, log);
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"))
    }

    /// Through the real layers: a span's fields recorded after it opened are in its object on
    /// the event's line, as valid JSON, the later value of a field recorded twice winning.
    #[test]
    fn a_line_carries_the_span_fields_recorded_later() {
        let line = json_line(|| {
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
        assert_eq!(line["span"]["request_id"], "r-1", "{line}");
        assert_eq!(line["span"]["rpc"], "CheckOTP", "{line}");
        assert_eq!(line["span"]["tenant"], "acme", "{line}");
        assert!(line.get("spans").is_none(), "no span list: {line}");
    }

    /// A span with no fields at its start, and fields recorded into it later, still make one
    /// object; a raw identifier's field loses its `r#`.
    #[test]
    fn fields_recorded_into_an_empty_span_make_an_object() {
        let line = json_line(|| {
            let span = tracing::info_span!("call", r#type = tracing::field::Empty);
            span.in_scope(|| tracing::warn!("before"));
        });
        assert_eq!(line["span"], serde_json::json!({"name": "call"}), "{line}");
        let line = json_line(|| {
            let span = tracing::info_span!("call", r#type = tracing::field::Empty);
            span.record("type", "unary");
            span.in_scope(|| tracing::warn!("after"));
        });
        assert_eq!(line["span"]["type"], "unary", "{line}");
    }

    proptest::proptest! {
        /// Whatever a field holds (any text, as a string or through Display; any number), the
        /// line is valid JSON and reads back the same value, at the span's start and recorded
        /// later.
        #[test]
        fn any_value_reads_back_from_the_line(
            text in ".*",
            shown in "\\PC*|[\"\\\\\\x00-\\x1f]*",
            signed: i64,
            unsigned: u64,
            flag: bool,
            float in proptest::num::f64::ANY,
        ) {
            let line = json_line(|| {
                let span = tracing::info_span!(
                    "HTTP request",
                    text = text.as_str(),
                    shown = %shown,
                    signed,
                    unsigned = tracing::field::Empty,
                    flag = tracing::field::Empty,
                    float = tracing::field::Empty,
                    late = tracing::field::Empty,
                );
                span.record("unsigned", unsigned);
                span.record("flag", flag);
                span.record("float", float);
                span.record("late", tracing::field::display(&text));
                span.in_scope(|| tracing::warn!("a line"));
            });
            let span = &line["span"];
            proptest::prop_assert_eq!(&span["text"], &serde_json::json!(text));
            proptest::prop_assert_eq!(&span["shown"], &serde_json::json!(shown));
            proptest::prop_assert_eq!(&span["late"], &serde_json::json!(text));
            proptest::prop_assert_eq!(&span["signed"], &serde_json::json!(signed));
            proptest::prop_assert_eq!(&span["unsigned"], &serde_json::json!(unsigned));
            proptest::prop_assert_eq!(&span["flag"], &serde_json::json!(flag));
            // JSON has no NaN nor infinity: null. A number reads back within a unit or two in
            // the last place: serde_json's parser (without `float_roundtrip`) rounds some off,
            // its own writing of them included.
            if float.is_finite() {
                let read = span["float"].as_f64();
                proptest::prop_assert!(
                    read.is_some_and(|read| (read - float).abs() <= float.abs() * 4.0 * f64::EPSILON),
                    "{:?} read as {:?}", float, read
                );
            } else {
                proptest::prop_assert!(span["float"].is_null());
            }
        }
    }
}
