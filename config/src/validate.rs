//! Validation and normalisation of a native table.
//!
//! Every problem is collected (none stops the search for the next), each with
//! its field path. A table with any problem is rejected whole. The returned
//! spec is normalised: it is the canonical form hashed into the version.

pub(crate) mod checks;
mod matches;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};

use crate::problem::{Problem, join};
use crate::spec::{
    BackendSpec, MatchSpec, RouteSpec, RuleSpec, SplitSpec, TableSpec, TimeoutsSpec,
};
pub use checks::KeySource;
use checks::{check_endpoint, check_hostname, check_name, parse_key_source};

/// Most backends in one table.
pub const MAX_BACKENDS: usize = 1024;
/// Most endpoints per backend.
pub const MAX_ENDPOINTS: usize = 1024;
/// Most routes in one table.
pub const MAX_ROUTES: usize = 10_000;
/// Most rules per route.
pub const MAX_RULES_PER_ROUTE: usize = 1024;
/// Most matches per rule.
pub const MAX_MATCHES_PER_RULE: usize = 64;
/// Most matches in the whole table.
pub const MAX_MATCHES_PER_TABLE: usize = 100_000;
/// Most hostnames per route.
pub const MAX_HOSTNAMES_PER_ROUTE: usize = 256;
/// Most header (or query) conditions per match.
pub const MAX_VALUE_MATCHES: usize = 16;
/// Most backends in one split.
pub const MAX_SPLIT_BACKENDS: usize = 64;
/// Largest weight.
pub const MAX_WEIGHT: u32 = 1_000_000;
/// Longest path value or regular expression, in bytes.
pub const MAX_PATTERN_LEN: usize = 1024;
/// Longest direct response body, in bytes.
pub const MAX_BODY_LEN: usize = 64 * 1024;

const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// The outcome of validating a spec.
#[derive(Debug)]
pub struct Validated {
    /// The normalised spec (valid only when `errors` is empty).
    pub spec: TableSpec,
    /// Problems that reject the table.
    pub errors: Vec<Problem>,
    /// Problems reported but accepted.
    pub warnings: Vec<Problem>,
}

/// Validates and normalises `spec`. `warn_unresolved` adds a warning per
/// `split.unresolved` entry (the `HTTPRoute` converter has already reported
/// them at their `backendRefs` path).
pub fn validate(spec: TableSpec, warn_unresolved: bool) -> Validated {
    let mut v = Validator {
        errors: Vec::new(),
        warnings: Vec::new(),
        warn_unresolved,
        total_matches: 0,
    };
    let backends = v.backends(spec.backends);
    let routes = v.routes(spec.routes, &backends);
    Validated {
        spec: TableSpec { backends, routes },
        errors: v.errors,
        warnings: v.warnings,
    }
}

struct Validator {
    errors: Vec<Problem>,
    warnings: Vec<Problem>,
    warn_unresolved: bool,
    total_matches: usize,
}

// === impl Validator ===

impl Validator {
    fn error(&mut self, path: impl Into<String>, reason: impl Into<String>) {
        self.errors.push(Problem::new(path, reason));
    }

    fn warn(&mut self, path: impl Into<String>, reason: impl Into<String>) {
        self.warnings.push(Problem::new(path, reason));
    }

    fn too_many(&mut self, path: &str, len: usize, max: usize, what: &str) -> bool {
        if len > max {
            self.error(path, format!("{len} {what}; at most {max} are allowed"));
            return true;
        }
        false
    }

    fn backends(
        &mut self,
        backends: BTreeMap<String, BackendSpec>,
    ) -> BTreeMap<String, BackendSpec> {
        self.too_many("backends", backends.len(), MAX_BACKENDS, "backends");
        let mut out = BTreeMap::new();
        for (name, backend) in backends {
            let path = join("backends", &name);
            if let Err(reason) = check_name(&name, false) {
                self.error(&path, format!("invalid backend name: {reason}"));
            }
            let endpoints_path = join(&path, "endpoints");
            if backend.endpoints.is_empty() {
                self.warn(
                    &endpoints_path,
                    "backend has no endpoints; its requests are answered 503",
                );
            }
            self.too_many(
                &endpoints_path,
                backend.endpoints.len(),
                MAX_ENDPOINTS,
                "endpoints",
            );
            let mut seen: HashMap<&str, usize> = HashMap::new();
            for (i, endpoint) in backend.endpoints.iter().enumerate() {
                let endpoint_path = format!("{endpoints_path}[{i}]");
                if let Err(reason) = check_endpoint(endpoint) {
                    self.error(&endpoint_path, reason);
                }
                if let Some(first) = seen.insert(endpoint, i) {
                    self.error(
                        &endpoint_path,
                        format!("duplicate endpoint {endpoint:?} (also endpoints[{first}])"),
                    );
                }
            }
            if let Some(tls) = &backend.tls {
                self.backend_tls(&join(&path, "tls"), tls);
            }
            out.insert(name, backend);
        }
        out
    }

    fn backend_tls(&mut self, path: &str, tls: &crate::spec::BackendTlsSpec) {
        if tls.client_cert.is_some() != tls.client_key.is_some() {
            self.error(
                path,
                "client_cert and client_key go together (mutual TLS needs both)",
            );
        }
        if let Some(name) = &tls.server_name
            && let Err(reason) = check_hostname(&name.to_ascii_lowercase())
        {
            self.error(
                join(path, "server_name"),
                format!("invalid server name {name:?}: {reason}"),
            );
        }
        for (field, value) in [
            ("ca_file", &tls.ca_file),
            ("client_cert", &tls.client_cert),
            ("client_key", &tls.client_key),
        ] {
            if value.as_deref() == Some("") {
                self.error(join(path, field), "must not be empty");
            }
        }
    }

    fn routes(
        &mut self,
        routes: Vec<RouteSpec>,
        backends: &BTreeMap<String, BackendSpec>,
    ) -> Vec<RouteSpec> {
        self.too_many("routes", routes.len(), MAX_ROUTES, "routes");
        let mut names: HashMap<String, usize> = HashMap::new();
        let mut out = Vec::with_capacity(routes.len());
        for (index, route) in routes.into_iter().enumerate() {
            let path = format!("routes[{index}]");
            if let Err(reason) = check_name(&route.name, true) {
                self.error(join(&path, "name"), format!("invalid route name: {reason}"));
            } else if let Some(first) = names.get(&route.name) {
                let first = *first;
                self.error(
                    join(&path, "name"),
                    format!(
                        "duplicate route name {:?} (also routes[{first}])",
                        route.name
                    ),
                );
            } else {
                names.insert(route.name.clone(), index);
            }
            out.push(self.route(&path, route, backends));
        }
        if self.total_matches > MAX_MATCHES_PER_TABLE {
            self.error(
                "routes",
                format!(
                    "{} matches in all; at most {MAX_MATCHES_PER_TABLE} are allowed",
                    self.total_matches
                ),
            );
        }
        out
    }

    fn route(
        &mut self,
        path: &str,
        route: RouteSpec,
        backends: &BTreeMap<String, BackendSpec>,
    ) -> RouteSpec {
        let hostnames_path = join(path, "hostnames");
        self.too_many(
            &hostnames_path,
            route.hostnames.len(),
            MAX_HOSTNAMES_PER_ROUTE,
            "hostnames",
        );
        let mut hostnames: Vec<String> = Vec::with_capacity(route.hostnames.len());
        for (i, hostname) in route.hostnames.iter().enumerate() {
            let lower = hostname.to_ascii_lowercase();
            if let Err(reason) = check_hostname(&lower) {
                self.error(
                    format!("{hostnames_path}[{i}]"),
                    format!("invalid hostname {hostname:?}: {reason}"),
                );
            } else if !hostnames.contains(&lower) {
                hostnames.push(lower);
            }
        }
        let destinations = self.destinations(&join(path, "destinations"), &route.destinations);
        let rules_path = join(path, "rules");
        if route.rules.is_empty() {
            self.error(&rules_path, "at least one rule is required");
        }
        self.too_many(&rules_path, route.rules.len(), MAX_RULES_PER_ROUTE, "rules");
        if let Some(timeouts) = &route.timeouts {
            self.timeouts(&join(path, "timeouts"), timeouts);
        }
        if route.max_request_body_bytes == Some(0) {
            self.error(
                join(path, "max_request_body_bytes"),
                "must be at least 1 (leave it out for the proxy's limit)",
            );
        }
        let rules = route
            .rules
            .into_iter()
            .enumerate()
            .map(|(i, rule)| {
                let rule_path = format!("{rules_path}[{i}]");
                self.rule(&rule_path, rule, route.timeouts.as_ref(), backends)
            })
            .collect();
        RouteSpec {
            name: route.name,
            hostnames,
            destinations,
            timeouts: None,
            max_request_body_bytes: route.max_request_body_bytes,
            rules,
        }
    }

    /// Destinations in canonical `IP:port` form, without repeats.
    fn destinations(&mut self, path: &str, destinations: &[String]) -> Vec<String> {
        self.too_many(
            path,
            destinations.len(),
            MAX_HOSTNAMES_PER_ROUTE,
            "destinations",
        );
        let mut out: Vec<String> = Vec::with_capacity(destinations.len());
        for (i, destination) in destinations.iter().enumerate() {
            match destination.parse::<std::net::SocketAddr>() {
                Ok(address) if address.port() != 0 => {
                    let canonical = address.to_string();
                    if !out.contains(&canonical) {
                        out.push(canonical);
                    }
                }
                _ => self.error(
                    format!("{path}[{i}]"),
                    format!(
                        "invalid destination {destination:?}: must be an IP address and a non-zero port, as a Service's cluster IP and port (10.96.0.10:80, [fd00::a]:80)"
                    ),
                ),
            }
        }
        out
    }

    fn rule(
        &mut self,
        path: &str,
        rule: RuleSpec,
        route_timeouts: Option<&TimeoutsSpec>,
        backends: &BTreeMap<String, BackendSpec>,
    ) -> RuleSpec {
        if let Some(name) = &rule.name
            && let Err(reason) = check_name(name, false)
        {
            self.error(join(path, "name"), format!("invalid rule name: {reason}"));
        }
        let actions = [
            rule.backend.is_some(),
            rule.split.is_some(),
            rule.direct_response.is_some(),
        ];
        if actions.iter().filter(|set| **set).count() != 1 {
            self.error(
                path,
                "exactly one of `backend`, `split` or `direct_response` is required",
            );
        }
        if let Some(backend) = &rule.backend
            && !backends.contains_key(backend)
        {
            self.error(
                join(path, "backend"),
                format!("unknown backend {backend:?}"),
            );
        }
        let split = rule
            .split
            .map(|split| self.split(&join(path, "split"), split, backends));
        if let Some(response) = &rule.direct_response {
            let response_path = join(path, "direct_response");
            if !(200..=599).contains(&response.status) {
                self.error(
                    join(&response_path, "status"),
                    format!("status {} is outside 200..=599", response.status),
                );
            }
            if response.body.len() > MAX_BODY_LEN {
                self.error(
                    join(&response_path, "body"),
                    format!(
                        "body is {} bytes; at most {MAX_BODY_LEN} are allowed",
                        response.body.len()
                    ),
                );
            }
        }
        if let Some(timeouts) = &rule.timeouts {
            self.timeouts(&join(path, "timeouts"), timeouts);
        }
        let timeouts = merge_timeouts(route_timeouts, rule.timeouts);

        let matches_path = join(path, "matches");
        self.too_many(
            &matches_path,
            rule.matches.len(),
            MAX_MATCHES_PER_RULE,
            "matches",
        );
        let mut matches: Vec<MatchSpec> = rule
            .matches
            .into_iter()
            .enumerate()
            .map(|(i, m)| self.request_match(&format!("{matches_path}[{i}]"), m))
            .collect();
        if matches.is_empty() {
            matches.push(self.request_match(&matches_path, MatchSpec::default()));
        }
        self.total_matches += matches.len();
        RuleSpec {
            name: rule.name,
            matches,
            timeouts,
            backend: rule.backend,
            split,
            direct_response: rule.direct_response,
        }
    }

    fn split(
        &mut self,
        path: &str,
        split: SplitSpec,
        backends: &BTreeMap<String, BackendSpec>,
    ) -> SplitSpec {
        let weights_path = join(path, "weights");
        if split.weights.is_empty() && split.unresolved.is_empty() {
            self.error(&weights_path, "a split needs at least one backend");
        }
        self.too_many(
            &weights_path,
            split.weights.len() + split.unresolved.len(),
            MAX_SPLIT_BACKENDS,
            "backends in a split",
        );
        let mut total: u64 = 0;
        for (name, weight) in &split.weights {
            let weight_path = join(&weights_path, name);
            if !backends.contains_key(name) {
                self.error(&weight_path, "unknown backend");
            }
            if *weight > MAX_WEIGHT {
                self.error(
                    &weight_path,
                    format!("weight {weight} is outside 0..={MAX_WEIGHT}"),
                );
            }
            total += u64::from(*weight);
        }
        for (i, unresolved) in split.unresolved.iter().enumerate() {
            let entry_path = format!("{path}.unresolved[{i}]");
            if unresolved.weight > MAX_WEIGHT {
                self.error(
                    join(&entry_path, "weight"),
                    format!("weight {} is outside 0..={MAX_WEIGHT}", unresolved.weight),
                );
            }
            if self.warn_unresolved {
                self.warn(
                    &entry_path,
                    format!(
                        "reference {:?} resolves to no backend; its share of requests is answered 500",
                        unresolved.reference
                    ),
                );
            }
            total += u64::from(unresolved.weight);
        }
        if total == 0 && !(split.weights.is_empty() && split.unresolved.is_empty()) {
            self.error(
                &weights_path,
                "the weights sum to 0; at least one must be positive",
            );
        }
        if let Some(cohort) = &split.cohort {
            let cohort_path = join(path, "cohort");
            if let Err(reason) = parse_key_source(&cohort.from) {
                self.error(join(&cohort_path, "from"), reason);
            }
            if let Some(fallback) = &cohort.fallback
                && let Err(reason) = parse_key_source(fallback)
            {
                self.error(join(&cohort_path, "fallback"), reason);
            }
            if let Some(cookie) = &cohort.assign_cookie
                && let Err(reason) = checks::check_cookie_name(&cookie.name)
            {
                self.error(join(&cohort_path, "assign_cookie.name"), reason);
            }
        }
        split
    }

    fn timeouts(&mut self, path: &str, timeouts: &TimeoutsSpec) {
        if let (Some(request), Some(backend)) = (timeouts.request, timeouts.backend_request)
            && !request.get().is_zero()
            && backend > request
        {
            self.error(
                join(path, "backend_request"),
                format!("{backend} is longer than the request timeout {request}"),
            );
        }
    }
}

fn merge_timeouts(
    route: Option<&TimeoutsSpec>,
    rule: Option<TimeoutsSpec>,
) -> Option<TimeoutsSpec> {
    let rule = rule.unwrap_or_default();
    let route = route.cloned().unwrap_or_default();
    let merged = TimeoutsSpec {
        request: rule.request.or(route.request),
        backend_request: rule.backend_request.or(route.backend_request),
    };
    (merged != TimeoutsSpec::default()).then_some(merged)
}
