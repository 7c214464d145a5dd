//! The request handler: route, pick, forward, stream back.

mod forward;
mod replay;
mod send;

use std::future::{Future, ready};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Instant, SystemTime};

use futures_util::future::Either;
use http::header::{self, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery};
use http::{Request, Response, Version};

use crate::access_log::{self, AccessLog, Pending, RequestText};
use crate::body::{ClientBody, InFlight, ProxyBody, Timer};
use crate::error::ProxyError;
use crate::headers::{self, REQUEST_ID};
use crate::settings::Settings;
use crate::state::{Snapshot, State};
use forward::Next;

/// The proxy's request handler, shared by every connection.
#[derive(Debug, Clone)]
pub struct Proxy {
    state: Arc<State>,
    settings: Arc<Settings>,
    access_log: Option<Arc<AccessLog>>,
    /// Requests in flight, for `--max-requests`.
    in_flight: Arc<std::sync::atomic::AtomicUsize>,
    #[cfg(feature = "otlp")]
    tracer: Option<Arc<crate::otlp::Tracer>>,
}

/// What routing and the exchange learnt about a request, for metrics and
/// the access log.
#[derive(Debug, Default)]
struct Served {
    /// Route and backend indices, once a backend was chosen.
    pair: Option<(usize, usize)>,
    /// Whether the cohort key chose the backend.
    sticky: bool,
    /// Milliseconds until the upstream's response headers.
    upstream_ms: Option<f64>,
    /// The endpoint that answered (only when access logging).
    upstream_host: Option<String>,
    /// Envoy-style response flags (`-` when none).
    flags: &'static str,
    /// Counter of request body bytes (only when this request is logged).
    received: Option<Arc<AtomicU64>>,
}

/// What a request carries from its start to its answer.
struct Handling {
    start: Instant,
    version: Version,
    request_id: HeaderValue,
    /// Its access log line, when sampled.
    pending: Option<Box<Pending>>,
    in_flight: InFlight,
    /// The table it is routed by, whatever swaps meanwhile.
    snapshot: Arc<Snapshot>,
    served: Served,
    #[cfg(feature = "otlp")]
    span: Option<Box<crate::otlp::Span>>,
}

/// The access-log fields known when a request starts.
fn pending_line(
    request: &Request<ClientBody>,
    request_id: &HeaderValue,
    start: Instant,
) -> Pending {
    let headers = request.headers();
    let text = |name: HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let uri = request.uri();
    Pending {
        start_time: SystemTime::now(),
        start,
        method: request.method().clone(),
        protocol: match request.version() {
            Version::HTTP_2 => "HTTP/2",
            Version::HTTP_10 => "HTTP/1.0",
            _ => "HTTP/1.1",
        },
        // In `Field`'s order.
        request: RequestText::new([
            uri.path_and_query().map(PathAndQuery::as_str),
            uri.authority()
                .map(Authority::as_str)
                .or_else(|| text(header::HOST)),
            text(header::USER_AGENT),
            text(headers::X_FORWARDED_FOR),
            request_id.to_str().ok(),
        ]),
        received: Arc::new(AtomicU64::new(0)),
        response_code: 0,
        response_flags: "-",
        upstream_service_time_ms: None,
        upstream_host: None,
        routed: None,
        cohort: false,
    }
}

// === impl Proxy ===

impl Proxy {
    /// A handler over `state`.
    pub fn new(state: Arc<State>, settings: Arc<Settings>) -> Self {
        let access_log = settings
            .access_log_sample_rate
            .map(|rate| AccessLog::start(rate, state.metrics().access_log_dropped()));
        #[cfg(feature = "otlp")]
        let tracer = settings.otlp_endpoint.as_deref().and_then(|endpoint| {
            crate::otlp::Tracer::start(endpoint, settings.otlp_sample_rate)
                .inspect_err(|error| tracing::error!(%error, "OTLP export is off"))
                .ok()
        });
        Self {
            state,
            settings,
            access_log,
            in_flight: Arc::default(),
            #[cfg(feature = "otlp")]
            tracer,
        }
    }

    /// Handles one request: every failure becomes a precise error response.
    ///
    /// Not an `async fn`: everything before the request is sent on (its
    /// id, the routing, the rewrite for the upstream) runs here, at the
    /// call, and the returned future holds only what crosses the wait. As
    /// an `async fn` its state held the request twice (arguments are
    /// moved into locals) and every local of the routing step, and that
    /// state is copied whole each time the future moves on its way into a
    /// connection's task (2.8 KB when measured; 1.2 KB as it is).
    pub fn handle(
        self: &Arc<Self>,
        mut request: Request<ClientBody>,
        client: SocketAddr,
    ) -> impl Future<Output = Response<ProxyBody>> + Send + use<> {
        let mut handling = match self.begin(&mut request) {
            Ok(handling) => handling,
            Err(early) => return Either::Left(ready(*early)),
        };
        let next = self.route(request, client, &handling.snapshot, &mut handling.served);
        let outbound = match next {
            Ok(Next::Send(outbound)) => outbound,
            Ok(Next::Answer(response)) => {
                return Either::Left(ready(self.finish(handling, Ok(response))));
            }
            Err(error) => return Either::Left(ready(self.finish(handling, Err(error)))),
        };
        let proxy = self.clone();
        Either::Right(async move {
            let result = proxy
                .exchange(outbound, &mut handling.served, handling.start)
                .await;
            proxy.finish(handling, result)
        })
    }

    /// What a request starts with: its id, its access log line (if
    /// sampled), its place among the requests in flight and the table it
    /// will be routed by; or the answer when there is no room or no table.
    fn begin(
        &self,
        request: &mut Request<ClientBody>,
    ) -> Result<Handling, Box<Response<ProxyBody>>> {
        let start = Instant::now();
        let request_id =
            headers::ensure_request_id(request.headers_mut(), self.settings.trust_request_id);
        let mut pending = self
            .access_log
            .as_ref()
            .filter(|log| log.sampled())
            .map(|_| Box::new(pending_line(request, &request_id, start)));
        let version = request.version();
        let Some(in_flight) = InFlight::try_new(&self.in_flight, self.settings.max_requests) else {
            let error = ProxyError::Overloaded("proxy");
            let answer =
                self.answer_early(error, version, start, pending.as_deref_mut(), request_id);
            return Err(Box::new(answer));
        };
        // One snapshot for the whole request, whatever swaps meanwhile.
        let Some(snapshot) = self.state.snapshot() else {
            let error = ProxyError::NoTable;
            let answer =
                self.answer_early(error, version, start, pending.as_deref_mut(), request_id);
            return Err(Box::new(answer));
        };
        #[cfg(feature = "otlp")]
        let span = self.tracer.as_ref().and_then(|tracer| {
            let (method, path) = (request.method().clone(), request.uri().path().to_owned());
            tracer
                .begin(request.headers_mut(), &method, &path)
                .map(Box::new)
        });
        let served = Served {
            received: pending.as_ref().map(|p| p.received.clone()),
            flags: "-",
            ..Served::default()
        };
        Ok(Handling {
            start,
            version,
            request_id,
            pending,
            in_flight,
            snapshot,
            served,
            #[cfg(feature = "otlp")]
            span,
        })
    }

    /// The answer to a routed request, counted, logged and timed.
    fn finish(
        &self,
        handling: Handling,
        result: Result<Response<ProxyBody>, ProxyError>,
    ) -> Response<ProxyBody> {
        let Handling {
            start,
            version,
            request_id,
            mut pending,
            in_flight,
            snapshot,
            mut served,
            #[cfg(feature = "otlp")]
            mut span,
        } = handling;
        let mut response = match result {
            Ok(response) => response,
            Err(error) => {
                tracing::debug!(%error, request_id = ?request_id, "request failed");
                served.flags = error.flags();
                let metrics = self.state.metrics();
                metrics.count_error(error.code());
                if let Some((backend, kind)) = error.upstream_failure() {
                    metrics.count_upstream_error(backend, kind);
                }
                error_response(error, version)
            }
        };
        let (route, backend) = (served.pair.map(|p| p.0), served.pair.map(|p| p.1));
        if self.settings.request_metrics {
            snapshot
                .metrics
                .pair(route, backend)
                .count(response.status());
        }
        if let Some(pending) = pending.as_deref_mut() {
            pending.response_code = response.status().as_u16();
            pending.response_flags = served.flags;
            pending.upstream_service_time_ms = served.upstream_ms;
            pending.upstream_host = served.upstream_host.take();
            pending.routed = Some(access_log::Routed {
                snapshot: snapshot.clone(),
                route,
                backend,
            });
            pending.cohort = served.sticky;
        }
        #[cfg(feature = "otlp")]
        if let Some(span) = &mut span {
            span.respond(
                response.status().as_u16(),
                route.map(|r| snapshot.table.routes()[r].name.as_str()),
                backend.map(|b| snapshot.table.backends()[b].name.as_str()),
            );
        }
        let log = self.access_log.clone().zip(pending);
        response.body_mut().attach(Timer {
            observe: self.settings.request_metrics,
            snapshot,
            pair: served.pair,
            start,
            log,
            _in_flight: Some(in_flight),
            #[cfg(feature = "otlp")]
            span,
        });
        ProxyBody::set_header(&mut response, REQUEST_ID, request_id);
        response
    }

    /// Answers `error` before any routing happened (no table, overload).
    fn answer_early(
        &self,
        error: ProxyError,
        version: Version,
        start: Instant,
        pending: Option<&mut Pending>,
        request_id: HeaderValue,
    ) -> Response<ProxyBody> {
        let flags = error.flags();
        self.state.metrics().count_error(error.code());
        let mut response = error_response(error, version);
        let metrics = self.state.metrics().unrouted();
        metrics.count(response.status());
        metrics.observe(start.elapsed().as_secs_f64());
        if let (Some(log), Some(pending)) = (&self.access_log, pending) {
            pending.response_code = response.status().as_u16();
            pending.response_flags = flags;
            log.finish(pending, response.body().full_len());
        }
        response.headers_mut().insert(REQUEST_ID, request_id);
        response
    }
}

/// The response for `error`; under overload an HTTP/1 connection is closed
/// after it, so that clients spread their retries instead of queueing here.
fn error_response(error: ProxyError, version: Version) -> Response<ProxyBody> {
    let overloaded = matches!(error, ProxyError::Overloaded(_));
    let mut response = error.into_response();
    if overloaded && version < Version::HTTP_2 {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}
