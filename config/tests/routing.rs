//! Match semantics and precedence, as the Gateway API specifies them.

mod support;

use http::Method;
use support::{Req, compile, route_to};

const BACKENDS: &str = "backends:\n  a: { endpoints: [\"127.0.0.1:1\"] }\n  b: { endpoints: [\"127.0.0.1:2\"] }\n  c: { endpoints: [\"127.0.0.1:3\"] }\n  d: { endpoints: [\"127.0.0.1:4\"] }\n";

fn table(routes: &str) -> switchyard_config::CompiledTable {
    compile(&format!("{BACKENDS}routes:\n{routes}"))
}

#[test]
fn path_prefix_is_element_wise_and_ignores_trailing_slash() {
    let t = table(
        "  - name: r\n    rules:\n      - { matches: [{ path: { value: /abc/ } }], backend: a }\n",
    );
    assert_eq!(route_to(&t, &Req::get("x", "/abc"), 0), "a");
    assert_eq!(route_to(&t, &Req::get("x", "/abc/"), 0), "a");
    assert_eq!(route_to(&t, &Req::get("x", "/abc/def"), 0), "a");
    assert_eq!(route_to(&t, &Req::get("x", "/abcd"), 0), "404");
}

#[test]
fn precedence_exact_then_longest_prefix_then_method_headers_query() {
    // Listed least specific first: precedence must not depend on order.
    let t = table(concat!(
        "  - name: r\n    rules:\n",
        "      - { matches: [{ path: { value: / } }], backend: a }\n",
        "      - { matches: [{ path: { value: /api } }], backend: b }\n",
        "      - { matches: [{ path: { value: /api/v2 } }], backend: c }\n",
        "      - { matches: [{ path: { type: Exact, value: /api/v2/x } }], backend: d }\n",
        "  - name: s\n    rules:\n",
        "      - { matches: [{ path: { value: /m }, query_params: [{ name: q, value: \"1\" }] }], backend: a }\n",
        "      - { matches: [{ path: { value: /m }, headers: [{ name: h, value: \"1\" }] }], backend: b }\n",
        "      - { matches: [{ path: { value: /m }, method: POST }], backend: c }\n",
    ));
    assert_eq!(route_to(&t, &Req::get("x", "/"), 0), "a");
    assert_eq!(route_to(&t, &Req::get("x", "/api/v1"), 0), "b");
    assert_eq!(route_to(&t, &Req::get("x", "/api/v2/y"), 0), "c");
    assert_eq!(route_to(&t, &Req::get("x", "/api/v2/x"), 0), "d");
    // Method beats headers, which beat query params.
    let all = |m: Method| Req::new(m, "x", "/m?q=1").header("h", "1");
    assert_eq!(route_to(&t, &all(Method::POST), 0), "c");
    assert_eq!(route_to(&t, &all(Method::GET), 0), "b");
    assert_eq!(route_to(&t, &Req::get("x", "/m?q=1"), 0), "a");
    assert_eq!(
        route_to(&t, &Req::get("x", "/m?q=2"), 0),
        "a",
        "falls back to /"
    );
}

#[test]
fn oldest_route_wins_a_tie() {
    let t = table(concat!(
        "  - { name: first, rules: [{ matches: [{ path: { value: /x } }], backend: a }] }\n",
        "  - { name: second, rules: [{ matches: [{ path: { value: /x } }], backend: b }] }\n",
    ));
    assert_eq!(route_to(&t, &Req::get("h", "/x"), 0), "a");
}

#[test]
fn headers_are_case_insensitive_and_first_duplicate_wins() {
    let t = table(concat!(
        "  - name: r\n    rules:\n",
        "      - { matches: [{ headers: [{ name: X-Canary, value: always }] }], backend: b }\n",
        "      - { backend: a }\n",
    ));
    assert_eq!(
        route_to(&t, &Req::get("h", "/").header("x-canary", "always"), 0),
        "b"
    );
    assert_eq!(
        route_to(&t, &Req::get("h", "/").header("X-CANARY", "always"), 0),
        "b"
    );
    assert_eq!(
        route_to(&t, &Req::get("h", "/").header("x-canary", "Always"), 0),
        "a",
        "values are case-sensitive"
    );
    let dup = Req::get("h", "/")
        .header("x-canary", "never")
        .header("x-canary", "always");
    assert_eq!(
        route_to(&t, &dup, 0),
        "a",
        "the first value of a repeated header decides"
    );
}

#[test]
fn regular_expressions_are_anchored_full_matches() {
    let t = table(concat!(
        "  - name: r\n    rules:\n",
        // Flagger writes `.*k.*v.*`-style patterns; Argo writes `prefix.*`.
        "      - { matches: [{ headers: [{ type: RegularExpression, name: cookie, value: \".*canary=always.*\" }] }], backend: b }\n",
        "      - { matches: [{ path: { type: RegularExpression, value: \"/v[0-9]+\" } }], backend: c }\n",
        "      - { backend: a }\n",
    ));
    assert_eq!(
        route_to(
            &t,
            &Req::get("h", "/").header("cookie", "x=1; canary=always; y=2"),
            0
        ),
        "b"
    );
    assert_eq!(route_to(&t, &Req::get("h", "/v12"), 0), "c");
    assert_eq!(
        route_to(&t, &Req::get("h", "/v12/x"), 0),
        "a",
        "a path regex must match the whole path"
    );
    assert_eq!(route_to(&t, &Req::get("h", "/x/v12"), 0), "a");
}

#[test]
fn query_params_match_decoded_first_value() {
    let t = table(concat!(
        "  - name: r\n    rules:\n",
        "      - { matches: [{ query_params: [{ name: env, value: \"canary one\" }] }], backend: b }\n",
        "      - { backend: a }\n",
    ));
    assert_eq!(route_to(&t, &Req::get("h", "/?env=canary%20one"), 0), "b");
    assert_eq!(
        route_to(&t, &Req::get("h", "/?env=prod&env=canary%20one"), 0),
        "a"
    );
    assert_eq!(
        route_to(&t, &Req::get("h", "/?Env=canary%20one"), 0),
        "a",
        "names are case-sensitive"
    );
}

#[test]
fn hostnames_exact_beats_wildcard_beats_any_and_fall_through() {
    let t = table(concat!(
        "  - { name: any, rules: [{ backend: a }] }\n",
        "  - { name: wild, hostnames: [\"*.example.com\"], rules: [{ matches: [{ path: { value: /w } }], backend: b }] }\n",
        "  - { name: exact, hostnames: [\"shop.example.com\"], rules: [{ matches: [{ path: { value: /s } }], backend: c }] }\n",
        "  - { name: deeper, hostnames: [\"*.eu.example.com\"], rules: [{ matches: [{ path: { value: /w } }], backend: d }] }\n",
    ));
    assert_eq!(route_to(&t, &Req::get("shop.example.com", "/s"), 0), "c");
    assert_eq!(
        route_to(&t, &Req::get("SHOP.example.com:8080", "/s"), 0),
        "c",
        "case and port ignored"
    );
    // No rule of the exact host matches: fall through to the wildcard, then to any.
    assert_eq!(route_to(&t, &Req::get("shop.example.com", "/w"), 0), "b");
    assert_eq!(
        route_to(&t, &Req::get("shop.example.com", "/other"), 0),
        "a"
    );
    assert_eq!(
        route_to(&t, &Req::get("x.eu.example.com", "/w"), 0),
        "d",
        "longest wildcard first"
    );
    assert_eq!(route_to(&t, &Req::get("a.b.example.com", "/w"), 0), "b");
    assert_eq!(
        route_to(&t, &Req::get("example.com", "/w"), 0),
        "a",
        "a wildcard needs a label"
    );
    assert_eq!(route_to(&t, &Req::get("other.org", "/s"), 0), "a");
}

#[test]
fn no_route_is_none() {
    let t = table("  - { name: r, hostnames: [a.com], rules: [{ backend: a }] }\n");
    assert_eq!(route_to(&t, &Req::get("b.com", "/"), 0), "404");
    assert_eq!(route_to(&t, &Req::get("a.com", "/"), 0), "a");
}

#[test]
fn drained_backends_get_no_new_requests() {
    let t = compile(concat!(
        "backends:\n  a: { endpoints: [\"127.0.0.1:1\"] }\n",
        "  b: { endpoints: [\"127.0.0.1:2\"], drain: { deadline: 30s } }\n",
        "routes:\n  - { name: r, rules: [{ split: { weights: { a: 1, b: 1000 } } }] }\n",
        "  - { name: s, hostnames: [only.b], rules: [{ split: { weights: { b: 1 } } }] }\n",
    ));
    for random in [0, u64::MAX / 2, u64::MAX] {
        assert_eq!(route_to(&t, &Req::get("h", "/"), random), "a");
        assert_eq!(route_to(&t, &Req::get("only.b", "/"), random), "503");
    }
}

/// Sidecar outbound: routes scoped to a destination serve only connections
/// intercepted for it, and such connections see only those routes.
#[test]
fn destinations_scope_routes_to_intercepted_connections() {
    let table = table(concat!(
        "  - { name: everything, rules: [{ backend: a }] }\n",
        "  - { name: reviews, destinations: [\"10.96.0.10:9080\"], rules: [{ backend: b }] }\n",
        "  - { name: ratings, hostnames: [ratings.test], rules: [{ backend: c }] }\n",
        "  - { name: api, destinations: [\"10.96.0.11:80\"], rules: [{ matches: [{ path: { value: /api } }], backend: d }] }\n",
    ));
    let route = |host: &str, path: &str, destination: Option<&str>| {
        let req = Req::get(host, path);
        let head = req
            .head()
            .with_destination(destination.map(|d| d.parse().unwrap()));
        table
            .route(&head)
            .map_or("404".to_owned(), |found| found.route.name.clone())
    };
    // Without a destination (a gateway listener) scoped routes never match.
    assert_eq!(route("10.96.0.10:9080", "/", None), "everything");
    // Its destination gets the scoped route, whatever the Host says...
    assert_eq!(
        route("reviews:9080", "/", Some("10.96.0.10:9080")),
        "reviews"
    );
    assert_eq!(
        route("ratings.test", "/", Some("10.96.0.10:9080")),
        "reviews"
    );
    // ...and nothing else: no fall-through to the routes of every host.
    assert_eq!(route("x", "/other", Some("10.96.0.11:80")), "404");
    assert_eq!(route("x", "/api/v1", Some("10.96.0.11:80")), "api");
    // Another destination sees the unscoped routes, by Host as usual.
    assert_eq!(route("ratings.test", "/", Some("10.1.2.3:80")), "ratings");

    let intercepts = |destination: &str, host: Option<&str>| {
        table.intercepts(destination.parse().unwrap(), host)
    };
    assert!(intercepts("10.96.0.10:9080", None));
    assert!(intercepts("10.1.2.3:80", Some("RATINGS.test:80")));
    // A route for every host does not capture unrelated outbound traffic.
    assert!(!intercepts("10.1.2.3:80", Some("example.com")));
    assert!(!intercepts("10.1.2.3:80", None));
}

/// The inbound route is reachable only as itself and names its port.
#[test]
fn the_local_app_route_is_separate_from_the_tables() {
    let table = table("  - { name: r, rules: [{ backend: a }] }\n").with_local_app(8080);
    let inbound = table.local_app_rule().unwrap();
    assert_eq!(inbound.route.name, "inbound:8080");
    let switchyard_config::compile::Action::Backend(id) = inbound.rule.action else {
        panic!("the inbound rule forwards to one backend");
    };
    assert_eq!(table.backend(id).name, "local:8080");
    assert_eq!(table.backend(id).endpoints, ["127.0.0.1:8080"]);
    // Requests of the table's listeners never reach it.
    assert_eq!(route_to(&table, &Req::get("x", "/"), 0), "a");
    assert!(compile_plain().local_app_rule().is_none());
}

fn compile_plain() -> switchyard_config::CompiledTable {
    table("  - { name: r, rules: [{ backend: a }] }\n")
}
