//! The endpoint's side of hyper's client, which sends what the in-task
//! client does not (requests with a body, and everything to HTTP/2
//! backends): its pool of idle HTTP/1.1 connections and the endpoint's
//! shared HTTP/2 connection.

use std::sync::atomic::Ordering;

use http::{Request, Response};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use switchyard_config::spec::Protocol;
use tokio::time::Instant;

use super::{
    ConnectPolicy, Endpoint, IDLE_TIMEOUT, Lease, MAX_IDLE_PER_ENDPOINT, Received, SendError,
    or_not_sent,
};
use crate::body::RequestBody;

impl Endpoint {
    /// Sends `request` with hyper's client: a pooled HTTP/1.1 connection, or
    /// the endpoint's shared HTTP/2 connection.
    pub(super) async fn send_with_hyper(
        &self,
        request: Box<Request<RequestBody>>,
        policy: ConnectPolicy,
        mut lease: Lease,
    ) -> Result<(Response<Received>, Lease), SendError> {
        match self.protocol {
            Protocol::Http1 => {
                let idle = self.take_idle().await;
                let (mut connection, request) = match idle {
                    Some(connection) => (connection, request),
                    // Boxed, as is the HTTP/2 connect: connecting is rare, and
                    // inline its future would be most of this one's.
                    None => or_not_sent(Box::pin(self.connect_http1(policy)).await, request)?,
                };
                let result = connection.try_send_request(*request).await;
                lease.connection = Some(connection);
                result
                    .map(|r| (r.map(Received::Hyper), lease))
                    .map_err(SendError::from_try)
            }
            Protocol::Http2 => {
                let (mut sender, request) = or_not_sent(self.shared_http2(policy).await, request)?;
                if let Err(e) = sender.ready().await {
                    return Err(SendError::NotSent {
                        request,
                        reason: e.to_string(),
                        connect: false,
                    });
                }
                let result = sender.try_send_request(*request).await;
                result
                    .map(|r| (r.map(Received::Hyper), lease))
                    .map_err(SendError::from_try)
            }
        }
    }

    async fn take_idle(&self) -> Option<http1::SendRequest<RequestBody>> {
        loop {
            let (mut candidate, idle_since) = self.idle.lock().ok()?.pop()?;
            if candidate.is_closed() {
                continue;
            }
            if idle_since.elapsed() > IDLE_TIMEOUT {
                // The newest idle connection is too old, so all older ones are.
                self.close_idle();
                return None;
            }
            // An idle connection is ready at once; one the server closed
            // meanwhile fails here and is dropped.
            if candidate.ready().await.is_ok() {
                return Some(candidate);
            }
        }
    }

    pub(super) fn give_back(&self, connection: http1::SendRequest<RequestBody>) {
        if self.retired.load(Ordering::Relaxed) || connection.is_closed() {
            return;
        }
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < MAX_IDLE_PER_ENDPOINT
        {
            idle.push((connection, Instant::now()));
        }
    }

    async fn connect_http1(
        &self,
        policy: ConnectPolicy,
    ) -> Result<http1::SendRequest<RequestBody>, String> {
        let io = TokioIo::new(self.connect(policy).await?);
        let (sender, connection) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(|e| e.to_string())?;
        let addr = self.addr.clone();
        let task = tokio::spawn(async move {
            if let Err(e) = connection.with_upgrades().await {
                tracing::debug!(endpoint = %addr, error = %e, "upstream connection ended");
            }
        });
        self.track_connection(task.abort_handle());
        Ok(sender)
    }

    async fn shared_http2(
        &self,
        policy: ConnectPolicy,
    ) -> Result<http2::SendRequest<RequestBody>, String> {
        let mut shared = self.shared_h2.lock().await;
        if let Some(sender) = shared.as_ref()
            && !sender.is_closed()
        {
            return Ok(sender.clone());
        }
        Box::pin(self.connect_http2(&mut shared, policy)).await
    }

    /// Opens the shared HTTP/2 connection, under the lock `shared` comes
    /// from, so concurrent requests wait for one connection.
    async fn connect_http2(
        &self,
        shared: &mut Option<http2::SendRequest<RequestBody>>,
        policy: ConnectPolicy,
    ) -> Result<http2::SendRequest<RequestBody>, String> {
        let io = TokioIo::new(self.connect(policy).await?);
        let (sender, connection) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(io)
            .await
            .map_err(|e| e.to_string())?;
        let addr = self.addr.clone();
        let task = tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(endpoint = %addr, error = %e, "upstream h2 connection ended");
            }
        });
        self.track_connection(task.abort_handle());
        if !self.retired.load(Ordering::Relaxed) {
            *shared = Some(sender.clone());
        }
        Ok(sender)
    }
}
