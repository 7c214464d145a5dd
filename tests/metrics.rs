//! `/metrics`: exact counts per route, backend and status class, histogram
//! counts, table series, and series removal on swap, read through a parser
//! of the OpenMetrics text format.

// Helpers in test files: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{BTreeMap, HashSet};

use support::{Client, TestBackend, TestProxy};

/// One sample: metric name, labels, value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses OpenMetrics text: `# TYPE/HELP/UNIT` lines, samples, and the
/// closing `# EOF`. Every sample must belong to a declared family.
fn parse_openmetrics(text: &str) -> Vec<Sample> {
    assert!(text.ends_with("# EOF\n"), "no # EOF terminator");
    let mut families: HashSet<String> = HashSet::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if line == "# EOF" {
            break;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kind, name) = (parts.next().unwrap(), parts.next().unwrap());
            assert!(
                ["TYPE", "HELP", "UNIT"].contains(&kind),
                "unknown comment: {line}"
            );
            if kind == "TYPE" {
                families.insert(name.to_owned());
            }
            continue;
        }
        let (name_and_labels, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad sample: {line}"));
        let (name, labels) = match name_and_labels.split_once('{') {
            None => (name_and_labels.to_owned(), BTreeMap::new()),
            Some((name, rest)) => (
                name.to_owned(),
                parse_labels(rest.strip_suffix('}').unwrap()),
            ),
        };
        let family = ["_total", "_bucket", "_count", "_sum", "_created", "_info"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix).filter(|f| families.contains(*f)))
            .unwrap_or(&name);
        assert!(families.contains(family), "sample {name} has no # TYPE");
        let value = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
        };
        samples.push(Sample {
            name,
            labels,
            value,
        });
    }
    samples
}

fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"").unwrap();
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next().unwrap() {
                (_, '\\') => value.push(chars.next().unwrap().1),
                (i, '"') => break i,
                (_, c) => value.push(c),
            }
        };
        labels.insert(key.to_owned(), value);
        rest = after[end + 1..].trim_start_matches(',');
    }
    labels
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

async fn scrape(proxy: &TestProxy) -> Vec<Sample> {
    let reply = Client::http1(proxy.admin).await.get("/metrics", &[]).await;
    assert_eq!(reply.status, 200);
    assert!(
        reply.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    parse_openmetrics(&reply.text())
}

fn table(blue: &TestBackend, green: Option<&TestBackend>) -> String {
    let mut text = format!("backends:\n  blue: {{ endpoints: [\"{}\"] }}\n", blue.addr);
    let mut rules = String::new();
    if let Some(green) = green {
        text.push_str(&format!("  green: {{ endpoints: [\"{}\"] }}\n", green.addr));
        rules.push_str(
            "      - { matches: [{ headers: [{ name: x-to, value: green }] }], backend: green }\n",
        );
    }
    format!("{text}routes:\n  - name: app\n    rules:\n{rules}      - backend: blue\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_exactly_what_was_served_and_forget_removed_backends() {
    let (blue, green) = (
        TestBackend::start("blue").await,
        TestBackend::start("green").await,
    );
    let proxy = TestProxy::start(&table(&blue, Some(&green))).await;
    let mut client = Client::http2(proxy.addr).await;
    for _ in 0..90 {
        assert_eq!(client.get("/", &[]).await.status, 200);
    }
    for _ in 0..10 {
        assert_eq!(
            client
                .get("/status?code=503", &[("x-to", "green")])
                .await
                .status,
            503
        );
    }

    let samples = scrape(&proxy).await;
    let requests = |backend: &str, class: &str| {
        value(
            &samples,
            "switchyard_http_requests_total",
            &[
                ("route", "app"),
                ("backend", backend),
                ("status_class", class),
            ],
        )
    };
    assert_eq!(requests("blue", "2xx"), Some(90.0));
    assert_eq!(requests("green", "5xx"), Some(10.0));
    assert_eq!(requests("blue", "5xx"), Some(0.0));
    assert_eq!(requests("green", "2xx"), Some(0.0));
    let duration = |backend: &str, suffix: &str, extra: &[(&str, &str)]| {
        let mut labels = vec![("route", "app"), ("backend", backend)];
        labels.extend_from_slice(extra);
        value(
            &samples,
            &format!("switchyard_http_request_duration_seconds{suffix}"),
            &labels,
        )
    };
    assert_eq!(duration("blue", "_count", &[]), Some(90.0));
    assert_eq!(duration("green", "_count", &[]), Some(10.0));
    assert_eq!(duration("blue", "_bucket", &[("le", "+Inf")]), Some(90.0));
    assert!(
        duration("blue", "_bucket", &[("le", "0.001")]).is_some(),
        "sub-millisecond bucket"
    );
    let version = proxy
        .applier
        .state()
        .snapshot()
        .unwrap()
        .table
        .version()
        .to_string();
    assert_eq!(
        value(&samples, "switchyard_table_info", &[("version", &version)]),
        Some(1.0)
    );
    assert_eq!(
        samples
            .iter()
            .filter(|s| s.name == "switchyard_table_info")
            .count(),
        1
    );
    assert_eq!(
        value(
            &samples,
            "switchyard_table_applies_total",
            &[("result", "ack")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &samples,
            "switchyard_backend_weight",
            &[("backend", "blue")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &samples,
            "switchyard_backend_in_flight_requests",
            &[("backend", "green")]
        ),
        Some(0.0)
    );
    assert_eq!(
        value(
            &samples,
            "switchyard_backend_draining",
            &[("backend", "green")]
        ),
        Some(0.0)
    );
    assert!(
        value(
            &samples,
            "switchyard_config_last_reload_success_timestamp_seconds",
            &[]
        )
        .unwrap()
            > 0.0
    );

    // A rejected table is counted; a table without green removes its series.
    assert!(
        proxy
            .applier
            .apply(
                b"routes: [{ name: x, rules: [{ backend: nowhere }] }]",
                "test"
            )
            .is_err()
    );
    proxy.apply(&table(&blue, None));
    let samples = scrape(&proxy).await;
    assert_eq!(
        value(
            &samples,
            "switchyard_table_applies_total",
            &[("result", "nack")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &samples,
            "switchyard_table_applies_total",
            &[("result", "ack")]
        ),
        Some(2.0)
    );
    let green_series: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.labels.get("backend").map(String::as_str) == Some("green"))
        .collect();
    assert!(
        green_series.is_empty(),
        "green series remain: {green_series:?}"
    );
    assert_eq!(
        samples
            .iter()
            .filter(|s| s.name == "switchyard_table_info")
            .count(),
        1
    );
    assert_eq!(
        value(
            &samples,
            "switchyard_http_requests_total",
            &[
                ("route", "app"),
                ("backend", "blue"),
                ("status_class", "2xx")
            ]
        ),
        Some(90.0),
        "series of pairs that stay keep their counts"
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_examples_are_valid_yaml_and_query_metrics_that_exist() {
    let blue = TestBackend::start("blue").await;
    let proxy = TestProxy::start(&table(&blue, None)).await;
    Client::http1(proxy.addr).await.get("/", &[]).await;
    let exported: HashSet<String> = scrape(&proxy).await.into_iter().map(|s| s.name).collect();
    proxy.shutdown().await;

    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let documents: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(!documents.is_empty(), "{}", path.display());
        // Every metric name a query uses is one the proxy exports.
        for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if word.starts_with("switchyard_") {
                assert!(
                    exported.contains(word),
                    "{} queries {word}, which /metrics does not export",
                    path.display()
                );
            }
        }
        checked += 1;
    }
    assert_eq!(checked, 4, "flagger, argo, podmonitor, prometheus relabel");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_failures_retries_errors_and_connections_are_counted() {
    let blue = TestBackend::start("blue").await;
    let dead = support::dead_address().await;
    let text = format!(
        "backends:\n  blue: {{ endpoints: [\"{}\"] }}\n  dead: {{ endpoints: [\"{dead}\"] }}\nroutes:\n  - name: app\n    hostnames: [app.test]\n    rules:\n      - {{ matches: [{{ path: {{ value: /dead }} }}], backend: dead }}\n      - backend: blue\n",
        blue.addr
    );
    let proxy = TestProxy::start(&text).await;
    let mut client = Client::http1(proxy.addr).await;
    assert_eq!(client.get("/", &[]).await.status, 200);
    assert_eq!(client.get("/dead", &[]).await.status, 502);
    let samples = scrape(&proxy).await;
    // One request, one retry (the only endpoint again), one failure.
    assert_eq!(
        value(
            &samples,
            "switchyard_upstream_retries_total",
            &[("backend", "dead")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &samples,
            "switchyard_upstream_errors_total",
            &[("backend", "dead"), ("error", "connect_failed")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &samples,
            "switchyard_http_errors_total",
            &[("error", "upstream_connect_failed")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &samples,
            "switchyard_upstream_connections_open",
            &[("backend", "blue")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &samples,
            "switchyard_upstream_connections_open",
            &[("backend", "dead")]
        ),
        Some(0.0)
    );
    for (protocol, accepted, open) in [("http1", 1.0, 1.0), ("http2", 0.0, 0.0), ("none", 0.0, 0.0)]
    {
        let labels = [("listener", "proxy"), ("protocol", protocol)];
        assert_eq!(
            value(
                &samples,
                "switchyard_downstream_connections_accepted_total",
                &labels
            ),
            Some(accepted),
            "{protocol}"
        );
        assert_eq!(
            value(&samples, "switchyard_downstream_connections_open", &labels),
            Some(open),
            "{protocol}"
        );
    }
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_metrics_can_be_turned_off() {
    let blue = TestBackend::start("blue").await;
    let settings = switchyard_proxy::Settings {
        request_metrics: false,
        ..Default::default()
    };
    let proxy = TestProxy::start_with(&table(&blue, None), settings).await;
    let mut client = Client::http1(proxy.addr).await;
    for _ in 0..5 {
        assert_eq!(client.get("/", &[]).await.status, 200);
    }
    let samples = scrape(&proxy).await;
    let labels = [
        ("route", "app"),
        ("backend", "blue"),
        ("status_class", "2xx"),
    ];
    assert_eq!(
        value(&samples, "switchyard_http_requests_total", &labels),
        Some(0.0)
    );
    let count = [("route", "app"), ("backend", "blue")];
    assert_eq!(
        value(
            &samples,
            "switchyard_http_request_duration_seconds_count",
            &count
        ),
        Some(0.0)
    );
    proxy.shutdown().await;
}
