//! Protocols end to end: HTTP/1.1 keep-alive, HTTP/2 both sides, gRPC-style
//! trailers, WebSocket, large streamed bodies, proxy header hygiene.
// Helpers in test files: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod support;

use std::convert::Infallible;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderValue, Method, Version};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use support::{Client, TestBackend, TestProxy, table};
use switchyard_proxy::Settings;
use tokio_tungstenite::tungstenite::Message;

const TO_BLUE: &str = "  - name: app\n    rules:\n      - { matches: [{ path: { value: /green } }], backend: green }\n      - backend: blue\n";

fn with_green_http2(text: String) -> String {
    text.replace(
        "green: { endpoints: [",
        "green: { protocol: http2, endpoints: [",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_keep_alive_forwards_with_proxy_headers_and_strips_hop_by_hop() {
    let (blue, green) = (
        TestBackend::start("blue").await,
        TestBackend::start("green").await,
    );
    // This client is a trusted hop, so its forwarding headers are appended to.
    let settings = Settings {
        expose_backend: true,
        trusted_forwarders: vec!["127.0.0.1/32".parse().unwrap()],
        ..Settings::default()
    };
    let proxy = TestProxy::start_with(&table(blue.addr, green.addr, TO_BLUE), settings).await;
    let mut client = Client::http1(proxy.addr).await;
    for _ in 0..100 {
        assert_eq!(client.get("/", &[]).await.text(), "blue");
    }
    let reply = client
        .get(
            "/path?q=1",
            &[
                ("connection", "x-secret"),
                ("x-secret", "must not pass"),
                ("keep-alive", "timeout=5"),
                ("x-request-id", "req-123"),
                ("x-forwarded-for", "203.0.113.9"),
            ],
        )
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.headers["x-request-id"], "req-123", "the id is echoed");
    assert_eq!(reply.headers["x-switchyard-backend"], "blue");
    let seen = blue.seen().pop().unwrap();
    assert_eq!(seen.uri, "/path?q=1");
    assert_eq!(
        seen.headers["host"],
        format!("app.test:{}", proxy.addr.port())
    );
    assert_eq!(seen.headers["x-request-id"], "req-123");
    assert_eq!(seen.headers["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
    for hop in ["x-secret", "keep-alive", "connection"] {
        assert!(!seen.headers.contains_key(hop), "{hop} reached the backend");
    }
    // A request without an id gets a generated UUID, the same both ways.
    let reply = client.get("/", &[]).await;
    let id = reply.headers["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(id.len(), 36);
    assert_eq!(
        blue.seen().pop().unwrap().headers["x-request-id"],
        id.as_str()
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_response_headers_are_stripped() {
    let (blue, green) = (
        TestBackend::start("blue").await,
        TestBackend::start("green").await,
    );
    let proxy = TestProxy::start(&table(blue.addr, green.addr, TO_BLUE)).await;
    for mut client in [
        Client::http1(proxy.addr).await,
        Client::http2(proxy.addr).await,
    ] {
        let reply = client.get("/hop-by-hop", &[]).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.headers["x-public"], "yes");
        for hop in ["x-internal", "keep-alive"] {
            assert!(!reply.headers.contains_key(hop), "{hop} reached the client");
        }
    }
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_client_to_http1_and_http2_backends() {
    let (blue, green) = (
        TestBackend::start("blue").await,
        TestBackend::start("green").await,
    );
    let proxy = TestProxy::start(&with_green_http2(table(blue.addr, green.addr, TO_BLUE))).await;
    let mut client = Client::http2(proxy.addr).await;
    for _ in 0..50 {
        assert_eq!(client.get("/", &[]).await.text(), "blue");
        assert_eq!(client.get("/green", &[]).await.text(), "green");
    }
    let to_blue = blue.seen().pop().unwrap();
    assert_eq!(to_blue.version, Version::HTTP_11);
    assert_eq!(
        to_blue.headers["host"],
        format!("app.test:{}", proxy.addr.port())
    );
    let to_green = green.seen().pop().unwrap();
    assert_eq!(to_green.version, Version::HTTP_2);
    assert_eq!(
        to_green.uri,
        format!("http://app.test:{}/green", proxy.addr.port())
    );

    // An HTTP/1.1 client also reaches the HTTP/2 backend.
    let mut h1 = Client::http1(proxy.addr).await;
    assert_eq!(h1.get("/green", &[]).await.text(), "green");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_with_http2_prior_knowledge_when_installed() {
    let Ok(version) = std::process::Command::new("curl").arg("--version").output() else {
        println!("skipped: curl is not installed");
        return;
    };
    if !String::from_utf8_lossy(&version.stdout).contains("HTTP2") {
        println!("skipped: this curl has no HTTP/2");
        return;
    }
    let (blue, green) = (
        TestBackend::start("blue").await,
        TestBackend::start("green").await,
    );
    let proxy = TestProxy::start(&table(blue.addr, green.addr, TO_BLUE)).await;
    let url = format!("http://{}/green", proxy.addr);
    let output = tokio::process::Command::new("curl")
        .args(["-s", "-i", "--http2-prior-knowledge", &url])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.starts_with("HTTP/2 200"), "{text}");
    assert!(text.ends_with("green"), "{text}");
    proxy.shutdown().await;
}

/// On one HTTP/2 connection, a stream waiting for its backend's answer, or
/// for the rest of a body, must not hold up the others, and a body larger
/// than the flow-control windows still streams through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_streams_of_one_connection_do_not_wait_for_each_other() {
    let (blue, green) = (
        TestBackend::start("blue").await,
        TestBackend::start("green").await,
    );
    let proxy = TestProxy::start(&table(blue.addr, green.addr, TO_BLUE)).await;
    let mut client = Client::http2(proxy.addr).await;
    let support::Client::Http2(sender, _) = &client else {
        unreachable!("an HTTP/2 client")
    };
    // Waits for its answer until the gate opens.
    let mut gated_sender = sender.clone();
    let gate_uri = format!("http://app.test:{}/gate", proxy.addr.port());
    let gated = tokio::spawn(async move {
        let request = http::Request::get(gate_uri)
            .body(BodyExt::boxed(http_body_util::Empty::new()))
            .unwrap();
        let response = gated_sender.send_request(request).await.unwrap();
        response.into_body().collect().await.unwrap().to_bytes()
    });
    support::eventually("the gated request reaches blue", || async {
        blue.seen_on("/gate") == 1
    })
    .await;
    // Then, on the same connection (bounded: held up by the waiting
    // stream, they would wait for the gate forever): a response under way,
    // its headers and first chunk sent and the rest held back, and while it
    // is, others answered in full.
    const SIZE: usize = 16 * 1024 * 1024;
    let others = async {
        let streaming = client
            .request(
                Method::GET,
                "/stream",
                &[],
                BodyExt::boxed(http_body_util::Empty::new()),
            )
            .await;
        let mut streaming = streaming.into_body();
        let first = streaming
            .frame()
            .await
            .unwrap()
            .unwrap()
            .into_data()
            .unwrap();
        assert_eq!(first, "first;");
        for _ in 0..20 {
            assert_eq!(client.get("/", &[]).await.text(), "blue");
        }
        let download = client.get(&format!("/download?bytes={SIZE}"), &[]).await;
        (streaming, download)
    };
    let (streaming, download) = tokio::time::timeout(support::DEADLINE, others)
        .await
        .expect("requests on the connection were held up by a waiting stream");
    assert_eq!(download.body.len(), SIZE);

    blue.open_gate();
    assert_eq!(gated.await.unwrap(), "blue");
    let rest = streaming.collect().await.unwrap().to_bytes();
    assert_eq!(rest, "last");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_style_trailers_pass_both_ways() {
    let (blue, green) = (
        TestBackend::start("blue").await,
        TestBackend::start("green").await,
    );
    let routes = "  - name: grpc\n    rules: [{ backend: green }]\n";
    let proxy = TestProxy::start(&with_green_http2(table(blue.addr, green.addr, routes))).await;
    let mut client = Client::http2(proxy.addr).await;
    let mut trailers = HeaderMap::new();
    trailers.insert("x-client-trailer", HeaderValue::from_static("from-client"));
    let frames = vec![
        Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"\0\0\0\0\x02hi"))),
        Ok(Frame::trailers(trailers)),
    ];
    let body = BodyExt::boxed(StreamBody::new(futures_util::stream::iter(frames)));
    let reply = client
        .send(
            Method::POST,
            "/trailers",
            &[("content-type", "application/grpc"), ("te", "trailers")],
            body,
        )
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "ok");
    let trailers = reply.trailers.expect("response trailers arrive");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["x-echo-trailer"], "from-client");
    assert_eq!(
        green.seen().pop().unwrap().headers["te"],
        "trailers",
        "te: trailers is kept for gRPC"
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echo_through_the_proxy() {
    let (blue, green) = (
        TestBackend::start("blue").await,
        TestBackend::start("green").await,
    );
    let proxy = TestProxy::start(&table(blue.addr, green.addr, TO_BLUE)).await;
    let stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let url = format!("ws://app.test:{}/ws", proxy.addr.port());
    let (mut socket, response) = tokio_tungstenite::client_async(url, stream).await.unwrap();
    assert_eq!(response.status(), 101);
    assert_eq!(response.headers()["x-switchyard-backend"], "blue");
    for i in 0..10 {
        let text = format!("message {i}");
        socket.send(Message::text(text.clone())).await.unwrap();
        let echoed = socket.next().await.unwrap().unwrap();
        assert_eq!(echoed.into_text().unwrap().as_str(), text);
    }
    socket
        .send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .unwrap();
    assert_eq!(
        socket.next().await.unwrap().unwrap().into_data().as_ref(),
        &[0u8, 1, 2, 255]
    );
    socket.close(None).await.unwrap();
    proxy.shutdown().await;
}

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_256_mib_upload_and_download_stream_without_buffering() {
    const SIZE: u64 = 256 * 1024 * 1024;
    let (blue, green) = (
        TestBackend::start("blue").await,
        TestBackend::start("green").await,
    );
    let proxy = TestProxy::start(&table(blue.addr, green.addr, TO_BLUE)).await;
    let before = peak_rss_kib();
    static CHUNK: [u8; 64 * 1024] = [7u8; 64 * 1024];
    let chunks = (SIZE / CHUNK.len() as u64) as usize;
    let frames = (0..chunks).map(|_| Ok::<_, Infallible>(Frame::data(Bytes::from_static(&CHUNK))));
    let body = BodyExt::boxed(StreamBody::new(futures_util::stream::iter(frames)));
    let mut client = Client::http1(proxy.addr).await;
    let reply = client.send(Method::POST, "/upload", &[], body).await;
    assert_eq!(reply.text(), format!("received {SIZE}"));

    let response = client
        .request(
            Method::GET,
            &format!("/download?bytes={SIZE}"),
            &[],
            BodyExt::boxed(http_body_util::Empty::new()),
        )
        .await;
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut received = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            received += data.len() as u64;
        }
    }
    assert_eq!(received, SIZE);
    // Backend, proxy and client share this process: had any of them held
    // the body, the peak would have grown by 256 MiB. Tolerance: 64 MiB.
    let growth_mib = (peak_rss_kib().saturating_sub(before)) / 1024;
    assert!(growth_mib < 64, "peak memory grew by {growth_mib} MiB");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_after_the_header_read_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (blue, green) = (
        TestBackend::start("blue").await,
        TestBackend::start("green").await,
    );
    let settings = switchyard_proxy::Settings {
        header_read_timeout: std::time::Duration::from_millis(300),
        ..Default::default()
    };
    let proxy = TestProxy::start_with(&table(blue.addr, green.addr, TO_BLUE), settings).await;
    let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: app.test\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    let mut buffer = [0u8; 1024];
    while !response.ends_with(b"blue") {
        let n = stream.read(&mut buffer).await.unwrap();
        assert!(n > 0, "closed before the response");
        response.extend_from_slice(&buffer[..n]);
    }
    // Now idle: the proxy closes it (EOF) once the timeout passes.
    let closed = tokio::time::timeout(support::DEADLINE, stream.read(&mut buffer)).await;
    assert_eq!(
        closed
            .expect("the proxy closed the idle connection")
            .unwrap(),
        0
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_request_id_is_replaced_and_echoed() {
    let (blue, green) = (
        TestBackend::start("blue").await,
        TestBackend::start("green").await,
    );
    let settings = switchyard_proxy::Settings {
        trust_request_id: false,
        ..Default::default()
    };
    let proxy = TestProxy::start_with(&table(blue.addr, green.addr, TO_BLUE), settings).await;
    let reply = Client::http1(proxy.addr)
        .await
        .get("/", &[("x-request-id", "client-chosen")])
        .await;
    let id = reply.headers["x-request-id"].to_str().unwrap().to_owned();
    assert_ne!(id, "client-chosen");
    assert_eq!(id.len(), 36, "a UUID");
    assert_eq!(
        blue.seen().pop().unwrap().headers["x-request-id"],
        id.as_str(),
        "the backend sees the same new id"
    );
    proxy.shutdown().await;
}
