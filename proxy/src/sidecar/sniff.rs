//! Protocol detection on an intercepted connection: HTTP/1.x (with the
//! first request's Host), HTTP/2 with prior knowledge, or anything else.

use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// What a connection's first bytes are.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Sniffed {
    /// An HTTP/1.x request; its `Host` when the head arrived whole.
    Http1 { host: Option<String> },
    /// The HTTP/2 connection preface.
    Http2,
    /// Not HTTP, or nothing within the detection timeout (a protocol where
    /// the server speaks first, such as SMTP or MySQL).
    Other,
}

/// Most bytes read before deciding; a head longer than this is HTTP whose
/// Host is not known.
const LIMIT: usize = 16 * 1024;
/// Longest method token waited for before deciding it is not HTTP.
const LONGEST_METHOD: usize = 24;
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Most header fields looked at for the Host.
const MAX_HEADERS: usize = 100;

/// Reads from `stream` until its protocol is known or `wait` has passed;
/// returns the verdict and every byte read, to be replayed.
pub(crate) async fn sniff(stream: &mut TcpStream, wait: Duration) -> (Sniffed, Vec<u8>) {
    let deadline = Instant::now() + wait;
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(sniffed) = classify(&buffer, buffer.len() >= LIMIT) {
            return (sniffed, buffer);
        }
        let room = chunk.len().min(LIMIT - buffer.len());
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk[..room])).await {
            Ok(Ok(read)) if read > 0 => buffer.extend_from_slice(&chunk[..read]),
            // Closed, failed, or quiet until the deadline: decide on what came.
            _ => {
                let sniffed = classify(&buffer, true).unwrap_or(Sniffed::Other);
                return (sniffed, buffer);
            }
        }
    }
}

/// The verdict on `bytes`, or `None` when more bytes are needed; on the
/// `last_look` a verdict is always given.
fn classify(bytes: &[u8], last_look: bool) -> Option<Sniffed> {
    if bytes.starts_with(H2_PREFACE) {
        return Some(Sniffed::Http2);
    }
    let undecided = || (last_look).then_some(Sniffed::Other);
    // "P", "PR"... could still be the HTTP/2 preface (or POST, PUT).
    if bytes.is_empty() || H2_PREFACE.starts_with(bytes) {
        return undecided();
    }
    match bytes.iter().position(|b| !b.is_ascii_uppercase()) {
        Some(end) if end > 0 && bytes[end] == b' ' => {}
        None if bytes.len() <= LONGEST_METHOD => return undecided(),
        _ => return Some(Sniffed::Other),
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(bytes) {
        Ok(httparse::Status::Complete(_)) => {
            let host = request
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("host"))
                .and_then(|h| std::str::from_utf8(h.value).ok())
                .map(|host| host.trim().to_owned());
            Some(Sniffed::Http1 { host })
        }
        Ok(httparse::Status::Partial) => last_look.then_some(Sniffed::Http1 { host: None }),
        // HTTP, but the Host is past what is looked at.
        Err(httparse::Error::TooManyHeaders) => Some(Sniffed::Http1 { host: None }),
        Err(_) => Some(Sniffed::Other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http1(host: Option<&str>) -> Option<Sniffed> {
        Some(Sniffed::Http1 {
            host: host.map(str::to_owned),
        })
    }

    #[test]
    fn http1_heads_give_their_host() {
        let head = b"GET /a HTTP/1.1\r\nUser-Agent: x\r\nHOST: reviews:9080\r\n\r\n";
        assert_eq!(classify(head, false), http1(Some("reviews:9080")));
        assert_eq!(classify(b"GET / HTTP/1.0\r\n\r\n", false), http1(None));
    }

    #[test]
    fn partial_input_waits_unless_it_is_the_last_look() {
        for partial in [
            &b"GE"[..],
            b"GET / HTTP/1.1\r\nHost: a",
            b"P",
            b"PRI * HTTP/2.0\r\n",
        ] {
            assert_eq!(classify(partial, false), None, "{partial:?}");
        }
        assert_eq!(classify(b"GET / HTTP/1.1\r\nHo", true), http1(None));
        assert_eq!(classify(b"", true), Some(Sniffed::Other));
        assert_eq!(classify(b"PRI * HTTP/2.0\r\n", true), Some(Sniffed::Other));
    }

    #[test]
    fn the_h2_preface_and_other_protocols() {
        assert_eq!(
            classify(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0", false),
            Some(Sniffed::Http2)
        );
        assert_eq!(classify(b"POST / HTTP/1.1\r\n\r\n", false), http1(None));
        // TLS ClientHello, SSH, a lowercase "method", a line that is no HTTP.
        for other in [
            &b"\x16\x03\x01\x02\x00"[..],
            b"SSH-2.0-OpenSSH_9.6\r\n",
            b"get / HTTP/1.1\r\n\r\n",
            b"HELLO world\r\n\r\n",
        ] {
            assert_eq!(classify(other, false), Some(Sniffed::Other), "{other:?}");
        }
    }
}
