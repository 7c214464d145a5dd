//! Reading a response head: parsing it, and how its body is delimited.

use std::mem::MaybeUninit;

use bytes::BytesMut;
use http::{Response, StatusCode, Version};

use super::chunked::Chunked;
use super::fields::{Field, RelayedFields};
use super::{ExchangeError, Framing, MAX_HEAD_BYTES, MAX_HEADERS};

/// A response head as the proxy relays it: the status and version (the
/// response's map stays empty: the end-to-end fields are relayed from the
/// head's bytes), how the body is delimited, and whether the connection
/// can serve another request after it.
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

/// The head's fields with the role of each, `roles[i]` that of `fields[i]`.
struct Parsed<'a> {
    head: &'a [u8],
    fields: &'a [Field],
    roles: &'a [Role],
}

/// Parses a complete response head at the start of `buf` and consumes it,
/// its end-to-end fields into `relayed` (what it held before is let go);
/// `Ok(None)` when more bytes are needed. The framing and connection
/// headers are read while the head is parsed and left out of the relayed
/// fields, as is every other hop-by-hop header.
pub(super) fn parse_head(
    buf: &mut BytesMut,
    head_request: bool,
    relayed: &mut RelayedFields,
) -> Result<Option<Head>, ExchangeError> {
    // Where each header lies in `buf`, so the head can be split off and
    // relayed as it is: in the connection's Vec, whose room is kept from
    // one response to the next (a fixed array for the most would be zeroed,
    // 3 KB, on every response; the roles, a byte each, are).
    let mut roles = [Role::Relayed; MAX_HEADERS];
    relayed.clear();
    let (length, code, version) = {
        let fields = &mut relayed.fields;
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
        fields.extend(
            response
                .headers
                .iter()
                .zip(&mut roles)
                .map(|(h, role_of_h)| {
                    *role_of_h = role(h.name.as_bytes());
                    let name = h.name.as_ptr() as usize - base;
                    let value = h.value.as_ptr() as usize - base;
                    Field {
                        name: name..name + h.name.len(),
                        value: value..value + h.value.len(),
                    }
                }),
        );
        (
            length,
            response.code.unwrap_or(0),
            response.version.unwrap_or(1),
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
    let fields = &mut relayed.fields;
    let parsed = Parsed {
        head: &head,
        fields,
        roles: &roles[..fields.len()],
    };
    let connection = connection_tokens(&parsed);
    let (framing, keep_alive) = framing(&parsed, status, version, head_request, &connection)
        .map_err(ExchangeError::Failed)?;
    let kept = relayed_fields(&parsed, &connection);
    let mut index = 0;
    fields.retain(|_| {
        index += 1;
        kept[index - 1]
    });
    relayed.head = head;
    let mut response = Response::new(());
    *response.status_mut() = status;
    *response.version_mut() = version;
    Ok(Some(Head {
        response,
        framing,
        keep_alive,
    }))
}

/// Which fields are relayed: the end-to-end ones, less any a `Connection`
/// header names, and a `Content-Length` unless a `Transfer-Encoding`
/// came too (then it is wrong and must not be passed on: RFC 9112
/// section 6.3, point 3).
fn relayed_fields(parsed: &Parsed<'_>, connection: &ConnectionTokens) -> [bool; MAX_HEADERS] {
    let drop_length = parsed.roles.contains(&Role::TransferEncoding);
    let mut relayed = [false; MAX_HEADERS];
    for ((field, role), relayed) in parsed.fields.iter().zip(parsed.roles).zip(&mut relayed) {
        *relayed = match role {
            Role::Relayed => {
                let name = &parsed.head[field.name.clone()];
                !(connection.names_others
                    && connection_values(parsed).any(|t| t.eq_ignore_ascii_case(name)))
            }
            Role::ContentLength => !drop_length,
            Role::HopByHop | Role::Connection | Role::TransferEncoding => false,
        };
    }
    relayed
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

fn connection_tokens(parsed: &Parsed<'_>) -> ConnectionTokens {
    let mut tokens = ConnectionTokens {
        close: false,
        names_others: false,
    };
    for token in connection_values(parsed) {
        if token.eq_ignore_ascii_case(b"close") {
            tokens.close = true;
        } else if !token.is_empty() && role(token) == Role::Relayed {
            tokens.names_others = true;
        }
    }
    tokens
}

/// Every token of every `Connection` header, trimmed.
fn connection_values<'a>(parsed: &Parsed<'a>) -> impl Iterator<Item = &'a [u8]> {
    values(parsed, Role::Connection)
        .flat_map(|value| value.split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
}

/// The values of the fields with `role`.
fn values<'a>(parsed: &Parsed<'a>, role: Role) -> impl DoubleEndedIterator<Item = &'a [u8]> {
    let head = parsed.head;
    parsed
        .fields
        .iter()
        .zip(parsed.roles)
        .filter(move |(_, r)| **r == role)
        .map(move |(field, _)| &head[field.value.clone()])
}

/// How the body is delimited, and whether the connection may be reused
/// after it (RFC 9112 sections 6.3 and 9.3).
fn framing(
    parsed: &Parsed<'_>,
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
    if let Some(last) = values(parsed, Role::TransferEncoding).next_back() {
        // Chunked must be the last coding; anything else runs to the close.
        // With a Content-Length beside it the message is suspect: read it
        // as chunked, then close (section 6.3, point 3).
        let chunked = last
            .rsplit(|&b| b == b',')
            .next()
            .is_some_and(|coding| coding.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        if !chunked || values(parsed, Role::ContentLength).next().is_some() {
            keep_alive = false;
        }
        if chunked {
            return Ok((Framing::Chunked(Chunked::default()), keep_alive));
        }
        return Ok((Framing::UntilClose, false));
    }
    let mut length = None;
    for value in values(parsed, Role::ContentLength) {
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
