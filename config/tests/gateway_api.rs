//! Examples from the Gateway API documentation compile to the table we expect,
//! and give the same version as the equivalent native table.

mod support;

use support::{Req, compile, route_to};
use switchyard_config::parse_table;

const BACKENDS: &str = "backends:\n  foo-v1: { endpoints: [\"10.0.0.1:8080\"] }\n  foo-v2: { endpoints: [\"10.0.0.2:8080\"] }\n---\n";

/// The traffic-splitting guide's blue/green 90/10 route.
const SPLIT_90_10: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: foo-route
  labels:
    gateway: prod-web-gw
spec:
  hostnames:
  - foo.example.com
  rules:
  - backendRefs:
    - name: foo-v1
      port: 8080
      weight: 90
    - name: foo-v2
      port: 8080
      weight: 10
"#;

/// The traffic-splitting guide's canary: `traffic: test` goes to v2.
const HEADER_CANARY: &str = r#"
apiVersion: gateway.networking.k8s.io/v1beta1
kind: HTTPRoute
metadata:
  name: foo-route
  labels:
    gateway: prod-web-gw
spec:
  hostnames:
  - foo.example.com
  rules:
  - backendRefs:
    - name: foo-v1
      port: 8080
  - matches:
    - headers:
      - name: traffic
        value: test
    backendRefs:
    - name: foo-v2
      port: 8080
"#;

#[test]
fn split_90_10_equals_the_native_table() {
    let from_route = parse_table(format!("{BACKENDS}{SPLIT_90_10}").as_bytes()).unwrap();
    let native = parse_table(
        br#"{"routes": [{"rules": [{"split": {"weights": {"foo-v2": 10, "foo-v1": 90}}}],
             "hostnames": ["foo.example.com"], "name": "default/foo-route"}],
             "backends": {"foo-v2": {"endpoints": ["10.0.0.2:8080"]},
                          "foo-v1": {"endpoints": ["10.0.0.1:8080"], "protocol": "http1"}}}"#,
    )
    .unwrap();
    assert_eq!(from_route.version(), native.version());
    assert!(from_route.warnings().is_empty());

    let table = compile(&format!("{BACKENDS}{SPLIT_90_10}"));
    let mut v2 = 0;
    for i in 0..1000u64 {
        // Evenly spaced random numbers: exactly 10 % land on foo-v2.
        let random = (u64::MAX / 1000 + 1) * i;
        if route_to(&table, &Req::get("foo.example.com", "/"), random) == "foo-v2" {
            v2 += 1;
        }
    }
    assert_eq!(v2, 100);
    assert_eq!(
        route_to(&table, &Req::get("bar.example.com", "/"), 0),
        "404"
    );
}

#[test]
fn header_canary_routes_by_header_whatever_the_rule_order() {
    let table = compile(&format!("{BACKENDS}{HEADER_CANARY}"));
    let canary = Req::get("foo.example.com", "/").header("traffic", "test");
    assert_eq!(route_to(&table, &canary, 0), "foo-v2");
    assert_eq!(
        route_to(&table, &Req::get("foo.example.com", "/"), u64::MAX),
        "foo-v1"
    );

    let native = parse_table(
        br#"
backends:
  foo-v1: { endpoints: ["10.0.0.1:8080"] }
  foo-v2: { endpoints: ["10.0.0.2:8080"] }
routes:
  - name: default/foo-route
    hostnames: [foo.example.com]
    rules:
      - backend: foo-v1
      - matches: [{ headers: [{ name: traffic, value: test }] }]
        backend: foo-v2
"#,
    )
    .unwrap();
    assert_eq!(table.version(), native.version());
}

#[test]
fn unresolved_refs_are_warnings_and_get_500() {
    let yaml = format!(
        "{BACKENDS}{}",
        SPLIT_90_10.replace("name: foo-v2", "name: foo-v3")
    );
    let table = parse_table(yaml.as_bytes()).unwrap();
    let warnings: Vec<String> = table.warnings().iter().map(ToString::to_string).collect();
    assert_eq!(
        warnings,
        vec![
            "documents[1].spec.rules[0].backendRefs[1]: backendRef \"foo-v3\" resolves to no backend in the table; its share of requests is answered 500"
        ]
    );
    let compiled = compile(&yaml);
    let last = route_to(&compiled, &Req::get("foo.example.com", "/"), u64::MAX);
    assert_eq!(last, "500");
    assert_eq!(
        route_to(&compiled, &Req::get("foo.example.com", "/"), 0),
        "foo-v1"
    );
}

#[test]
fn rule_without_backend_refs_answers_500() {
    let yaml = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: { name: r }\nspec:\n  rules:\n  - matches: [{ path: { type: Exact, value: /x } }]\n";
    let table = parse_table(yaml.as_bytes()).unwrap();
    assert_eq!(
        table.warnings()[0].to_string(),
        "spec.rules[0].backendRefs: rule has no backendRefs; its requests are answered 500"
    );
    let compiled = compile(yaml);
    assert_eq!(route_to(&compiled, &Req::get("h", "/x"), 0), "direct:500");
}

#[test]
fn schema_errors_and_unsupported_features_name_their_field() {
    let cases = [
        (
            "spec:\n  rules:\n  - backendRefs: [{ name: foo-v1, wieght: 1 }]\n",
            "documents[1].spec.rules[0].backendRefs[0].wieght: unknown field `wieght`, expected one of `group`, `kind`, `name`, `namespace`, `port`, `weight`, `filters`",
        ),
        (
            "spec:\n  rules:\n  - filters: [{ type: RequestHeaderModifier }]\n    backendRefs: [{ name: foo-v1 }]\n",
            "documents[1].spec.rules[0].filters: not supported yet by switchyard; remove it or use the native schema",
        ),
        (
            "spec:\n  rules:\n  - backendRefs: [{ name: foo-v1, weight: 1000001 }]\n",
            "documents[1].spec.rules[0].backendRefs[0].weight: weight 1000001 is outside 0..=1000000",
        ),
        (
            "spec:\n  rules:\n  - backendRefs: [{ name: foo-v1 }]\n    retry: { attempts: 2 }\n",
            "documents[1].spec.rules[0].retry: not supported yet by switchyard; remove it or use the native schema",
        ),
        (
            "spec:\n  hostnames: [\"Foo..com\"]\n  rules:\n  - backendRefs: [{ name: foo-v1 }]\n",
            "routes[0].hostnames[0]: invalid hostname \"Foo..com\": label \"\" must be 1-63 lowercase letters, digits or '-', not starting or ending with '-' (a wildcard is allowed only as a leading \"*.\")",
        ),
    ];
    for (spec, expected) in cases {
        let yaml = format!(
            "{BACKENDS}apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{ name: r }}\n{spec}"
        );
        let problems: Vec<String> = parse_table(yaml.as_bytes())
            .unwrap_err()
            .problems
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(problems, vec![expected.to_owned()], "{spec}");
    }
}

#[test]
fn wrong_api_version_and_kind_are_rejected() {
    let yaml = "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: { name: r }\n";
    let problems: Vec<String> = parse_table(yaml.as_bytes())
        .unwrap_err()
        .problems
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        problems,
        vec![
            "apiVersion: unsupported apiVersion \"networking.k8s.io/v1\": expected one of [\"gateway.networking.k8s.io/v1\", \"gateway.networking.k8s.io/v1beta1\"]",
            "kind: unsupported kind \"Ingress\": expected \"HTTPRoute\"",
        ]
    );
}
