//! The proxy's own loop for plain HTTP/1.1 requests (no body, no upgrade,
//! whole heads) and its hand-over to hyper for everything else. Driven
//! over raw sockets, so the test sees the bytes a client would: framing,
//! pipelining, what happens to the bytes of a request the loop leaves.

// Helpers in test files: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;

use switchyard_proxy::Settings;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use support::raw::{Raw, read_response};
use support::{DEADLINE, TestBackend, TestProxy, eventually, sample};

/// How often the proxy listener's connections went from the fast path to
/// hyper.
async fn handovers(admin: SocketAddr) -> u64 {
    sample(
        admin,
        "switchyard_downstream_http1_handovers_total{listener=\"proxy\"} ",
    )
    .await
}

/// Everything to blue, but `/direct`, which the proxy answers itself.
const ROUTES: &str = "  - name: app\n    rules:\n      - { matches: [{ path: { value: /direct } }], direct_response: { status: 418, body: tea } }\n      - backend: blue\n";

async fn start(settings: Settings) -> (TestBackend, TestProxy) {
    let blue = TestBackend::start("blue").await;
    let green = TestBackend::start("green").await;
    let table = support::table(blue.addr, green.addr, ROUTES);
    (blue, TestProxy::start_with(&table, settings).await)
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nhost: app.test\r\nuser-agent: raw\r\n\r\n")
}

async fn next_response(stream: &mut TcpStream) -> Raw {
    read_response(stream)
        .await
        .expect("a response before the connection closed")
}

fn header<'a>(raw: &'a Raw, name: &str) -> Option<&'a str> {
    raw.head.lines().find_map(|line| {
        let (field, value) = line.split_once(':')?;
        field.eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

/// Whether the peer closed the connection (after everything it sent).
async fn closed(stream: &mut TcpStream) -> bool {
    let mut rest = Vec::new();
    tokio::time::timeout(DEADLINE, stream.read_to_end(&mut rest))
        .await
        .expect("the connection closes within the deadline")
        .is_ok_and(|_| rest.is_empty())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_plain_requests_are_answered_in_order_without_hyper() {
    let (_blue, proxy) = start(Settings::default()).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    let pipelined = [get("/status?code=404"), get("/direct"), get("/third")].concat();
    stream.write_all(pipelined.as_bytes()).await.unwrap();
    // The second answer is the proxy's own: its `Date` is the proxy's.
    let expected = [
        (404, "Not Found", "blue"),
        (418, "I'm a teapot", "tea"),
        (200, "OK", "blue"),
    ];
    for (status, reason, body) in expected {
        let raw = next_response(&mut stream).await;
        assert_eq!((raw.status, raw.body.as_str()), (status, body));
        assert!(
            raw.head
                .starts_with(&format!("HTTP/1.1 {status} {reason}\r\n")),
            "{}",
            raw.head
        );
        assert!(header(&raw, "date").is_some(), "{status}: {}", raw.head);
        let length = body.len().to_string();
        assert_eq!(header(&raw, "content-length"), Some(length.as_str()));
    }
    // Keep-alive: the same connection serves a request sent later.
    stream.write_all(get("/again").as_bytes()).await.unwrap();
    assert_eq!(next_response(&mut stream).await.body, "blue");
    assert_eq!(handovers(proxy.admin).await, 0, "every request was plain");
    proxy.shutdown().await;
}

/// Heads of many sizes, pipelined: the read buffer runs out of room in the
/// middle of some of them (the loop reads into whatever room is left, and
/// grows the buffer only when little is), and none is lost or reordered.
/// Hand-overs are not counted: the 78 KB go out in as many TCP writes as
/// the socket's send buffer takes, so a head may legitimately arrive in
/// two pieces, which hyper then serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_heads_of_every_size_are_answered_in_order() {
    let (_blue, proxy) = start(Settings::default()).await;
    let (mut reader, mut writer) = TcpStream::connect(proxy.addr).await.unwrap().into_split();
    const REQUESTS: usize = 60;
    let pads = [0, 700, 1500, 3000, 90];
    let requests: String = (0..REQUESTS)
        .map(|i| {
            let path = if i % 2 == 0 { "/direct" } else { "/app" };
            let pad = "p".repeat(pads[i % pads.len()]);
            format!("GET {path} HTTP/1.1\r\nhost: app.test\r\nx-pad: {pad}\r\n\r\n")
        })
        .collect();
    // Written while the answers are read, so neither side waits on the
    // other's buffers.
    let write = tokio::spawn(async move {
        writer.write_all(requests.as_bytes()).await.unwrap();
        writer
    });
    for i in 0..REQUESTS {
        let raw = read_response(&mut reader)
            .await
            .expect("a response before the connection closed");
        let expected = if i % 2 == 0 {
            (418, "tea")
        } else {
            (200, "blue")
        };
        assert_eq!((raw.status, raw.body.as_str()), expected, "request {i}");
    }
    let _writer = write.await.unwrap();
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_of_unknown_length_is_sent_chunked() {
    let (_blue, proxy) = start(Settings::default()).await;
    let stream = TcpStream::connect(proxy.addr).await.unwrap();
    let mut stream = BufReader::new(stream);
    let request = get("/download?bytes=100000");
    stream
        .get_mut()
        .write_all(request.as_bytes())
        .await
        .unwrap();
    let read = async {
        let mut head = String::new();
        while !head.ends_with("\r\n\r\n") {
            assert_ne!(stream.read_line(&mut head).await.unwrap(), 0, "{head}");
        }
        let mut body = Vec::new();
        loop {
            let mut size = String::new();
            stream.read_line(&mut size).await.unwrap();
            let size = usize::from_str_radix(size.trim_end(), 16).unwrap();
            let mut chunk = vec![0u8; size + 2];
            stream.read_exact(&mut chunk).await.unwrap();
            assert!(chunk.ends_with(b"\r\n"), "each chunk ends with CRLF");
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
        (head, body)
    };
    let (head, body) = tokio::time::timeout(DEADLINE, read).await.unwrap();
    let lower = head.to_ascii_lowercase();
    assert!(lower.starts_with("http/1.1 200 ok\r\n"), "{head}");
    assert!(
        lower.contains("\r\ntransfer-encoding: chunked\r\n"),
        "{head}"
    );
    assert!(!lower.contains("content-length"), "{head}");
    assert_eq!(body.len(), 100_000);
    assert!(body.iter().all(|&b| b == b'x'));
    // The connection still serves after the terminating chunk.
    stream
        .get_mut()
        .write_all(get("/").as_bytes())
        .await
        .unwrap();
    assert_eq!(next_response(stream.get_mut()).await.body, "blue");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_with_a_body_goes_to_hyper_with_every_byte_after_it() {
    let (blue, proxy) = start(Settings::default()).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    let upload = "POST /upload HTTP/1.1\r\nhost: app.test\r\ncontent-length: 5\r\n\r\nhello";
    let pipelined = [get("/before"), upload.to_owned(), get("/after")].concat();
    stream.write_all(pipelined.as_bytes()).await.unwrap();
    assert_eq!(next_response(&mut stream).await.body, "blue");
    assert_eq!(next_response(&mut stream).await.body, "received 5");
    assert_eq!(next_response(&mut stream).await.body, "blue");
    let paths: Vec<String> = blue.seen().into_iter().map(|s| s.uri).collect();
    assert_eq!(paths, ["/before", "/upload", "/after"]);
    assert_eq!(handovers(proxy.admin).await, 1, "the POST went to hyper");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_sent_in_pieces_is_answered() {
    let (_blue, proxy) = start(Settings::default()).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    let request = get("/pieces");
    // Cut inside the request line, inside a header and inside the final
    // CRLF CRLF; whichever reads see them split, the answer is the same.
    let cuts = [0, 7, 25, request.len() - 1, request.len()];
    for piece in cuts.windows(2) {
        stream
            .write_all(&request.as_bytes()[piece[0]..piece[1]])
            .await
            .unwrap();
        stream.flush().await.unwrap();
        tokio::task::yield_now().await;
    }
    assert_eq!(next_response(&mut stream).await.body, "blue");
    stream.write_all(get("/next").as_bytes()).await.unwrap();
    assert_eq!(next_response(&mut stream).await.body, "blue");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_close_and_http_1_0_are_answered_then_closed() {
    let (_blue, proxy) = start(Settings::default()).await;
    let requests = [
        "GET / HTTP/1.1\r\nhost: app.test\r\nconnection: close\r\n\r\n",
        "GET / HTTP/1.0\r\nhost: app.test\r\n\r\n",
    ];
    for request in requests {
        let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let raw = next_response(&mut stream).await;
        assert_eq!((raw.status, raw.body.as_str()), (200, "blue"), "{request}");
        assert!(closed(&mut stream).await, "{request}: closed after");
    }
    assert_eq!(handovers(proxy.admin).await, 2);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_head_gets_hyper_s_400() {
    let (blue, proxy) = start(Settings::default()).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    let bad = "GET / HTTP/1.1\r\nhost: app.test\r\nno colon here\r\n\r\n";
    stream.write_all(bad.as_bytes()).await.unwrap();
    let raw = next_response(&mut stream).await;
    assert_eq!(raw.status, 400, "{}", raw.head);
    assert!(closed(&mut stream).await);
    assert!(blue.seen().is_empty(), "nothing reached the backend");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_before_its_answer_frees_the_connection() {
    let (blue, proxy) = start(Settings::default()).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream.write_all(get("/gate").as_bytes()).await.unwrap();
    eventually("the request reached the backend", || async {
        blue.seen_on("/gate") == 1
    })
    .await;
    drop(stream);
    let series = "switchyard_downstream_connections_open{listener=\"proxy\",protocol=\"http1\"} ";
    eventually("the connection closed with its answer pending", || async {
        sample(proxy.admin, series).await == 0
    })
    .await;
    blue.open_gate();
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_fast_path_off_hyper_serves_every_request() {
    let settings = Settings {
        http1_fast_path: false,
        ..Settings::default()
    };
    let (_blue, proxy) = start(settings).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    let upload = "POST /upload HTTP/1.1\r\nhost: app.test\r\ncontent-length: 2\r\n\r\nhi";
    let pipelined = [get("/"), upload.to_owned(), get("/")].concat();
    stream.write_all(pipelined.as_bytes()).await.unwrap();
    for body in ["blue", "received 2", "blue"] {
        assert_eq!(next_response(&mut stream).await.body, body);
    }
    assert_eq!(handovers(proxy.admin).await, 0, "no fast path to leave");
    proxy.shutdown().await;
}
