//! Checks every request passes before it is routed: framing the backend
//! could read differently than we do, Host confusion, lengths, and the
//! path normalisation that routing and the backend then share.
//!
//! hyper already refuses what it cannot parse (obs-fold, whitespace before
//! the colon, control characters in values, differing `Content-Length`s,
//! a transfer coding other than chunked last); these are the ambiguities it
//! lets through, which a proxy must not pass on.

use http::header::{self, HeaderMap};
use http::uri::{PathAndQuery, Uri};
use http::{Version, request};
use switchyard_config::path::{self, PathError};

use crate::error::ProxyError;
use crate::headers::{has, values};
use crate::settings::Settings;

/// Checks `parts` and normalises its path in place.
pub(crate) fn check(parts: &mut request::Parts, settings: &Settings) -> Result<(), ProxyError> {
    let uri_length = parts.uri.path_and_query().map_or(0, |p| p.as_str().len())
        + parts.uri.authority().map_or(0, |a| a.as_str().len());
    if uri_length > settings.max_uri_bytes {
        return Err(ProxyError::UriTooLong);
    }
    let path = parts.uri.path();
    let asterisk_form = path == "*" && parts.method == http::Method::OPTIONS;
    if !(path.starts_with('/') || asterisk_form) {
        return Err(ProxyError::BadRequest("the path must start with `/`"));
    }
    check_host(parts)?;
    if parts.version != Version::HTTP_2 {
        check_framing(&parts.headers)?;
    }
    normalize_path(&mut parts.uri, settings)
}

/// Refuses a body whose `Content-Length` is over `limit` before anything
/// is sent (chunked bodies are cut when they pass it, in `RequestBody`).
pub(crate) fn check_declared_length(
    headers: &HeaderMap,
    limit: Option<u64>,
) -> Result<(), ProxyError> {
    match limit {
        Some(limit) if declared_length(headers).is_some_and(|length| length > limit) => {
            Err(ProxyError::BodyTooLarge)
        }
        _ => Ok(()),
    }
}

fn check_host(parts: &request::Parts) -> Result<(), ProxyError> {
    let mut hosts = values(&parts.headers, &header::HOST);
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(ProxyError::BadRequest("more than one Host header"));
    }
    match (host, parts.uri.authority()) {
        (None, None) if parts.version == Version::HTTP_11 => {
            Err(ProxyError::BadRequest("HTTP/1.1 request without Host"))
        }
        // An absolute URI (or HTTP/2 `:authority`) wins over Host, so they
        // must agree, or routing and the backend could see different hosts.
        (Some(host), Some(authority))
            if !host
                .as_bytes()
                .eq_ignore_ascii_case(authority.as_str().as_bytes()) =>
        {
            Err(ProxyError::BadRequest(
                "Host disagrees with the request's authority",
            ))
        }
        _ => Ok(()),
    }
}

/// One framing, stated once: the proxy rebuilds framing headers upstream,
/// so anything two parsers could read two ways is refused here.
fn check_framing(headers: &HeaderMap) -> Result<(), ProxyError> {
    let mut codings = values(headers, &header::TRANSFER_ENCODING);
    if let Some(coding) = codings.next() {
        if codings.next().is_some() || !coding.as_bytes().eq_ignore_ascii_case(b"chunked") {
            return Err(ProxyError::BadRequest(
                "Transfer-Encoding other than a single `chunked`",
            ));
        }
        if has(headers, &header::CONTENT_LENGTH) {
            return Err(ProxyError::BadRequest(
                "both Content-Length and Transfer-Encoding",
            ));
        }
    }
    if values(headers, &header::CONTENT_LENGTH).nth(1).is_some() {
        return Err(ProxyError::BadRequest(
            "more than one Content-Length header",
        ));
    }
    Ok(())
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    values(headers, &header::CONTENT_LENGTH)
        .next()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

fn normalize_path(uri: &mut Uri, settings: &Settings) -> Result<(), ProxyError> {
    let normal = match path::normalize(uri.path(), settings.encoded_slashes) {
        Ok(std::borrow::Cow::Borrowed(_)) => return Ok(()),
        Ok(std::borrow::Cow::Owned(normal)) => normal,
        Err(PathError::EncodedSlash) => {
            return Err(ProxyError::BadRequest(
                "encoded slash (%2F or %5C) in the path",
            ));
        }
        Err(PathError::BadEscape) => {
            return Err(ProxyError::BadRequest(
                "invalid percent-encoding in the path",
            ));
        }
    };
    let path_and_query = match uri.query() {
        Some(query) => format!("{normal}?{query}"),
        None => normal,
    };
    let mut parts = std::mem::take(uri).into_parts();
    parts.path_and_query = Some(
        PathAndQuery::try_from(path_and_query)
            .map_err(|_| ProxyError::BadRequest("invalid path"))?,
    );
    *uri = Uri::from_parts(parts).map_err(|_| ProxyError::BadRequest("invalid path"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn parts(request: http::request::Builder) -> request::Parts {
        request.body(()).unwrap().into_parts().0
    }

    #[test]
    fn the_path_is_normalised_and_the_query_kept() {
        let mut request =
            parts(http::Request::get("/public/%2e%2e//admin?x=/../y").header("host", "a"));
        check(&mut request, &Settings::default()).unwrap();
        assert_eq!(request.uri, "/admin?x=/../y");
    }

    #[test]
    fn host_and_framing_ambiguities_are_refused() {
        let settings = Settings::default();
        let cases = [
            http::Request::get("/"),
            http::Request::get("/")
                .header("host", "a")
                .header("host", "b"),
            http::Request::get("http://a/").header("host", "b"),
            http::Request::post("/")
                .header("host", "a")
                .header("transfer-encoding", "chunked")
                .header("content-length", "3"),
            http::Request::post("/")
                .header("host", "a")
                .header("transfer-encoding", "gzip, chunked"),
            http::Request::post("/")
                .header("host", "a")
                .header("content-length", "3")
                .header("content-length", "3"),
        ];
        for case in cases {
            let mut request = parts(case);
            assert!(
                matches!(
                    check(&mut request, &settings),
                    Err(ProxyError::BadRequest(_))
                ),
                "{request:?}"
            );
        }
        let mut fine = parts(http::Request::get("http://a:80/").header("host", "A:80"));
        check(&mut fine, &settings).unwrap();
    }
}
