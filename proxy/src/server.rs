//! The request handler: route, pick, forward, stream back.

mod replay;
mod send;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Instant, SystemTime};

use http::header::{self, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use http::{Request, Response, StatusCode, Version, request};
use switchyard_config::spec::Protocol;

use crate::access_log::{self, AccessLog, Pending, RequestText};
use crate::backend::Backend;
use crate::body::{ClientBody, InFlight, ProxyBody, RequestBody, Timer};
use crate::error::ProxyError;
use crate::guard;
use crate::headers::{self, BACKEND_HEADER, DECISION_HEADER, REQUEST_ID};
use crate::listen::BodyWatch;
use crate::route::{self, Routed};
use crate::settings::Settings;
use crate::state::{Snapshot, State};
use crate::tls::TlsConnection;
use send::{tunnel, upstream_failed};

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

/// What `forward` learnt about a request, for metrics and the access log.
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
    pub async fn handle(
        &self,
        mut request: Request<ClientBody>,
        client: SocketAddr,
    ) -> Response<ProxyBody> {
        let start = Instant::now();
        let request_id =
            headers::ensure_request_id(request.headers_mut(), self.settings.trust_request_id);
        let mut pending = self
            .access_log
            .as_ref()
            .filter(|log| log.sampled())
            .map(|_| Box::new(pending_line(&request, &request_id, start)));
        let version = request.version();
        let Some(in_flight) = InFlight::try_new(&self.in_flight, self.settings.max_requests) else {
            let error = ProxyError::Overloaded("proxy");
            return self.answer_early(error, version, start, pending.as_deref_mut(), request_id);
        };
        // One snapshot for the whole request, whatever swaps meanwhile.
        let Some(snapshot) = self.state.snapshot() else {
            let error = ProxyError::NoTable;
            return self.answer_early(error, version, start, pending.as_deref_mut(), request_id);
        };
        #[cfg(feature = "otlp")]
        let mut span = self.tracer.as_ref().and_then(|tracer| {
            let (method, path) = (request.method().clone(), request.uri().path().to_owned());
            tracer
                .begin(request.headers_mut(), &method, &path)
                .map(Box::new)
        });
        let mut served = Served {
            received: pending.as_ref().map(|p| p.received.clone()),
            flags: "-",
            ..Served::default()
        };
        let mut response = match self
            .forward(request, client, &snapshot, start, &mut served)
            .await
        {
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
        response.headers_mut().insert(REQUEST_ID, request_id);
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

    async fn forward(
        &self,
        mut request: Request<ClientBody>,
        client: SocketAddr,
        snapshot: &Arc<Snapshot>,
        start: Instant,
        served: &mut Served,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let upgrade =
            request.version() == Version::HTTP_11 && headers::is_upgrade_request(request.headers());
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));
        let (mut parts, body) = request.into_parts();
        guard::check(&mut parts, &self.settings)?;
        let tls = parts.extensions.get::<TlsConnection>();
        if let Some(tls) = tls {
            let host = parts.uri.authority().map(|a| a.as_str()).or_else(|| {
                parts
                    .headers
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
            });
            if host.is_some_and(|host| tls.store.misdirected(tls.certificate, host)) {
                return Err(ProxyError::Misdirected);
            }
        }
        let scheme = if tls.is_some() { "https" } else { "http" };
        let decision = match route::decide(snapshot, &parts, &self.settings)? {
            Routed::Respond(response) => return Ok(response),
            Routed::Forward(decision) => decision,
        };
        served.pair = Some((decision.route_index, decision.backend_index));
        served.sticky = decision.sticky;
        let body_limit = snapshot.table.routes()[decision.route_index]
            .max_request_body_bytes
            .or(self.settings.max_request_body_bytes);
        guard::check_declared_length(&parts.headers, body_limit)?;
        let backend = decision.backend;
        let per_backend = self.settings.max_requests_per_backend;
        if per_backend != 0 && backend.in_flight() >= per_backend as i64 {
            return Err(ProxyError::Overloaded("backend"));
        }
        if upgrade && backend.protocol() == Protocol::Http2 {
            return Err(ProxyError::BadRequest(
                "protocol upgrades need an HTTP/1.1 backend",
            ));
        }
        self.prepare_upstream(&mut parts, &backend, client, upgrade, scheme)?;
        let watch = parts.extensions.remove::<BodyWatch>();
        let (body, verdict) = RequestBody::new(
            body,
            served.received.take(),
            body_limit,
            self.settings.request_body_idle_timeout,
            watch,
        );
        // Boxed: it passes through four layers of futures, each of which
        // would otherwise hold it (twice, as async fn arguments are).
        let request = Box::new(Request::from_parts(parts, body));
        // Built in each arm, not bound before the match (see `attempt`).
        let attempt_limit = decision.backend_request_timeout;
        let sent = match decision.request_timeout {
            Some(limit) => tokio::time::timeout(
                limit,
                self.send_with_retry(&backend, request, attempt_limit),
            )
            .await
            .map_err(|_| ProxyError::Timeout(backend.name().to_owned()))?,
            None => self.send_with_retry(&backend, request, attempt_limit).await,
        };
        // A body the proxy cut is the client's fault, not the backend's.
        let (mut response, mut lease) = sent.map_err(|error| verdict.error().unwrap_or(error))?;
        // Only the access log reads these (and a clock read is not free).
        if self.access_log.is_some() {
            served.upstream_ms = Some(start.elapsed().as_secs_f64() * 1000.0);
            served.upstream_host = Some(lease.endpoint_addr().to_owned());
        }

        let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
        if switching && client_upgrade.is_none() {
            // A 101 the client never asked for cannot be relayed.
            return Err(upstream_failed(
                &backend,
                lease.endpoint_addr(),
                "answered 101 Switching Protocols to a request without Upgrade".to_owned(),
            ));
        }
        headers::strip_hop_by_hop(response.headers_mut(), switching);
        if client_upgrade.is_some() && !switching {
            // The backend refused the upgrade: close after this answer, so
            // bytes the client sent after its upgrade request are dropped,
            // never read as requests nor tunnelled.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if self.settings.expose_backend
            && let Ok(name) = HeaderValue::from_str(backend.name())
        {
            response.headers_mut().insert(BACKEND_HEADER, name);
        }
        if let Some(cookie) = decision.set_cookie {
            response.headers_mut().append(header::SET_COOKIE, cookie);
        }
        if switching && let Some(client_upgrade) = client_upgrade {
            let upstream_upgrade = hyper::upgrade::on(&mut response);
            lease.detach_connection();
            let task = tokio::spawn(tunnel(
                client_upgrade,
                upstream_upgrade,
                lease,
                backend.clone(),
            ));
            backend.track_tunnel(task.abort_handle());
            let (parts, _) = response.into_parts();
            return Ok(Response::from_parts(parts, ProxyBody::empty()));
        }
        let (parts, body) = response.into_parts();
        Ok(Response::from_parts(
            parts,
            ProxyBody::upstream(body, lease),
        ))
    }

    /// Rewrites the request for the upstream hop: hop-by-hop headers out,
    /// forwarding headers in, URI and Host in the form the upstream protocol
    /// wants (origin-form and `Host` for HTTP/1.1, `:authority` for HTTP/2).
    fn prepare_upstream(
        &self,
        parts: &mut request::Parts,
        backend: &Backend,
        client: SocketAddr,
        upgrade: bool,
        scheme: &'static str,
    ) -> Result<(), ProxyError> {
        headers::strip_hop_by_hop(&mut parts.headers, upgrade);
        // Framing is rebuilt, never copied: the upstream client states the
        // length of the body it sends (or chunks it) itself. A decision this
        // proxy neither made nor trusts must not reach a next hop that
        // trusts it: that would let clients pick versions.
        let untrusted_decision =
            !self.settings.set_decision_header && !self.settings.trust_decision_header;
        let stale: &[HeaderName] = if untrusted_decision {
            &[header::CONTENT_LENGTH, DECISION_HEADER]
        } else {
            &[header::CONTENT_LENGTH]
        };
        headers::remove_present(&mut parts.headers, stale);
        let trusted = self
            .settings
            .trusted_forwarders
            .iter()
            .any(|range| range.contains(&client.ip()));
        headers::add_forwarding(
            &mut parts.headers,
            client.ip(),
            scheme,
            self.settings.forwarded_header,
            trusted,
        );
        if self.settings.set_decision_header
            && let Ok(name) = HeaderValue::from_str(backend.name())
        {
            parts.headers.insert(DECISION_HEADER, name);
        }
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        match backend.protocol() {
            Protocol::Http1 => {
                // HTTP/2 clients send `:authority` instead of `Host`.
                if !headers::has(&parts.headers, &header::HOST)
                    && let Some(authority) = parts.uri.authority()
                {
                    let host = HeaderValue::from_str(authority.as_str())
                        .map_err(|_| ProxyError::BadRequest("invalid authority"))?;
                    parts.headers.insert(header::HOST, host);
                }
                parts.uri = Uri::from(path);
                parts.version = Version::HTTP_11;
            }
            Protocol::Http2 => {
                let authority = match parts.uri.authority() {
                    Some(authority) => authority.clone(),
                    None => parts
                        .headers
                        .get(header::HOST)
                        .and_then(|h| Authority::try_from(h.as_bytes()).ok())
                        .ok_or(ProxyError::BadRequest("missing or invalid Host"))?,
                };
                parts.uri = Uri::builder()
                    .scheme(Scheme::HTTP)
                    .authority(authority)
                    .path_and_query(path)
                    .build()
                    .map_err(|_| ProxyError::BadRequest("invalid authority"))?;
                parts.headers.remove(header::HOST);
                parts.version = Version::HTTP_2;
            }
        }
        Ok(())
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
