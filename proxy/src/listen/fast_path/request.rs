//! Reading a request head the fast path can take, or telling that it
//! cannot.

use std::mem::MaybeUninit;

use bytes::BytesMut;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Uri, Version};

use crate::body::ClientBody;

/// The most header fields the fast path parses; a head with more goes to
/// hyper, whose limit (`--max-headers`, 100 by default) answers it.
const MAX_HEADERS: usize = 100;

/// Headers the proxy may add to a request before sending it upstream.
const ADDED_HEADERS: usize = 8;

/// What the bytes at the start of the buffer hold.
#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "returned once per request and taken apart at once; a box would cost an allocation"
)]
pub(super) enum Parsed {
    /// A whole request the fast path serves; its head left the buffer.
    Request(Request<ClientBody>),
    /// The start of a head: more bytes are needed.
    Partial,
    /// A request the fast path leaves to hyper (a body, an upgrade, an
    /// expectation, HTTP/1.0, an odd target, a limit passed) or bytes that
    /// are not a valid head at all, which hyper answers with its 4xx.
    NotOurs,
}

/// The limits hyper enforces on a head, which the fast path must not
/// stretch: past them a head goes to hyper, which answers 431.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub(super) max_headers: usize,
    pub(super) max_head_bytes: usize,
}

/// Parses the request head at the start of `buf`; a request taken is
/// split off the buffer, and its header values share its bytes.
pub(super) fn parse_request(buf: &mut BytesMut, limits: Limits) -> Parsed {
    let max_headers = limits.max_headers.min(MAX_HEADERS);
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut []);
    let length = match httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut parsed,
        buf,
        &mut fields[..max_headers],
    ) {
        Ok(httparse::Status::Complete(length)) if length <= limits.max_head_bytes => length,
        Ok(httparse::Status::Partial) if buf.len() < limits.max_head_bytes => {
            return Parsed::Partial;
        }
        _ => return Parsed::NotOurs,
    };
    if parsed.version != Some(1) {
        return Parsed::NotOurs;
    }
    let Some(method) = parsed
        .method
        .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
        .filter(|m| *m != Method::CONNECT)
    else {
        return Parsed::NotOurs;
    };
    // Origin form only ("/path?query"); "*" and absolute targets go to hyper.
    let Some(path) = parsed.path.filter(|p| p.starts_with('/')) else {
        return Parsed::NotOurs;
    };
    let base = buf.as_ptr() as usize;
    let offset = |part: &[u8]| part.as_ptr() as usize - base;
    let path_start = offset(path.as_bytes());
    let path = path_start..path_start + path.len();
    let mut spans = Vec::with_capacity(parsed.headers.len());
    for field in parsed.headers.iter() {
        if !fast_path_header(field.name.as_bytes(), field.value) {
            return Parsed::NotOurs;
        }
        let name = offset(field.name.as_bytes());
        let value = offset(field.value);
        spans.push((
            name..name + field.name.len(),
            value..value + field.value.len(),
        ));
    }
    let head = buf.split_to(length).freeze();
    let Ok(uri) = Uri::from_maybe_shared(head.slice(path)) else {
        // hyper answers an invalid target, from the bytes as they came.
        put_back(buf, &head);
        return Parsed::NotOurs;
    };
    // Room for what the proxy adds (request id, forwarding headers): a map
    // that grows on the way upstream costs more than a few spare slots.
    let mut headers = HeaderMap::with_capacity(spans.len() + ADDED_HEADERS);
    for (name, value) in spans {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&head[name]),
            HeaderValue::from_maybe_shared(head.slice(value)),
        ) else {
            put_back(buf, &head);
            return Parsed::NotOurs;
        };
        headers.append(name, value);
    }
    let mut request = Request::new(ClientBody::Empty);
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = headers;
    Parsed::Request(request)
}

/// Puts a head split off too early back in front of the buffer (a copy:
/// this is only for heads httparse took but `http` refuses).
fn put_back(buf: &mut BytesMut, head: &[u8]) {
    let rest = std::mem::take(buf);
    buf.reserve(head.len() + rest.len());
    buf.extend_from_slice(head);
    buf.extend_from_slice(&rest);
}

/// Whether a header leaves the request to the fast path: any framing
/// header (even `Content-Length: 0`) means a body, or a question about
/// one, for hyper to read; an upgrade, an expectation and a `TE` (trailers
/// wanted in the response) are hyper's too, and so is any `Connection`
/// header but a plain `keep-alive`.
fn fast_path_header(name: &[u8], value: &[u8]) -> bool {
    const HYPERS: [&[u8]; 5] = [
        b"content-length",
        b"transfer-encoding",
        b"upgrade",
        b"expect",
        b"te",
    ];
    if name.eq_ignore_ascii_case(b"connection") {
        return value.eq_ignore_ascii_case(b"keep-alive");
    }
    !HYPERS.iter().any(|other| name.eq_ignore_ascii_case(other))
}
