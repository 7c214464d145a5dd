//! Writing a response as hyper's HTTP/1.1 server would: the framing from
//! the body (a length when known, chunked otherwise), a `Date` when the
//! response has none, `Connection: close` when the connection ends after.

use std::cell::RefCell;
use std::io::{self, Write as _};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, Bytes};
use http::header::{self, HeaderMap};
use http::{Response, StatusCode};
use http_body::{Body, Frame};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::listen::connection::TrackedBody;
use crate::upstream::RelayedFields;

/// Data frames at least this large are written from their own buffer
/// rather than copied behind the head.
const WRITE_DIRECT: usize = 16 * 1024;

/// A body that may carry the fields of its response's head (see
/// [`RelayedFields`]): borrowed from it to be written, not moved.
pub(crate) trait Relaying {
    fn relayed_mut(&mut self) -> Option<&mut RelayedFields>;
}

impl Relaying for TrackedBody {
    fn relayed_mut(&mut self) -> Option<&mut RelayedFields> {
        TrackedBody::relayed_mut(self)
    }
}

/// How the body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body may follow (HEAD, 1xx, 204, 304).
    Bodiless,
    Length(u64),
    Chunked,
}

/// Writes `response`, with the fields its body relays from its upstream's
/// head before those of its map; `Ok(true)` when the connection may carry
/// another request after it. A body that fails, or ends short of its length, cuts
/// the connection (`Ok(false)`): the client sees an incomplete response,
/// as it would from hyper.
pub(super) async fn write_response<W, B>(
    io: &mut W,
    response: Response<B>,
    head_request: bool,
    closing: bool,
) -> io::Result<bool>
where
    W: AsyncWrite + Unpin,
    B: Body<Data = Bytes> + Relaying + Unpin,
    B::Error: std::fmt::Display,
{
    let (parts, mut body) = response.into_parts();
    let status = parts.status;
    let framing = if head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        Framing::Bodiless
    } else if body.is_end_stream() {
        Framing::Length(0)
    } else if let Some(length) = body.size_hint().exact() {
        Framing::Length(length)
    } else if let Some(length) = declared_length(&parts.headers) {
        Framing::Length(length)
    } else {
        Framing::Chunked
    };
    // Relayed fields never include `Connection` (it is hop by hop).
    let says_close = crate::headers::connection_has(&parts.headers, "close");
    let relayed = body.relayed_mut();
    let keep_alive = !closing && !says_close;
    let mut out = Vec::with_capacity(512);
    let reason = parts
        .extensions
        .get::<hyper::ext::ReasonPhrase>()
        .map(|reason| reason.as_bytes());
    encode_head(
        &mut out,
        Fields {
            status,
            reason,
            relayed: relayed.as_deref(),
            headers: &parts.headers,
        },
        framing,
        closing && !says_close,
    );
    drop(parts);
    // The relayed fields hold the upstream connection's read buffer.
    if let Some(relayed) = relayed {
        relayed.clear();
    }
    if framing == Framing::Bodiless {
        io.write_all(&out).await?;
        io.flush().await?;
        return Ok(keep_alive);
    }
    let mut left = match framing {
        Framing::Length(length) => Some(length),
        _ => None,
    };
    loop {
        let frame = match next_frame_now(&mut body) {
            Poll::Ready(frame) => frame,
            Poll::Pending => {
                // Nothing more at hand: send what there is while waiting.
                if !out.is_empty() {
                    io.write_all(&out).await?;
                    out.clear();
                }
                io.flush().await?;
                std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
            }
        };
        let data = match frame {
            None => break,
            Some(Err(error)) => {
                tracing::debug!(%error, "the response body failed part way");
                io.write_all(&out).await?;
                return Ok(false);
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                // Trailers: HTTP/1.1 responses from this path carry none
                // (a request asking for them, with `TE`, goes to hyper).
                Err(_) => continue,
            },
        };
        if data.is_empty() {
            continue;
        }
        if let Some(left) = &mut left {
            let Some(after) = left.checked_sub(data.len() as u64) else {
                tracing::debug!("the response body ran past its length");
                io.write_all(&out).await?;
                return Ok(false);
            };
            *left = after;
        } else {
            // Writing to a Vec cannot fail.
            let _ = write!(out, "{:x}\r\n", data.len());
        }
        append_data(io, &mut out, data).await?;
        if left.is_none() {
            out.extend_from_slice(b"\r\n");
        }
    }
    match left {
        None => out.extend_from_slice(b"0\r\n\r\n"),
        Some(0) => {}
        Some(_) => {
            tracing::debug!("the response body ended short of its length");
            io.write_all(&out).await?;
            return Ok(false);
        }
    }
    io.write_all(&out).await?;
    io.flush().await?;
    Ok(keep_alive)
}

/// One poll's worth of a body: a frame or its error.
type Polled<B> = Result<Frame<<B as Body>::Data>, <B as Body>::Error>;

/// Polls the body once without waiting: a frame already at hand goes out
/// in the same write as the head. A `Pending` here registered a waker that
/// does nothing; the caller polls again with the task's own.
fn next_frame_now<B: Body + Unpin>(body: &mut B) -> Poll<Option<Polled<B>>> {
    let mut cx = Context::from_waker(Waker::noop());
    Pin::new(body).poll_frame(&mut cx)
}

/// Copies small data behind what is waiting to be written, which goes out
/// once it reaches [`WRITE_DIRECT`] (a fast upstream sending small frames
/// must not pile its whole body up here); writes large data from its own
/// buffer.
async fn append_data<W: AsyncWrite + Unpin>(
    io: &mut W,
    out: &mut Vec<u8>,
    mut data: Bytes,
) -> io::Result<()> {
    if data.len() < WRITE_DIRECT {
        out.extend_from_slice(&data);
        if out.len() >= WRITE_DIRECT {
            io.write_all(out).await?;
            out.clear();
        }
        return Ok(());
    }
    io.write_all(out).await?;
    out.clear();
    while data.has_remaining() {
        let written = io.write(&data).await?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        data.advance(written);
    }
    Ok(())
}

/// The `Content-Length` the response declares, when it is one number.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    let mut values = crate::headers::values(headers, &header::CONTENT_LENGTH);
    let length = values.next()?.to_str().ok()?.trim().parse().ok()?;
    values.next().is_none().then_some(length)
}

/// What a response head says, apart from its framing.
struct Fields<'a> {
    status: StatusCode,
    reason: Option<&'a [u8]>,
    /// The upstream's end-to-end fields not in `headers` (HTTP/1.1
    /// upstreams: see `RelayedFields`).
    relayed: Option<&'a RelayedFields>,
    headers: &'a HeaderMap,
}

/// Writes the status line and the headers: the relayed fields and the
/// map's, less their framing headers, which are written from `framing`,
/// and `Connection: close` when `announce_close` (the map does not say
/// it, but the connection ends after this response).
fn encode_head(out: &mut Vec<u8>, fields: Fields<'_>, framing: Framing, announce_close: bool) {
    let Fields {
        status,
        reason,
        relayed,
        headers,
    } = fields;
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    match reason {
        Some(reason) => out.extend_from_slice(reason),
        None => out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes()),
    }
    out.extend_from_slice(b"\r\n");
    // A length is written from `framing`, except where a response without
    // a body keeps the length of the body it stands for (HEAD, 304); 1xx
    // and 204 have none to declare (RFC 9110 section 8.6).
    let keep_length = framing == Framing::Bodiless
        && !status.is_informational()
        && status != StatusCode::NO_CONTENT;
    let mut has_date = false;
    // Relayed fields come without `Transfer-Encoding`; a `Content-Length`
    // among them is the upstream's, which `framing` says again.
    if let Some(relayed) = relayed {
        relayed.write_lines(out, |name| {
            has_date |= name.eq_ignore_ascii_case(b"date");
            !keep_length && name.eq_ignore_ascii_case(b"content-length")
        });
        // The request id and the backend's name: never framing or a date.
        for (name, value) in relayed.set_fields() {
            crate::headers::append_field(out, name.as_str().as_bytes(), value.as_bytes());
        }
    }
    for (name, value) in headers {
        if *name == header::TRANSFER_ENCODING || (*name == header::CONTENT_LENGTH && !keep_length) {
            continue;
        }
        has_date |= *name == header::DATE;
        crate::headers::append_field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    match framing {
        Framing::Bodiless => {}
        Framing::Length(length) => {
            out.extend_from_slice(b"content-length: ");
            append_decimal(out, length);
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    if !has_date {
        out.extend_from_slice(b"date: ");
        append_date(out);
        out.extend_from_slice(b"\r\n");
    }
    if announce_close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends `value` in decimal (`write!` costs a formatter per response).
fn append_decimal(out: &mut Vec<u8>, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start..]);
}

thread_local! {
    /// The `Date` value of the current second, formatted once per second
    /// per thread (hyper keeps the same cache).
    static DATE: RefCell<(u64, [u8; 29])> = const { RefCell::new((u64::MAX, [0; 29])) };
}

/// Appends the current time as an IMF-fixdate (RFC 9110 section 5.6.7).
fn append_date(out: &mut Vec<u8>) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    DATE.with_borrow_mut(|(second, text)| {
        if *second != now.as_secs() {
            *second = now.as_secs();
            let formatted = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(*second));
            if formatted.len() == text.len() {
                text.copy_from_slice(formatted.as_bytes());
            }
        }
        out.extend_from_slice(text);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(status: u16, headers: &[(&str, &str)], framing: Framing, closing: bool) -> String {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                http::HeaderValue::from_str(value).unwrap(),
            );
        }
        let mut out = Vec::new();
        let status = StatusCode::from_u16(status).unwrap();
        let fields = Fields {
            status,
            reason: None,
            relayed: None,
            headers: &map,
        };
        encode_head(&mut out, fields, framing, closing);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn the_framing_header_comes_from_the_framing_not_the_map() {
        let stale = [("content-length", "9"), ("transfer-encoding", "gzip")];
        let chunked = head(200, &stale, Framing::Chunked, false);
        assert!(chunked.starts_with("HTTP/1.1 200 OK\r\n"), "{chunked}");
        assert!(chunked.contains("\r\ntransfer-encoding: chunked\r\n"));
        assert!(!chunked.contains("content-length") && !chunked.contains("gzip"));
        let length = head(200, &stale, Framing::Length(1_234_567), false);
        assert!(
            length.contains("\r\ncontent-length: 1234567\r\n"),
            "{length}"
        );
        assert!(!length.contains("transfer-encoding") && !length.contains(": 9\r\n"));
        assert!(length.ends_with("\r\n\r\n") && !length.contains("connection"));
    }

    #[test]
    fn a_response_without_a_body_keeps_a_length_only_where_it_means_one() {
        let declared = [("content-length", "6"), ("date", "then")];
        for status in [200, 304] {
            let kept = head(status, &declared, Framing::Bodiless, false);
            assert!(kept.contains("\r\ncontent-length: 6\r\n"), "{kept}");
            assert!(kept.contains("\r\ndate: then\r\n") && kept.matches("date").count() == 1);
        }
        let no_content = head(204, &declared, Framing::Bodiless, true);
        assert!(!no_content.contains("content-length"), "{no_content}");
        assert!(no_content.contains("\r\nconnection: close\r\n"));
    }

    impl<S> Relaying for http_body_util::StreamBody<S> {
        fn relayed_mut(&mut self) -> Option<&mut RelayedFields> {
            None
        }
    }

    /// A socket that takes every write whole and remembers each one.
    #[derive(Default)]
    struct Recorder {
        writes: Vec<usize>,
        bytes: Vec<u8>,
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.writes.push(buf.len());
            self.bytes.extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn small_frames_always_at_hand_are_written_in_bounded_pieces() {
        // 10,000 frames of 100 bytes, each ready at once: a fast upstream.
        let frames = (0..10_000u32).map(|i| {
            let byte = b'a' + (i % 26) as u8;
            Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(vec![byte; 100])))
        });
        let body = http_body_util::StreamBody::new(futures_util::stream::iter(frames));
        let mut socket = Recorder::default();
        let keep_alive = write_response(&mut socket, Response::new(body), false, false)
            .await
            .unwrap();
        assert!(keep_alive);
        let largest = socket.writes.iter().max().copied().unwrap();
        assert!(largest < 2 * WRITE_DIRECT, "one write of {largest} bytes");
        // And what was written is the body, chunked.
        let text = String::from_utf8(socket.bytes).unwrap();
        let (head, mut rest) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains("\r\ntransfer-encoding: chunked"), "{head}");
        let mut body = String::new();
        loop {
            let (size, after) = rest.split_once("\r\n").unwrap();
            let size = usize::from_str_radix(size, 16).unwrap();
            body.push_str(&after[..size]);
            rest = after[size..].strip_prefix("\r\n").unwrap();
            if size == 0 {
                break;
            }
        }
        assert!(rest.is_empty());
        let expected: String = (0..10_000u32)
            .map(|i| char::from(b'a' + (i % 26) as u8).to_string().repeat(100))
            .collect();
        assert_eq!(body, expected);
    }

    #[test]
    fn a_response_without_a_date_gets_one_in_imf_fixdate() {
        let dated = head(404, &[], Framing::Length(0), false);
        let date = dated
            .lines()
            .find_map(|line| line.strip_prefix("date: "))
            .unwrap();
        assert_eq!(date.len(), 29, "{date}");
        assert!(date.ends_with(" GMT") && httpdate::parse_http_date(date).is_ok());
        assert!(dated.contains("\r\ncontent-length: 0\r\n"));
    }
}
