//! The parts of a request that routing looks at, borrowed from it.

use std::borrow::Cow;
use std::net::SocketAddr;

use http::{HeaderMap, Method, Uri};

use super::matcher;

/// The parts of a request that routing looks at.
#[derive(Debug, Clone, Copy)]
pub struct RequestHead<'a> {
    /// `Host` header or `:authority` (a port is ignored).
    pub host: &'a str,
    /// Method.
    pub method: &'a Method,
    /// Path, without the query.
    pub path: &'a str,
    /// Raw query string, without `?`.
    pub query: Option<&'a str>,
    /// Request headers.
    pub headers: &'a HeaderMap,
    /// Where an intercepted connection was going (sidecar outbound).
    pub destination: Option<SocketAddr>,
}

// === impl RequestHead ===

impl<'a> RequestHead<'a> {
    /// The head of an `http` request: host from the URI authority (HTTP/2,
    /// absolute-form) or else the `Host` header.
    pub fn new(method: &'a Method, uri: &'a Uri, headers: &'a HeaderMap) -> Self {
        let host = uri
            .authority()
            .map(|a| a.as_str())
            .or_else(|| {
                headers
                    .get(http::header::HOST)
                    .and_then(|h| h.to_str().ok())
            })
            .unwrap_or("");
        Self {
            host,
            method,
            path: uri.path(),
            query: uri.query(),
            headers,
            destination: None,
        }
    }

    /// The same head, for a connection intercepted on its way to
    /// `destination`.
    pub fn with_destination(mut self, destination: Option<SocketAddr>) -> Self {
        self.destination = destination;
        self
    }

    /// The first value of a query parameter, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<Cow<'a, [u8]>> {
        matcher::query_param(self.query, name)
    }
}
