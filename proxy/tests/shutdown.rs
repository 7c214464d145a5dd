//! Graceful shutdown of the real binary under mixed traffic.
// Test helpers: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{DEADLINE, Proxy, eventually, http, read_response};

/// A keep-alive HTTP/1.1 backend on a plain thread: `/slow...` requests wait
/// until `release`, anything else answers at once.
struct SlowBackend {
    addr: SocketAddr,
    released: Arc<(Mutex<bool>, std::sync::Condvar)>,
    slow_seen: Arc<Mutex<usize>>,
}

impl SlowBackend {
    fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let released = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        let slow_seen = Arc::new(Mutex::new(0));
        let (gate, seen) = (released.clone(), slow_seen.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let (gate, seen) = (gate.clone(), seen.clone());
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    loop {
                        let mut request_line = String::new();
                        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
                            return;
                        }
                        let mut line = String::new();
                        while reader.read_line(&mut line).unwrap_or(0) > 2 {
                            line.clear();
                        }
                        let body = if request_line.contains(" /slow") {
                            *seen.lock().unwrap() += 1;
                            let (lock, condvar) = &*gate;
                            let mut open = lock.lock().unwrap();
                            while !*open {
                                open = condvar.wait(open).unwrap();
                            }
                            "slow"
                        } else {
                            "fast"
                        };
                        let response = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if stream.write_all(response.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self {
            addr,
            released,
            slow_seen,
        }
    }

    fn release(&self) {
        let (lock, condvar) = &*self.released;
        *lock.lock().unwrap() = true;
        condvar.notify_all();
    }
}

#[test]
fn sigterm_fails_readiness_then_drains_http1_and_http2_and_exits_0() {
    let backend = SlowBackend::start();
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("table.yaml");
    std::fs::write(
        &table,
        format!("backends:\n  slow: {{ endpoints: [\"{}\"] }}\nroutes:\n  - {{ name: app, rules: [{{ backend: slow }}] }}\n", backend.addr),
    )
    .unwrap();
    let mut proxy = Proxy::run_table(&table, &["--drain-delay", "2s", "--shutdown-grace", "10s"]);
    let addr = proxy.addr();

    // An idle keep-alive connection.
    let idle = TcpStream::connect(addr).unwrap();
    idle.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut idle_reader = BufReader::new(idle.try_clone().unwrap());
    (&idle)
        .write_all(b"GET /fast HTTP/1.1\r\nhost: app.test\r\n\r\n")
        .unwrap();
    assert!(read_response(&mut idle_reader).starts_with("HTTP/1.1 200"));

    // An HTTP/1.1 request in flight.
    let busy = TcpStream::connect(addr).unwrap();
    busy.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut busy_reader = BufReader::new(busy.try_clone().unwrap());
    (&busy)
        .write_all(b"GET /slow-h1 HTTP/1.1\r\nhost: app.test\r\n\r\n")
        .unwrap();

    // An HTTP/2 stream in flight (its tasks run on their own worker thread).
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (mut h2, h2_response) = runtime.block_on(async {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut sender, connection) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(stream),
        )
        .await
        .unwrap();
        tokio::spawn(connection);
        let request = http::Request::get(format!("http://app.test:{}/slow-h2", addr.port()))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        sender.ready().await.unwrap();
        let response = tokio::spawn(sender.send_request(request));
        (sender, response)
    });
    eventually("both slow requests reach the backend", || {
        *backend.slow_seen.lock().unwrap() == 2
    });

    let terminated = Instant::now();
    let term = Command::new("kill")
        .args(["-TERM", &proxy.child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    eventually("readiness fails at once", || {
        http(proxy.admin, "GET", "/ready", &[], "").0 == 503
    });

    // After the drain delay: the idle connection is closed...
    let mut rest = String::new();
    assert_eq!(
        idle_reader.read_line(&mut rest).unwrap(),
        0,
        "the idle connection was closed"
    );
    // ...and the HTTP/2 connection got GOAWAY: no new streams.
    runtime.block_on(async {
        let refused = tokio::time::timeout(DEADLINE, async {
            loop {
                let request = http::Request::get(format!("http://app.test:{}/fast", addr.port()))
                    .body(http_body_util::Empty::<bytes::Bytes>::new())
                    .unwrap();
                match h2.ready().await {
                    Err(_) => return,
                    Ok(()) => match h2.send_request(request).await {
                        Err(_) => return,
                        Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    },
                }
            }
        })
        .await;
        assert!(
            refused.is_ok(),
            "new HTTP/2 streams are refused after GOAWAY"
        );
    });

    // In-flight work completes: HTTP/1.1 with `Connection: close`.
    backend.release();
    let head = read_response(&mut busy_reader);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    let response = runtime.block_on(h2_response).unwrap().unwrap();
    assert_eq!(response.status(), 200);

    // And the process exits 0, well before drain delay + grace + 1 s.
    let limit = Duration::from_secs(2 + 10 + 1);
    loop {
        if let Some(status) = proxy.child.try_wait().unwrap() {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(
            terminated.elapsed() < limit,
            "still running {limit:?} after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
