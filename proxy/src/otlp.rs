//! OpenTelemetry span export (cargo feature `otlp`, off by default).
//!
//! With `--otlp-endpoint`, each sampled request gets a server span: its
//! trace continues the W3C `traceparent` it came with (or starts one), the
//! backend receives a `traceparent` naming this span as its parent, and the
//! span goes to an OTLP/HTTP collector as JSON (`POST /v1/traces`) in
//! batches, from a task on the proxy's own runtime with the hyper client the
//! proxy already has: no blocking client, no new dependency. A request
//! whose `traceparent` says "not sampled" passes through untouched.
//!
//! Export never slows a request: spans go through a bounded queue and are
//! dropped (and counted in the log) when the collector cannot keep up.

use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Uri};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::sync::mpsc;

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// Spans waiting for export; more are dropped.
const QUEUE: usize = 8192;
/// Spans per request to the collector.
const BATCH: usize = 512;
const FLUSH_EVERY: Duration = Duration::from_millis(500);

/// Starts spans and exports them.
#[derive(Debug)]
pub struct Tracer {
    queue: mpsc::Sender<Finished>,
    sample_rate: f64,
    dropped: AtomicU64,
}

/// A span in progress, carried by the request until its response ends.
#[derive(Debug)]
pub struct Span {
    tracer: Arc<Tracer>,
    trace_id: [u8; 16],
    span_id: [u8; 8],
    parent: Option<[u8; 8]>,
    start: SystemTime,
    method: String,
    path: String,
    status: u16,
    route: Option<String>,
    backend: Option<String>,
}

#[derive(Debug)]
struct Finished {
    span: Span,
    end: SystemTime,
}

impl Tracer {
    /// A tracer exporting to `endpoint` (`http://host:port[/path]`; the
    /// path defaults to `/v1/traces`), sampling new traces at `sample_rate`.
    pub fn start(endpoint: &str, sample_rate: f64) -> anyhow::Result<Arc<Self>> {
        let uri: Uri = endpoint
            .parse()
            .map_err(|e| anyhow::anyhow!("--otlp-endpoint {endpoint:?}: {e}"))?;
        anyhow::ensure!(
            uri.scheme_str() == Some("http") && uri.authority().is_some(),
            "--otlp-endpoint {endpoint:?} must be http://host:port[/path]"
        );
        let (queue, receiver) = mpsc::channel(QUEUE);
        let tracer = Arc::new(Self {
            queue,
            sample_rate,
            dropped: AtomicU64::new(0),
        });
        tokio::spawn(export(uri, receiver));
        Ok(tracer)
    }

    /// Starts the span of a request and points its `traceparent` at it, or
    /// returns `None` (headers untouched) when the trace is not sampled.
    pub fn begin(
        self: &Arc<Self>,
        headers: &mut HeaderMap,
        method: &Method,
        path: &str,
    ) -> Option<Span> {
        let incoming = headers
            .get(TRACEPARENT)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_traceparent);
        let (trace_id, parent) = match incoming {
            Some(parent) if !parent.sampled => return None,
            Some(parent) => (parent.trace_id, Some(parent.span_id)),
            None if rand::random::<f64>() < self.sample_rate => (rand::random(), None),
            None => return None,
        };
        let span_id: [u8; 8] = rand::random();
        let mut value = String::with_capacity(55);
        let _ = write!(value, "00-{}-{}-01", hex(&trace_id), hex(&span_id));
        if let Ok(value) = HeaderValue::try_from(value) {
            headers.insert(TRACEPARENT, value);
        }
        Some(Span {
            tracer: self.clone(),
            trace_id,
            span_id,
            parent,
            start: SystemTime::now(),
            method: method.to_string(),
            path: path.to_owned(),
            status: 0,
            route: None,
            backend: None,
        })
    }
}

impl Span {
    /// What the proxy answered, and where the request went.
    pub fn respond(&mut self, status: u16, route: Option<&str>, backend: Option<&str>) {
        self.status = status;
        self.route = route.map(ToOwned::to_owned);
        self.backend = backend.map(ToOwned::to_owned);
    }

    /// The response has ended: queue the span for export.
    pub fn end(self) {
        let tracer = self.tracer.clone();
        let finished = Finished {
            span: self,
            end: SystemTime::now(),
        };
        if tracer.queue.try_send(finished).is_err() {
            let dropped = tracer.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                tracing::warn!(dropped, "OTLP export queue full; spans dropped");
            }
        }
    }
}

struct Parent {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    sampled: bool,
}

/// `00-<32 hex trace id>-<16 hex span id>-<2 hex flags>` (W3C Trace Context).
fn parse_traceparent(value: &str) -> Option<Parent> {
    let mut parts = value.trim().split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version != "00" || parts.next().is_some() || flags.len() != 2 {
        return None;
    }
    let trace_id: [u8; 16] = unhex(trace)?;
    let span_id: [u8; 8] = unhex(span)?;
    // All-zero ids are invalid.
    if trace_id == [0; 16] || span_id == [0; 8] {
        return None;
    }
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some(Parent {
        trace_id,
        span_id,
        sampled: flags & 1 == 1,
    })
}

fn unhex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != 2 * N
        || !text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

fn unix_nanos(time: SystemTime) -> String {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
        .to_string()
}

fn string_attribute(key: &str, value: &str) -> Value {
    json!({ "key": key, "value": { "stringValue": value } })
}

/// One span in the OTLP JSON encoding (ids as hex, times as strings).
fn encode(finished: &Finished) -> Value {
    let span = &finished.span;
    let mut attributes = vec![
        string_attribute("http.request.method", &span.method),
        string_attribute("url.path", &span.path),
        json!({ "key": "http.response.status_code", "value": { "intValue": span.status.to_string() } }),
    ];
    if let Some(route) = &span.route {
        attributes.push(string_attribute("switchyard.route", route));
    }
    if let Some(backend) = &span.backend {
        attributes.push(string_attribute("switchyard.backend", backend));
    }
    let mut encoded = json!({
        "traceId": hex(&span.trace_id),
        "spanId": hex(&span.span_id),
        "name": format!("{} {}", span.method, span.route.as_deref().unwrap_or("unrouted")),
        "kind": 2,
        "startTimeUnixNano": unix_nanos(span.start),
        "endTimeUnixNano": unix_nanos(finished.end),
        "attributes": attributes,
        // Server spans mark only 5xx as errors (OpenTelemetry HTTP conventions).
        "status": { "code": if span.status >= 500 { 2 } else { 0 } },
    });
    if let Some(parent) = &span.parent {
        encoded["parentSpanId"] = Value::String(hex(parent));
    }
    encoded
}

async fn export(endpoint: Uri, mut queue: mpsc::Receiver<Finished>) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    loop {
        tokio::select! {
            received = queue.recv() => match received {
                Some(finished) => {
                    batch.push(finished);
                    if batch.len() < BATCH {
                        continue;
                    }
                }
                None => return,
            },
            _ = tick.tick() => {
                if batch.is_empty() {
                    continue;
                }
            }
        }
        let spans: Vec<Value> = batch.drain(..).map(|f| encode(&f)).collect();
        let count = spans.len();
        let body = json!({
            "resourceSpans": [{
                "resource": { "attributes": [string_attribute("service.name", "switchyard-proxy")] },
                "scopeSpans": [{ "scope": { "name": "switchyard" }, "spans": spans }],
            }]
        });
        if let Err(error) = post(&endpoint, body.to_string()).await {
            tracing::warn!(%error, spans = count, "OTLP export failed; spans dropped");
        }
    }
}

async fn post(endpoint: &Uri, body: String) -> anyhow::Result<()> {
    let authority = endpoint
        .authority()
        .ok_or_else(|| anyhow::anyhow!("no authority"))?
        .to_string();
    let path = match endpoint.path() {
        "" | "/" => "/v1/traces",
        path => path,
    };
    let stream = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect(&authority),
    )
    .await
    .map_err(|_| anyhow::anyhow!("connect timed out"))??;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = Request::post(path)
        .header(http::header::HOST, &authority)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))?;
    let response = tokio::time::timeout(Duration::from_secs(10), sender.send_request(request))
        .await
        .map_err(|_| anyhow::anyhow!("the collector did not answer"))??;
    anyhow::ensure!(
        response.status().is_success(),
        "the collector answered {}",
        response.status()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn traceparent_is_parsed_strictly() {
        let parent =
            parse_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01").unwrap();
        assert_eq!(hex(&parent.trace_id), "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(hex(&parent.span_id), "b7ad6b7169203331");
        assert!(parent.sampled);
        for bad in [
            "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "00-0af7651916cd43dd8448eb211c8031-b7ad6b7169203331-01",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad}");
        }
    }
}
