//! Gateway API `HTTPRoute` input, converted to the native model.
//!
//! Standalone tables resolve `backendRefs` by name against the table's
//! `backends` map (the port of a reference is not used to pick endpoints).
//! As the Gateway API spec requires, a reference that resolves to nothing is
//! not a table error: its share of requests is answered 500, and the problem
//! is reported as a warning with its field path.

pub mod model;

use std::collections::BTreeMap;

use crate::problem::{Problem, join};
use crate::spec::{
    BackendSpec, DirectResponseSpec, MatchSpec, PathMatchSpec, RouteSpec, RuleSpec, SplitSpec,
    TimeoutsSpec, UnresolvedSpec, ValueMatchSpec,
};
pub use model::HttpRoute;
use model::{HttpBackendRef, HttpRouteMatch, HttpRouteRule};

/// API versions accepted for `HTTPRoute`.
pub const API_VERSIONS: [&str; 2] = [
    "gateway.networking.k8s.io/v1",
    "gateway.networking.k8s.io/v1beta1",
];

// Limits from the Gateway API v1 CRD (`maxItems` and its CEL rules).
const MAX_HOSTNAMES: usize = 16;
const MAX_PARENT_REFS: usize = 32;
const MAX_RULES: usize = 16;
const MAX_MATCHES_PER_RULE: usize = 64;
const MAX_MATCHES_PER_ROUTE: usize = 128;
const MAX_BACKEND_REFS: usize = 16;
const MAX_VALUE_MATCHES: usize = 16;
const MAX_WEIGHT: i64 = 1_000_000;

/// The result of converting `HTTPRoute` documents.
#[derive(Debug, Default)]
pub struct Converted {
    /// Routes, ordered oldest first (creation time, then `namespace/name`).
    pub routes: Vec<RouteSpec>,
    /// Errors: the table is rejected when there is any.
    pub errors: Vec<Problem>,
    /// Warnings: the table is accepted and these are reported.
    pub warnings: Vec<Problem>,
}

/// Converts parsed `HTTPRoute` documents (each with the field path of its
/// document) into native routes, resolving references against `backends`.
pub fn convert(
    documents: Vec<(String, HttpRoute)>,
    backends: &BTreeMap<String, BackendSpec>,
) -> Converted {
    let mut out = Converted::default();
    let mut named: Vec<(Option<String>, String, RouteSpec)> = Vec::new();
    for (path, route) in documents {
        let Some((name, spec)) = convert_route(&path, route, backends, &mut out) else {
            continue;
        };
        if named.iter().any(|(_, existing, _)| *existing == name) {
            out.errors.push(Problem::new(
                join(&path, "metadata.name"),
                format!("duplicate HTTPRoute {name:?}"),
            ));
            continue;
        }
        named.push((spec.1, name, spec.0));
    }
    // Precedence ties go to the oldest route, then to `namespace/name` order;
    // routes without a creation time (files) come after, by name.
    named.sort_by(|a, b| (a.0.is_none(), &a.0, &a.1).cmp(&(b.0.is_none(), &b.0, &b.1)));
    out.routes = named.into_iter().map(|(_, _, route)| route).collect();
    out
}

type RouteAndAge = (RouteSpec, Option<String>);

fn convert_route(
    path: &str,
    route: HttpRoute,
    backends: &BTreeMap<String, BackendSpec>,
    out: &mut Converted,
) -> Option<(String, RouteAndAge)> {
    let errors_before = out.errors.len();
    if !API_VERSIONS.contains(&route.api_version.as_str()) {
        out.errors.push(Problem::new(
            join(path, "apiVersion"),
            format!(
                "unsupported apiVersion {:?}: expected one of {API_VERSIONS:?}",
                route.api_version
            ),
        ));
    }
    if route.kind != "HTTPRoute" {
        out.errors.push(Problem::new(
            join(path, "kind"),
            format!("unsupported kind {:?}: expected \"HTTPRoute\"", route.kind),
        ));
    }
    let Some(name) = route.metadata.name.clone().filter(|n| !n.is_empty()) else {
        out.errors
            .push(Problem::new(join(path, "metadata.name"), "is required"));
        return None;
    };
    let namespace = route
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_owned());
    let spec = route.spec;
    check_max(
        path,
        "spec.hostnames",
        spec.hostnames.len(),
        MAX_HOSTNAMES,
        out,
    );
    check_max(
        path,
        "spec.parentRefs",
        spec.parent_refs.len(),
        MAX_PARENT_REFS,
        out,
    );

    // An absent rules list means one rule that matches everything and has no
    // backends (so it answers 500), as the CRD's default says.
    let rules = spec.rules.unwrap_or_else(|| vec![HttpRouteRule::default()]);
    check_max(path, "spec.rules", rules.len(), MAX_RULES, out);
    let total_matches: usize = rules
        .iter()
        .map(|r| r.matches.as_ref().map_or(1, Vec::len))
        .sum();
    if total_matches > MAX_MATCHES_PER_ROUTE {
        out.errors.push(Problem::new(
            join(path, "spec.rules"),
            format!("{total_matches} matches in all; at most {MAX_MATCHES_PER_ROUTE} are allowed across the rules of one route"),
        ));
    }
    let mut native_rules = Vec::with_capacity(rules.len());
    for (index, rule) in rules.into_iter().enumerate() {
        let rule_path = join(path, &format!("spec.rules[{index}]"));
        native_rules.push(convert_rule(&rule_path, &namespace, rule, backends, out));
    }
    if out.errors.len() > errors_before {
        return None;
    }
    let full_name = format!("{namespace}/{name}");
    let native = RouteSpec {
        name: full_name.clone(),
        hostnames: spec.hostnames,
        // A Service parentRef (GAMMA) would give destinations, but its
        // cluster IP is not in the HTTPRoute; such routes match by host.
        destinations: Vec::new(),
        timeouts: None,
        max_request_body_bytes: None,
        rules: native_rules,
    };
    Some((full_name, (native, route.metadata.creation_timestamp)))
}

fn convert_rule(
    path: &str,
    namespace: &str,
    rule: HttpRouteRule,
    backends: &BTreeMap<String, BackendSpec>,
    out: &mut Converted,
) -> RuleSpec {
    reject_unsupported(
        path,
        "filters",
        rule.filters.as_ref().is_some_and(|f| !f.is_empty()),
        out,
    );
    reject_unsupported(path, "retry", rule.retry.is_some(), out);
    reject_unsupported(
        path,
        "sessionPersistence",
        rule.session_persistence.is_some(),
        out,
    );

    let matches = rule.matches.unwrap_or_default();
    check_max(path, "matches", matches.len(), MAX_MATCHES_PER_RULE, out);
    let matches = matches
        .into_iter()
        .enumerate()
        .map(|(i, m)| convert_match(&join(path, &format!("matches[{i}]")), m, out))
        .collect();

    let refs = rule.backend_refs.unwrap_or_default();
    check_max(path, "backendRefs", refs.len(), MAX_BACKEND_REFS, out);
    let mut native = RuleSpec {
        name: rule.name,
        matches,
        timeouts: rule.timeouts.map(|t| TimeoutsSpec {
            request: t.request,
            backend_request: t.backend_request,
        }),
        ..RuleSpec::default()
    };
    let target = convert_backend_refs(path, namespace, refs, backends, out);
    match target {
        RuleTarget::Backend(name) => native.backend = Some(name),
        RuleTarget::Split(split) => native.split = Some(split),
        RuleTarget::Fail => {
            native.direct_response = Some(DirectResponseSpec {
                status: 500,
                body: "no valid backend for this route rule".to_owned(),
            });
        }
    }
    native
}

enum RuleTarget {
    Backend(String),
    Split(SplitSpec),
    Fail,
}

fn convert_backend_refs(
    path: &str,
    namespace: &str,
    refs: Vec<HttpBackendRef>,
    backends: &BTreeMap<String, BackendSpec>,
    out: &mut Converted,
) -> RuleTarget {
    if refs.is_empty() {
        out.warnings.push(Problem::new(
            join(path, "backendRefs"),
            "rule has no backendRefs; its requests are answered 500",
        ));
        return RuleTarget::Fail;
    }
    let only_one = refs.len() == 1;
    let mut weights: BTreeMap<String, u32> = BTreeMap::new();
    let mut unresolved = Vec::new();
    for (index, reference) in refs.into_iter().enumerate() {
        let ref_path = join(path, &format!("backendRefs[{index}]"));
        reject_unsupported(
            &ref_path,
            "filters",
            reference.filters.as_ref().is_some_and(|f| !f.is_empty()),
            out,
        );
        if let Some(port) = reference.port
            && !(1..=65535).contains(&port)
        {
            out.errors.push(Problem::new(
                join(&ref_path, "port"),
                format!("port {port} is outside 1..=65535"),
            ));
        }
        let weight = reference.weight.unwrap_or(1);
        if !(0..=MAX_WEIGHT).contains(&weight) {
            out.errors.push(Problem::new(
                join(&ref_path, "weight"),
                format!("weight {weight} is outside 0..=1000000"),
            ));
            continue;
        }
        let weight = weight as u32;
        match resolve(namespace, &reference, backends) {
            Ok(name) => {
                if only_one && weight > 0 {
                    return RuleTarget::Backend(name);
                }
                let entry = weights.entry(name).or_insert(0);
                *entry = entry.saturating_add(weight);
            }
            Err(reason) => {
                out.warnings.push(Problem::new(
                    ref_path,
                    format!("{reason}; its share of requests is answered 500"),
                ));
                if weight > 0 {
                    unresolved.push(UnresolvedSpec {
                        reference: describe(namespace, &reference),
                        weight,
                    });
                }
            }
        }
    }
    let total: u64 = weights.values().map(|w| u64::from(*w)).sum::<u64>()
        + unresolved.iter().map(|u| u64::from(u.weight)).sum::<u64>();
    if total == 0 {
        out.warnings.push(Problem::new(
            join(path, "backendRefs"),
            "every backendRef has weight 0; the rule's requests are answered 500",
        ));
        return RuleTarget::Fail;
    }
    RuleTarget::Split(SplitSpec {
        weights,
        cohort: None,
        mode: Default::default(),
        unresolved,
    })
}

fn resolve(
    namespace: &str,
    reference: &HttpBackendRef,
    backends: &BTreeMap<String, BackendSpec>,
) -> Result<String, String> {
    let group = reference.group.as_deref().unwrap_or("");
    let kind = reference.kind.as_deref().unwrap_or("Service");
    if !group.is_empty() || kind != "Service" {
        return Err(format!(
            "backendRef kind {kind:?} in group {group:?} is not supported (only core Service)"
        ));
    }
    if let Some(ns) = &reference.namespace
        && ns != namespace
    {
        return Err(format!(
            "backendRef to namespace {ns:?} crosses namespaces, which needs a ReferenceGrant (not supported)"
        ));
    }
    if backends.contains_key(&reference.name) {
        Ok(reference.name.clone())
    } else {
        Err(format!(
            "backendRef {:?} resolves to no backend in the table",
            reference.name
        ))
    }
}

fn describe(namespace: &str, reference: &HttpBackendRef) -> String {
    let ns = reference.namespace.as_deref().unwrap_or(namespace);
    match (reference.group.as_deref(), reference.kind.as_deref()) {
        (None | Some(""), None | Some("Service")) => format!("{ns}/{}", reference.name),
        (group, kind) => format!(
            "{}.{}:{ns}/{}",
            kind.unwrap_or("Service"),
            group.unwrap_or(""),
            reference.name
        ),
    }
}

fn convert_match(path: &str, m: HttpRouteMatch, out: &mut Converted) -> MatchSpec {
    check_max(path, "headers", m.headers.len(), MAX_VALUE_MATCHES, out);
    check_max(
        path,
        "queryParams",
        m.query_params.len(),
        MAX_VALUE_MATCHES,
        out,
    );
    let values = |list: Vec<model::HttpValueMatch>| {
        list.into_iter()
            .map(|v| ValueMatchSpec {
                kind: v.kind.unwrap_or_default(),
                name: v.name,
                value: v.value,
            })
            .collect()
    };
    MatchSpec {
        path: m.path.map(|p| PathMatchSpec {
            kind: p.kind.unwrap_or_default(),
            value: p.value.unwrap_or_else(|| "/".to_owned()),
        }),
        headers: values(m.headers),
        query_params: values(m.query_params),
        method: m.method,
    }
}

fn reject_unsupported(path: &str, field: &str, present: bool, out: &mut Converted) {
    if present {
        out.errors.push(Problem::new(
            join(path, field),
            "not supported yet by switchyard; remove it or use the native schema",
        ));
    }
}

fn check_max(path: &str, field: &str, len: usize, max: usize, out: &mut Converted) {
    if len > max {
        out.errors.push(Problem::new(
            join(path, field),
            format!("{len} items; the Gateway API allows at most {max}"),
        ));
    }
}
