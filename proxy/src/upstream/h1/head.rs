//! Reading a response head: parsing it, and how its body is delimited.

use std::mem::MaybeUninit;
use std::ops::Range;

use bytes::BytesMut;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode, Version};

use super::chunked::Chunked;
use super::{ExchangeError, Framing, MAX_HEAD_BYTES, MAX_HEADERS};

/// A response head as the proxy relays it: the response without the
/// hop-by-hop headers, how its body is delimited, and whether the
/// connection can serve another request after it.
#[derive(Debug)]
pub(super) struct Head {
    pub(super) response: Response<()>,
    pub(super) framing: Framing,
    pub(super) keep_alive: bool,
}

/// What a response header means to this hop.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Role {
    /// End to end: relayed.
    Relayed,
    /// Hop by hop (RFC 9110 section 7.6.1) and no framing role: dropped.
    HopByHop,
    Connection,
    TransferEncoding,
    ContentLength,
}

/// Classifies a header name without building a `HeaderName`: the three
/// with a framing role by a case-insensitive comparison, the rest of the
/// hop-by-hop set by the list `headers.rs` strips by.
fn role(name: &[u8]) -> Role {
    if name.eq_ignore_ascii_case(b"connection") {
        Role::Connection
    } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
        Role::TransferEncoding
    } else if name.eq_ignore_ascii_case(b"content-length") {
        Role::ContentLength
    } else if crate::headers::is_hop_by_hop_name(name) {
        Role::HopByHop
    } else {
        Role::Relayed
    }
}

/// Where a header's name and value lie in the head's bytes, and its role.
struct Span {
    name: Range<usize>,
    value: Range<usize>,
    role: Role,
}

/// Parses a complete response head at the start of `buf` and consumes it;
/// `Ok(None)` when more bytes are needed. The framing and connection
/// headers are read while the head is parsed and left out of the
/// response's map: looking them up in the map afterwards, then removing
/// them as hop-by-hop, cost about 1,400 instructions a response.
pub(super) fn parse_head(
    buf: &mut BytesMut,
    head_request: bool,
) -> Result<Option<Head>, ExchangeError> {
    // Where each header lies in `buf`, so the head can be split off and
    // its values shared rather than copied. A Vec sized to the headers
    // found: a fixed array for the most would be zeroed (3 KB) on every
    // response.
    let (length, code, version, spans) = {
        let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut response,
            buf,
            &mut headers,
        );
        let length = match parsed {
            Ok(httparse::Status::Complete(length)) if length > MAX_HEAD_BYTES => {
                return Err(too_large());
            }
            Ok(httparse::Status::Complete(length)) => length,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => {
                return Err(ExchangeError::Failed(format!("invalid response head: {e}")));
            }
        };
        let base = buf.as_ptr() as usize;
        let spans: Vec<Span> = response
            .headers
            .iter()
            .map(|h| {
                let name = h.name.as_ptr() as usize - base;
                let value = h.value.as_ptr() as usize - base;
                Span {
                    name: name..name + h.name.len(),
                    value: value..value + h.value.len(),
                    role: role(h.name.as_bytes()),
                }
            })
            .collect();
        (
            length,
            response.code.unwrap_or(0),
            response.version.unwrap_or(1),
            spans,
        )
    };
    let status = StatusCode::from_u16(code)
        .map_err(|_| ExchangeError::Failed(format!("invalid response status {code}")))?;
    let version = if version == 0 {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let head = buf.split_to(length).freeze();
    let connection = connection_tokens(&head, &spans);
    let (framing, keep_alive) = framing(&head, &spans, status, version, head_request, &connection)
        .map_err(ExchangeError::Failed)?;
    // With Transfer-Encoding, a Content-Length is wrong and must not be
    // passed on (RFC 9112 section 6.3, point 3).
    let drop_length = spans.iter().any(|s| s.role == Role::TransferEncoding);
    let mut headers = HeaderMap::with_capacity(spans.len());
    for span in &spans {
        let relayed = match span.role {
            Role::Relayed => {
                let name = &head[span.name.clone()];
                !(connection.names_others
                    && connection_values(&head, &spans).any(|t| t.eq_ignore_ascii_case(name)))
            }
            Role::ContentLength => !drop_length,
            Role::HopByHop | Role::Connection | Role::TransferEncoding => false,
        };
        if !relayed {
            continue;
        }
        let name = HeaderName::from_bytes(&head[span.name.clone()]);
        let value = HeaderValue::from_maybe_shared(head.slice(span.value.clone()));
        let (Ok(name), Ok(value)) = (name, value) else {
            return Err(ExchangeError::Failed("invalid response header".to_owned()));
        };
        headers.append(name, value);
    }
    let mut response = Response::new(());
    *response.status_mut() = status;
    *response.version_mut() = version;
    *response.headers_mut() = headers;
    Ok(Some(Head {
        response,
        framing,
        keep_alive,
    }))
}

pub(super) fn too_large() -> ExchangeError {
    ExchangeError::Failed(format!("response head larger than {MAX_HEAD_BYTES} bytes"))
}

/// What the `Connection` headers of a response say.
struct ConnectionTokens {
    close: bool,
    /// Some token names a header other than the fixed hop-by-hop ones;
    /// that header is hop by hop too (RFC 9110 section 7.6.1). Rare.
    names_others: bool,
}

fn connection_tokens(head: &[u8], spans: &[Span]) -> ConnectionTokens {
    let mut tokens = ConnectionTokens {
        close: false,
        names_others: false,
    };
    for token in connection_values(head, spans) {
        if token.eq_ignore_ascii_case(b"close") {
            tokens.close = true;
        } else if !token.is_empty() && role(token) == Role::Relayed {
            tokens.names_others = true;
        }
    }
    tokens
}

/// Every token of every `Connection` header, trimmed.
fn connection_values<'a>(head: &'a [u8], spans: &'a [Span]) -> impl Iterator<Item = &'a [u8]> {
    spans
        .iter()
        .filter(|s| s.role == Role::Connection)
        .flat_map(move |s| head[s.value.clone()].split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
}

/// How the body is delimited, and whether the connection may be reused
/// after it (RFC 9112 sections 6.3 and 9.3).
fn framing(
    head: &[u8],
    spans: &[Span],
    status: StatusCode,
    version: Version,
    head_request: bool,
    connection: &ConnectionTokens,
) -> Result<(Framing, bool), String> {
    let mut keep_alive = version == Version::HTTP_11 && !connection.close;
    if head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        // A 101 hands the connection over; it never comes back here.
        if status == StatusCode::SWITCHING_PROTOCOLS {
            keep_alive = false;
        }
        return Ok((Framing::Ended, keep_alive));
    }
    let values = |role: Role| {
        spans
            .iter()
            .filter(move |s| s.role == role)
            .map(|s| &head[s.value.clone()])
    };
    if let Some(last) = values(Role::TransferEncoding).next_back() {
        // Chunked must be the last coding; anything else runs to the close.
        // With a Content-Length beside it the message is suspect: read it
        // as chunked, then close (section 6.3, point 3).
        let chunked = last
            .rsplit(|&b| b == b',')
            .next()
            .is_some_and(|coding| coding.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        if !chunked || values(Role::ContentLength).next().is_some() {
            keep_alive = false;
        }
        if chunked {
            return Ok((Framing::Chunked(Chunked::default()), keep_alive));
        }
        return Ok((Framing::UntilClose, false));
    }
    let mut length = None;
    for value in values(Role::ContentLength) {
        // A list of equal values is one length (section 6.3, point 5).
        for part in value.split(|&b| b == b',') {
            let parsed = parse_decimal(part.trim_ascii())
                .ok_or_else(|| "invalid Content-Length in the response".to_owned())?;
            if length.is_some_and(|seen| seen != parsed) {
                return Err("conflicting Content-Length values in the response".to_owned());
            }
            length = Some(parsed);
        }
    }
    match length {
        Some(0) => Ok((Framing::Ended, keep_alive)),
        Some(length) => Ok((Framing::Length(length), keep_alive)),
        None => Ok((Framing::UntilClose, false)),
    }
}

fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        d.is_ascii_digit().then(|| n * 10 + u64::from(d - b'0'))
    })
}
