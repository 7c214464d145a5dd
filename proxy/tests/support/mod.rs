//! Helpers for the tests that run the real `switchyard-proxy` binary.
// Test helpers: a panic is the failure report; not every test file uses
// every helper.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_switchyard-proxy");
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Two demo backends (blue, green) on their own runtime for the test.
pub struct Backends {
    pub blue: SocketAddr,
    pub green: SocketAddr,
    _runtime: tokio::runtime::Runtime,
}

impl Backends {
    pub fn start() -> Self {
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

    pub fn table_to(&self, backend: &str) -> String {
        format!(
            "backends:\n  blue: {{ endpoints: [\"{}\"] }}\n  green: {{ endpoints: [\"{}\"] }}\nroutes:\n  - {{ name: app, rules: [{{ backend: {backend} }}] }}\n",
            self.blue, self.green
        )
    }
}

/// A running proxy process; killed on drop.
pub struct Proxy {
    pub child: Child,
    pub proxy: Vec<SocketAddr>,
    pub admin: SocketAddr,
    logs: Arc<Mutex<String>>,
}

impl Proxy {
    pub fn spawn(args: &[&str]) -> Self {
        Self::spawn_with(args, false)
    }

    /// Like `spawn`; with `capture_stdout`, stdout is a pipe the test reads
    /// (`child.stdout`), else it is discarded.
    pub fn spawn_with(args: &[&str], capture_stdout: bool) -> Self {
        Self::spawn_wrapped(&[], BIN, args, capture_stdout)
    }

    /// Runs `binary` with `args` under a `wrapper` command (`ip netns exec
    /// NS setpriv ...`); empty runs it directly.
    pub fn spawn_wrapped(
        wrapper: &[&str],
        binary: &str,
        args: &[&str],
        capture_stdout: bool,
    ) -> Self {
        let mut command = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut command = Command::new(program);
                command.args(rest).arg(binary);
                command
            }
            None => Command::new(binary),
        };
        let mut child = command
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(if capture_stdout {
                Stdio::piped()
            } else {
                Stdio::null()
            })
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
        proxy.proxy = proxy.addresses_logged("proxy listening");
        proxy.admin = proxy.addresses_logged("admin listening")[0];
        proxy
    }

    /// The addresses of the log lines containing `marker` (a listener's
    /// "... listening" line), in log order.
    pub fn addresses_logged(&self, marker: &str) -> Vec<SocketAddr> {
        self.logs()
            .lines()
            .filter(|l| l.contains(marker))
            // Text logs say `address=ADDR`, JSON logs `"address":"ADDR"`.
            .filter_map(|l| {
                l.split("address=")
                    .nth(1)
                    .or_else(|| l.split("\"address\":\"").nth(1)?.split('"').next())
            })
            .map(|a| a.trim().parse().unwrap())
            .collect()
    }

    /// `run --table TABLE` on ports from the OS, plus `extra` flags.
    pub fn run_table(table: &Path, extra: &[&str]) -> Self {
        Self::run_table_with(table, extra, false)
    }

    /// [`Proxy::run_table`], optionally with stdout as a pipe to read.
    pub fn run_table_with(table: &Path, extra: &[&str], capture_stdout: bool) -> Self {
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
        Self::spawn_with(&args, capture_stdout)
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    pub fn addr(&self) -> SocketAddr {
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
pub fn http(
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

pub fn get(addr: SocketAddr) -> String {
    http(addr, "GET", "/", &[], "").1
}

pub fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Replaces `path` atomically (write aside, rename), as tools and editors do.
pub fn write_atomically(path: &Path, text: &str) {
    let aside = path.with_extension("tmp");
    std::fs::write(&aside, text).unwrap();
    std::fs::rename(&aside, path).unwrap();
}

pub fn exit_code(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(BIN).args(args).output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Reads one HTTP/1.1 response with a content-length body; returns the head.
pub fn read_response(reader: &mut BufReader<TcpStream>) -> String {
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
