//! A request on its way to a backend: routed and rewritten for the
//! upstream hop (at once, without waiting), then sent, and the answer's
//! head rewritten for the client.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{self, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use http::{Request, Response, StatusCode, Version, request};
use hyper::upgrade::OnUpgrade;
use switchyard_config::spec::Protocol;

use super::send::{tunnel, upstream_failed};
use super::{Proxy, Served};
use crate::backend::Backend;
use crate::body::{BodyVerdict, ClientBody, ProxyBody, RequestBody};
use crate::error::ProxyError;
use crate::guard;
use crate::headers::{self, BACKEND_HEADER, DECISION_HEADER};
use crate::listen::BodyWatch;
use crate::route::{self, Routed};
use crate::state::Snapshot;
use crate::tls::TlsConnection;
use crate::upstream::{Lease, Received};

/// What routing made of a request.
pub(super) enum Next {
    /// Send it on.
    Send(Outbound),
    /// The table answers it itself (a redirect, a fixed response).
    Answer(Response<ProxyBody>),
}

/// A request routed and rewritten for its backend, with what the answer
/// needs from the routing.
pub(super) struct Outbound {
    /// Boxed: it passes through four layers of futures, each of which
    /// would otherwise hold it (twice, as async fn arguments are).
    request: Box<Request<RequestBody>>,
    backend: Arc<Backend>,
    /// Why the request body failed, if the proxy cut it.
    verdict: BodyVerdict,
    /// The client's side of a protocol upgrade it asked for.
    client_upgrade: Option<OnUpgrade>,
    /// A cohort cookie to set on the response.
    set_cookie: Option<HeaderValue>,
    request_timeout: Option<Duration>,
    attempt_timeout: Option<Duration>,
}

impl Proxy {
    /// Routes `request` and rewrites it for the upstream hop; `served`
    /// learns the route and backend.
    pub(super) fn route(
        &self,
        mut request: Request<ClientBody>,
        client: SocketAddr,
        snapshot: &Snapshot,
        served: &mut Served,
    ) -> Result<Next, ProxyError> {
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
            Routed::Respond(response) => return Ok(Next::Answer(response)),
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
        Ok(Next::Send(Outbound {
            request: Box::new(Request::from_parts(parts, body)),
            backend,
            verdict,
            client_upgrade,
            set_cookie: decision.set_cookie,
            request_timeout: decision.request_timeout,
            attempt_timeout: decision.backend_request_timeout,
        }))
    }

    /// Sends `outbound` on and answers with the backend's response.
    pub(super) async fn exchange(
        &self,
        outbound: Outbound,
        served: &mut Served,
        start: Instant,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let Outbound {
            request,
            backend,
            verdict,
            client_upgrade,
            set_cookie,
            request_timeout,
            attempt_timeout,
        } = outbound;
        // Built in each arm, not bound before the match (see `attempt`).
        let sent = match request_timeout {
            Some(limit) => tokio::time::timeout(
                limit,
                self.send_with_retry(&backend, request, attempt_timeout),
            )
            .await
            .map_err(|_| ProxyError::Timeout(backend.name().to_owned()))?,
            None => {
                self.send_with_retry(&backend, request, attempt_timeout)
                    .await
            }
        };
        // A body the proxy cut is the client's fault, not the backend's.
        let (response, lease) = sent.map_err(|error| verdict.error().unwrap_or(error))?;
        // Only the access log reads these (and a clock read is not free).
        if self.access_log.is_some() {
            served.upstream_ms = Some(start.elapsed().as_secs_f64() * 1000.0);
            served.upstream_host = Some(lease.endpoint_addr().to_owned());
        }
        self.relay(response, lease, &backend, client_upgrade, set_cookie)
    }

    /// The backend's answer, its head rewritten for the client; after a
    /// 101, the tunnel between the two upgraded connections is started.
    fn relay(
        &self,
        mut response: Response<Received>,
        mut lease: Lease,
        backend: &Arc<Backend>,
        client_upgrade: Option<OnUpgrade>,
        set_cookie: Option<HeaderValue>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
        if switching && client_upgrade.is_none() {
            // A 101 the client never asked for cannot be relayed.
            return Err(upstream_failed(
                backend,
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
        let mut response = if switching && let Some(client_upgrade) = client_upgrade {
            let upstream_upgrade = hyper::upgrade::on(&mut response);
            lease.detach_connection();
            let task = tokio::spawn(tunnel(
                client_upgrade,
                upstream_upgrade,
                lease,
                backend.tunnel_opened(),
            ));
            backend.track_tunnel(task.abort_handle());
            let (parts, _) = response.into_parts();
            Response::from_parts(parts, ProxyBody::empty())
        } else {
            let (parts, body) = response.into_parts();
            Response::from_parts(parts, ProxyBody::upstream(body, lease))
        };
        if self.settings.expose_backend
            && let Ok(name) = HeaderValue::from_str(backend.name())
        {
            // Set, not added: a backend's own (a proxy before it) goes.
            ProxyBody::set_header(&mut response, BACKEND_HEADER, name);
        }
        if let Some(cookie) = set_cookie {
            response.headers_mut().append(header::SET_COOKIE, cookie);
        }
        Ok(response)
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
