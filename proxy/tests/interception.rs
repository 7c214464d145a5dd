//! Sidecar interception for real: a pod's network namespace, the iptables
//! rules of `deploy/sidecar/switchyard-iptables.sh`, the proxy binary as its
//! own uid, and plain clients that know nothing of the proxy.
//!
//! Needs root on Linux with `ip`, `iptables`, `setpriv` and `curl` (CI installs
//! them and runs as root); elsewhere each test prints why it is skipped.
#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used)]

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use support::{DEADLINE, Proxy, eventually};

/// The proxy's uid, as the manifests set it.
const PROXY_UID: &str = "2102";
const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../deploy/sidecar/switchyard-iptables.sh"
);
const BLUE: &str = "10.77.0.2:8080";
const GREEN: &str = "10.77.0.3:8080";
const TCP_ECHO: &str = "10.77.0.4:9000";
/// The admin listener inside the pod (loopback is never redirected).
const ADMIN: &str = "127.0.0.1:15000";

/// Why these tests cannot run here, if they cannot.
fn skip_reason() -> Option<String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Some("not root: network namespaces and iptables need it".to_owned());
    }
    for tool in ["ip", "iptables", "setpriv", "curl"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|out| out.status.success());
        if !found {
            return Some(format!("{tool} is not installed"));
        }
    }
    None
}

macro_rules! skip_unless_possible {
    () => {
        if let Some(reason) = skip_reason() {
            eprintln!("skipped: {reason}");
            return;
        }
    };
}

/// Runs a command to success, or panics with its output.
fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace, deleted on drop whatever the test's outcome.
struct Namespace {
    name: String,
}

impl Namespace {
    fn create(tag: &str) -> Self {
        let name = format!("sy-{tag}-{}", std::process::id());
        // Left over from a killed run of the same pid: start clean.
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run("ip", &["netns", "add", &name]);
        let namespace = Self { name };
        namespace.ip(&["link", "set", "lo", "up"]);
        namespace
    }

    fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        run("ip", &all);
    }

    /// Runs a program inside the namespace.
    fn exec(&self, program: &str, args: &[&str]) -> String {
        let mut all = vec!["netns", "exec", &self.name, program];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// Runs `f` on a thread that entered the namespace; sockets it makes
    /// stay in the namespace after it returns.
    fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let file = std::fs::File::open(&path).unwrap();
                    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
                    f()
                })
                .join()
                .unwrap()
        })
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// One response read to the end of a `Connection: close` request.
#[derive(Debug)]
struct Answer {
    head: String,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }
}

/// `GET /` to `address` from inside `namespace`, as any client would.
fn get(namespace: &Namespace, address: &str) -> Answer {
    let address: SocketAddr = address.parse().unwrap();
    let text = namespace.enter(|| {
        let mut stream = TcpStream::connect_timeout(&address, DEADLINE).unwrap();
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        let request = format!("GET / HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        text
    });
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    Answer {
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

/// Sends `bytes` to `address` from inside `namespace` and reads as many back.
fn echo(namespace: &Namespace, address: &str, bytes: &[u8]) -> Vec<u8> {
    let address: SocketAddr = address.parse().unwrap();
    namespace.enter(|| {
        let mut stream = TcpStream::connect_timeout(&address, DEADLINE).unwrap();
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        stream.write_all(bytes).unwrap();
        let mut back = vec![0u8; bytes.len()];
        stream.read_exact(&mut back).unwrap();
        back
    })
}

/// Servers on the test's runtime whose sockets live in the namespace.
struct Servers {
    runtime: tokio::runtime::Runtime,
}

impl Servers {
    fn new() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        Self { runtime }
    }

    fn bind(&self, namespace: &Namespace, address: &str) -> tokio::net::TcpListener {
        let listener = namespace.enter(|| std::net::TcpListener::bind(address).unwrap());
        listener.set_nonblocking(true).unwrap();
        let _entered = self.runtime.enter();
        tokio::net::TcpListener::from_std(listener).unwrap()
    }

    /// A demo backend answering `hello from NAME`.
    fn backend(&self, namespace: &Namespace, address: &str, name: &'static str) {
        let listener = self.bind(namespace, address);
        self.runtime
            .spawn(switchyard_proxy::demo::serve_backend(listener, name));
    }

    /// A TCP server that sends back every byte it gets.
    fn tcp_echo(&self, namespace: &Namespace, address: &str) {
        let listener = self.bind(namespace, address);
        self.runtime.spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    let (mut reader, mut writer) = stream.split();
                    let _ = tokio::io::copy(&mut reader, &mut writer).await;
                });
            }
        });
    }
}

/// A directory the proxy's uid can read, holding the table and a copy of
/// the binary (the build directory may be closed to other users).
fn readable_dir(table: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let table_path = dir.path().join("table.yaml");
    std::fs::write(&table_path, table).unwrap();
    std::fs::set_permissions(&table_path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let binary = dir.path().join("switchyard-proxy");
    std::fs::copy(support::BIN, &binary).unwrap();
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
    (dir, table_path, binary)
}

/// Starts the proxy in `namespace` as [`PROXY_UID`].
fn start_proxy(namespace: &Namespace, binary: &Path, table: &Path, extra: &[&str]) -> Proxy {
    let wrapper = [
        "ip",
        "netns",
        "exec",
        &namespace.name,
        "setpriv",
        "--reuid",
        PROXY_UID,
        "--regid",
        PROXY_UID,
        "--clear-groups",
    ];
    let mut args = vec![
        "run",
        "--table",
        table.to_str().unwrap(),
        "--admin",
        ADMIN,
        "--expose-backend",
    ];
    args.extend_from_slice(extra);
    Proxy::spawn_wrapped(&wrapper, binary.to_str().unwrap(), &args, false)
}

fn iptables_script(namespace: &Namespace, args: &[&str]) -> String {
    let mut all = vec![SCRIPT];
    all.extend_from_slice(args);
    namespace.exec("sh", &all)
}

/// The proxy's `/metrics`, read inside the pod.
fn admin_metrics(namespace: &Namespace) -> String {
    namespace.enter(|| {
        let mut stream = TcpStream::connect(ADMIN).unwrap();
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        text
    })
}

/// The `switchyard_outbound_connections_total` count for `handling`.
fn outbound_count(namespace: &Namespace, handling: &str) -> u64 {
    let metrics = admin_metrics(namespace);
    let series = format!("switchyard_outbound_connections_total{{handling=\"{handling}\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&series))
        .map_or_else(
            || panic!("no {series} in {metrics}"),
            |n| n.parse().unwrap(),
        )
}

#[test]
fn outbound_http_is_split_other_traffic_passes_and_removal_restores_direct_paths() {
    skip_unless_possible!();
    let pod = Namespace::create("out");
    for address in ["10.77.0.2/32", "10.77.0.3/32", "10.77.0.4/32"] {
        pod.ip(&["addr", "add", address, "dev", "lo"]);
    }
    let servers = Servers::new();
    servers.backend(&pod, BLUE, "blue");
    servers.backend(&pod, GREEN, "green");
    servers.tcp_echo(&pod, TCP_ECHO);
    // Clients keep calling blue's address; the table splits that
    // destination evenly (sequence mode: exact shares, no randomness).
    let table = format!(
        "backends:\n  blue: {{ endpoints: [\"{BLUE}\"] }}\n  green: {{ endpoints: [\"{GREEN}\"] }}\nroutes:\n  - name: app\n    destinations: [\"{BLUE}\"]\n    rules:\n      - split: {{ weights: {{ blue: 1, green: 1 }}, mode: sequence }}\n"
    );
    let (_dir, table_path, binary) = readable_dir(&table);
    let installed = iptables_script(&pod, &["install", "--proxy-uid", PROXY_UID]);
    assert!(installed.contains("installed"), "{installed}");
    let _proxy = start_proxy(&pod, &binary, &table_path, &["--outbound", "0.0.0.0:15001"]);

    // Plain HTTP to blue's address is split by the proxy: every answer
    // names the backend the proxy chose, and both versions answer.
    let mut seen = Vec::new();
    for _ in 0..6 {
        let answer = get(&pod, BLUE);
        let chosen = answer.header("x-switchyard-backend").map(str::to_owned);
        let Some(chosen) = chosen else {
            panic!("not through the proxy: {answer:?}");
        };
        assert_eq!(
            answer.body,
            format!("hello from {chosen} (you asked for /)\n")
        );
        seen.push(chosen);
    }
    // Sequence mode keeps each share exact to within one request.
    let blue = seen.iter().filter(|name| *name == "blue").count();
    assert!(
        (2..=4).contains(&blue),
        "3 of 6 to blue, give or take one: {seen:?}"
    );
    assert!(seen.iter().all(|name| name == "blue" || name == "green"));
    assert_eq!(outbound_count(&pod, "routed"), 6);
    // HTTP/2 with prior knowledge is recognised by its preface and routed.
    let h2 = pod.exec(
        "curl",
        &[
            "-s",
            "-i",
            "--http2-prior-knowledge",
            &format!("http://{BLUE}/"),
        ],
    );
    assert!(h2.starts_with("HTTP/2 200"), "{h2}");
    assert!(h2.contains("x-switchyard-backend: "), "{h2}");
    assert_eq!(outbound_count(&pod, "routed"), 7);

    // HTTP to a destination no route names passes through untouched.
    let direct = get(&pod, GREEN);
    assert_eq!(direct.header("x-switchyard-backend"), None, "{direct:?}");
    assert_eq!(direct.header("x-demo-backend"), Some("green"));
    // So does a protocol that is not HTTP, byte for byte.
    let bytes = b"\x16\x03\x01\x00\x05binary\xff\x00 payload";
    assert_eq!(echo(&pod, TCP_ECHO, bytes), bytes);
    eventually("both pass-through connections counted", || {
        outbound_count(&pod, "passthrough") == 2
    });

    // Without the rules, blue's address is blue again, directly.
    let removed = iptables_script(&pod, &["remove"]);
    assert!(removed.contains("removed"), "{removed}");
    let rules = pod.exec("iptables", &["-t", "nat", "-S"]);
    assert!(!rules.contains("SWITCHYARD"), "rules left: {rules}");
    for _ in 0..3 {
        let answer = get(&pod, BLUE);
        assert_eq!(answer.header("x-switchyard-backend"), None, "{answer:?}");
        assert_eq!(answer.header("x-demo-backend"), Some("blue"));
    }
    assert_eq!(echo(&pod, TCP_ECHO, bytes), bytes);
    assert_eq!(
        outbound_count(&pod, "routed"),
        7,
        "nothing more went through the proxy"
    );
    // Removing twice is fine (an init container may run again).
    iptables_script(&pod, &["remove"]);
}

#[test]
fn inbound_connections_reach_the_local_app_through_the_proxy() {
    skip_unless_possible!();
    // Two namespaces joined by a veth pair: a pod and a peer calling it.
    let pod = Namespace::create("pod");
    let peer = Namespace::create("peer");
    let (pod_if, peer_if) = (
        format!("syp{}", std::process::id() % 100_000),
        format!("syq{}", std::process::id() % 100_000),
    );
    run(
        "ip",
        &[
            "link", "add", &pod_if, "netns", &pod.name, "type", "veth", "peer", "name", &peer_if,
            "netns", &peer.name,
        ],
    );
    pod.ip(&["addr", "add", "10.78.0.1/24", "dev", &pod_if]);
    pod.ip(&["link", "set", &pod_if, "up"]);
    peer.ip(&["addr", "add", "10.78.0.2/24", "dev", &peer_if]);
    peer.ip(&["link", "set", &peer_if, "up"]);

    let servers = Servers::new();
    // The application listens on all addresses, as pods' apps do.
    servers.backend(&pod, "0.0.0.0:8080", "app");
    let table = "backends:\n  other: { endpoints: [\"10.78.0.2:1\"] }\nroutes:\n  - { name: r, hostnames: [other.test], rules: [{ backend: other }] }\n";
    let (_dir, table_path, binary) = readable_dir(table);
    iptables_script(
        &pod,
        &[
            "install",
            "--proxy-uid",
            PROXY_UID,
            "--inbound-ports",
            "8080",
        ],
    );
    let _proxy = start_proxy(
        &pod,
        &binary,
        &table_path,
        &["--inbound", "0.0.0.0:15006", "--app-port", "8080"],
    );

    let answer = get(&peer, "10.78.0.1:8080");
    assert_eq!(
        answer.header("x-switchyard-backend"),
        Some("local:8080"),
        "{answer:?}"
    );
    assert_eq!(answer.body, "hello from app (you asked for /)\n");
    let metrics = admin_metrics(&pod);
    let inbound_series = "switchyard_http_requests_total{route=\"inbound:8080\",backend=\"local:8080\",status_class=\"2xx\"} 1";
    assert!(metrics.contains(inbound_series), "{metrics}");

    iptables_script(&pod, &["remove"]);
    let direct = get(&peer, "10.78.0.1:8080");
    assert_eq!(direct.header("x-switchyard-backend"), None, "{direct:?}");
    assert_eq!(direct.body, "hello from app (you asked for /)\n");
}

#[test]
fn ipv6_is_intercepted_too_and_one_dual_stack_listener_serves_both() {
    skip_unless_possible!();
    let has_ip6tables = Command::new("sh")
        .args(["-c", "command -v ip6tables"])
        .output()
        .is_ok_and(|out| out.status.success());
    if !has_ip6tables {
        eprintln!("skipped: ip6tables is not installed");
        return;
    }
    let pod = Namespace::create("v6");
    pod.ip(&["addr", "add", "10.77.0.2/32", "dev", "lo"]);
    for address in ["fd00::2/128", "fd00::3/128"] {
        pod.ip(&["-6", "addr", "add", address, "dev", "lo", "nodad"]);
    }
    let (blue6, green6) = ("[fd00::2]:8080", "[fd00::3]:8080");
    let servers = Servers::new();
    servers.backend(&pod, blue6, "blue");
    servers.backend(&pod, green6, "green");
    servers.backend(&pod, BLUE, "blue");
    // One route for blue's IPv6 and IPv4 addresses: a Service's two
    // cluster IPs in a dual-stack cluster.
    let table = format!(
        "backends:\n  blue: {{ endpoints: [\"{blue6}\"] }}\n  green: {{ endpoints: [\"{green6}\"] }}\nroutes:\n  - name: app\n    destinations: [\"{blue6}\", \"{BLUE}\"]\n    rules:\n      - split: {{ weights: {{ blue: 1, green: 1 }}, mode: sequence }}\n"
    );
    let (_dir, table_path, binary) = readable_dir(&table);
    let installed = iptables_script(&pod, &["install", "--proxy-uid", PROXY_UID, "--ipv6", "on"]);
    assert!(installed.contains("IPv6 on"), "{installed}");
    // `[::]` also takes IPv4 connections (as `::ffff:a.b.c.d`).
    let _proxy = start_proxy(&pod, &binary, &table_path, &["--outbound", "[::]:15001"]);

    for destination in [blue6, BLUE, blue6, BLUE] {
        let answer = get(&pod, destination);
        let chosen = answer.header("x-switchyard-backend");
        assert!(
            matches!(chosen, Some("blue" | "green")),
            "{destination} not through the proxy: {answer:?}"
        );
    }
    assert_eq!(outbound_count(&pod, "routed"), 4);

    iptables_script(&pod, &["remove"]);
    let rules = pod.exec("ip6tables", &["-t", "nat", "-S"]);
    assert!(!rules.contains("SWITCHYARD"), "IPv6 rules left: {rules}");
    let direct = get(&pod, blue6);
    assert_eq!(direct.header("x-switchyard-backend"), None, "{direct:?}");
    assert_eq!(direct.header("x-demo-backend"), Some("blue"));
}
