//! The real `switchyard-proxy` binary: start-up, reloads (file change,
//! ConfigMap-style symlink swap, SIGHUP), bad tables, `check`, exit codes,
//! and the admin API's table upload.
// Test helpers: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_switchyard-proxy");
const DEADLINE: Duration = Duration::from_secs(20);

/// Two demo backends (blue, green) on their own runtime for the test.
struct Backends {
    blue: SocketAddr,
    green: SocketAddr,
    _runtime: tokio::runtime::Runtime,
}

impl Backends {
    fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (blue, green) = runtime.block_on(async {
            let blue = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let green = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addrs = (blue.local_addr().unwrap(), green.local_addr().unwrap());
            tokio::spawn(switchyard_proxy::demo::serve_backend(blue, "blue"));
            tokio::spawn(switchyard_proxy::demo::serve_backend(green, "green"));
            addrs
        });
        Self {
            blue,
            green,
            _runtime: runtime,
        }
    }

    fn table_to(&self, backend: &str) -> String {
        format!(
            "backends:\n  blue: {{ endpoints: [\"{}\"] }}\n  green: {{ endpoints: [\"{}\"] }}\nroutes:\n  - {{ name: app, rules: [{{ backend: {backend} }}] }}\n",
            self.blue, self.green
        )
    }
}

/// A running proxy process; killed on drop.
struct Proxy {
    child: Child,
    proxy: Vec<SocketAddr>,
    admin: SocketAddr,
    logs: Arc<Mutex<String>>,
}

impl Proxy {
    fn spawn(args: &[&str]) -> Self {
        let mut child = Command::new(BIN)
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let logs = Arc::new(Mutex::new(String::new()));
        let sink = logs.clone();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut logs = sink.lock().unwrap();
                logs.push_str(&line);
                logs.push('\n');
            }
        });
        let mut proxy = Self {
            child,
            proxy: Vec::new(),
            admin: "0.0.0.0:0".parse().unwrap(),
            logs,
        };
        eventually("the proxy reports its addresses", || {
            proxy.logs().contains("admin listening")
        });
        let logs = proxy.logs();
        let address_after = |marker: &str| -> Vec<SocketAddr> {
            logs.lines()
                .filter(|l| l.contains(marker))
                .filter_map(|l| l.split("address=").nth(1))
                .map(|a| a.trim().parse().unwrap())
                .collect()
        };
        proxy.proxy = address_after("proxy listening");
        proxy.admin = address_after("admin listening")[0];
        proxy
    }

    /// `run --table TABLE` on ports from the OS, plus `extra` flags.
    fn run_table(table: &Path, extra: &[&str]) -> Self {
        let mut args = vec![
            "run",
            "--table",
            table.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
        ];
        args.extend_from_slice(extra);
        Self::spawn(&args)
    }

    fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    fn addr(&self) -> SocketAddr {
        self.proxy[0]
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request on a fresh connection; returns status and body.
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nhost: app.test\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn get(addr: SocketAddr) -> String {
    http(addr, "GET", "/", &[], "").1
}

fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Replaces `path` atomically (write aside, rename), as tools and editors do.
fn write_atomically(path: &Path, text: &str) {
    let aside = path.with_extension("tmp");
    std::fs::write(&aside, text).unwrap();
    std::fs::rename(&aside, path).unwrap();
}

#[test]
fn reloads_on_change_and_sighup_and_keeps_the_last_good_table() {
    let backends = Backends::start();
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("table.yaml");
    std::fs::write(&table, backends.table_to("blue")).unwrap();
    let proxy = Proxy::run_table(&table, &[]);
    assert!(get(proxy.addr()).starts_with("hello from blue"));
    assert_eq!(http(proxy.admin, "GET", "/ready", &[], "").0, 200);

    write_atomically(&table, &backends.table_to("green"));
    eventually("the changed file is applied", || {
        get(proxy.addr()).starts_with("hello from green")
    });

    write_atomically(
        &table,
        "backends: {}\nroutes:\n  - { name: app, rules: [{ backend: gren }] }\n",
    );
    eventually("the bad table is reported", || {
        proxy
            .logs()
            .contains("routes[0].rules[0].backend: unknown backend \"gren\"")
    });
    assert!(
        get(proxy.addr()).starts_with("hello from green"),
        "the last good table keeps serving"
    );

    std::fs::write(&table, backends.table_to("blue")).unwrap();
    let hup = Command::new("kill")
        .args(["-HUP", &proxy.child.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    eventually("SIGHUP reloads", || {
        proxy.logs().contains("SIGHUP: reloading the table")
    });
    eventually("the reloaded table serves", || {
        get(proxy.addr()).starts_with("hello from blue")
    });
}

#[test]
fn a_configmap_style_symlink_swap_is_applied() {
    let backends = Backends::start();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // Kubernetes layout: table.yaml -> ..data/table.yaml, ..data -> ..v1
    std::fs::create_dir(root.join("..v1")).unwrap();
    std::fs::write(root.join("..v1/table.yaml"), backends.table_to("blue")).unwrap();
    std::os::unix::fs::symlink("..v1", root.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/table.yaml", root.join("table.yaml")).unwrap();
    let table = root.join("table.yaml");
    let proxy = Proxy::run_table(&table, &["--reload-poll-interval", "1h"]);
    assert!(get(proxy.addr()).starts_with("hello from blue"));

    std::fs::create_dir(root.join("..v2")).unwrap();
    std::fs::write(root.join("..v2/table.yaml"), backends.table_to("green")).unwrap();
    std::os::unix::fs::symlink("..v2", root.join("..data_tmp")).unwrap();
    std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
    eventually("the swapped ConfigMap is applied", || {
        get(proxy.addr()).starts_with("hello from green")
    });
}

#[test]
fn bootstrap_file_with_two_listeners() {
    let backends = Backends::start();
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("table.yaml");
    std::fs::write(&table, backends.table_to("green")).unwrap();
    let bootstrap = dir.path().join("bootstrap.yaml");
    std::fs::write(
        &bootstrap,
        format!("table: {}\nlisten: [\"127.0.0.1:0\", \"127.0.0.1:0\"]\nadmin: \"127.0.0.1:0\"\nexpose_backend: true\nconnect_timeout: 2s\n", table.display()),
    )
    .unwrap();
    let proxy = Proxy::spawn(&["run", "--bootstrap", bootstrap.to_str().unwrap()]);
    assert_eq!(proxy.proxy.len(), 2);
    for addr in &proxy.proxy {
        assert!(get(*addr).starts_with("hello from green"));
    }
}

#[test]
fn admin_table_upload_needs_the_token_and_rejects_bad_tables_whole() {
    let backends = Backends::start();
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("table.yaml");
    std::fs::write(&table, backends.table_to("blue")).unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let proxy = Proxy::run_table(&table, &["--admin-token-file", token.to_str().unwrap()]);

    let green = backends.table_to("green");
    assert_eq!(http(proxy.admin, "POST", "/table", &[], &green).0, 401);
    assert_eq!(
        http(
            proxy.admin,
            "POST",
            "/table",
            &[("authorization", "Bearer wrong")],
            &green
        )
        .0,
        401
    );
    let bad = green.replace("backend: green", "backend: gren");
    let (status, body) = http(
        proxy.admin,
        "POST",
        "/table",
        &[("authorization", "Bearer s3cret")],
        &bad,
    );
    assert_eq!(status, 400);
    assert!(
        body.contains("routes[0].rules[0].backend: unknown backend \\\"gren\\\""),
        "{body}"
    );
    assert!(get(proxy.addr()).starts_with("hello from blue"));

    let (status, body) = http(
        proxy.admin,
        "POST",
        "/table",
        &[("authorization", "Bearer s3cret")],
        &green,
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"changed\": true"), "{body}");
    assert!(get(proxy.addr()).starts_with("hello from green"));
    let (status, config) = http(proxy.admin, "GET", "/config", &[], "");
    assert_eq!(status, 200);
    assert!(config.contains("\"origin\": \"admin\""), "{config}");
    assert_eq!(http(proxy.admin, "GET", "/table", &[], "").0, 405);
}

fn exit_code(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(BIN).args(args).output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn bad_start_up_input_exits_64_with_one_reason() {
    let dir = tempfile::tempdir().unwrap();
    let bad_table = dir.path().join("bad.yaml");
    std::fs::write(
        &bad_table,
        "routes: [{ name: r, rules: [{ backend: nowhere }] }]\n",
    )
    .unwrap();
    let (code, _, stderr) = exit_code(&[
        "run",
        "--table",
        bad_table.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]);
    assert_eq!(code, 64);
    assert!(
        stderr.contains("routes[0].rules[0].backend: unknown backend \"nowhere\""),
        "{stderr}"
    );

    let good_table = dir.path().join("good.yaml");
    std::fs::write(&good_table, "backends: { b: { endpoints: [\"127.0.0.1:1\"] } }\nroutes: [{ name: r, rules: [{ backend: b }] }]\n").unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap().to_string();
    let (code, _, stderr) = exit_code(&[
        "run",
        "--table",
        good_table.to_str().unwrap(),
        "--listen",
        &taken_addr,
        "--admin",
        "127.0.0.1:0",
    ]);
    assert_eq!(code, 64);
    assert!(
        stderr.contains(&format!("cannot listen on {taken_addr}")),
        "{stderr}"
    );

    let bootstrap = dir.path().join("bootstrap.yaml");
    std::fs::write(&bootstrap, "listen: [\"127.0.0.1:0\"]\nlisten_on: oops\n").unwrap();
    let (code, _, stderr) = exit_code(&["run", "--bootstrap", bootstrap.to_str().unwrap()]);
    assert_eq!(code, 64);
    assert!(stderr.contains("unknown field `listen_on`"), "{stderr}");

    let (code, _, _) = exit_code(&["run", "--no-such-flag"]);
    assert_eq!(code, 64);
}

#[test]
fn check_prints_versions_or_every_error() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.yaml");
    std::fs::write(&good, "backends: { b: { endpoints: [\"127.0.0.1:1\"] } }\nroutes: [{ name: r, rules: [{ backend: b }] }]\n").unwrap();
    let (code, stdout, _) = exit_code(&["check", good.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(stdout.contains(": ok sha256:"), "{stdout}");

    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "backends: { b: { endpoints: [\"nowhere\"] } }\nroutes: [{ name: r, rules: [{ backend: c }, { split: { weights: { b: 2000000 } } }] }]\n").unwrap();
    let (code, _, stderr) = exit_code(&["check", good.to_str().unwrap(), bad.to_str().unwrap()]);
    assert_eq!(code, 1);
    for expected in [
        "backends.b.endpoints[0]: invalid endpoint \"nowhere\": expected host:port",
        "routes[0].rules[0].backend: unknown backend \"c\"",
        "routes[0].rules[1].split.weights.b: weight 2000000 is outside 0..=1000000",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in {stderr}"
        );
    }
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/examples");
    let mut files: Vec<String> = std::fs::read_dir(examples)
        .unwrap()
        .map(|e| e.unwrap().path().to_string_lossy().into_owned())
        .collect();
    files.sort();
    let mut args = vec!["check"];
    args.extend(files.iter().map(String::as_str));
    let (code, stdout, stderr) = exit_code(&args);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.matches(": ok sha256:").count(), files.len());
}

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

/// Reads one HTTP/1.1 response with a content-length body; returns the head.
fn read_response(reader: &mut BufReader<TcpStream>) -> String {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "connection closed mid-response"
        );
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).unwrap();
    head
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
