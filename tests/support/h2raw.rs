//! Raw HTTP/2 frames for abuse tests: the frame layout (RFC 9113 section 4)
//! and HPACK literals without indexing (RFC 7541 section 6.2.2), written by
//! hand so that tests can send what no well-behaved client library would.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const CONTINUATION: u8 = 0x9;

pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;

/// One frame: 24-bit length, type, flags, 31-bit stream id, payload.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let length = payload.len() as u32;
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&length.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// An HPACK integer with an `n`-bit prefix (the prefix bits start at 0).
fn integer(value: usize, prefix_bits: u8, first: u8, out: &mut Vec<u8>) {
    let max = (1usize << prefix_bits) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    let mut rest = value - max;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
}

/// A header block of literals without indexing, new names.
pub fn block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0x00);
        integer(name.len(), 7, 0, &mut out);
        out.extend_from_slice(name.as_bytes());
        integer(value.len(), 7, 0, &mut out);
        out.extend_from_slice(value.as_bytes());
    }
    out
}

/// The request pseudo-headers of a GET.
pub fn get(path: &str) -> Vec<u8> {
    block(&[
        (":method", "GET"),
        (":scheme", "http"),
        (":authority", "app.test"),
        (":path", path),
    ])
}

/// Connects and sends the preface and an empty SETTINGS.
pub async fn connect(addr: std::net::SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(PREFACE).await.unwrap();
    stream.write_all(&frame(SETTINGS, 0, 0, &[])).await.unwrap();
    stream
}

/// A frame read back: type, flags, stream, payload.
#[derive(Debug)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

/// Reads frames until `stop` says so, the connection closes (`None`), or
/// `within` passes (panic). Returns the frame `stop` accepted.
pub async fn read_until(
    stream: &mut TcpStream,
    within: Duration,
    mut stop: impl FnMut(&Frame) -> bool,
) -> Option<Frame> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let mut head = [0u8; 9];
        match tokio::time::timeout_at(deadline, stream.read_exact(&mut head)).await {
            Err(_) => panic!("no matching frame within {within:?}"),
            Ok(Err(_)) => return None,
            Ok(Ok(_)) => {}
        }
        let length = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0u8; length];
        match tokio::time::timeout_at(deadline, stream.read_exact(&mut payload)).await {
            Err(_) => panic!("no matching frame within {within:?}"),
            Ok(Err(_)) => return None,
            Ok(Ok(_)) => {}
        }
        let frame = Frame {
            kind: head[3],
            flags: head[4],
            stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff,
            payload,
        };
        if frame.kind == SETTINGS && frame.flags & ACK == 0 {
            let _ = stream.write_all(&self::frame(SETTINGS, ACK, 0, &[])).await;
        }
        if stop(&frame) {
            return Some(frame);
        }
    }
}

/// The error code of a GOAWAY or RST_STREAM frame.
pub fn error_code(frame: &Frame) -> u32 {
    let at = if frame.kind == GOAWAY { 4 } else { 0 };
    u32::from_be_bytes(frame.payload[at..at + 4].try_into().unwrap())
}

/// The `:status` of a response HEADERS frame, when it comes first in the
/// block as servers send it: indexed from the static table (entries 8 to
/// 14), or a literal with the static name `:status` and a (possibly
/// Huffman-coded) value.
pub fn status(frame: &Frame) -> Option<u16> {
    let block = &frame.payload;
    let first = *block.first()?;
    if first & 0x80 != 0 {
        return match first & 0x7f {
            8 => Some(200),
            9 => Some(204),
            10 => Some(206),
            11 => Some(304),
            12 => Some(400),
            13 => Some(404),
            14 => Some(500),
            _ => None,
        };
    }
    // Literal with incremental indexing (0x40 | 8) or without (0x00 | 8).
    if first != 0x48 && first != 0x08 && first != 0x18 {
        return None;
    }
    let length_byte = *block.get(1)?;
    let length = usize::from(length_byte & 0x7f);
    let value = block.get(2..2 + length)?;
    let text = if length_byte & 0x80 != 0 {
        huffman_digits(value)?
    } else {
        String::from_utf8(value.to_vec()).ok()?
    };
    text.parse().ok()
}

/// Decodes a Huffman-coded string of digits (RFC 7541 appendix B): `0`-`2`
/// are the 5-bit codes 0-2, `3`-`9` the 6-bit codes 25-31.
fn huffman_digits(bytes: &[u8]) -> Option<String> {
    let bits: Vec<u8> = bytes
        .iter()
        .flat_map(|b| (0..8).rev().map(move |i| (b >> i) & 1))
        .collect();
    let mut out = String::new();
    let mut at = 0;
    while at + 5 <= bits.len() {
        let code5 = bits[at..at + 5].iter().fold(0u8, |a, b| a << 1 | b);
        if code5 <= 2 {
            out.push(char::from(b'0' + code5));
            at += 5;
            continue;
        }
        if at + 6 > bits.len() {
            break;
        }
        let code6 = bits[at..at + 6].iter().fold(0u8, |a, b| a << 1 | b);
        if (25..=31).contains(&code6) {
            out.push(char::from(b'3' + code6 - 25));
            at += 6;
            continue;
        }
        break;
    }
    // What is left must be padding: at most 7 one-bits.
    (bits.len() - at < 8 && bits[at..].iter().all(|b| *b == 1)).then_some(out)
}

/// The first frame that answers stream `id`: its HEADERS or RST_STREAM, or
/// a GOAWAY for the whole connection (`None`: closed without one).
pub async fn first_answer(stream: &mut TcpStream, id: u32) -> Option<Frame> {
    read_until(stream, super::DEADLINE, |f| {
        f.kind == GOAWAY || (f.stream == id && (f.kind == RST_STREAM || f.kind == HEADERS))
    })
    .await
}
