use http::{HeaderMap, Version};

use super::chunked::{Chunked, Decoded};
use super::*;

/// Relayed fields, as text.
fn fields_of(relayed: &RelayedFields) -> Vec<(&str, &str)> {
    let text = |bytes| std::str::from_utf8(bytes).unwrap();
    relayed
        .iter()
        .map(|(name, value)| (text(name), text(value)))
        .collect()
}

/// Parses a response head to a GET, its relayed fields let go.
fn parse(buf: &mut BytesMut) -> Result<Option<Head>, ExchangeError> {
    parse_head(buf, false, &mut RelayedFields::default())
}

fn head(bytes: &[u8], head_request: bool) -> (Head, RelayedFields) {
    let mut buf = BytesMut::from(bytes);
    let mut relayed = RelayedFields::default();
    match parse_head(&mut buf, head_request, &mut relayed) {
        Ok(Some(head)) => (head, relayed),
        Ok(None) => panic!("incomplete head"),
        Err(ExchangeError::Failed(reason) | ExchangeError::Unanswered(reason)) => {
            panic!("{reason}")
        }
    }
}

/// Decodes `wire` fed one byte at a time (the worst split), returning the
/// body and the trailers, or the first error.
fn decode_bytewise(wire: &[u8]) -> Result<(Vec<u8>, Option<HeaderMap>), &'static str> {
    let mut decoder = Chunked::default();
    let mut buf = BytesMut::new();
    let mut body = Vec::new();
    for &byte in wire {
        buf.extend_from_slice(&[byte]);
        loop {
            match decoder.decode(&mut buf)? {
                Some(Decoded::Data(data)) => body.extend_from_slice(&data),
                Some(Decoded::End(trailers)) => {
                    assert!(buf.is_empty(), "bytes left after the body");
                    return Ok((body, trailers));
                }
                None => break,
            }
        }
    }
    Err("the body did not end")
}

#[test]
fn the_request_head_is_origin_form_with_the_headers_as_given() {
    let request = Request::builder()
        .method(Method::DELETE)
        .uri("/a/b?c=1")
        .header("host", "app.test")
        .header("x-forwarded-for", "10.0.0.1")
        .body(RequestBody::empty())
        .unwrap();
    let mut out = b"left over".to_vec();
    encode_head(&mut out, &request);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "DELETE /a/b?c=1 HTTP/1.1\r\nhost: app.test\r\nx-forwarded-for: 10.0.0.1\r\n\r\n"
    );
}

#[test]
fn a_head_is_parsed_once_complete_and_its_bytes_consumed() {
    let wire = b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\nX-A: 1\r\nx-a: 2\r\n\r\nok";
    let mut buf = BytesMut::from(&wire[..20]);
    assert!(matches!(parse(&mut buf), Ok(None)));
    let mut buf = BytesMut::from(&wire[..]);
    let mut relayed = RelayedFields::default();
    let head = parse_head(&mut buf, false, &mut relayed)
        .ok()
        .flatten()
        .unwrap();
    assert_eq!(head.response.status(), StatusCode::CREATED);
    assert_eq!(head.response.version(), Version::HTTP_11);
    assert!(head.response.headers().is_empty(), "the fields are relayed");
    assert_eq!(
        fields_of(&relayed),
        [("Content-Length", "2"), ("X-A", "1"), ("x-a", "2")]
    );
    assert_eq!(&buf[..], b"ok", "the body stays in the buffer");
}

#[test]
fn a_malformed_head_is_refused() {
    for wire in [
        &b"HTTP/1.1 2xx Odd\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n",
        b"SSH-2.0-OpenSSH\r\n\r\n",
        // What `http` refuses in a name or value, the parser refuses: the
        // relayed fields are written out as they came.
        b"HTTP/1.1 200 OK\r\nX(y): 1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX: a\x7fb\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX: a\x00b\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX: a\rb\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX: a\r\n folded\r\n\r\n",
    ] {
        let mut buf = BytesMut::from(wire);
        assert!(
            matches!(parse(&mut buf), Err(ExchangeError::Failed(_))),
            "{:?}",
            String::from_utf8_lossy(wire)
        );
    }
}

#[test]
fn framing_follows_rfc_9112() {
    let case = |wire: &[u8], head_request: bool| {
        let (head, _) = head(wire, head_request);
        (format!("{:?}", head.framing), head.keep_alive)
    };
    let chunked = || format!("{:?}", Framing::Chunked(Chunked::default()));
    let length = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n";
    assert_eq!(case(length, false), ("Length(5)".into(), true));
    assert_eq!(case(length, true), ("Ended".into(), true), "HEAD");
    assert_eq!(
        case(
            b"HTTP/1.1 204 No Content\r\ncontent-length: 5\r\n\r\n",
            false
        ),
        ("Ended".into(), true)
    );
    assert_eq!(
        case(b"HTTP/1.1 304 Not Modified\r\n\r\n", false),
        ("Ended".into(), true)
    );
    assert_eq!(
        case(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", false),
        ("Ended".into(), true)
    );
    assert_eq!(
        case(b"HTTP/1.1 200 OK\r\ncontent-length: 7, 7\r\n\r\n", false),
        ("Length(7)".into(), true)
    );
    assert_eq!(
        case(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
            false
        ),
        (chunked(), true)
    );
    assert_eq!(
        case(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n",
            false
        ),
        (chunked(), false),
        "both: chunked wins, then the connection closes"
    );
    assert_eq!(
        case(b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n", false),
        ("UntilClose".into(), false)
    );
    assert_eq!(
        case(b"HTTP/1.1 200 OK\r\n\r\n", false),
        ("UntilClose".into(), false)
    );
    assert_eq!(
        case(
            b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 1\r\n\r\n",
            false
        ),
        ("Length(1)".into(), false)
    );
    assert_eq!(
        case(b"HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n", false),
        ("Length(1)".into(), false),
        "HTTP/1.0 closes"
    );
    for bad in [
        &b"HTTP/1.1 200 OK\r\ncontent-length: 1, 2\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999\r\n\r\n",
    ] {
        let mut buf = BytesMut::from(bad);
        assert!(
            matches!(parse(&mut buf), Err(ExchangeError::Failed(_))),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn hop_by_hop_headers_are_left_out_of_the_relayed_head() {
    let (relayed, fields) = head(
        b"HTTP/1.1 200 OK\r\nX-Secret: 1\r\nConnection: keep-alive, X-Secret\r\n\
          Keep-Alive: timeout=5\r\nProxy-Connection: x\r\nTrailer: x-sum\r\n\
          Upgrade: h2c\r\nTE: trailers\r\nX-Kept: 2\r\nContent-Length: 3\r\n\r\n",
        false,
    );
    assert_eq!(
        fields_of(&fields),
        [("X-Kept", "2"), ("Content-Length", "3")]
    );
    assert_eq!(format!("{:?}", relayed.framing), "Length(3)");
    assert!(relayed.keep_alive);

    let (_, suspect) = head(
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        false,
    );
    assert!(
        suspect.iter().next().is_none(),
        "no Content-Length is passed on beside Transfer-Encoding: {:?}",
        fields_of(&suspect)
    );
}

#[test]
fn chunks_decode_across_any_split_with_extensions_and_trailers() {
    let (body, trailers) =
        decode_bytewise(b"5\r\nhello\r\n1;ext=x\r\n \r\nA \r\n0123456789\r\n0\r\n\r\n").unwrap();
    assert_eq!(body, b"hello 0123456789");
    assert!(trailers.is_none());

    let (body, trailers) =
        decode_bytewise(b"3\r\nabc\r\n0\r\ngrpc-status: 0\r\nx-sum: 12\r\n\r\n").unwrap();
    assert_eq!(body, b"abc");
    let trailers = trailers.unwrap();
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["x-sum"], "12");
}

#[test]
fn broken_chunks_are_errors() {
    for wire in [
        &b"zz\r\nhello\r\n0\r\n\r\n"[..],
        b"5\r\nhelloXX0\r\n\r\n",
        b"\r\n",
        b"5\nhello\r\n0\r\n\r\n",
        b"1000000000000000\r\n",
    ] {
        let outcome = decode_bytewise(wire);
        assert!(
            outcome.is_err() && outcome != Err("the body did not end"),
            "{}: {outcome:?}",
            String::from_utf8_lossy(wire)
        );
    }
}

#[test]
fn a_connections_relayed_fields_are_those_of_its_last_head() {
    let mut buf = BytesMut::from(
        &b"HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nContent-Length: 0\r\n\r\n\
           HTTP/1.1 204 No Content\r\nC: 3\r\n\r\n"[..],
    );
    let mut relayed = RelayedFields::default();
    assert!(matches!(
        parse_head(&mut buf, false, &mut relayed),
        Ok(Some(_))
    ));
    assert_eq!(
        fields_of(&relayed),
        [("A", "1"), ("B", "2"), ("Content-Length", "0")]
    );
    let id = http::HeaderName::from_static("x-request-id");
    assert!(
        relayed
            .set(id, http::HeaderValue::from_static("ours"))
            .is_none()
    );
    assert!(matches!(
        parse_head(&mut buf, false, &mut relayed),
        Ok(Some(_))
    ));
    assert_eq!(fields_of(&relayed), [("C", "3")]);
    assert!(relayed.set_fields().next().is_none());
}
