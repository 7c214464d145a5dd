//! One test per validation rule, each with the exact message expected.

use crate::load::parse_table;

/// Parses `yaml` and returns every problem as `path: reason`.
fn problems(yaml: &str) -> Vec<String> {
    match parse_table(yaml.as_bytes()) {
        Ok(table) => panic!("expected a rejection, got version {}", table.version()),
        Err(invalid) => invalid.problems.iter().map(ToString::to_string).collect(),
    }
}

const BACKENDS: &str = "backends:\n  blue: { endpoints: [\"127.0.0.1:9001\"] }\n  green: { endpoints: [\"127.0.0.1:9002\"] }\n";

/// A table with the two standard backends and one route whose only rule is `rule`.
fn with_rule(rule: &str) -> String {
    format!("{BACKENDS}routes:\n  - name: r\n    rules:\n      - {rule}\n")
}

macro_rules! rejects {
    ($($name:ident: $yaml:expr => [$($expected:expr),+ $(,)?];)+) => {$(
        #[test]
        fn $name() {
            assert_eq!(problems(&$yaml), vec![$($expected.to_string()),+]);
        }
    )+};
}

rejects! {
    unknown_top_level_field: format!("{BACKENDS}rutes: []") =>
        ["rutes: unknown field, expected `backends` or `routes`"];
    unknown_backend_in_split: with_rule("split: { weights: { blue: 1, gren: 1 } }") =>
        ["routes[0].rules[0].split.weights.gren: unknown backend"];
    unknown_backend_in_rule: with_rule("backend: gren") =>
        ["routes[0].rules[0].backend: unknown backend \"gren\""];
    weight_above_maximum: with_rule("split: { weights: { blue: 1000001, green: 1 } }") =>
        ["routes[0].rules[0].split.weights.blue: weight 1000001 is outside 0..=1000000"];
    negative_weight: with_rule("split: { weights: { blue: -1 } }") =>
        ["routes[0].rules[0].split.weights.blue: invalid value: integer `-1`, expected u32"];
    weights_sum_to_zero: with_rule("split: { weights: { blue: 0, green: 0 } }") =>
        ["routes[0].rules[0].split.weights: the weights sum to 0; at least one must be positive"];
    empty_split: with_rule("split: { weights: {} }") =>
        ["routes[0].rules[0].split.weights: a split needs at least one backend"];
    two_actions: with_rule("{ backend: blue, split: { weights: { blue: 1 } } }") =>
        ["routes[0].rules[0]: exactly one of `backend`, `split` or `direct_response` is required"];
    no_action: with_rule("{ matches: [] }") =>
        ["routes[0].rules[0]: exactly one of `backend`, `split` or `direct_response` is required"];
    no_rules: format!("{BACKENDS}routes:\n  - name: r\n    rules: []\n") =>
        ["routes[0].rules: at least one rule is required"];
    duplicate_route_name: format!("{BACKENDS}routes:\n  - {{ name: r, rules: [{{ backend: blue }}] }}\n  - {{ name: r, rules: [{{ backend: blue }}] }}\n") =>
        ["routes[1].name: duplicate route name \"r\" (also routes[0])"];
    invalid_route_name: format!("{BACKENDS}routes:\n  - {{ name: \"a b\", rules: [{{ backend: blue }}] }}\n") =>
        ["routes[0].name: invalid route name: \"a b\" must be 1-253 letters, digits, '.', '_', '-', '/'"];
    invalid_backend_name: "backends:\n  \"bl ue\": { endpoints: [\"127.0.0.1:1\"] }\n" =>
        ["backends.bl ue: invalid backend name: \"bl ue\" must be 1-253 letters, digits, '.', '_', '-'"];
    invalid_endpoint: "backends:\n  blue: { endpoints: [\"localhost\"] }\n" =>
        ["backends.blue.endpoints[0]: invalid endpoint \"localhost\": expected host:port"];
    endpoint_port_zero: "backends:\n  blue: { endpoints: [\"localhost:0\"] }\n" =>
        ["backends.blue.endpoints[0]: invalid endpoint \"localhost:0\": port must be 1-65535"];
    endpoint_unbracketed_ipv6: "backends:\n  blue: { endpoints: [\"::1:80\"] }\n" =>
        ["backends.blue.endpoints[0]: invalid endpoint \"::1:80\": IPv6 addresses are written [addr]:port"];
    duplicate_endpoint: "backends:\n  blue: { endpoints: [\"127.0.0.1:1\", \"127.0.0.1:1\"] }\n" =>
        ["backends.blue.endpoints[1]: duplicate endpoint \"127.0.0.1:1\" (also endpoints[0])"];
    unknown_protocol: "backends:\n  blue: { endpoints: [\"127.0.0.1:1\"], protocol: http3 }\n" =>
        ["backends.blue.protocol: unknown variant `http3`, expected `http1` or `http2`"];
    bad_drain_deadline: "backends:\n  blue: { endpoints: [\"127.0.0.1:1\"], drain: { deadline: 30 } }\n" =>
        ["backends.blue.drain.deadline: invalid type: integer `30`, expected a string"];
    bad_duration_text: "backends:\n  blue: { endpoints: [\"127.0.0.1:1\"], drain: { deadline: 1d } }\n" =>
        ["backends.blue.drain.deadline: invalid duration \"1d\": expected up to four parts of 1-5 digits with a unit h, m, s or ms, like \"30s\" or \"1h30m\""];
    invalid_hostname: format!("{BACKENDS}routes:\n  - {{ name: r, hostnames: [\"a.*.com\"], rules: [{{ backend: blue }}] }}\n") =>
        ["routes[0].hostnames[0]: invalid hostname \"a.*.com\": label \"*\" must be 1-63 lowercase letters, digits or '-', not starting or ending with '-' (a wildcard is allowed only as a leading \"*.\")"];
    hostname_is_ip: format!("{BACKENDS}routes:\n  - {{ name: r, hostnames: [\"10.0.0.1\"], rules: [{{ backend: blue }}] }}\n") =>
        ["routes[0].hostnames[0]: invalid hostname \"10.0.0.1\": an IP address is not a hostname"];
    destination_not_an_address: format!("{BACKENDS}routes:\n  - {{ name: r, destinations: [\"reviews:80\", \"10.0.0.1:0\"], rules: [{{ backend: blue }}] }}\n") => [
        "routes[0].destinations[0]: invalid destination \"reviews:80\": must be an IP address and a non-zero port, as a Service's cluster IP and port (10.96.0.10:80, [fd00::a]:80)",
        "routes[0].destinations[1]: invalid destination \"10.0.0.1:0\": must be an IP address and a non-zero port, as a Service's cluster IP and port (10.96.0.10:80, [fd00::a]:80)",
    ];
    path_without_slash: with_rule("{ matches: [{ path: { value: api } }], backend: blue }") =>
        ["routes[0].rules[0].matches[0].path.value: path \"api\" must start with '/'"];
    path_with_double_slash: with_rule("{ matches: [{ path: { type: Exact, value: \"/a//b\" } }], backend: blue }") =>
        ["routes[0].rules[0].matches[0].path.value: path \"/a//b\" must not contain \"//\""];
    path_with_dot_segment: with_rule("{ matches: [{ path: { value: \"/a/..\" } }], backend: blue }") =>
        ["routes[0].rules[0].matches[0].path.value: path \"/a/..\" must not end with \"/..\" or \"/.\""];
    invalid_path_regex: with_rule("{ matches: [{ path: { type: RegularExpression, value: \"/(a\" } }], backend: blue }") =>
        ["routes[0].rules[0].matches[0].path.value: invalid regular expression: regex parse error: ^(?:/(a)$ ^ error: unclosed group"];
    regex_too_long: with_rule(&format!("{{ matches: [{{ headers: [{{ type: RegularExpression, name: x, value: \"{}\" }}] }}], backend: blue }}", "a".repeat(1025))) =>
        ["routes[0].rules[0].matches[0].headers[0].value: regular expression is 1025 bytes; at most 1024 are allowed"];
    invalid_header_name: with_rule("{ matches: [{ headers: [{ name: \"x y\", value: v }] }], backend: blue }") =>
        ["routes[0].rules[0].matches[0].headers[0].name: invalid header name \"x y\""];
    invalid_header_value: with_rule("{ matches: [{ headers: [{ name: x, value: \"a\\nb\" }] }], backend: blue }") =>
        ["routes[0].rules[0].matches[0].headers[0].value: invalid header value (control characters are not allowed)"];
    empty_query_name: with_rule("{ matches: [{ query_params: [{ name: \"\", value: v }] }], backend: blue }") =>
        ["routes[0].rules[0].matches[0].query_params[0].name: a query parameter name needs 1-256 bytes"];
    unknown_method: with_rule("{ matches: [{ method: FETCH }], backend: blue }") =>
        ["routes[0].rules[0].matches[0].method: unknown method \"FETCH\": expected one of GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, TRACE, PATCH"];
    too_many_headers: with_rule(&format!("{{ matches: [{{ headers: [{}] }}], backend: blue }}", (0..17).map(|i| format!("{{ name: h{i}, value: v }}")).collect::<Vec<_>>().join(", "))) =>
        ["routes[0].rules[0].matches[0].headers: 17 conditions; at most 16 are allowed"];
    bad_cohort_source: with_rule("split: { weights: { blue: 1 }, cohort: { from: \"ip:x\" } }") =>
        ["routes[0].rules[0].split.cohort.from: invalid key source \"ip:x\": expected header:NAME, cookie:NAME or query:NAME"];
    bad_cohort_fallback: with_rule("split: { weights: { blue: 1 }, cohort: { from: \"header:x-user\", fallback: \"cookie:a b\" } }") =>
        ["routes[0].rules[0].split.cohort.fallback: invalid cookie name \"a b\": expected an HTTP token"];
    bad_assign_cookie: with_rule("split: { weights: { blue: 1 }, cohort: { from: \"header:x-user\", assign_cookie: { name: \"a;b\" } } }") =>
        ["routes[0].rules[0].split.cohort.assign_cookie.name: invalid cookie name \"a;b\": expected an HTTP token"];
    bad_direct_status: with_rule("direct_response: { status: 99 }") =>
        ["routes[0].rules[0].direct_response.status: status 99 is outside 200..=599"];
    zero_body_limit: format!("{BACKENDS}routes:\n  - {{ name: r, max_request_body_bytes: 0, rules: [{{ backend: blue }}] }}\n") =>
        ["routes[0].max_request_body_bytes: must be at least 1 (leave it out for the proxy's limit)"];
    backend_timeout_longer_than_request: with_rule("{ backend: blue, timeouts: { request: 1s, backend_request: 2s } }") =>
        ["routes[0].rules[0].timeouts.backend_request: 2s is longer than the request timeout 1s"];
    every_problem_is_reported: format!("{BACKENDS}routes:\n  - {{ name: r, rules: [{{ backend: gren }}, {{ split: {{ weights: {{ blu: 1 }} }} }}] }}\n  - {{ name: s, hostnames: [\"-x\"], rules: [{{ backend: blue }}] }}\n") => [
        "routes[0].rules[0].backend: unknown backend \"gren\"",
        "routes[0].rules[1].split.weights.blu: unknown backend",
        "routes[1].hostnames[0]: invalid hostname \"-x\": label \"-x\" must be 1-63 lowercase letters, digits or '-', not starting or ending with '-' (a wildcard is allowed only as a leading \"*.\")",
    ];
    not_a_mapping: "- just\n- a list\n" =>
        ["expected a mapping (a native table or an HTTPRoute)"];
}

#[test]
fn too_many_routes_reports_only_the_limit() {
    let yaml = format!(
        "{BACKENDS}routes:\n{}",
        (0..10_001)
            .map(|i| format!("  - {{ name: r{i}, rules: [{{ backend: blue }}] }}\n"))
            .collect::<String>()
    );
    assert_eq!(
        problems(&yaml),
        vec!["routes: 10001 routes; at most 10000 are allowed"]
    );
}

#[test]
fn table_too_large_is_rejected_before_parsing() {
    let yaml = format!("# {}\n", "x".repeat(crate::load::MAX_TABLE_BYTES));
    assert_eq!(
        problems(&yaml),
        vec![format!(
            "table is {} bytes; at most {} are accepted",
            yaml.len(),
            crate::load::MAX_TABLE_BYTES
        )]
    );
}

#[test]
fn warnings_do_not_reject() {
    let yaml = "backends:\n  blue: { endpoints: [] }\nroutes:\n  - name: r\n    rules:\n      - matches: [{ headers: [{ name: X-A, value: \"1\" }, { name: x-a, value: \"2\" }] }]\n        backend: blue\n";
    let table = parse_table(yaml.as_bytes()).unwrap();
    let warnings: Vec<String> = table.warnings().iter().map(ToString::to_string).collect();
    assert_eq!(
        warnings,
        vec![
            "backends.blue.endpoints: backend has no endpoints; its requests are answered 503",
            "routes[0].rules[0].matches[0].headers[1].name: \"x-a\" is matched by an earlier condition; this one is ignored",
        ]
    );
    // The first duplicate wins, and names are lowercased in the canonical form.
    let headers = &table.spec().routes[0].rules[0].matches[0].headers;
    assert_eq!(headers.len(), 1);
    assert_eq!(
        (headers[0].name.as_str(), headers[0].value.as_str()),
        ("x-a", "1")
    );
}
