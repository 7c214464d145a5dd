//! Hostile and broken clients, over raw sockets: requests whose framing,
//! Host, path or forwarding headers could be read two ways are refused or
//! rewritten before the backend sees them, and bytes pipelined behind an
//! upgrade wait for the backend's answer. (Size, time and load limits are
//! in limits.rs.)
#![allow(clippy::unwrap_used)]

mod support;

use support::raw::{read_response, send_raw};
use support::{DEADLINE, TO_BLUE, TestBackend, TestProxy, served_normally, table};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_framing_and_host_are_refused_before_the_backend() {
    let (blue, green) = (
        TestBackend::start("blue").await,
        TestBackend::start("green").await,
    );
    let proxy = TestProxy::start(&table(blue.addr, green.addr, TO_BLUE)).await;
    let many_headers: String = (0..150).map(|i| format!("X-{i}: v\r\n")).collect();
    let big_header = format!("X-Big: {}\r\n", "a".repeat(70_000));
    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(9_000));
    let cases: Vec<(&str, String, u16)> = vec![
        ("no Host", "GET / HTTP/1.1\r\n\r\n".into(), 400),
        ("two Hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".into(), 400),
        (
            "absolute URI against Host",
            "GET http://a.example/ HTTP/1.1\r\nHost: b.example\r\n\r\n".into(),
            400,
        ),
        (
            "chunked twice in one header",
            "POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n".into(),
            400,
        ),
        (
            "two Transfer-Encoding headers",
            "POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".into(),
            400,
        ),
        (
            "a coding before chunked",
            "POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n".into(),
            400,
        ),
        (
            "unknown coding",
            "POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\nhello".into(),
            400,
        ),
        (
            "two different Content-Lengths",
            "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello".into(),
            400,
        ),
        (
            "signed Content-Length",
            "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello".into(),
            400,
        ),
        ("obs-fold", "GET / HTTP/1.1\r\nHost: a\r\nX-A: a\r\n b\r\n\r\n".into(), 400),
        (
            "whitespace before the colon",
            "GET / HTTP/1.1\r\nHost: a\r\nX-A : a\r\n\r\n".into(),
            400,
        ),
        ("NUL in a value", "GET / HTTP/1.1\r\nHost: a\r\nX-A: a\0b\r\n\r\n".into(), 400),
        ("bare CR in a value", "GET / HTTP/1.1\r\nHost: a\r\nX-A: a\rb\r\n\r\n".into(), 400),
        (
            "150 header fields",
            format!("GET / HTTP/1.1\r\nHost: a\r\n{many_headers}\r\n"),
            431,
        ),
        ("70 KB of headers", format!("GET / HTTP/1.1\r\nHost: a\r\n{big_header}\r\n"), 431),
        ("9 KB URI", long_uri, 414),
        ("relative path", "GET no-slash HTTP/1.1\r\nHost: a\r\n\r\n".into(), 400),
        ("encoded slash", "GET /a%2Fb HTTP/1.1\r\nHost: a\r\n\r\n".into(), 400),
        ("bad escape", "GET /a%zz HTTP/1.1\r\nHost: a\r\n\r\n".into(), 400),
    ];
    for (what, request, expected) in cases {
        let answer = send_raw(proxy.addr, request.as_bytes()).await;
        let status = answer.as_ref().map(|a| a.status);
        assert_eq!(status, Some(expected), "{what}: {answer:?}");
        served_normally(proxy.addr).await;
    }
    let seen: Vec<String> = blue.seen().iter().map(|s| s.uri.clone()).collect();
    assert!(
        seen.iter().all(|uri| uri == "/"),
        "only the normal requests reached the backend: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framing_is_rebuilt_so_the_backend_sees_one_well_framed_request() {
    let (blue, green) = (
        TestBackend::start("blue").await,
        TestBackend::start("green").await,
    );
    let proxy = TestProxy::start(&table(blue.addr, green.addr, TO_BLUE)).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    // A chunked request, then a Content-Length one pipelined on one connection.
    stream
        .write_all(b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\nPOST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc")
        .await
        .unwrap();
    let first = read_response(&mut stream).await.unwrap();
    assert_eq!((first.status, first.body.as_str()), (200, "received 11"));
    let second = read_response(&mut stream).await.unwrap();
    assert_eq!((second.status, second.body.as_str()), (200, "received 3"));
    let seen = blue.seen();
    assert_eq!(seen.len(), 2);
    let framing = |i: usize| {
        let headers = &seen[i].headers;
        (
            headers
                .get("transfer-encoding")
                .map(|v| v.to_str().unwrap().to_owned()),
            headers.get_all("content-length").iter().count(),
        )
    };
    assert_eq!(framing(0), (Some("chunked".to_owned()), 0));
    assert_eq!(framing(1), (None, 1));
    assert_eq!(seen[1].headers["content-length"], "3");

    // Two equal Content-Lengths are one length (RFC 9110 section 8.6).
    let answer = send_raw(
        proxy.addr,
        b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
    )
    .await
    .unwrap();
    assert_eq!((answer.status, answer.body.as_str()), (200, "received 5"));
    let last = blue.seen().pop().unwrap();
    assert_eq!(last.headers.get_all("content-length").iter().count(), 1);

    // Content-Length and Transfer-Encoding together: chunked wins (RFC 9112
    // section 6.3), the length is dropped, and the connection closes after
    // the answer, so a request hidden in the "body" is never read.
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let answer = read_response(&mut stream).await.unwrap();
    assert_eq!((answer.status, answer.body.as_str()), (200, "received 0"));
    assert!(answer.head.contains("connection: close"), "{}", answer.head);
    assert!(
        read_response(&mut stream).await.is_none(),
        "nothing more is read"
    );
    let seen = blue.seen();
    assert_eq!(seen.len(), 4);
    assert_eq!(seen[3].headers.get_all("content-length").iter().count(), 0);
    assert_eq!(blue.seen_on("/smuggled"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn normalised_paths_cannot_bypass_a_rule() {
    let (blue, green) = (
        TestBackend::start("blue").await,
        TestBackend::start("green").await,
    );
    let routes = "  - name: admin\n    rules:\n      - matches: [{ path: { type: PathPrefix, value: /admin } }]\n        direct_response: { status: 403, body: closed }\n      - backend: blue\n";
    let proxy = TestProxy::start(&table(blue.addr, green.addr, routes)).await;
    for attempt in [
        "/admin",
        "//admin",
        "/./admin",
        "/public/../admin",
        "/public/%2e%2e/admin",
        "/public/.%2E/admin/x",
        "/%61dmin",
        "/../admin",
    ] {
        let request = format!("GET {attempt} HTTP/1.1\r\nHost: a\r\n\r\n");
        let answer = send_raw(proxy.addr, request.as_bytes()).await.unwrap();
        assert_eq!(
            (answer.status, answer.body.as_str()),
            (403, "closed"),
            "{attempt}"
        );
    }
    // The backend gets the normalised path, the query untouched.
    let answer = send_raw(
        proxy.addr,
        b"GET /x/./y//z/%7Euser?q=/../a HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(blue.seen().pop().unwrap().uri, "/x/y/z/~user?q=/../a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_from_untrusted_clients_are_replaced() {
    let (blue, green) = (
        TestBackend::start("blue").await,
        TestBackend::start("green").await,
    );
    let proxy = TestProxy::start(&table(blue.addr, green.addr, TO_BLUE)).await;
    let answer = send_raw(
        proxy.addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 10.1.2.3\r\nForwarded: for=10.1.2.3\r\nX-Forwarded-Host: admin.internal\r\nX-Forwarded-Proto: https\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(answer.status, 200);
    let seen = blue.seen().pop().unwrap();
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
    assert!(!seen.headers.contains_key("forwarded"));
    assert!(!seen.headers.contains_key("x-forwarded-host"));
}

/// A masked WebSocket text frame, as a client sends it.
fn masked_text(payload: &[u8]) -> Vec<u8> {
    let mask = [0x11, 0x22, 0x33, 0x44];
    let mut frame = vec![0x81, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_pipelined_after_an_upgrade_wait_for_the_backends_answer() {
    let (blue, green) = (
        TestBackend::start("blue").await,
        TestBackend::start("green").await,
    );
    let proxy = TestProxy::start(&table(blue.addr, green.addr, TO_BLUE)).await;
    let upgrade = |path: &str| {
        format!(
            "GET {path} HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
    };
    // Accepted: the frame sent with the request is delivered after the 101.
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    let mut bytes = upgrade("/ws").into_bytes();
    bytes.extend(masked_text(b"hi"));
    stream.write_all(&bytes).await.unwrap();
    // The 101 and the echoed frame may arrive in one read: read them together.
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n")
            && received.len() >= end + 4 + 4
        {
            break end + 4;
        }
        let read = tokio::time::timeout(DEADLINE, stream.read(&mut chunk))
            .await
            .expect("the 101 and the echo within the deadline")
            .unwrap();
        assert!(
            read > 0,
            "closed early: {:?}",
            String::from_utf8_lossy(&received)
        );
        received.extend_from_slice(&chunk[..read]);
    };
    assert!(
        received.starts_with(b"HTTP/1.1 101"),
        "{:?}",
        String::from_utf8_lossy(&received)
    );
    assert_eq!(received[head_end..head_end + 4], [0x81, 2, b'h', b'i']);

    // Refused: the answer closes the connection, so the pipelined bytes are
    // neither tunnelled nor read as a request.
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    let mut bytes = upgrade("/status?code=403").into_bytes();
    bytes.extend_from_slice(b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n");
    stream.write_all(&bytes).await.unwrap();
    let refused = read_response(&mut stream).await.unwrap();
    assert_eq!(refused.status, 403);
    assert!(
        refused.head.contains("connection: close"),
        "{}",
        refused.head
    );
    assert!(
        read_response(&mut stream).await.is_none(),
        "closed after the refusal"
    );
    assert_eq!(
        blue.seen_on("/next"),
        0,
        "the pipelined request never reached the backend"
    );
}
