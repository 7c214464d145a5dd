//! The JSON access log of the real binary: every documented key, sampling,
//! and a blocked stdout that must not stall requests.
// Test helpers: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::mpsc;

use support::{Backends, DEADLINE, Proxy, http, read_response};

const KEYS: [&str; 19] = [
    "start_time",
    "method",
    "path",
    "protocol",
    "response_code",
    "response_flags",
    "bytes_received",
    "bytes_sent",
    "duration",
    "upstream_service_time",
    "x_forwarded_for",
    "user_agent",
    "request_id",
    "authority",
    "upstream_host",
    "route",
    "backend",
    "table_version",
    "cohort",
];

fn table_file(dir: &tempfile::TempDir, backends: &Backends) -> std::path::PathBuf {
    let table = dir.path().join("table.yaml");
    let text = backends.table_to("blue").replace(
        "- { name: app, rules: [{ backend: blue }] }",
        "- { name: app, hostnames: [app.test], rules: [{ backend: blue }] }",
    );
    std::fs::write(&table, text).unwrap();
    table
}

/// Lines of the child's stdout, read on a thread so a test can wait with a deadline.
fn stdout_lines(proxy: &mut Proxy) -> mpsc::Receiver<String> {
    let stdout = proxy.child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

#[test]
fn every_request_is_one_json_line_with_every_documented_key() {
    let backends = Backends::start();
    let dir = tempfile::tempdir().unwrap();
    let table = table_file(&dir, &backends);
    let mut proxy = Proxy::run_table_with(&table, &["--access-log"], true);
    let lines = stdout_lines(&mut proxy);
    let (status, body) = http(
        proxy.addr(),
        "POST",
        "/x?y=1",
        &[("user-agent", "t/1"), ("x-request-id", "rid-1")],
        "hello",
    );
    assert_eq!(status, 200);
    let mut stream = TcpStream::connect(proxy.addr()).unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: elsewhere.test\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut not_found = String::new();
    stream.read_to_string(&mut not_found).unwrap();
    assert!(not_found.starts_with("HTTP/1.1 404"));

    let first: serde_json::Value =
        serde_json::from_str(&lines.recv_timeout(DEADLINE).unwrap()).unwrap();
    let keys: BTreeSet<&str> = first
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, KEYS.into_iter().collect::<BTreeSet<_>>());
    assert_eq!(first["method"], "POST");
    assert_eq!(first["path"], "/x?y=1");
    assert_eq!(first["protocol"], "HTTP/1.1");
    assert_eq!(first["response_code"], 200);
    assert_eq!(first["response_flags"], "-");
    assert_eq!(first["bytes_received"], 5);
    assert_eq!(first["bytes_sent"], body.len());
    assert_eq!(first["user_agent"], "t/1");
    assert_eq!(first["request_id"], "rid-1");
    assert_eq!(first["authority"], "app.test");
    assert_eq!(first["upstream_host"], backends.blue.to_string());
    assert_eq!(first["route"], "app");
    assert_eq!(first["backend"], "blue");
    assert!(
        first["table_version"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    assert_eq!(first["cohort"], false);
    assert!(first["start_time"].as_str().unwrap().ends_with('Z'));
    assert!(
        first["duration"].as_f64().unwrap() >= first["upstream_service_time"].as_f64().unwrap()
    );

    let second: serde_json::Value =
        serde_json::from_str(&lines.recv_timeout(DEADLINE).unwrap()).unwrap();
    assert_eq!(second["response_code"], 404);
    assert_eq!(second["response_flags"], "NR");
    assert!(second["route"].is_null() && second["backend"].is_null());
}

#[test]
fn sampling_at_zero_writes_nothing() {
    let backends = Backends::start();
    let dir = tempfile::tempdir().unwrap();
    let table = table_file(&dir, &backends);
    let mut proxy = Proxy::run_table_with(&table, &["--access-log-sample-rate", "0"], true);
    for _ in 0..20 {
        assert_eq!(http(proxy.addr(), "GET", "/", &[], "").0, 200);
    }
    let mut stdout = proxy.child.stdout.take().unwrap();
    assert!(
        Command::new("kill")
            .args(["-TERM", &proxy.child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let mut written = String::new();
    stdout.read_to_string(&mut written).unwrap();
    assert_eq!(written, "", "nothing is logged at sampling 0");
}

#[test]
fn a_blocked_stdout_drops_lines_instead_of_stalling_requests() {
    let backends = Backends::start();
    let dir = tempfile::tempdir().unwrap();
    let table = table_file(&dir, &backends);
    // stdout is a pipe nobody reads: it fills after some 64 KiB.
    let proxy = Proxy::run_table_with(&table, &["--access-log"], true);
    let stream = TcpStream::connect(proxy.addr()).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    // More lines than the pipe and the 8192-line queue hold together.
    for _ in 0..9_000 {
        (&stream)
            .write_all(b"GET / HTTP/1.1\r\nhost: app.test\r\n\r\n")
            .unwrap();
        assert!(read_response(&mut reader).starts_with("HTTP/1.1 200"));
    }
    let (_, metrics) = http(proxy.admin, "GET", "/metrics", &[], "");
    let dropped: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("switchyard_access_log_dropped_lines_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        dropped > 0.0,
        "lines were dropped, not waited for: {dropped}"
    );
}
