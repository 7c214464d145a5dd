//! The endpoint's side of the in-task HTTP/1.1 client (the `h1` module):
//! which requests take it, its pool of idle connections, and the response
//! it hands back beside hyper's.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use http::header::UPGRADE;
use http::{Method, Request, Response};
use hyper::body::Incoming;
use switchyard_config::spec::Protocol;
use tokio::time::Instant;

use super::{
    ConnectPolicy, Endpoint, IDLE_TIMEOUT, MAX_IDLE_PER_ENDPOINT, RelayedFields, SendError, h1,
    or_not_sent,
};
use crate::body::RequestBody;

/// A response head from upstream, with its body to stream.
#[derive(Debug)]
pub(crate) enum Received {
    /// From hyper's client.
    Hyper(Incoming),
    /// From the in-task HTTP/1.1 client.
    InTask(h1::Body),
}

impl Received {
    pub(crate) fn is_end_stream(&self) -> bool {
        match self {
            Self::Hyper(body) => http_body::Body::is_end_stream(body),
            Self::InTask(body) => http_body::Body::is_end_stream(body),
        }
    }

    /// The end-to-end fields of an in-task response's head, not yet in its
    /// map (see [`RelayedFields`]); `None` for hyper's, which has them there.
    pub(crate) fn relayed_mut(&mut self) -> Option<&mut RelayedFields> {
        match self {
            Self::Hyper(_) => None,
            Self::InTask(body) => body.relayed_mut(),
        }
    }

    pub(crate) fn size_hint(&self) -> http_body::SizeHint {
        match self {
            Self::Hyper(body) => http_body::Body::size_hint(body),
            Self::InTask(body) => http_body::Body::size_hint(body),
        }
    }
}

// === impl Endpoint ===

impl Endpoint {
    /// Whether `request` goes out through the in-task HTTP/1.1 client (see
    /// the `h1` module): no body, not an upgrade, an HTTP/1.1 endpoint.
    pub(crate) fn sends_in_task(&self, request: &Request<RequestBody>) -> bool {
        self.protocol == Protocol::Http1 && runs_in_task(request)
    }

    /// Sends a request without a body over HTTP/1.1, in the calling task
    /// (see the `h1` module).
    pub(super) async fn send_in_task(
        &self,
        request: Box<Request<RequestBody>>,
        policy: ConnectPolicy,
    ) -> Result<Response<Received>, SendError> {
        let (connection, request) = match self.take_idle_in_task() {
            Some(connection) => (connection, request),
            // Boxed, as in `send`: connecting is rare.
            None => or_not_sent(Box::pin(self.connect_in_task(policy)).await, request)?,
        };
        match connection.exchange(&request).await {
            Ok(response) => Ok(response.map(Received::InTask)),
            Err(h1::ExchangeError::Unanswered(reason)) => {
                Err(SendError::Unanswered { request, reason })
            }
            Err(h1::ExchangeError::Failed(reason)) => Err(SendError::Failed {
                reason,
                unanswered: false,
            }),
        }
    }

    fn take_idle_in_task(&self) -> Option<Box<h1::Conn>> {
        let mut idle = self.idle_in_task.lock().ok()?;
        while let Some((connection, idle_since)) = idle.pop() {
            if idle_since.elapsed() > IDLE_TIMEOUT {
                // The newest idle connection is too old, so all older ones are.
                idle.clear();
                return None;
            }
            if connection.idle_usable() {
                return Some(connection);
            }
        }
        None
    }

    pub(super) fn give_back_in_task(&self, connection: Box<h1::Conn>) {
        if self.retired.load(Ordering::Relaxed) {
            return;
        }
        if let Ok(mut idle) = self.idle_in_task.lock()
            && idle.len() < MAX_IDLE_PER_ENDPOINT
        {
            idle.push((connection, Instant::now()));
        }
    }

    async fn connect_in_task(&self, policy: ConnectPolicy) -> Result<Box<h1::Conn>, String> {
        let io = self.connect(policy).await?;
        let cut = Arc::new(h1::Cut::default());
        if let Ok(mut cuts) = self.in_task_cuts.lock() {
            cuts.retain(|cut| cut.strong_count() > 0);
            cuts.push(Arc::downgrade(&cut));
        }
        Ok(h1::Conn::new(io, cut))
    }
}

/// Whether `request` takes the in-task HTTP/1.1 client: no body, and not a
/// request that may switch the connection to another protocol.
fn runs_in_task(request: &Request<RequestBody>) -> bool {
    http_body::Body::is_end_stream(request.body())
        && request.method() != Method::CONNECT
        && !crate::headers::has(request.headers(), &UPGRADE)
}
