//! Hostile and broken clients, over raw sockets: each protection answers
//! with its precise status, the backend never sees what was refused, and a
//! normal client is still served.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::{Client, DEADLINE, TestBackend, TestProxy, eventually, table};
use switchyard_proxy::Settings;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TO_BLUE: &str = "  - name: app\n    rules:\n      - backend: blue\n";

/// One response read off a raw connection.
#[derive(Debug)]
struct Raw {
    status: u16,
    head: String,
    body: String,
}

/// Reads one response (headers, then a `Content-Length` body), or `None`
/// when the connection closes first. It never reads past the response, so
/// pipelined answers on one connection are read one by one: the head is read
/// a byte at a time (responses here are small) and the body exactly.
async fn read_response(stream: &mut TcpStream) -> Option<Raw> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let byte = tokio::time::timeout(DEADLINE, stream.read_u8())
            .await
            .expect("an answer within the deadline")
            .ok()?;
        head.push(byte);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    tokio::time::timeout(DEADLINE, stream.read_exact(&mut body))
        .await
        .expect("the body within the deadline")
        .ok()?;
    let body = String::from_utf8_lossy(&body).into_owned();
    Some(Raw { status, head, body })
}

/// Sends `bytes` on a new connection and reads the answer.
async fn send_raw(addr: SocketAddr, bytes: &[u8]) -> Option<Raw> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    read_response(&mut stream).await
}

/// A normal request still gets its answer.
async fn served_normally(addr: SocketAddr) {
    let mut client = Client::http1(addr).await;
    assert_eq!(client.get("/", &[]).await.text(), "blue");
}

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
async fn request_bodies_over_the_limit_get_413() {
    let (blue, green) = (
        TestBackend::start("blue").await,
        TestBackend::start("green").await,
    );
    let settings = Settings {
        max_request_body_bytes: Some(1_000),
        ..Settings::default()
    };
    let proxy = TestProxy::start_with(&table(blue.addr, green.addr, TO_BLUE), settings).await;
    // Declared too large: refused before anything is sent.
    let body = "x".repeat(2_000);
    let request = format!("POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 2000\r\n\r\n{body}");
    let answer = send_raw(proxy.addr, request.as_bytes()).await.unwrap();
    assert_eq!(answer.status, 413);
    assert!(
        answer.head.contains("x-switchyard-error: body_too_large"),
        "{}",
        answer.head
    );
    assert!(blue.seen().is_empty(), "nothing reached the backend");
    // Chunked: cut when it passes the limit.
    let chunk = format!("258\r\n{}\r\n", "y".repeat(600));
    let request = format!(
        "POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n{chunk}{chunk}{chunk}0\r\n\r\n"
    );
    let answer = send_raw(proxy.addr, request.as_bytes()).await.unwrap();
    assert_eq!(answer.status, 413, "{answer:?}");
    // Within the limit it passes.
    let request = format!(
        "POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n{chunk}0\r\n\r\n"
    );
    let answer = send_raw(proxy.addr, request.as_bytes()).await.unwrap();
    assert_eq!((answer.status, answer.body.as_str()), (200, "received 600"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_body_limit_overrides_the_proxys() {
    let (blue, green) = (
        TestBackend::start("blue").await,
        TestBackend::start("green").await,
    );
    let routes = "  - name: small\n    max_request_body_bytes: 10\n    rules:\n      - matches: [{ path: { value: /upload } }]\n        backend: blue\n  - name: rest\n    rules:\n      - backend: green\n";
    let proxy = TestProxy::start(&table(blue.addr, green.addr, routes)).await;
    let request = |path: &str, body: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let answer = send_raw(proxy.addr, request("/upload", &"z".repeat(11)).as_bytes())
        .await
        .unwrap();
    assert_eq!(answer.status, 413);
    assert!(blue.seen().is_empty());
    let chunked = "POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nzzzzzz\r\n6\r\nzzzzzz\r\n0\r\n\r\n";
    let answer = send_raw(proxy.addr, chunked.as_bytes()).await.unwrap();
    assert_eq!(answer.status, 413, "{answer:?}");
    let answer = send_raw(proxy.addr, request("/upload", &"z".repeat(10)).as_bytes())
        .await
        .unwrap();
    assert_eq!((answer.status, answer.body.as_str()), (200, "received 10"));
    // The other route has no limit of its own, and the proxy has none.
    let answer = send_raw(
        proxy.addr,
        request("/other/upload", &"z".repeat(5000)).as_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(answer.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_post_gets_408_while_others_are_served() {
    let (blue, green) = (
        TestBackend::start("blue").await,
        TestBackend::start("green").await,
    );
    let settings = Settings {
        request_body_idle_timeout: Duration::from_millis(300),
        ..Settings::default()
    };
    let proxy = TestProxy::start_with(&table(blue.addr, green.addr, TO_BLUE), settings).await;
    let mut slow = TcpStream::connect(proxy.addr).await.unwrap();
    slow.write_all(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nabc")
        .await
        .unwrap();
    served_normally(proxy.addr).await;
    let answer = read_response(&mut slow).await.unwrap();
    assert_eq!(answer.status, 408, "{answer:?}");
    assert!(
        answer.head.contains("x-switchyard-error: body_timeout"),
        "{}",
        answer.head
    );
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_are_closed_and_capacity_comes_back() {
    let (blue, green) = (
        TestBackend::start("blue").await,
        TestBackend::start("green").await,
    );
    let settings = Settings {
        max_connections: 2,
        ..Settings::default()
    };
    let proxy = TestProxy::start_with(&table(blue.addr, green.addr, TO_BLUE), settings).await;
    let mut first = Client::http1(proxy.addr).await;
    let mut second = Client::http1(proxy.addr).await;
    assert_eq!(first.get("/", &[]).await.text(), "blue");
    assert_eq!(second.get("/", &[]).await.text(), "blue");
    let mut third = TcpStream::connect(proxy.addr).await.unwrap();
    let _ = third.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert!(
        read_response(&mut third).await.is_none(),
        "closed without an answer"
    );
    drop(first);
    eventually("a connection slot frees up", || async {
        send_raw(proxy.addr, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .is_some_and(|a| a.status == 200)
    })
    .await;
    assert_eq!(second.get("/", &[]).await.text(), "blue");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_the_backend_limit_get_a_fast_503_and_connection_close() {
    overload(
        Settings {
            max_requests_per_backend: 1,
            ..Settings::default()
        },
        "overloaded_backend",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_the_proxy_limit_get_a_fast_503_and_connection_close() {
    overload(
        Settings {
            max_requests: 1,
            ..Settings::default()
        },
        "overloaded",
    )
    .await;
}

/// One request waits at the backend; the next is over `settings`' limit.
async fn overload(settings: Settings, reason: &str) {
    let (blue, green) = (
        TestBackend::start("blue").await,
        TestBackend::start("green").await,
    );
    let proxy = TestProxy::start_with(&table(blue.addr, green.addr, TO_BLUE), settings).await;
    let mut waiting = TcpStream::connect(proxy.addr).await.unwrap();
    waiting
        .write_all(b"GET /gate HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    eventually("the first request reached the backend", || async {
        blue.seen_on("/gate") == 1
    })
    .await;
    let answer = send_raw(proxy.addr, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(answer.status, 503);
    assert!(
        answer
            .head
            .contains(&format!("x-switchyard-error: {reason}\r\n")),
        "{}",
        answer.head
    );
    assert!(
        answer
            .head
            .to_ascii_lowercase()
            .contains("connection: close"),
        "{}",
        answer.head
    );
    blue.open_gate();
    let first = read_response(&mut waiting).await.unwrap();
    assert_eq!(first.status, 200);
    served_normally(proxy.addr).await;
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

/// slowhttptest's slowloris (`-H`) and slow body (`-B`) runs, 8 s each,
/// while a normal client keeps being served. Skipped, with the reason
/// printed, when slowhttptest is not installed (`.ci/run` installs it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowhttptest_attacks_leave_normal_clients_served() {
    if std::process::Command::new("slowhttptest")
        .arg("-h")
        .output()
        .is_err()
    {
        eprintln!("skipped: slowhttptest is not installed (apt-get install slowhttptest)");
        return;
    }
    let (blue, green) = (
        TestBackend::start("blue").await,
        TestBackend::start("green").await,
    );
    let settings = Settings {
        header_read_timeout: Duration::from_secs(2),
        request_body_idle_timeout: Duration::from_secs(2),
        ..Settings::default()
    };
    let proxy = TestProxy::start_with(&table(blue.addr, green.addr, TO_BLUE), settings).await;
    for (mode, path) in [("-H", "/"), ("-B", "/upload")] {
        let url = format!("http://{}{path}", proxy.addr);
        let mut attack = tokio::process::Command::new("slowhttptest")
            .args([
                mode, "-c", "300", "-r", "100", "-i", "1", "-x", "10", "-l", "8", "-p", "2", "-s",
                "100000",
            ])
            .args(["-u", &url])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut served = 0;
        let ended = loop {
            let mut client = Client::http1(proxy.addr).await;
            let reply = tokio::time::timeout(Duration::from_secs(2), client.get("/", &[]))
                .await
                .unwrap_or_else(|_| panic!("{mode}: a normal request waited over 2 s"));
            assert_eq!(reply.text(), "blue", "{mode}");
            served += 1;
            if let Ok(Some(status)) = attack.try_wait() {
                break status;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(ended.success(), "{mode}: slowhttptest failed");
        let mut report = String::new();
        attack
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut report)
            .await
            .unwrap();
        assert!(
            served >= 20,
            "{mode}: only {served} normal requests during the attack"
        );
        // Its status lines (with colour codes) end in YES or NO.
        let verdicts: Vec<&str> = report
            .lines()
            .filter(|l| l.contains("service available"))
            .collect();
        assert!(!verdicts.is_empty(), "{mode}: no verdict in {report}");
        assert!(
            verdicts
                .iter()
                .all(|l| l.contains("YES") && !l.contains("NO")),
            "{mode}: {verdicts:?}"
        );
    }
}
