//! Criterion benches of the table hot path: route matching and backend picks.
//!
//! `route_match/N_routes` routes one request through a table of N routes
//! spread over N/10 hostnames (10 routes per host, each with a path prefix and
//! half with a header match), the shape of a real multi-tenant gateway.

// criterion's macros generate undocumented public functions.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method, Uri};
use switchyard_config::compile::Action;
use switchyard_config::{CompiledTable, RequestHead, parse_table};

fn table_with_routes(routes: usize) -> CompiledTable {
    let mut yaml = String::from(
        "backends:\n  blue: { endpoints: [\"127.0.0.1:9001\"] }\n  green: { endpoints: [\"127.0.0.1:9002\"] }\nroutes:\n",
    );
    let hosts = (routes / 10).max(1);
    for i in 0..routes {
        let host = i % hosts;
        let header = if i % 2 == 0 {
            ", headers: [{ name: x-canary, value: always }]"
        } else {
            ""
        };
        yaml.push_str(&format!(
            "  - name: r{i}\n    hostnames: [\"svc{host}.example.com\"]\n    rules:\n      - matches: [{{ path: {{ value: /api/v{i} }}{header} }}]\n        split: {{ weights: {{ blue: 900000, green: 100000 }} }}\n"
        ));
    }
    CompiledTable::compile(parse_table(yaml.as_bytes()).expect("bench table is valid"))
        .expect("bench table compiles")
}

fn route_match(c: &mut Criterion) {
    let mut group = c.benchmark_group("route_match");
    for routes in [10usize, 100, 1000] {
        let table = table_with_routes(routes);
        let hosts = (routes / 10).max(1);
        // A request for the last route of the last host: the longest scan.
        let target = routes - 1;
        let uri: Uri = format!("/api/v{target}/items?id=7")
            .parse()
            .expect("valid uri");
        let mut headers = HeaderMap::new();
        let host = format!("svc{}.example.com", target % hosts);
        headers.insert(
            http::header::HOST,
            HeaderValue::from_str(&host).expect("valid host"),
        );
        headers.insert("x-canary", HeaderValue::from_static("always"));
        headers.insert("user-agent", HeaderValue::from_static("bench"));
        let method = Method::GET;
        group.bench_function(format!("{routes}_routes"), |b| {
            b.iter(|| {
                let head = RequestHead::new(&method, &uri, &headers);
                let found = table.route(black_box(&head)).expect("route matches");
                let Action::Split(split) = &found.rule.action else {
                    unreachable!("bench rules are splits")
                };
                black_box(split.pick(None, black_box(0x1234_5678_9abc_def0)))
            })
        });
    }
    group.finish();
}

fn pick(c: &mut Criterion) {
    let mut group = c.benchmark_group("pick");
    for backends in [2usize, 8] {
        for (mode, extra) in [
            ("weighted", ""),
            ("cohort", "          cohort: { from: \"header:x-user\" }\n"),
            ("sequence", "          mode: sequence\n"),
        ] {
            let mut yaml = String::from("backends:\n");
            for i in 0..backends {
                yaml.push_str(&format!(
                    "  b{i}: {{ endpoints: [\"127.0.0.1:{}\"] }}\n",
                    9000 + i
                ));
            }
            let weights: Vec<String> = (0..backends)
                .map(|i| format!("b{i}: {}", 1000 + i))
                .collect();
            yaml.push_str(&format!(
                "routes:\n  - name: r\n    rules:\n      - split:\n          weights: {{ {} }}\n{extra}",
                weights.join(", ")
            ));
            let table = CompiledTable::compile(parse_table(yaml.as_bytes()).expect("valid"))
                .expect("compiles");
            let Action::Split(split) = &table.rules()[0].action else {
                unreachable!("the only rule is a split")
            };
            let key: Option<&[u8]> = (mode == "cohort").then_some(b"user-12345".as_slice());
            let mut random = 0x9E37_79B9_7F4A_7C15u64;
            group.bench_function(format!("{mode}/{backends}_backends"), |b| {
                b.iter(|| {
                    random = random.wrapping_add(0x9E37_79B9_7F4A_7C15);
                    black_box(split.pick(black_box(key), random))
                })
            });
        }
    }
    group.finish();
}

/// What one table swap costs before the store: parse, validate, hash and
/// compile (the proxy's applier runs exactly this).
fn table_apply(c: &mut Criterion) {
    let mut group = c.benchmark_group("table_apply");
    let small = "backends:\n  blue: { endpoints: [\"127.0.0.1:9001\"] }\n  green: { endpoints: [\"127.0.0.1:9002\"] }\nroutes:\n  - name: bench\n    rules:\n      - split: { weights: { blue: 600000, green: 400000 } }\n";
    group.bench_function("2_backends_1_route", |b| {
        b.iter(|| {
            let table = parse_table(black_box(small.as_bytes())).expect("valid");
            black_box(CompiledTable::compile(table).expect("compiles"))
        })
    });
    group.finish();
}

criterion_group!(benches, route_match, pick, table_apply);
criterion_main!(benches);
