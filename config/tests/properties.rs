//! Property tests: versions are stable across formats, cohorts are monotonic
//! and converge to the weights, and the sequence mode is exact.

mod support;

use proptest::prelude::*;
use serde_json::{Map, Value, json};
use support::{compile, first_split, split_table};
use switchyard_config::{Target, parse_table};

const BACKEND_NAMES: [&str; 4] = ["blue", "green", "red", "yellow"];
const PREFIXES: [&str; 4] = ["/", "/api", "/api/v2", "/static"];

#[derive(Debug, Clone)]
struct GenRule {
    prefix: Option<usize>,
    header: Option<(String, String)>,
    /// One backend, or a split over two or more.
    weights: Vec<(usize, u32)>,
}

fn rule_strategy() -> impl Strategy<Value = GenRule> {
    (
        proptest::option::of(0..PREFIXES.len()),
        proptest::option::of(("x-[a-z]{1,6}", "[a-z0-9]{1,8}")),
        prop_oneof![
            (0..4usize).prop_map(|b| vec![(b, 1)]),
            proptest::sample::subsequence((0..4usize).collect::<Vec<_>>(), 2..=4)
                .prop_flat_map(|backends| {
                    let n = backends.len();
                    (
                        Just(backends),
                        proptest::collection::vec(1..=1_000_000u32, n),
                    )
                })
                .prop_map(|(backends, weights)| backends.into_iter().zip(weights).collect()),
        ],
    )
        .prop_map(|(prefix, header, weights)| GenRule {
            prefix,
            header,
            weights,
        })
}

fn routes_strategy() -> impl Strategy<Value = Vec<(Vec<String>, Vec<GenRule>)>> {
    proptest::collection::vec(
        (
            proptest::collection::vec("[a-z]{1,8}\\.(com|org)", 0..3),
            proptest::collection::vec(rule_strategy(), 1..4),
        ),
        1..4,
    )
}

fn backends_json() -> Value {
    let mut map = Map::new();
    for (i, name) in BACKEND_NAMES.iter().enumerate() {
        map.insert(
            (*name).to_owned(),
            json!({ "endpoints": [format!("127.0.0.1:{}", 9001 + i)] }),
        );
    }
    Value::Object(map)
}

/// Paths and headers have the same field names in both schemas.
fn match_json(rule: &GenRule) -> Option<Value> {
    if rule.prefix.is_none() && rule.header.is_none() {
        return None;
    }
    let mut m = Map::new();
    if let Some(p) = rule.prefix {
        m.insert(
            "path".into(),
            json!({ "type": "PathPrefix", "value": PREFIXES[p] }),
        );
    }
    if let Some((name, value)) = &rule.header {
        m.insert("headers".into(), json!([{ "name": name, "value": value }]));
    }
    Some(Value::Array(vec![Value::Object(m)]))
}

fn native_json(routes: &[(Vec<String>, Vec<GenRule>)]) -> Value {
    let routes: Vec<Value> = routes
        .iter()
        .enumerate()
        .map(|(i, (hosts, rules))| {
            let rules: Vec<Value> = rules
                .iter()
                .map(|rule| {
                    let mut r = Map::new();
                    if let Some(m) = match_json(rule) {
                        r.insert("matches".into(), m);
                    }
                    if rule.weights.len() == 1 {
                        r.insert("backend".into(), json!(BACKEND_NAMES[rule.weights[0].0]));
                    } else {
                        let weights: Map<String, Value> = rule
                            .weights
                            .iter()
                            .map(|(b, w)| (BACKEND_NAMES[*b].to_owned(), json!(w)))
                            .collect();
                        r.insert("split".into(), json!({ "weights": weights }));
                    }
                    Value::Object(r)
                })
                .collect();
            json!({ "name": format!("default/r{i}"), "hostnames": hosts, "rules": rules })
        })
        .collect();
    json!({ "backends": backends_json(), "routes": routes })
}

fn httproute_yaml(routes: &[(Vec<String>, Vec<GenRule>)]) -> String {
    let mut docs = vec![
        serde_saphyr::to_string(&json!({ "backends": backends_json() }))
            .expect("JSON values serialize to YAML"),
    ];
    // Documents in reverse order: precedence must come from names, not order.
    for (i, (hosts, rules)) in routes.iter().enumerate().rev() {
        let rules: Vec<Value> = rules
            .iter()
            .map(|rule| {
                let mut r = Map::new();
                if let Some(m) = match_json(rule) {
                    r.insert("matches".into(), m);
                }
                let refs: Vec<Value> = rule
                    .weights
                    .iter()
                    .map(|(b, w)| json!({ "name": BACKEND_NAMES[*b], "port": 8080, "weight": w }))
                    .collect();
                r.insert("backendRefs".into(), Value::Array(refs));
                Value::Object(r)
            })
            .collect();
        let route = json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": { "name": format!("r{i}") },
            "spec": { "parentRefs": [{ "name": "gw" }], "hostnames": hosts, "rules": rules },
        });
        docs.push(serde_saphyr::to_string(&route).expect("JSON values serialize to YAML"));
    }
    docs.join("---\n")
}

/// JSON text with every object's keys in reverse order.
fn reversed_json(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let entries: Vec<String> = map
                .iter()
                .rev()
                .map(|(k, v)| format!("{}: {}", Value::String(k.clone()), reversed_json(v)))
                .collect();
            format!("{{ {} }}", entries.join(",\n "))
        }
        Value::Array(items) => {
            format!(
                "[{}]",
                items
                    .iter()
                    .map(reversed_json)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
        other => other.to_string(),
    }
}

fn version(text: &str) -> String {
    parse_table(text.as_bytes())
        .unwrap_or_else(|e| panic!("{e}\n{text}"))
        .version()
        .to_string()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn same_table_same_version_in_every_format(routes in routes_strategy()) {
        let native = native_json(&routes);
        let from_json = version(&native.to_string());
        prop_assert_eq!(&from_json, &version(&serde_saphyr::to_string(&native).unwrap()));
        prop_assert_eq!(&from_json, &version(&reversed_json(&native)));
        prop_assert_eq!(&from_json, &version(&httproute_yaml(&routes)));
        // And the canonical form reloads to itself.
        let table = parse_table(native.to_string().as_bytes()).unwrap();
        prop_assert_eq!(&from_json, &version(std::str::from_utf8(table.canonical_json()).unwrap()));
    }

    #[test]
    fn cohorts_move_only_into_a_raised_or_out_of_a_lowered_backend(
        weights in proptest::collection::vec(0..=1_000_000u32, 2..=8),
        changed in any::<proptest::sample::Index>(),
        new_weight in 0..=1_000_000u32,
    ) {
        prop_assume!(weights.iter().any(|w| *w > 0));
        let i = changed.index(weights.len());
        let mut after = weights.clone();
        after[i] = new_weight;
        prop_assume!(after.iter().any(|w| *w > 0));
        let cohort = "          cohort: { from: \"header:x-user\" }\n";
        let before_table = compile(&split_table(&weights, cohort));
        let after_table = compile(&split_table(&after, cohort));
        let (before_split, after_split) = (first_split(&before_table), first_split(&after_table));
        for key in 0..2000u32 {
            let key = format!("user-{key}");
            let b = before_split.pick(Some(key.as_bytes()), 0).unwrap().target;
            let a = after_split.pick(Some(key.as_bytes()), 0).unwrap().target;
            if a != b {
                let moved_to = |t: Target| match t { Target::Backend(id) => id.0 as usize, Target::Unresolved => usize::MAX };
                if new_weight > weights[i] {
                    prop_assert_eq!(moved_to(a), i, "raising backend {} moved a cohort elsewhere", i);
                } else {
                    prop_assert_eq!(moved_to(b), i, "lowering backend {} moved a cohort that was not on it", i);
                }
            }
        }
    }

    /// With 20,000 keys the standard deviation of a share is at most 0.35
    /// percentage points; the tolerance is 2 points (over 5 sigma).
    #[test]
    fn cohort_shares_converge_to_the_weights(
        weights in proptest::collection::vec(1..=1_000_000u32, 2..=8),
    ) {
        let table = compile(&split_table(&weights, "          cohort: { from: \"header:x-user\" }\n"));
        let split = first_split(&table);
        let mut counts = vec![0u32; weights.len()];
        let keys = 20_000u32;
        for key in 0..keys {
            let key = format!("k{key}");
            if let Target::Backend(id) = split.pick(Some(key.as_bytes()), 0).unwrap().target {
                counts[id.0 as usize] += 1;
            }
        }
        let total: f64 = weights.iter().map(|w| f64::from(*w)).sum();
        for (count, weight) in counts.iter().zip(&weights) {
            let share = f64::from(*count) / f64::from(keys);
            let expected = f64::from(*weight) / total;
            prop_assert!((share - expected).abs() < 0.02, "share {share} vs weight share {expected}");
        }
    }

    #[test]
    fn sequence_mode_is_within_one_percent_over_1000_picks(
        weights in proptest::collection::vec(0..=1_000_000u32, 2..=8),
    ) {
        prop_assume!(weights.iter().any(|w| *w > 0));
        let table = compile(&split_table(&weights, "          mode: sequence\n"));
        let split = first_split(&table);
        let mut counts = vec![0u32; weights.len()];
        for _ in 0..1000 {
            if let Target::Backend(id) = split.pick(None, 0).unwrap().target {
                counts[id.0 as usize] += 1;
            }
        }
        let total: f64 = weights.iter().map(|w| f64::from(*w)).sum();
        for (count, weight) in counts.iter().zip(&weights) {
            let share = f64::from(*count) / 1000.0;
            let expected = f64::from(*weight) / total;
            prop_assert!((share - expected).abs() <= 0.01, "share {share} vs {expected}");
        }
    }
}

#[test]
fn random_mode_follows_the_random_number() {
    let table = compile(&split_table(&[1, 3], ""));
    let split = first_split(&table);
    let target = |random: u64| match split.pick(None, random).unwrap().target {
        Target::Backend(id) => id.0,
        Target::Unresolved => u32::MAX,
    };
    assert_eq!(target(0), 0);
    assert_eq!(target(u64::MAX / 4 - 1), 0);
    assert_eq!(target(u64::MAX / 4 + 1), 1);
    assert_eq!(target(u64::MAX), 1);
}
