//! HTTP/2 abuse and slow clients, with raw frames: each ends in GOAWAY, a
//! stream reset or a closed connection, the backend is spared, and a
//! normal client on another connection is still served.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use support::h2raw::{
    self, CONTINUATION, END_HEADERS, END_STREAM, GOAWAY, HEADERS, RST_STREAM, frame,
};
use support::{Client, DEADLINE, TestBackend, TestProxy, eventually, table};
use switchyard_proxy::Settings;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TO_BLUE: &str = "  - name: app\n    rules:\n      - backend: blue\n";
/// RST_STREAM error code CANCEL.
const CANCEL: [u8; 4] = [0, 0, 0, 8];
const PROTOCOL_ERROR: u32 = 0x1;

async fn served_over_http2(addr: std::net::SocketAddr) {
    let mut client = Client::http2(addr).await;
    assert_eq!(client.get("/", &[]).await.text(), "blue");
}

async fn start() -> (TestBackend, TestBackend, TestProxy) {
    start_with(Settings::default()).await
}

async fn start_with(settings: Settings) -> (TestBackend, TestBackend, TestProxy) {
    let (blue, green) = (
        TestBackend::start("blue").await,
        TestBackend::start("green").await,
    );
    let settings = Settings {
        expose_backend: true,
        ..settings
    };
    let proxy = TestProxy::start_with(&table(blue.addr, green.addr, TO_BLUE), settings).await;
    (blue, green, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_ends_in_goaway() {
    let (blue, _green, proxy) = start().await;
    let mut stream = h2raw::connect(proxy.addr).await;
    let mut burst = Vec::new();
    for i in 0..500u32 {
        let id = 2 * i + 1;
        burst.extend(frame(
            HEADERS,
            END_HEADERS | END_STREAM,
            id,
            &h2raw::get("/gate"),
        ));
        burst.extend(frame(RST_STREAM, 0, id, &CANCEL));
    }
    // The server may close before reading it all.
    let _ = stream.write_all(&burst).await;
    let goaway = h2raw::read_until(&mut stream, DEADLINE, |f| f.kind == GOAWAY).await;
    if let Some(goaway) = goaway {
        // ENHANCE_YOUR_CALM (0xb): too many resets.
        assert_eq!(h2raw::error_code(&goaway), 0xb, "{goaway:?}");
    }
    let reached = blue.seen_on("/gate");
    assert!(
        reached < 100,
        "{reached} of 500 reset streams reached the backend"
    );
    served_over_http2(proxy.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_abandons_most_streams_is_disconnected() {
    let (blue, _green, proxy) = start().await;
    let mut stream = h2raw::connect(proxy.addr).await;
    let mut resets = 0;
    for i in 0..300u32 {
        let id = 2 * i + 1;
        let sent = stream
            .write_all(&frame(
                HEADERS,
                END_HEADERS | END_STREAM,
                id,
                &h2raw::get("/gate"),
            ))
            .await;
        if sent.is_err() {
            break;
        }
        // Reset only once the request is upstream: a premature reset, the
        // kind that costs the proxy and the backend work.
        let before = i as usize;
        let start = tokio::time::Instant::now();
        while blue.seen_on("/gate") <= before && start.elapsed() < Duration::from_secs(2) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        if blue.seen_on("/gate") <= before {
            break; // the connection is gone: the request never arrived
        }
        if stream
            .write_all(&frame(RST_STREAM, 0, id, &CANCEL))
            .await
            .is_err()
        {
            break;
        }
        resets += 1;
    }
    let closed = h2raw::read_until(&mut stream, DEADLINE, |f| f.kind == GOAWAY).await;
    assert!(closed.is_none(), "dropped, not just told: {closed:?}");
    assert!(
        (100..=110).contains(&resets),
        "the connection was closed after {resets} premature resets"
    );
    served_over_http2(proxy.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_floods_end_the_connection_before_the_backend() {
    let (blue, _green, proxy) = start().await;
    // CONTINUATION flood: a header block that never ends.
    let mut stream = h2raw::connect(proxy.addr).await;
    let _ = stream
        .write_all(&frame(HEADERS, 0, 1, &h2raw::get("/")))
        .await;
    let padding = h2raw::block(&[("x-pad", &"a".repeat(1000))]);
    for _ in 0..2000 {
        if stream
            .write_all(&frame(CONTINUATION, 0, 1, &padding))
            .await
            .is_err()
        {
            break;
        }
    }
    let end = h2raw::first_answer(&mut stream, 1).await;
    if let Some(end) = &end
        && end.kind == HEADERS
    {
        assert_eq!(h2raw::status(end), Some(431), "{end:?}");
    }
    // One header list over the limit (64 KiB), in frames of 16 KiB.
    let mut stream = h2raw::connect(proxy.addr).await;
    let mut fields = h2raw::get("/");
    fields.extend(h2raw::block(&[("x-big", &"b".repeat(70_000))]));
    let chunks: Vec<&[u8]> = fields.chunks(16_000).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        let last = i + 1 == chunks.len();
        let (kind, flags) = match (i, last) {
            (0, true) => (HEADERS, END_HEADERS | END_STREAM),
            (0, false) => (HEADERS, END_STREAM),
            (_, true) => (CONTINUATION, END_HEADERS),
            (_, false) => (CONTINUATION, 0),
        };
        let _ = stream.write_all(&frame(kind, flags, 1, chunk)).await;
    }
    let answer = h2raw::first_answer(&mut stream, 1).await;
    if let Some(answer) = &answer
        && answer.kind == HEADERS
    {
        assert_eq!(h2raw::status(answer), Some(431), "{answer:?}");
    }
    assert_eq!(blue.seen().len(), 0, "no flood reached the backend");
    served_over_http2(proxy.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_are_reset_before_the_backend() {
    let (blue, _green, proxy) = start().await;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("connection-specific header", {
            let mut block = h2raw::get("/");
            block.extend(h2raw::block(&[("connection", "keep-alive")]));
            block
        }),
        ("empty :path", h2raw::get("")),
        ("uppercase header name", {
            let mut block = h2raw::get("/");
            block.extend(h2raw::block(&[("X-Upper", "1")]));
            block
        }),
        (
            "missing :method",
            h2raw::block(&[(":scheme", "http"), (":path", "/")]),
        ),
        ("relative :path", h2raw::get("no-slash")),
    ];
    for (what, block) in cases {
        let mut stream = h2raw::connect(proxy.addr).await;
        stream
            .write_all(&frame(HEADERS, END_HEADERS | END_STREAM, 1, &block))
            .await
            .unwrap();
        let reset = h2raw::first_answer(&mut stream, 1)
            .await
            .unwrap_or_else(|| panic!("{what}: closed without a reset"));
        // A stream reset, or GOAWAY for the whole connection.
        assert!(
            reset.kind == RST_STREAM || reset.kind == GOAWAY,
            "{what}: {reset:?}"
        );
        assert_eq!(h2raw::error_code(&reset), PROTOCOL_ERROR, "{what}");
    }
    assert_eq!(
        blue.seen().len(),
        0,
        "nothing malformed reached the backend"
    );
    served_over_http2(proxy.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http2_connection_gets_goaway() {
    let (_blue, _green, proxy) = start_with(Settings {
        idle_timeout: Duration::from_millis(300),
        ..Settings::default()
    })
    .await;
    let mut stream = h2raw::connect(proxy.addr).await;
    stream
        .write_all(&frame(
            HEADERS,
            END_HEADERS | END_STREAM,
            1,
            &h2raw::get("/"),
        ))
        .await
        .unwrap();
    // The answer first (the stream ends with its DATA), then GOAWAY.
    let goaway = h2raw::read_until(&mut stream, DEADLINE, |f| f.kind == GOAWAY)
        .await
        .expect("GOAWAY before the close");
    assert_eq!(h2raw::error_code(&goaway), 0, "NO_ERROR: a graceful close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_disconnected() {
    let (blue, _green, proxy) = start_with(Settings {
        response_write_timeout: Duration::from_millis(300),
        ..Settings::default()
    })
    .await;
    let size: usize = 256 * 1024 * 1024;
    let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(format!("GET /download?bytes={size} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes())
        .await
        .unwrap();
    eventually("the download started", || async {
        blue.seen().iter().any(|s| s.uri.starts_with("/download"))
    })
    .await;
    // Read nothing, while others are served, until the proxy drops us.
    support::served_normally(proxy.addr).await;
    eventually("the stalled connection is closed", || async {
        let metrics = proxy.metrics().await;
        metrics.contains(
            "switchyard_downstream_connections_open{listener=\"proxy\",protocol=\"http1\"} 0",
        )
    })
    .await;
    let mut received = 0usize;
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        match tokio::time::timeout(DEADLINE, stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => received += n,
            Err(_) => panic!("the stalled download was never cut"),
        }
    }
    assert!(received < size, "cut after {received} of {size} bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_empty_data_frames_is_refused() {
    let (_blue, _green, proxy) = start().await;
    let mut stream = h2raw::connect(proxy.addr).await;
    let post = h2raw::block(&[
        (":method", "POST"),
        (":scheme", "http"),
        (":authority", "app.test"),
        (":path", "/upload"),
    ]);
    stream
        .write_all(&frame(HEADERS, END_HEADERS, 1, &post))
        .await
        .unwrap();
    let mut flood = Vec::new();
    for _ in 0..5_000 {
        flood.extend(frame(h2raw::DATA, 0, 1, &[]));
    }
    flood.extend(frame(h2raw::DATA, END_STREAM, 1, b"x"));
    let _ = stream.write_all(&flood).await;
    let end = h2raw::first_answer(&mut stream, 1).await;
    // h2 counts DATA frames that carry nothing: GOAWAY ENHANCE_YOUR_CALM.
    let end = end.expect("an answer before the close");
    assert_eq!(
        (end.kind, h2raw::error_code(&end)),
        (GOAWAY, 0xb),
        "{end:?}"
    );
    served_over_http2(proxy.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hpack_bomb_is_refused_before_the_backend() {
    let (blue, _green, proxy) = start().await;
    let mut stream = h2raw::connect(proxy.addr).await;
    // One 3 KB field added to the dynamic table (literal with incremental
    // indexing, new name; it fits the default 4 KiB table), then referenced
    // 100 times by index 62 (the first dynamic entry): a 3 KB block that
    // decodes to 300 KB of headers.
    let mut block = h2raw::get("/");
    let mut literal = h2raw::block(&[("x-bomb", &"c".repeat(3000))]);
    literal[0] = 0x40;
    block.extend(literal);
    block.extend(std::iter::repeat_n(0x80 | 62, 100));
    stream
        .write_all(&frame(HEADERS, END_HEADERS | END_STREAM, 1, &block))
        .await
        .unwrap();
    let end = h2raw::first_answer(&mut stream, 1).await;
    // 431 for the stream, or GOAWAY ENHANCE_YOUR_CALM for the connection.
    let end = end.expect("an answer before the close");
    if end.kind == HEADERS {
        assert_eq!(h2raw::status(&end), Some(431), "{end:?}");
    } else {
        assert_eq!(
            (end.kind, h2raw::error_code(&end)),
            (GOAWAY, 0xb),
            "{end:?}"
        );
    }
    assert_eq!(blue.seen().len(), 0, "the bomb never reached the backend");
    served_over_http2(proxy.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_shorter_than_its_content_length_resets_the_stream() {
    let (_blue, _green, proxy) = start().await;
    let mut stream = h2raw::connect(proxy.addr).await;
    let post = h2raw::block(&[
        (":method", "POST"),
        (":scheme", "http"),
        (":authority", "app.test"),
        (":path", "/upload"),
        ("content-length", "10"),
    ]);
    let mut bytes = frame(HEADERS, END_HEADERS, 1, &post);
    bytes.extend(frame(h2raw::DATA, END_STREAM, 1, b"abc"));
    stream.write_all(&bytes).await.unwrap();
    let end = h2raw::first_answer(&mut stream, 1)
        .await
        .expect("an answer before the close");
    // The backend may have seen the request start (bodies stream), but never
    // a complete request: the stream is reset, not answered.
    assert_eq!(
        (end.kind, h2raw::error_code(&end)),
        (RST_STREAM, PROTOCOL_ERROR),
        "{end:?}"
    );
    served_over_http2(proxy.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_beyond_the_concurrent_limit_are_refused() {
    let (blue, _green, proxy) = start().await;
    let mut stream = h2raw::connect(proxy.addr).await;
    // 129 requests that stay open at the backend; the limit is 128.
    let mut burst = Vec::new();
    for i in 0..129u32 {
        burst.extend(frame(
            HEADERS,
            END_HEADERS | END_STREAM,
            2 * i + 1,
            &h2raw::get("/gate"),
        ));
    }
    stream.write_all(&burst).await.unwrap();
    // REFUSED_STREAM (0x7) for the one over the limit, or GOAWAY.
    let refused = h2raw::read_until(&mut stream, DEADLINE, |f| {
        f.kind == GOAWAY || f.kind == RST_STREAM
    })
    .await
    .expect("a refusal before the close");
    assert_eq!(
        (refused.kind, h2raw::error_code(&refused)),
        (RST_STREAM, 0x7),
        "{refused:?}"
    );
    assert_eq!(refused.stream, 2 * 128 + 1, "the 129th stream");
    eventually("128 requests reached the backend", || async {
        blue.seen_on("/gate") == 128
    })
    .await;
    blue.open_gate();
    served_over_http2(proxy.addr).await;
}
