//! Parking of idle HTTP/1.1 connections: a keep-alive connection idle for
//! a second gives hyper's buffers back and waits for the client's next
//! bytes; the client must see one ordinary keep-alive connection. Driven
//! over raw sockets so the test sees exactly what the client would.

// Helpers in test files: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use switchyard_proxy::Settings;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::raw::{Raw, read_response};
use support::{DEADLINE, TO_BLUE, TestBackend, TestProxy, eventually, sample};

/// The proxy's `switchyard_downstream_connections_parked` for its proxy listener.
async fn parked(admin: SocketAddr) -> u64 {
    sample(
        admin,
        "switchyard_downstream_connections_parked{listener=\"proxy\"} ",
    )
    .await
}

/// The proxy listener's open HTTP/1.1 client connections.
async fn open_http1(admin: SocketAddr) -> u64 {
    let series = "switchyard_downstream_connections_open{listener=\"proxy\",protocol=\"http1\"} ";
    sample(admin, series).await
}

async fn wait_parked(admin: SocketAddr, count: u64) {
    eventually(&format!("{count} parked connection(s)"), || async move {
        parked(admin).await == count
    })
    .await;
}

/// The next response on `stream`; the connection must not close first.
async fn next_response(stream: &mut TcpStream) -> Raw {
    read_response(stream)
        .await
        .expect("a response before the connection closed")
}

/// Waits for the proxy to close the connection (EOF), failing on data.
async fn expect_closed(stream: &mut TcpStream) {
    let mut rest = Vec::new();
    tokio::time::timeout(DEADLINE, stream.read_to_end(&mut rest))
        .await
        .expect("the proxy closed the connection within the deadline")
        .unwrap();
    assert!(rest.is_empty(), "unexpected bytes: {rest:?}");
}

#[tokio::test]
async fn a_parked_connection_serves_the_next_requests_on_the_same_socket() {
    let blue = TestBackend::start("blue").await;
    let green = TestBackend::start("green").await;
    let proxy = TestProxy::start(&support::table(blue.addr, green.addr, TO_BLUE)).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();

    stream
        .write_all(b"GET /first HTTP/1.1\r\nhost: app\r\n\r\n")
        .await
        .unwrap();
    let answer = next_response(&mut stream).await;
    assert!(answer.head.starts_with("HTTP/1.1 200"), "{}", answer.head);
    assert_eq!(answer.body, "blue");
    wait_parked(proxy.admin, 1).await;

    // The next request arrives in pieces, the first shorter than what the
    // parked connection reads itself, the whole longer.
    let long_header = "x".repeat(300);
    let request = format!("GET /second HTTP/1.1\r\nhost: app\r\nx-long: {long_header}\r\n\r\n");
    let (start, rest) = request.as_bytes().split_at(5);
    stream.write_all(start).await.unwrap();
    eventually("the parked connection resumed", || async {
        parked(proxy.admin).await == 0
    })
    .await;
    stream.write_all(rest).await.unwrap();
    let answer = next_response(&mut stream).await;
    assert!(answer.head.starts_with("HTTP/1.1 200"), "{}", answer.head);
    assert_eq!(answer.body, "blue");

    // Parked again, then a request with a body and a pipelined one behind it.
    wait_parked(proxy.admin, 1).await;
    let payload = "p".repeat(10_000);
    let pipelined = format!(
        "POST /upload HTTP/1.1\r\nhost: app\r\ncontent-length: {}\r\n\r\n{payload}GET /third HTTP/1.1\r\nhost: app\r\n\r\n",
        payload.len()
    );
    stream.write_all(pipelined.as_bytes()).await.unwrap();
    let upload = next_response(&mut stream).await;
    assert!(upload.head.starts_with("HTTP/1.1 200"), "{}", upload.head);
    assert_eq!(upload.body, format!("received {}", payload.len()));
    let answer = next_response(&mut stream).await;
    assert!(answer.head.starts_with("HTTP/1.1 200"), "{}", answer.head);
    assert_eq!(answer.body, "blue");

    // The backend saw each request once, whole, in order.
    let paths: Vec<String> = blue.seen().into_iter().map(|s| s.uri).collect();
    assert_eq!(paths, ["/first", "/second", "/upload", "/third"]);
    // The request body was read to its end, so the connection parks again.
    // Parked, it is still counted open, once; closed, it is counted out.
    wait_parked(proxy.admin, 1).await;
    assert_eq!(open_http1(proxy.admin).await, 1);
    drop(stream);
    wait_parked(proxy.admin, 0).await;
    eventually("the closed connection counted out", || async {
        open_http1(proxy.admin).await == 0
    })
    .await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_connection_left_mid_body_closes_and_its_body_is_never_a_request() {
    let blue = TestBackend::start("blue").await;
    let green = TestBackend::start("green").await;
    // Only GET is routed: a POST is answered at once (404), its body unread.
    let routes =
        "  - name: get-only\n    rules:\n      - { matches: [{ method: GET }], backend: blue }\n";
    let proxy = TestProxy::start(&support::table(blue.addr, green.addr, routes)).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    // The half of the body sent is itself a request: were the connection
    // kept (or parked) at this point, it would be read as one.
    let smuggled = b"GET /smuggled HTTP/1.1\r\nhost: app\r\n\r\n";
    let head = format!(
        "POST /upload HTTP/1.1\r\nhost: app\r\ncontent-length: {}\r\n\r\n",
        smuggled.len() * 2
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(smuggled).await.unwrap();
    let answer = next_response(&mut stream).await;
    assert!(answer.head.starts_with("HTTP/1.1 404"), "{}", answer.head);
    expect_closed(&mut stream).await;
    assert_eq!(parked(proxy.admin).await, 0);
    assert!(blue.seen().is_empty(), "a body byte became a request");
    proxy.shutdown().await;
}

/// A proxy with a 2.5 s header read timeout to `blue`, and a client
/// connection parked after one request. Parking is checked once a second
/// from when the connection started serving, so an idle connection parks
/// after 1 to 2 s: at the first check only if it has been idle a full
/// second by then, which a slow response (a loaded CI box) can miss by a
/// millisecond. The timeout must outlast the second check, or hyper
/// closes the connection unparked.
async fn parked_with_header_timeout(
    blue: &TestBackend,
    green: &TestBackend,
) -> (TestProxy, TcpStream) {
    let settings = Settings {
        header_read_timeout: Duration::from_millis(2500),
        ..Settings::default()
    };
    let proxy =
        TestProxy::start_with(&support::table(blue.addr, green.addr, TO_BLUE), settings).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: app\r\n\r\n")
        .await
        .unwrap();
    let answer = next_response(&mut stream).await;
    assert!(answer.head.starts_with("HTTP/1.1 200"), "{}", answer.head);
    wait_parked(proxy.admin, 1).await;
    (proxy, stream)
}

#[tokio::test]
async fn a_parked_connection_still_closes_after_the_header_read_timeout() {
    let blue = TestBackend::start("blue").await;
    let green = TestBackend::start("green").await;
    let (proxy, mut stream) = parked_with_header_timeout(&blue, &green).await;
    expect_closed(&mut stream).await;
    wait_parked(proxy.admin, 0).await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_resumed_connection_that_sends_half_a_request_head_still_times_out() {
    let blue = TestBackend::start("blue").await;
    let green = TestBackend::start("green").await;
    let (proxy, mut stream) = parked_with_header_timeout(&blue, &green).await;

    // A slow client: half a request head, then nothing. Were the resumed
    // connection parked again with those bytes, each new hyper connection
    // would start a new header read timeout; it must close at the first.
    stream
        .write_all(b"GET /slow HTTP/1.1\r\nhost: app\r\n")
        .await
        .unwrap();
    // Closed without an answer (hyper sends nothing at its header read
    // timeout), and the half request never reached the backend.
    expect_closed(&mut stream).await;
    let paths: Vec<String> = blue.seen().into_iter().map(|s| s.uri).collect();
    assert_eq!(paths, ["/"]);
    wait_parked(proxy.admin, 0).await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn shutdown_closes_parked_connections() {
    let blue = TestBackend::start("blue").await;
    let green = TestBackend::start("green").await;
    let proxy = TestProxy::start(&support::table(blue.addr, green.addr, TO_BLUE)).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: app\r\n\r\n")
        .await
        .unwrap();
    next_response(&mut stream).await;
    wait_parked(proxy.admin, 1).await;
    // Shutdown waits for open connections; a parked one must not hold it.
    proxy.shutdown().await;
    expect_closed(&mut stream).await;
}
