//! Reading a response head: parsing it, and how its body is delimited.

use std::mem::MaybeUninit;

use bytes::BytesMut;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode, Version};

use super::chunked::Chunked;
use super::{ExchangeError, Framing, MAX_HEAD_BYTES, MAX_HEADERS};

/// Parses a complete response head at the start of `buf` and consumes it;
/// `Ok(None)` when more bytes are needed.
pub(super) fn parse_head(buf: &mut BytesMut) -> Result<Option<Response<()>>, ExchangeError> {
    // Where each header's name and value lie in `buf`, so the head can be
    // split off and its values shared rather than copied. A Vec sized to
    // the headers found: a fixed array for the most would be zeroed (3 KB)
    // on every response.
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
        let spans: Vec<_> = response
            .headers
            .iter()
            .map(|h| {
                let name = h.name.as_ptr() as usize - base;
                let value = h.value.as_ptr() as usize - base;
                (name..name + h.name.len(), value..value + h.value.len())
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
    let head = buf.split_to(length).freeze();
    let mut headers = HeaderMap::with_capacity(spans.len());
    for (name, value) in spans {
        let name = HeaderName::from_bytes(&head[name]);
        let value = HeaderValue::from_maybe_shared(head.slice(value));
        match (name, value) {
            (Ok(name), Ok(value)) => {
                headers.append(name, value);
            }
            _ => return Err(ExchangeError::Failed("invalid response header".to_owned())),
        }
    }
    let mut response = Response::new(());
    *response.status_mut() = status;
    *response.version_mut() = if version == 0 {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    *response.headers_mut() = headers;
    Ok(Some(response))
}

pub(super) fn too_large() -> ExchangeError {
    ExchangeError::Failed(format!("response head larger than {MAX_HEAD_BYTES} bytes"))
}

/// How the body of `head` is delimited, and whether the connection may be
/// reused after it (RFC 9112 sections 6.3 and 9.3).
pub(super) fn framing(head: &Response<()>, head_request: bool) -> Result<(Framing, bool), String> {
    let headers = head.headers();
    let mut keep_alive =
        head.version() == Version::HTTP_11 && !crate::headers::connection_has(headers, "close");
    let status = head.status();
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
    if headers.contains_key(header::TRANSFER_ENCODING) {
        // Chunked must be the last coding; anything else runs to the close.
        // With a Content-Length beside it the message is suspect: read it
        // as chunked, then close (section 6.3, point 3).
        let chunked = headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .next_back()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
        if !chunked || headers.contains_key(header::CONTENT_LENGTH) {
            keep_alive = false;
        }
        if chunked {
            return Ok((Framing::Chunked(Chunked::default()), keep_alive));
        }
        return Ok((Framing::UntilClose, false));
    }
    let mut length = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        // A list of equal values is one length (section 6.3, point 5).
        for part in value.as_bytes().split(|&b| b == b',') {
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
