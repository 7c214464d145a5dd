//! The JSON access log: one line per request on stdout, Envoy-style keys.
//!
//! Writing never blocks a request: lines go through a bounded queue to a
//! writer thread, and a line that does not fit (stdout slow or blocked) is
//! dropped and counted in `switchyard_access_log_dropped_lines_total`.
//! Sampling decides per request whether its line is built at all.
//!
//! Lines are written by hand (module `json`) rather than by deriving
//! `Serialize`: serde's JSON writer escapes strings byte by byte and grows
//! its buffer several times a line; with `format!` for the timestamp, it
//! was four fifths of the access log's cost per request (callgrind).

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::time::{Instant, SystemTime};

use prometheus_client::metrics::counter::Counter;

use crate::state::Snapshot;
use json::JsonObject;

mod json;

/// Lines waiting for the writer before new ones are dropped.
const QUEUE_LINES: usize = 8192;

/// How long the writer lets lines gather before writing them out.
const BATCH_DELAY: std::time::Duration = std::time::Duration::from_millis(10);

/// The access log.
#[derive(Debug)]
pub struct AccessLog {
    queue: SyncSender<Vec<u8>>,
    sample_rate: f64,
    dropped: Counter,
}

/// What the access log keeps of a sampled request until its line is
/// written. The request's text is copied into one string; names come from
/// the table it was routed on.
#[derive(Debug)]
pub struct Pending {
    pub(crate) start_time: SystemTime,
    pub(crate) start: Instant,
    pub(crate) method: http::Method,
    pub(crate) protocol: &'static str,
    pub(crate) request: RequestText,
    pub(crate) received: Arc<AtomicU64>,
    pub(crate) response_code: u16,
    pub(crate) response_flags: &'static str,
    pub(crate) upstream_service_time_ms: Option<f64>,
    pub(crate) upstream_host: Option<String>,
    /// The table the request was routed on, and the route and backend
    /// (indices into it) that served it.
    pub(crate) routed: Option<Routed>,
    pub(crate) cohort: bool,
}

/// Where a logged request was routed.
#[derive(Debug)]
pub(crate) struct Routed {
    pub(crate) snapshot: Arc<Snapshot>,
    pub(crate) route: Option<usize>,
    pub(crate) backend: Option<usize>,
}

/// A logged request's path, authority, user agent, `x-forwarded-for` and
/// request id, copied into one string when the request starts: one
/// allocation for all five, and none of the request's own buffers kept
/// alive while its response streams (a parsed header value shares the
/// connection's read buffer, which it would otherwise pin).
#[derive(Debug)]
pub(crate) struct RequestText {
    text: String,
    /// Where each [`Field`] lies in `text`; `None` when the request had
    /// none.
    spans: [Option<(u32, u32)>; 5],
}

/// The fields of [`RequestText`], in their order there.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Field {
    Path,
    Authority,
    UserAgent,
    XForwardedFor,
    RequestId,
}

impl RequestText {
    /// The five fields, in [`Field`]'s order.
    pub(crate) fn new(fields: [Option<&str>; 5]) -> Self {
        let mut text = String::with_capacity(fields.iter().flatten().map(|f| f.len()).sum());
        let spans = fields.map(|field| {
            let field = field?;
            let start = u32::try_from(text.len()).ok()?;
            text.push_str(field);
            Some((start, u32::try_from(text.len()).ok()?))
        });
        Self { text, spans }
    }

    fn get(&self, field: Field) -> Option<&str> {
        let (start, end) = self.spans[field as usize]?;
        self.text.get(start as usize..end as usize)
    }
}

// === impl AccessLog ===

impl AccessLog {
    /// Starts the writer thread. `sample_rate` in 0..=1 is the share of
    /// requests logged; `dropped` counts lines lost to a full queue.
    pub fn start(sample_rate: f64, dropped: Counter) -> Arc<Self> {
        let (queue, lines) = std::sync::mpsc::sync_channel::<Vec<u8>>(QUEUE_LINES);
        std::thread::Builder::new()
            .name("access-log".to_owned())
            .spawn(move || {
                let stdout = std::io::stdout();
                let mut out = std::io::BufWriter::new(stdout.lock());
                while let Ok(line) = lines.recv() {
                    // Let lines gather for a moment: senders then find no
                    // waiting receiver to wake, and one write carries many
                    // lines. Lines reach stdout at most this late.
                    std::thread::sleep(BATCH_DELAY);
                    let mut ok = out.write_all(&line).is_ok();
                    while let Ok(line) = lines.try_recv() {
                        ok &= out.write_all(&line).is_ok();
                    }
                    if !ok || out.flush().is_err() {
                        return;
                    }
                }
            })
            .map_err(|error| tracing::error!(%error, "cannot start the access log writer"))
            .ok();
        Arc::new(Self {
            queue,
            sample_rate: sample_rate.clamp(0.0, 1.0),
            dropped,
        })
    }

    /// Whether this request is logged.
    pub fn sampled(&self) -> bool {
        self.sample_rate >= 1.0
            || (self.sample_rate > 0.0 && rand::random::<f64>() < self.sample_rate)
    }

    /// Queues the line of a finished request.
    pub(crate) fn finish(&self, pending: &Pending, bytes_sent: u64) {
        let line = line(pending, bytes_sent, pending.start.elapsed());
        match self.queue.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.inc();
            }
        }
    }
}

/// Room for a usual line, so that building it allocates once.
const LINE_CAPACITY: usize = 512;

/// The JSON line of a finished request, newline included. Keys in a fixed
/// order (Envoy's names where Envoy has one); absent values are `null`.
fn line(pending: &Pending, bytes_sent: u64, duration: std::time::Duration) -> Vec<u8> {
    let mut line = JsonObject::with_capacity(LINE_CAPACITY);
    line.timestamp("start_time", pending.start_time);
    line.str("method", pending.method.as_str());
    let request = &pending.request;
    line.str("path", request.get(Field::Path).unwrap_or("/"));
    line.str("protocol", pending.protocol);
    line.value("response_code", pending.response_code);
    line.str("response_flags", pending.response_flags);
    line.value("bytes_received", pending.received.load(Ordering::Relaxed));
    line.value("bytes_sent", bytes_sent);
    line.value("duration", duration.as_secs_f64() * 1000.0);
    line.value("upstream_service_time", pending.upstream_service_time_ms);
    line.optional_str("x_forwarded_for", request.get(Field::XForwardedFor));
    line.optional_str("user_agent", request.get(Field::UserAgent));
    line.str("request_id", request.get(Field::RequestId).unwrap_or(""));
    line.optional_str("authority", request.get(Field::Authority));
    line.optional_str("upstream_host", pending.upstream_host.as_deref());
    // Names and version from the snapshot the request was routed on.
    let (route, backend, version) = match &pending.routed {
        Some(Routed {
            snapshot,
            route,
            backend,
        }) => {
            let table = &snapshot.table;
            (
                route.and_then(|r| Some(table.routes().get(r)?.name.as_str())),
                backend.and_then(|b| Some(table.backends().get(b)?.name.as_str())),
                Some(table.version().as_str()),
            )
        }
        None => (None, None, None),
    };
    line.optional_str("route", route);
    line.optional_str("backend", backend);
    line.optional_str("table_version", version);
    line.value("cohort", pending.cohort);
    line.end()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;
    use std::time::Duration;

    /// The line as serde would write it (the way it was written before the
    /// hand-written writer): the oracle for the tests below.
    #[derive(Serialize)]
    struct SerdeLine<'a> {
        start_time: &'a str,
        method: &'a str,
        path: &'a str,
        protocol: &'a str,
        response_code: u16,
        response_flags: &'a str,
        bytes_received: u64,
        bytes_sent: u64,
        duration: f64,
        upstream_service_time: Option<f64>,
        x_forwarded_for: Option<&'a str>,
        user_agent: Option<&'a str>,
        request_id: &'a str,
        authority: Option<&'a str>,
        upstream_host: Option<&'a str>,
        route: Option<&'a str>,
        backend: Option<&'a str>,
        table_version: Option<&'a str>,
        cohort: bool,
    }

    const TABLE: &str = "backends:\n  blue: { endpoints: [\"127.0.0.1:9000\"] }\nroutes:\n  - name: app\n    rules: [{ backend: blue }]\n";

    fn snapshot() -> Arc<Snapshot> {
        let applier = crate::state::Applier::new(crate::state::State::new());
        applier.apply(TABLE.as_bytes(), "test").unwrap();
        applier.state().snapshot().unwrap()
    }

    fn pending(path: &str, user_agent: Option<&str>, upstream: Option<f64>) -> Pending {
        Pending {
            start_time: SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_467_845_123),
            start: Instant::now(),
            method: http::Method::GET,
            protocol: "HTTP/1.1",
            request: RequestText::new([
                Some(path),
                Some("app.test"),
                user_agent,
                None,
                Some("5f0c6b8e-1d2a-4c3b-9e8f-0a1b2c3d4e5f"),
            ]),
            received: Arc::new(AtomicU64::new(17)),
            response_code: 503,
            response_flags: "UH",
            upstream_service_time_ms: upstream,
            upstream_host: Some("127.0.0.1:9000".to_owned()),
            routed: Some(Routed {
                snapshot: snapshot(),
                route: Some(0),
                backend: None,
            }),
            cohort: true,
        }
    }

    fn serde_line(pending: &Pending, bytes_sent: u64, duration: Duration) -> String {
        let routed = pending.routed.as_ref().unwrap();
        let version = routed.snapshot.table.version().to_string();
        let line = SerdeLine {
            start_time: "2026-11-23T21:04:05.123Z",
            method: pending.method.as_str(),
            path: pending.request.get(Field::Path).unwrap(),
            protocol: pending.protocol,
            response_code: pending.response_code,
            response_flags: pending.response_flags,
            bytes_received: pending.received.load(Ordering::Relaxed),
            bytes_sent,
            duration: duration.as_secs_f64() * 1000.0,
            upstream_service_time: pending.upstream_service_time_ms,
            x_forwarded_for: pending.request.get(Field::XForwardedFor),
            user_agent: pending.request.get(Field::UserAgent),
            request_id: pending.request.get(Field::RequestId).unwrap(),
            authority: Some("app.test"),
            upstream_host: pending.upstream_host.as_deref(),
            route: Some("app"),
            backend: None,
            table_version: Some(&version),
            cohort: pending.cohort,
        };
        serde_json::to_string(&line).unwrap() + "\n"
    }

    /// Plain values: byte for byte what serde wrote.
    #[test]
    fn a_plain_line_is_what_serde_writes() {
        let duration = Duration::from_micros(1_234_567);
        for upstream in [None, Some(0.25), Some(12.0)] {
            let pending = pending("/a/b?c=d&e=%20", Some("curl/8.5.0"), upstream);
            let ours = String::from_utf8(line(&pending, 4096, duration)).unwrap();
            assert_eq!(ours, serde_line(&pending, 4096, duration));
        }
    }

    /// A header may hold quotes, backslashes and tabs: the line still reads
    /// back as serde wrote it.
    #[test]
    fn escaped_values_read_back_as_serde_wrote_them() {
        let agent = "say \"hi\"\tand \\ bye";
        let duration = Duration::from_millis(3);
        let pending = pending("/p", Some(agent), None);
        let ours = String::from_utf8(line(&pending, 0, duration)).unwrap();
        assert!(ours.ends_with("}\n") && !ours[..ours.len() - 1].contains('\n'));
        let ours: serde_json::Value = serde_json::from_str(&ours).unwrap();
        let theirs: serde_json::Value =
            serde_json::from_str(&serde_line(&pending, 0, duration)).unwrap();
        assert_eq!(ours, theirs);
        assert_eq!(ours["user_agent"], agent);
    }

    /// Present, absent and empty fields each read back as given, from one
    /// string.
    #[test]
    fn request_text_keeps_each_field() {
        let text = RequestText::new([Some("/a?b"), None, Some(""), Some("10.0.0.1"), Some("id")]);
        assert_eq!(text.get(Field::Path), Some("/a?b"));
        assert_eq!(text.get(Field::Authority), None);
        assert_eq!(text.get(Field::UserAgent), Some(""));
        assert_eq!(text.get(Field::XForwardedFor), Some("10.0.0.1"));
        assert_eq!(text.get(Field::RequestId), Some("id"));
        assert_eq!(text.text, "/a?b10.0.0.1id");
    }
}
