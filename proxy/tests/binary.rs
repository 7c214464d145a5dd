//! The real `switchyard-proxy` binary: start-up, reloads (file change,
//! ConfigMap-style symlink swap, SIGHUP), bad tables, `check`, exit codes,
//! and the admin API's table upload.
// Test helpers: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::process::Command;

use support::{Backends, Proxy, eventually, exit_code, get, http, write_atomically};

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

#[test]
fn json_logs_and_a_log_level_changed_at_runtime() {
    let backends = Backends::start();
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("table.yaml");
    let text = backends.table_to("blue").replace(
        "- { name: app, rules: [{ backend: blue }] }",
        "- { name: app, hostnames: [app.test], rules: [{ backend: blue }] }",
    );
    std::fs::write(&table, text).unwrap();
    let proxy = Proxy::run_table(&table, &["--log-format", "json"]);
    for line in proxy.logs().lines() {
        let entry: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(entry["level"].is_string(), "{line}");
    }
    let unrouted = || {
        let mut stream = std::net::TcpStream::connect(proxy.addr()).unwrap();
        std::io::Write::write_all(
            &mut stream,
            b"GET / HTTP/1.1\r\nhost: other.test\r\nconnection: close\r\n\r\n",
        )
        .unwrap();
        let mut response = String::new();
        std::io::Read::read_to_string(&mut stream, &mut response).unwrap();
        assert!(response.starts_with("HTTP/1.1 404"), "{response}");
    };
    // At the default level a failed request is not logged...
    unrouted();
    assert_eq!(
        http(proxy.admin, "POST", "/log-level", &[], "nonsense=[").0,
        400
    );
    let (status, body) = http(proxy.admin, "POST", "/log-level", &[], "debug");
    assert_eq!(status, 200, "{body}");
    // ...at debug it is, and it is the only one.
    unrouted();
    eventually("the failed request is logged at debug", || {
        proxy.logs().contains("request failed")
    });
    assert_eq!(proxy.logs().matches("request failed").count(), 1);
}

#[test]
fn control_plane_flags_are_checked_and_a_cached_table_serves_while_it_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("table.yaml");
    let backends = Backends::start();
    std::fs::write(&table, backends.table_to("blue")).unwrap();
    let listen = ["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"];
    let cases: [(&[&str], &str); 3] = [
        (
            &[
                "--table",
                table.to_str().unwrap(),
                "--control-plane",
                "http://127.0.0.1:1",
                "--group",
                "g",
            ],
            "either --table or --control-plane",
        ),
        (&["--control-plane", "http://127.0.0.1:1"], "--group"),
        (
            &["--control-plane", "ftp://127.0.0.1:1", "--group", "g"],
            "must start with http:// or https://",
        ),
    ];
    for (flags, expected) in cases {
        let args: Vec<&str> = ["run"]
            .iter()
            .chain(flags)
            .chain(&listen)
            .copied()
            .collect();
        let (code, _, stderr) = exit_code(&args);
        assert_eq!(code, 64, "{args:?}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }

    // Nothing listens at the control plane's address.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let plane = [
        "--control-plane",
        dead_url.as_str(),
        "--group",
        "g",
        "--node-id",
        "n1",
    ];
    let mut args = vec!["run"];
    args.extend(plane);
    args.extend(listen);
    let uncached = Proxy::spawn(&args);
    let (status, body) = http(uncached.admin, "GET", "/ready", &[], "");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("no table loaded"), "{body}");

    // The cache holds a table the control plane pushed earlier.
    let cache = dir.path().join("cache.json");
    std::fs::copy(&table, &cache).unwrap();
    args.extend(["--table-cache", cache.to_str().unwrap()]);
    let cached = Proxy::spawn(&args);
    let (status, body) = http(cached.admin, "GET", "/ready", &[], "");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("from cache "), "{body}");
    assert!(get(cached.addr()).starts_with("hello from blue"));
    eventually("the proxy says the control plane is unreachable", || {
        cached.logs().contains("control plane unreachable")
    });
}

#[test]
fn sidecar_listeners_from_a_bootstrap_file_and_their_flags_checked() {
    let dir = tempfile::tempdir().unwrap();
    let backends = Backends::start();
    let table = dir.path().join("table.yaml");
    std::fs::write(&table, backends.table_to("green")).unwrap();
    let table_arg = table.to_str().unwrap();

    // An inbound listener needs the app's port, and the reverse.
    let (code, _, stderr) = exit_code(&["run", "--table", table_arg, "--inbound", "127.0.0.1:0"]);
    assert_eq!(code, 64);
    assert!(stderr.contains("--app-port"), "{stderr}");
    let lonely_port = dir.path().join("lonely.yaml");
    std::fs::write(&lonely_port, "listen: [\"127.0.0.1:0\"]\napp_port: 8080\n").unwrap();
    let (code, _, stderr) = exit_code(&[
        "run",
        "--table",
        table_arg,
        "--bootstrap",
        lonely_port.to_str().unwrap(),
    ]);
    assert_eq!(code, 64);
    assert!(stderr.contains("--app-port without --inbound"), "{stderr}");

    // The blue demo backend plays the pod's application.
    let bootstrap = dir.path().join("sidecar.yaml");
    std::fs::write(
        &bootstrap,
        format!(
            "table: {table_arg}\nadmin: 127.0.0.1:0\noutbound: [\"127.0.0.1:0\"]\ninbound: 127.0.0.1:0\napp_port: {}\noutbound_detect_timeout: 200ms\n",
            backends.blue.port()
        ),
    )
    .unwrap();
    let proxy = Proxy::spawn(&["run", "--bootstrap", bootstrap.to_str().unwrap()]);
    let logs = proxy.logs();
    let [inbound] = proxy.addresses_logged("sidecar inbound listening")[..] else {
        panic!("not one inbound address in {logs}");
    };
    let [outbound] = proxy.addresses_logged("sidecar outbound listening")[..] else {
        panic!("not one outbound address in {logs}");
    };
    // The table would send everything to green; the inbound listener
    // sends to the local app whatever the table says.
    let (status, body) = http(inbound, "GET", "/from-a-peer", &[], "");
    assert_eq!(
        (status, body.as_str()),
        (200, "hello from blue (you asked for /from-a-peer)\n")
    );
    let metrics = http(proxy.admin, "GET", "/metrics", &[], "").1;
    let port = backends.blue.port();
    let series = format!(
        "switchyard_http_requests_total{{route=\"inbound:{port}\",backend=\"local:{port}\",status_class=\"2xx\"}} 1"
    );
    assert!(metrics.contains(&series), "{metrics}");
    // A connection to the outbound listener that iptables did not redirect
    // is refused rather than looped back (here there are no rules at all).
    let mut stream = std::net::TcpStream::connect(outbound).unwrap();
    stream.set_read_timeout(Some(support::DEADLINE)).unwrap();
    std::io::Write::write_all(&mut stream, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    // Closed unread, so the kernel may answer with a reset instead of EOF.
    let read = std::io::Read::read_to_end(&mut stream, &mut answer);
    let closed = match &read {
        Ok(_) => true,
        Err(error) => error.kind() == std::io::ErrorKind::ConnectionReset,
    };
    assert!(
        closed && answer.is_empty(),
        "closed without an answer: {read:?} {answer:?}"
    );
    let metrics = http(proxy.admin, "GET", "/metrics", &[], "").1;
    assert!(
        metrics.contains("switchyard_outbound_connections_total{handling=\"refused\"} 1"),
        "{metrics}"
    );
}
