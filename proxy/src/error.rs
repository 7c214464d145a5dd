//! Errors a client sees, each mapped to one precise status and reason.

use http::{HeaderValue, Response, StatusCode};

use crate::body::ProxyBody;

/// Response header naming why the proxy answered with an error.
pub const ERROR_HEADER: &str = "x-switchyard-error";

/// Why a request failed, and who failed.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// No table has been loaded yet.
    #[error("no routing table is loaded yet")]
    NoTable,
    /// No route matched.
    #[error("no route matches this request")]
    NoRoute,
    /// The rule's share names a backend that does not exist (Gateway API: 500).
    #[error("the route's backend reference resolves to no backend")]
    UnresolvedBackend,
    /// Every backend the request could go to is draining.
    #[error("backend {0:?} is draining and takes no new requests")]
    Draining(String),
    /// Every backend of the split is draining.
    #[error("every backend of this route is draining")]
    AllDraining,
    /// The backend has no endpoints.
    #[error("backend {0:?} has no endpoints")]
    NoEndpoints(String),
    /// Could not connect to the upstream.
    #[error("could not connect to backend {backend:?} at {endpoint}: {reason}")]
    Connect {
        /// Backend name.
        backend: String,
        /// Endpoint address.
        endpoint: String,
        /// Cause.
        reason: String,
    },
    /// The upstream failed before a response.
    #[error("backend {backend:?} at {endpoint} failed before responding: {reason}")]
    Upstream {
        /// Backend name.
        backend: String,
        /// Endpoint address.
        endpoint: String,
        /// Cause.
        reason: String,
    },
    /// No response within the route's timeout.
    #[error("backend {0:?} did not respond within the route's timeout")]
    Timeout(String),
    /// The request cannot be forwarded as it is.
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// The request target is longer than `--max-uri-bytes`.
    #[error("the request URI is longer than this proxy accepts")]
    UriTooLong,
    /// The request body is larger than `--max-request-body-bytes`.
    #[error("the request body is larger than this proxy accepts")]
    BodyTooLarge,
    /// The client sent nothing of its body for `--request-body-idle-timeout`.
    #[error("the client stopped sending its request body")]
    BodyTimeout,
    /// The request's Host is served by another certificate than the one
    /// its TLS connection got (RFC 9110 section 15.5.20).
    #[error("this connection's certificate does not serve the requested host")]
    Misdirected,
    /// Too many requests in flight (`what` names the limit).
    #[error("overloaded: too many requests in flight ({0})")]
    Overloaded(&'static str),
}

// === impl ProxyError ===

impl ProxyError {
    /// The status for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NoTable | Self::Draining(_) | Self::AllDraining | Self::NoEndpoints(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::NoRoute => StatusCode::NOT_FOUND,
            Self::UnresolvedBackend => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Connect { .. } | Self::Upstream { .. } => StatusCode::BAD_GATEWAY,
            Self::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::UriTooLong => StatusCode::URI_TOO_LONG,
            Self::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::Overloaded(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Misdirected => StatusCode::MISDIRECTED_REQUEST,
        }
    }

    /// A short, stable reason code (the `x-switchyard-error` header).
    pub fn code(&self) -> &'static str {
        match self {
            Self::NoTable => "no_table",
            Self::NoRoute => "no_route",
            Self::UnresolvedBackend => "unresolved_backend",
            Self::Draining(_) => "backend_draining",
            Self::AllDraining => "all_backends_draining",
            Self::NoEndpoints(_) => "no_endpoints",
            Self::Connect { .. } => "upstream_connect_failed",
            Self::Upstream { .. } => "upstream_failed",
            Self::Timeout(_) => "upstream_timeout",
            Self::BadRequest(_) => "bad_request",
            Self::UriTooLong => "uri_too_long",
            Self::BodyTooLarge => "body_too_large",
            Self::BodyTimeout => "body_timeout",
            Self::Overloaded("backend") => "overloaded_backend",
            Self::Overloaded(_) => "overloaded",
            Self::Misdirected => "misdirected",
        }
    }

    /// The backend and kind (`connect_failed`, `failed`, `timeout`) of an
    /// upstream failure, for `switchyard_upstream_errors_total`.
    pub fn upstream_failure(&self) -> Option<(&str, &'static str)> {
        match self {
            Self::Connect { backend, .. } => Some((backend, "connect_failed")),
            Self::Upstream { backend, .. } => Some((backend, "failed")),
            Self::Timeout(backend) => Some((backend, "timeout")),
            _ => None,
        }
    }

    /// Envoy-style response flags for the access log.
    pub fn flags(&self) -> &'static str {
        match self {
            Self::NoTable | Self::NoRoute | Self::UnresolvedBackend => "NR",
            Self::Draining(_) | Self::AllDraining | Self::NoEndpoints(_) => "UH",
            Self::Connect { .. } => "UF",
            Self::Upstream { .. } => "UC",
            Self::Timeout(_) => "UT",
            Self::BadRequest(_) | Self::UriTooLong | Self::BodyTooLarge | Self::Misdirected => {
                "DPE"
            }
            Self::BodyTimeout => "DT",
            Self::Overloaded(_) => "UO",
        }
    }

    /// The response a client gets: status, reason header and a one-line body.
    pub fn into_response(self) -> Response<ProxyBody> {
        let mut response = Response::new(ProxyBody::full(format!("{self}\n")));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(ERROR_HEADER, HeaderValue::from_static(self.code()));
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        response
    }
}
