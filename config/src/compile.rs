//! The compiled table: what the proxy executes per request.
//!
//! Compiling turns a validated [`Table`] into host-indexed candidate lists of
//! precompiled matchers (in Gateway API precedence order), backend indices,
//! and splits with cumulative weights and cohort seeds. Nothing here
//! allocates per request except percent-decoding of query values that need it.

mod hosts;
mod matcher;
mod request_head;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use crate::pick::{AssignCookie, Cohort, Split, Target};
use crate::problem::InvalidTable;
use crate::spec::{BackendSpec, DrainSpec, Protocol, RuleSpec};
use crate::table::{Table, Version};
use crate::validate::checks::parse_key_source;
use hosts::{HostGroups, HostIndex, HostNames};
use matcher::{Matcher, Specificity};
pub use request_head::RequestHead;
use rustc_hash::FxHashSet;

/// Index of a backend in [`CompiledTable::backends`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendId(pub u32);

/// What the proxy runs: an immutable snapshot of one table version.
#[derive(Debug)]
pub struct CompiledTable {
    table: Table,
    backends: Box<[CompiledBackend]>,
    routes: Box<[CompiledRoute]>,
    rules: Box<[CompiledRule]>,
    entries: Box<[Entry]>,
    hosts: HostIndex,
    /// Every destination some route is scoped to (sidecar outbound).
    destinations: FxHashSet<SocketAddr>,
    /// Hostnames routes without destinations name explicitly: what an
    /// outbound connection's `Host` must match to be routed.
    named_hosts: HostNames,
    /// The rule of the sidecar's inbound route, once added.
    local_app: Option<usize>,
}

/// A backend as the proxy needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledBackend {
    /// Name in the table.
    pub name: String,
    /// Endpoints as `host:port`.
    pub endpoints: Vec<String>,
    /// Upstream protocol.
    pub protocol: Protocol,
    /// Drain instruction, if the backend is being drained.
    pub drain: Option<DrainSpec>,
    /// TLS towards the endpoints, if any.
    pub tls: Option<crate::spec::BackendTlsSpec>,
}

/// A route (for names in metrics and logs).
#[derive(Debug)]
pub struct CompiledRoute {
    /// Route name.
    pub name: String,
    /// The destinations the route is scoped to (empty: not scoped).
    pub destinations: Box<[SocketAddr]>,
    /// The route's request body limit, when it has one.
    pub max_request_body_bytes: Option<u64>,
}

/// A rule: its action and timeouts.
#[derive(Debug)]
pub struct CompiledRule {
    /// Index of the route in [`CompiledTable::routes`].
    pub route: usize,
    /// Index of the rule within its route.
    pub index: usize,
    /// What to do with a matching request.
    pub action: Action,
    /// Whole-request timeout (`None`: no limit).
    pub request_timeout: Option<Duration>,
    /// Per-attempt backend timeout (`None`: no limit).
    pub backend_request_timeout: Option<Duration>,
}

/// What a rule does with a request.
#[derive(Debug)]
pub enum Action {
    /// Always this backend.
    Backend(BackendId),
    /// A weighted (optionally sticky) split.
    Split(Split),
    /// A response made by the proxy.
    DirectResponse {
        /// Status code.
        status: u16,
        /// Body text.
        body: String,
    },
}

/// The rule a request matched, with its route.
#[derive(Debug, Clone, Copy)]
pub struct RouteMatch<'a> {
    /// The route.
    pub route: &'a CompiledRoute,
    /// The rule within it.
    pub rule: &'a CompiledRule,
}

#[derive(Debug)]
struct Entry {
    rule: u32,
    /// Whether the entry's route is scoped to destinations.
    scoped: bool,
    matcher: Matcher,
}

// === impl CompiledTable ===

impl CompiledTable {
    /// Compiles a validated table.
    pub fn compile(table: Table) -> Result<Self, InvalidTable> {
        let spec = table.spec();
        let backend_ids: BTreeMap<&str, BackendId> = spec
            .backends
            .keys()
            .enumerate()
            .map(|(i, name)| (name.as_str(), BackendId(i as u32)))
            .collect();
        let backends: Box<[CompiledBackend]> = spec
            .backends
            .iter()
            .map(|(name, b)| compile_backend(name, b))
            .collect();

        let mut routes = Vec::new();
        let mut rules = Vec::new();
        // (specificity, entry index) per route, to sort into host groups.
        let mut keyed: Vec<(Specificity, u32, usize)> = Vec::new();
        let mut entries = Vec::new();
        let mut destinations = FxHashSet::default();
        let mut named_hosts = HostNames::default();
        for (route_index, route) in spec.routes.iter().enumerate() {
            let scoped_to = parse_destinations(route_index, &route.destinations)?;
            destinations.extend(scoped_to.iter().copied());
            if scoped_to.is_empty() {
                named_hosts.extend(&route.hostnames);
            }
            let scoped = !scoped_to.is_empty();
            routes.push(CompiledRoute {
                name: route.name.clone(),
                destinations: scoped_to,
                max_request_body_bytes: route.max_request_body_bytes,
            });
            for (rule_index, rule) in route.rules.iter().enumerate() {
                let path = format!("routes[{route_index}].rules[{rule_index}]");
                let action = compile_action(&path, rule, &backend_ids, &backends)?;
                let timeouts = rule.timeouts.clone().unwrap_or_default();
                let rule_id = rules.len() as u32;
                rules.push(CompiledRule {
                    route: route_index,
                    index: rule_index,
                    action,
                    request_timeout: nonzero(timeouts.request.map(|d| d.get())),
                    backend_request_timeout: nonzero(timeouts.backend_request.map(|d| d.get())),
                });
                for (match_index, m) in rule.matches.iter().enumerate() {
                    let (matcher, specificity) = Matcher::compile(m).map_err(|reason| {
                        InvalidTable::one(format!("{path}.matches[{match_index}]"), reason)
                    })?;
                    keyed.push((specificity, entries.len() as u32, route_index));
                    entries.push(Entry {
                        rule: rule_id,
                        scoped,
                        matcher,
                    });
                }
            }
        }

        // Most specific first; ties keep table order (older route, earlier
        // rule, earlier match), which a stable sort preserves.
        keyed.sort_by_key(|k| std::cmp::Reverse(k.0));
        let mut groups = HostGroups::default();
        for (_, entry, route_index) in &keyed {
            let hostnames = &spec.routes[*route_index].hostnames;
            if hostnames.is_empty() {
                groups.any.push(*entry);
            }
            for hostname in hostnames {
                let list = match hostname.strip_prefix("*.") {
                    Some(suffix) => groups.wildcard.entry(suffix.to_owned()).or_default(),
                    None => groups.exact.entry(hostname.clone()).or_default(),
                };
                list.push(*entry);
            }
        }

        Ok(Self {
            table,
            backends,
            routes: routes.into_boxed_slice(),
            rules: rules.into_boxed_slice(),
            entries: entries.into_boxed_slice(),
            hosts: HostIndex::build(groups),
            destinations,
            named_hosts,
            local_app: None,
        })
    }

    /// The most specific rule matching the request, if any.
    pub fn route(&self, head: &RequestHead<'_>) -> Option<RouteMatch<'_>> {
        // A connection intercepted for a destination some route is scoped
        // to sees only those routes; every other request sees only the
        // routes that are not scoped.
        let scoped_to = head
            .destination
            .filter(|destination| self.destinations.contains(destination));
        let in_scope = |entry: &Entry| match scoped_to {
            None => !entry.scoped,
            Some(destination) => {
                entry.scoped
                    && self.routes[self.rules[entry.rule as usize].route]
                        .destinations
                        .contains(&destination)
            }
        };
        let rule = self
            .hosts
            .candidates(head.host)
            .iter()
            .map(|index| &self.entries[*index as usize])
            .find(|entry| in_scope(entry) && entry.matcher.matches(head))
            .map(|entry| &self.rules[entry.rule as usize])?;
        Some(RouteMatch {
            route: &self.routes[rule.route],
            rule,
        })
    }

    /// Whether a sidecar routes an intercepted connection to `destination`
    /// whose first request names `host`: a route is scoped to the
    /// destination, or a route names the host explicitly (routes for every
    /// host do not count, or they would capture all outbound traffic).
    /// Otherwise the connection passes through untouched.
    pub fn intercepts(&self, destination: SocketAddr, host: Option<&str>) -> bool {
        self.destinations.contains(&destination)
            || host.is_some_and(|host| self.named_hosts.covers(host))
    }

    /// Adds the sidecar's inbound route: one rule, reachable only through
    /// [`CompiledTable::local_app_rule`], that sends everything to a backend
    /// at `127.0.0.1:port`. Their names (`inbound:PORT`, `local:PORT`)
    /// cannot clash with a table's, which never contain `:`.
    pub fn with_local_app(mut self, port: u16) -> Self {
        let backend = BackendId(self.backends.len() as u32);
        let mut backends = std::mem::take(&mut self.backends).into_vec();
        backends.push(CompiledBackend {
            name: format!("local:{port}"),
            endpoints: vec![format!("127.0.0.1:{port}")],
            protocol: Protocol::Http1,
            drain: None,
            tls: None,
        });
        self.backends = backends.into_boxed_slice();
        let route = self.routes.len();
        let mut routes = std::mem::take(&mut self.routes).into_vec();
        routes.push(CompiledRoute {
            name: format!("inbound:{port}"),
            destinations: Box::default(),
            max_request_body_bytes: None,
        });
        self.routes = routes.into_boxed_slice();
        let mut rules = std::mem::take(&mut self.rules).into_vec();
        self.local_app = Some(rules.len());
        rules.push(CompiledRule {
            route,
            index: 0,
            action: Action::Backend(backend),
            request_timeout: None,
            backend_request_timeout: None,
        });
        self.rules = rules.into_boxed_slice();
        self
    }

    /// The inbound route's rule, when [`CompiledTable::with_local_app`]
    /// added one.
    pub fn local_app_rule(&self) -> Option<RouteMatch<'_>> {
        let rule = &self.rules[self.local_app?];
        Some(RouteMatch {
            route: &self.routes[rule.route],
            rule,
        })
    }

    /// The table this was compiled from.
    pub fn table(&self) -> &Table {
        &self.table
    }

    /// The table's version.
    pub fn version(&self) -> &Version {
        self.table.version()
    }

    /// Backends, indexed by [`BackendId`].
    pub fn backends(&self) -> &[CompiledBackend] {
        &self.backends
    }

    /// One backend.
    pub fn backend(&self, id: BackendId) -> &CompiledBackend {
        &self.backends[id.0 as usize]
    }

    /// Each backend's share of traffic: the largest fraction of any rule's
    /// requests it receives (1 for a rule that names it alone, 0 when it
    /// takes no new requests). Indexed like [`CompiledTable::backends`].
    pub fn backend_shares(&self) -> Vec<f64> {
        let mut shares = vec![0.0f64; self.backends.len()];
        for rule in self.rules.iter() {
            match &rule.action {
                Action::Backend(id) if self.backends[id.0 as usize].drain.is_none() => {
                    shares[id.0 as usize] = 1.0;
                }
                Action::Split(split) => {
                    let total: u64 = split
                        .choices()
                        .iter()
                        .map(|c| u64::from(c.effective_weight))
                        .sum();
                    for choice in split.choices() {
                        if let (Target::Backend(id), true) = (choice.target, total > 0) {
                            let share = f64::from(choice.effective_weight) / total as f64;
                            let slot = &mut shares[id.0 as usize];
                            *slot = slot.max(share);
                        }
                    }
                }
                _ => {}
            }
        }
        shares
    }

    /// Routes, in table order.
    pub fn routes(&self) -> &[CompiledRoute] {
        &self.routes
    }

    /// Rules, in table order.
    pub fn rules(&self) -> &[CompiledRule] {
        &self.rules
    }
}

fn nonzero(duration: Option<Duration>) -> Option<Duration> {
    // Gateway API: a zero timeout disables the timeout.
    duration.filter(|d| !d.is_zero())
}

/// A route's destinations, validated before, as addresses.
fn parse_destinations(
    route_index: usize,
    destinations: &[String],
) -> Result<Box<[SocketAddr]>, InvalidTable> {
    destinations
        .iter()
        .enumerate()
        .map(|(i, destination)| {
            destination.parse().map_err(|_| {
                InvalidTable::one(
                    format!("routes[{route_index}].destinations[{i}]"),
                    format!("invalid destination {destination:?}"),
                )
            })
        })
        .collect()
}

fn compile_backend(name: &str, spec: &BackendSpec) -> CompiledBackend {
    CompiledBackend {
        name: name.to_owned(),
        endpoints: spec.endpoints.clone(),
        protocol: spec.protocol,
        drain: spec.drain.clone(),
        tls: spec.tls.clone(),
    }
}

fn compile_action(
    path: &str,
    rule: &RuleSpec,
    ids: &BTreeMap<&str, BackendId>,
    backends: &[CompiledBackend],
) -> Result<Action, InvalidTable> {
    let unknown = |name: &str| InvalidTable::one(path, format!("unknown backend {name:?}"));
    if let Some(name) = &rule.backend {
        return ids
            .get(name.as_str())
            .map(|id| Action::Backend(*id))
            .ok_or_else(|| unknown(name));
    }
    if let Some(response) = &rule.direct_response {
        return Ok(Action::DirectResponse {
            status: response.status,
            body: response.body.clone(),
        });
    }
    let Some(split) = &rule.split else {
        return Err(InvalidTable::one(path, "rule has no action"));
    };
    let mut entries = Vec::with_capacity(split.weights.len() + split.unresolved.len());
    for (name, weight) in &split.weights {
        let id = *ids.get(name.as_str()).ok_or_else(|| unknown(name))?;
        // A draining backend takes no share; soft drains let cohorts already
        // on it stay, which the proxy decides per request (`Split::pick_with`)
        // because the deadline is runtime state.
        let draining = backends[id.0 as usize].drain.is_some();
        let effective = if draining { 0 } else { *weight };
        entries.push((Target::Backend(id), name.as_str(), *weight, effective));
    }
    for unresolved in &split.unresolved {
        entries.push((
            Target::Unresolved,
            unresolved.reference.as_str(),
            unresolved.weight,
            unresolved.weight,
        ));
    }
    let cohort = match &split.cohort {
        None => None,
        Some(cohort) => {
            let source = |text: &str| {
                parse_key_source(text).map_err(|reason| InvalidTable::one(path, reason))
            };
            Some(Cohort::new(
                source(&cohort.from)?,
                cohort.fallback.as_deref().map(source).transpose()?,
                cohort.assign_cookie.as_ref().map(|c| AssignCookie {
                    name: c.name.clone(),
                    max_age: c.max_age.get(),
                }),
            ))
        }
    };
    Ok(Action::Split(Split::new(entries, cohort, split.mode)))
}
