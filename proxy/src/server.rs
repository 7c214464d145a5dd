//! The request handler: route, pick, forward, stream back.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use http::{Request, Response, StatusCode, Version, request};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use switchyard_config::spec::Protocol;

use crate::backend::Backend;
use crate::body::{ProxyBody, Timer};
use crate::error::ProxyError;
use crate::headers::{self, BACKEND_HEADER, DECISION_HEADER, REQUEST_ID};
use crate::route::{self, Routed};
use crate::settings::Settings;
use crate::state::{Snapshot, State};
use crate::upstream::{Lease, SendError};

/// The proxy's request handler, shared by every connection.
#[derive(Debug, Clone)]
pub struct Proxy {
    state: Arc<State>,
    settings: Arc<Settings>,
}

// === impl Proxy ===

impl Proxy {
    /// A handler over `state`.
    pub fn new(state: Arc<State>, settings: Arc<Settings>) -> Self {
        Self { state, settings }
    }

    /// Handles one request: every failure becomes a precise error response.
    pub async fn handle(
        &self,
        mut request: Request<Incoming>,
        client: SocketAddr,
    ) -> Response<ProxyBody> {
        let start = Instant::now();
        let request_id =
            headers::ensure_request_id(request.headers_mut(), self.settings.trust_request_id);
        // One snapshot for the whole request, whatever swaps meanwhile.
        let Some(snapshot) = self.state.snapshot() else {
            let response = ProxyError::NoTable.into_response();
            let metrics = self.state.metrics().unrouted();
            metrics.count(response.status());
            metrics.observe(start.elapsed().as_secs_f64());
            return response;
        };
        let mut pair = None;
        let mut response = match self
            .forward(request, client, &snapshot, start, &mut pair)
            .await
        {
            Ok(response) => response,
            Err(error) => {
                tracing::debug!(%error, request_id = ?request_id, "request failed");
                error.into_response()
            }
        };
        let metrics = snapshot.metrics.pair(pair.map(|p| p.0), pair.map(|p| p.1));
        metrics.count(response.status());
        // A streamed body records its duration when it ends; anything else
        // is complete now.
        if !matches!(response.body(), ProxyBody::Upstream(_)) {
            metrics.observe(start.elapsed().as_secs_f64());
        }
        response.headers_mut().insert(REQUEST_ID, request_id);
        response
    }

    async fn forward(
        &self,
        mut request: Request<Incoming>,
        client: SocketAddr,
        snapshot: &Arc<Snapshot>,
        start: Instant,
        pair: &mut Option<(usize, usize)>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let upgrade =
            request.version() == Version::HTTP_11 && headers::is_upgrade_request(request.headers());
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));
        let (mut parts, body) = request.into_parts();
        let decision = match route::decide(snapshot, &parts, &self.settings)? {
            Routed::Respond(response) => return Ok(response),
            Routed::Forward(decision) => decision,
        };
        *pair = Some((decision.route_index, decision.backend_index));
        let backend = decision.backend;
        if upgrade && backend.protocol() == Protocol::Http2 {
            return Err(ProxyError::BadRequest(
                "protocol upgrades need an HTTP/1.1 backend",
            ));
        }
        self.prepare_upstream(&mut parts, &backend, client, upgrade)?;
        let request = Request::from_parts(parts, body);
        let send = self.send_with_retry(&backend, request, decision.backend_request_timeout);
        let (mut response, mut lease) = match decision.request_timeout {
            Some(limit) => tokio::time::timeout(limit, send)
                .await
                .map_err(|_| ProxyError::Timeout(backend.name().to_owned()))??,
            None => send.await?,
        };

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
        let timer = Timer {
            snapshot: snapshot.clone(),
            route: decision.route_index,
            backend: decision.backend_index,
            start,
        };
        Ok(Response::from_parts(
            parts,
            ProxyBody::upstream(body, lease, timer),
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
    ) -> Result<(), ProxyError> {
        headers::strip_hop_by_hop(&mut parts.headers, upgrade);
        headers::add_forwarding(
            &mut parts.headers,
            client.ip(),
            "http",
            self.settings.forwarded_header,
        );
        if self.settings.set_decision_header {
            if let Ok(name) = HeaderValue::from_str(backend.name()) {
                parts.headers.insert(DECISION_HEADER, name);
            }
        } else if !self.settings.trust_decision_header {
            // A decision this proxy neither made nor trusts must not reach a
            // next hop that trusts it: that would let clients pick versions.
            parts.headers.remove(DECISION_HEADER);
        }
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        match backend.protocol() {
            Protocol::Http1 => {
                // HTTP/2 clients send `:authority` instead of `Host`.
                if !parts.headers.contains_key(header::HOST)
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

    /// Sends to one endpoint; a request that never left the proxy is retried
    /// once on another endpoint (the same one when it is the only one).
    async fn send_with_retry(
        &self,
        backend: &Arc<Backend>,
        request: Request<Incoming>,
        attempt_timeout: Option<Duration>,
    ) -> Result<(Response<Incoming>, Lease), ProxyError> {
        let first = backend
            .pick_endpoint(rand::random(), None)
            .ok_or_else(|| ProxyError::NoEndpoints(backend.name().to_owned()))?;
        let request = match self
            .attempt(backend, &first, request, attempt_timeout)
            .await?
        {
            Ok(sent) => return Ok(sent),
            Err(SendError::Failed(reason)) => {
                return Err(upstream_failed(backend, first.addr(), reason));
            }
            Err(SendError::NotSent {
                request, reason, ..
            }) => {
                tracing::debug!(backend = backend.name(), endpoint = first.addr(), %reason, "retrying on another endpoint; the request was not sent");
                *request
            }
        };
        let second = backend
            .pick_endpoint(rand::random(), Some(&first))
            .ok_or_else(|| ProxyError::NoEndpoints(backend.name().to_owned()))?;
        match self
            .attempt(backend, &second, request, attempt_timeout)
            .await?
        {
            Ok(sent) => Ok(sent),
            Err(SendError::Failed(reason)) => Err(upstream_failed(backend, second.addr(), reason)),
            Err(SendError::NotSent {
                reason,
                connect: true,
                ..
            }) => Err(ProxyError::Connect {
                backend: backend.name().to_owned(),
                endpoint: second.addr().to_owned(),
                reason,
            }),
            Err(SendError::NotSent { reason, .. }) => {
                Err(upstream_failed(backend, second.addr(), reason))
            }
        }
    }

    async fn attempt(
        &self,
        backend: &Arc<Backend>,
        endpoint: &Arc<crate::upstream::Endpoint>,
        request: Request<Incoming>,
        limit: Option<Duration>,
    ) -> Result<Result<(Response<Incoming>, Lease), SendError>, ProxyError> {
        let send = endpoint.send(backend, request, self.settings.connect_timeout);
        match limit {
            Some(limit) => tokio::time::timeout(limit, send)
                .await
                .map_err(|_| ProxyError::Timeout(backend.name().to_owned())),
            None => Ok(send.await),
        }
    }
}

fn upstream_failed(backend: &Backend, endpoint: &str, reason: String) -> ProxyError {
    ProxyError::Upstream {
        backend: backend.name().to_owned(),
        endpoint: endpoint.to_owned(),
        reason,
    }
}

/// Copies bytes both ways once both sides have switched protocols. The
/// lease keeps the tunnel counted as in flight on its backend.
async fn tunnel(client: OnUpgrade, upstream: OnUpgrade, lease: Lease, backend: Arc<Backend>) {
    let _in_flight = lease;
    let _open = backend.tunnel_opened();
    match tokio::try_join!(client, upstream) {
        Ok((client, upstream)) => {
            let mut client = TokioIo::new(client);
            let mut upstream = TokioIo::new(upstream);
            if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                tracing::debug!(error = %e, "tunnel closed with an error");
            }
        }
        Err(e) => tracing::debug!(error = %e, "upgrade failed"),
    }
}
