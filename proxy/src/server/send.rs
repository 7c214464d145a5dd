//! What goes upstream: a request sent with one retry when it never left
//! the proxy, and the tunnel after a protocol upgrade.

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use super::Proxy;
use super::replay::Replay;
use crate::backend::{Backend, TunnelGuard};
use crate::body::RequestBody;
use crate::error::ProxyError;
use crate::upstream::{ConnectPolicy, Endpoint, Lease, Received, SendError};

impl Proxy {
    /// Sends to one endpoint, and retries once on another endpoint (the same
    /// one when it is the only one) a request that never left the proxy, or
    /// an idempotent one without a body that the upstream closed or refused
    /// without answering (RFC 9110 section 9.2.2 allows that retry; a body
    /// already streamed upstream could not be sent again).
    pub(super) async fn send_with_retry(
        &self,
        backend: &Arc<Backend>,
        request: Box<Request<RequestBody>>,
        attempt_timeout: Option<Duration>,
    ) -> Result<(Response<Received>, Lease), ProxyError> {
        let first = backend
            .pick_endpoint(rand::random(), None)
            .ok_or_else(|| ProxyError::NoEndpoints(backend.name().to_owned()))?;
        // The in-task client gives an unanswered request back whole; hyper's
        // client consumes it, so a copy is kept for a retry.
        let replay = if first.sends_in_task(&request) {
            None
        } else {
            Replay::of(&request)
        };
        let request = match self
            .attempt(backend, &first, request, attempt_timeout)
            .await?
        {
            Ok(sent) => return Ok(sent),
            Err(SendError::Unanswered { request, reason }) => {
                if !request.method().is_idempotent() {
                    return Err(upstream_failed(backend, first.addr(), reason));
                }
                tracing::debug!(backend = backend.name(), endpoint = first.addr(), %reason, "retrying on another endpoint; the upstream closed without answering");
                self.state.metrics().count_retry(backend.name());
                request
            }
            Err(SendError::Failed { reason, unanswered }) => {
                match replay
                    .filter(|_| unanswered)
                    .and_then(|replay| replay.into_request())
                {
                    Some(request) => {
                        tracing::debug!(backend = backend.name(), endpoint = first.addr(), %reason, "retrying on another endpoint; the upstream closed without answering");
                        self.state.metrics().count_retry(backend.name());
                        Box::new(request)
                    }
                    None => return Err(upstream_failed(backend, first.addr(), reason)),
                }
            }
            Err(SendError::NotSent {
                request, reason, ..
            }) => {
                tracing::debug!(backend = backend.name(), endpoint = first.addr(), %reason, "retrying on another endpoint; the request was not sent");
                self.state.metrics().count_retry(backend.name());
                request
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
            Err(SendError::Failed { reason, .. } | SendError::Unanswered { reason, .. }) => {
                Err(upstream_failed(backend, second.addr(), reason))
            }
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
        endpoint: &Arc<Endpoint>,
        request: Box<Request<RequestBody>>,
        limit: Option<Duration>,
    ) -> Result<Result<(Response<Received>, Lease), SendError>, ProxyError> {
        // The send future is built in each arm, not bound once before the
        // match: a future held in a local and then awaited takes room twice
        // in this future (once per arm, too), which every caller carries.
        let policy = ConnectPolicy {
            timeout: self.settings.connect_timeout,
            ejection: self.settings.endpoint_ejection,
        };
        match limit {
            Some(limit) => tokio::time::timeout(limit, endpoint.send(backend, request, policy))
                .await
                .map_err(|_| ProxyError::Timeout(backend.name().to_owned())),
            None => Ok(endpoint.send(backend, request, policy).await),
        }
    }
}

pub(super) fn upstream_failed(backend: &Backend, endpoint: &str, reason: String) -> ProxyError {
    ProxyError::Upstream {
        backend: backend.name().to_owned(),
        endpoint: endpoint.to_owned(),
        reason,
    }
}

/// Copies bytes both ways once both sides have switched protocols. The
/// lease keeps the tunnel counted as in flight on its backend, the guard
/// as an open tunnel.
pub(super) async fn tunnel(
    client: OnUpgrade,
    upstream: OnUpgrade,
    lease: Lease,
    open: TunnelGuard,
) {
    let _in_flight = lease;
    let _open = open;
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
