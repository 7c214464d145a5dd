//! The chunked transfer coding of a response body (RFC 9112 section 7.1),
//! decoded from a buffer that fills as bytes arrive.

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};

/// Most trailer fields read after the last chunk.
const MAX_TRAILERS: usize = 64;

/// Where the decoder is in the coding.
#[derive(Debug, Default)]
pub(super) enum Chunked {
    /// Before a chunk-size line.
    #[default]
    Size,
    /// Inside a chunk's data: this many bytes to go.
    Data(u64),
    /// After a chunk's data: its CRLF.
    DataEnd,
    /// After the last (zero-size) chunk: trailer fields, then an empty line.
    Trailers,
}

/// What a call to [`Chunked::decode`] found.
#[derive(Debug)]
pub(super) enum Decoded {
    Data(Bytes),
    /// The body ended, with its trailers if it had any.
    End(Option<HeaderMap>),
}

impl Chunked {
    /// Consumes from `buf` what can be decoded: data, or the end of the
    /// body. `Ok(None)` when more bytes are needed.
    pub(super) fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Decoded>, &'static str> {
        loop {
            match self {
                Self::Size => {
                    let Some(line_end) = buf.iter().position(|&b| b == b'\n') else {
                        return Ok(None);
                    };
                    let size = chunk_size(&buf[..line_end])?;
                    let _ = buf.split_to(line_end + 1);
                    *self = if size == 0 {
                        Self::Trailers
                    } else {
                        Self::Data(size)
                    };
                }
                Self::Data(remaining) => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    let take = buf
                        .len()
                        .min(usize::try_from(*remaining).unwrap_or(usize::MAX));
                    *remaining -= take as u64;
                    if *remaining == 0 {
                        *self = Self::DataEnd;
                    }
                    return Ok(Some(Decoded::Data(buf.split_to(take).freeze())));
                }
                Self::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(None);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err("chunk data not followed by CRLF");
                    }
                    let _ = buf.split_to(2);
                    *self = Self::Size;
                }
                Self::Trailers => return trailers(buf).map(|t| t.map(Decoded::End)),
            }
        }
    }
}

/// The size on a chunk-size line (without its `\n`): hex digits, then
/// optional extensions after `;`, which are ignored.
fn chunk_size(line: &[u8]) -> Result<u64, &'static str> {
    let line = line
        .strip_suffix(b"\r")
        .ok_or("chunk-size line not ended by CRLF")?;
    let digits = line
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii_end();
    if digits.is_empty() || digits.len() > 15 {
        return Err("invalid chunk size");
    }
    digits.iter().try_fold(0u64, |size, &d| {
        let value = (d as char).to_digit(16).ok_or("invalid chunk size")?;
        Ok(size << 4 | u64::from(value))
    })
}

/// The trailer section after the last chunk, once it is all in `buf`:
/// `Some(None)` for none (the usual bare CRLF).
fn trailers(buf: &mut BytesMut) -> Result<Option<Option<HeaderMap>>, &'static str> {
    if buf.starts_with(b"\r\n") {
        let _ = buf.split_to(2);
        return Ok(Some(None));
    }
    let mut fields = [httparse::EMPTY_HEADER; MAX_TRAILERS];
    let (length, trailers) = match httparse::parse_headers(buf, &mut fields) {
        Ok(httparse::Status::Complete((length, parsed))) => {
            let mut trailers = HeaderMap::with_capacity(parsed.len());
            for field in parsed {
                let name = HeaderName::from_bytes(field.name.as_bytes())
                    .map_err(|_| "invalid trailer name")?;
                let value =
                    HeaderValue::from_bytes(field.value).map_err(|_| "invalid trailer value")?;
                trailers.append(name, value);
            }
            (length, trailers)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err("invalid trailer section"),
    };
    let _ = buf.split_to(length);
    Ok(Some((!trailers.is_empty()).then_some(trailers)))
}
