//! Size, time and load limits, over raw sockets: each answers with its
//! precise status (413, 408, 503 with `Connection: close`, a closed
//! connection), the backend never sees what was refused, and a normal
//! client is still served; slowhttptest's attacks leave the proxy serving.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use support::raw::{read_response, send_raw};
use support::{Client, TO_BLUE, TestBackend, TestProxy, eventually, served_normally, table};
use switchyard_proxy::Settings;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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

/// A request head with `host` and `fields - 1` more header fields.
fn request_with_fields(fields: usize) -> String {
    let extra: String = (1..fields).map(|i| format!("x-field-{i}: v\r\n")).collect();
    format!("GET / HTTP/1.1\r\nHost: a\r\n{extra}\r\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_field_limit_below_or_above_hyper_default_is_applied() {
    let (blue, green) = (
        TestBackend::start("blue").await,
        TestBackend::start("green").await,
    );
    // hyper's own limit (100) is left unset for speed; any other value is
    // passed on, lower or higher (the default is tested in hardening.rs).
    // The test backend is hyper with that default, so it answers 431 itself
    // past 100 fields: a forwarded request is known by the response header
    // naming the backend, which the proxy's own refusals lack.
    for (limit, allowed, refused) in [(20, 20, 21), (200, 150, 250)] {
        let settings = Settings {
            max_headers: limit,
            expose_backend: true,
            ..Settings::default()
        };
        let proxy = TestProxy::start_with(&table(blue.addr, green.addr, TO_BLUE), settings).await;
        let answer = send_raw(proxy.addr, request_with_fields(allowed).as_bytes())
            .await
            .unwrap();
        assert!(
            answer.head.contains("x-switchyard-backend: blue"),
            "{allowed} fields, limit {limit}: {answer:?}"
        );
        let answer = send_raw(proxy.addr, request_with_fields(refused).as_bytes())
            .await
            .unwrap();
        assert_eq!(answer.status, 431, "{refused} fields, limit {limit}");
        assert!(
            !answer.head.contains("x-switchyard-backend"),
            "{refused} fields, limit {limit}: {answer:?}"
        );
        served_normally(proxy.addr).await;
        proxy.shutdown().await;
    }
}
