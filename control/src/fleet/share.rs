//! Observed traffic shares against the desired weights, per route.

use std::collections::BTreeMap;

use serde::Serialize;
use switchyard_config::Table;
use switchyard_config::wire::PairTraffic;

/// One route's shares.
#[derive(Debug, Clone, Serialize)]
pub struct RouteShare {
    /// Route name.
    pub route: String,
    /// Responses counted over the window, all backends.
    pub requests: u64,
    /// Per backend.
    pub backends: Vec<BackendShare>,
}

/// One backend's share of a route.
#[derive(Debug, Clone, Serialize)]
pub struct BackendShare {
    /// Backend name.
    pub backend: String,
    /// Share the table asks for (0..=1), when the route has a single
    /// forwarding rule; drained backends count as 0.
    pub desired: Option<f64>,
    /// Share of the route's responses it served over the window.
    pub observed: Option<f64>,
    /// Responses it served over the window.
    pub requests: u64,
}

/// Shares of every route of `table` from the traffic `samples`.
pub(super) fn route_shares<'a>(
    table: &Table,
    samples: impl Iterator<Item = &'a PairTraffic>,
) -> Vec<RouteShare> {
    let mut observed: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for sample in samples {
        *observed
            .entry((sample.route.as_str(), sample.backend.as_str()))
            .or_default() += sample.requests;
    }
    table
        .spec()
        .routes
        .iter()
        .map(|route| {
            let desired = desired_shares(table, route);
            let mut names: Vec<&str> = desired.keys().map(String::as_str).collect();
            for (r, backend) in observed.keys() {
                if *r == route.name && !names.contains(backend) {
                    names.push(backend);
                }
            }
            let count = |backend: &str| {
                observed
                    .get(&(route.name.as_str(), backend))
                    .copied()
                    .unwrap_or(0)
            };
            let total: u64 = names.iter().map(|b| count(b)).sum();
            let backends = names
                .iter()
                .map(|backend| BackendShare {
                    backend: (*backend).to_owned(),
                    desired: desired.get(*backend).copied(),
                    observed: (total > 0).then(|| count(backend) as f64 / total as f64),
                    requests: count(backend),
                })
                .collect();
            RouteShare {
                route: route.name.clone(),
                requests: total,
                backends,
            }
        })
        .collect()
}

/// The desired share per backend when the route forwards by one rule only;
/// with several rules the split depends on the requests, so none is given.
fn desired_shares(
    table: &Table,
    route: &switchyard_config::spec::RouteSpec,
) -> BTreeMap<String, f64> {
    let forwarding: Vec<_> = route
        .rules
        .iter()
        .filter(|r| r.backend.is_some() || r.split.is_some())
        .collect();
    let [rule] = forwarding[..] else {
        return BTreeMap::new();
    };
    let drained = |name: &str| {
        table
            .spec()
            .backends
            .get(name)
            .is_some_and(|b| b.drain.is_some())
    };
    let weights: BTreeMap<String, u64> = match (&rule.backend, &rule.split) {
        (Some(backend), _) => [(backend.clone(), 1)].into(),
        (None, Some(split)) => split
            .weights
            .iter()
            .map(|(name, weight)| (name.clone(), u64::from(*weight)))
            .collect(),
        (None, None) => BTreeMap::new(),
    };
    let total: u64 = weights
        .iter()
        .filter(|(name, _)| !drained(name))
        .map(|(_, w)| w)
        .sum();
    weights
        .iter()
        .map(|(name, weight)| {
            let share = if drained(name) || total == 0 {
                0.0
            } else {
                *weight as f64 / total as f64
            };
            (name.clone(), share)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn shares_compare_observed_counts_with_weights() {
        let table = switchyard_config::parse_table(
            b"backends:\n  blue: { endpoints: [\"127.0.0.1:1\"] }\n  green: { endpoints: [\"127.0.0.1:2\"], drain: { deadline: 10s } }\n  red: { endpoints: [\"127.0.0.1:3\"] }\nroutes:\n- name: web\n  rules:\n  - split: { weights: { blue: 60, green: 20, red: 20 } }\n",
        )
        .unwrap();
        let traffic = [
            PairTraffic {
                route: "web".into(),
                backend: "blue".into(),
                requests: 70,
            },
            PairTraffic {
                route: "web".into(),
                backend: "red".into(),
                requests: 30,
            },
        ];
        let shares = route_shares(&table, traffic.iter());
        let web = &shares[0];
        assert_eq!(web.requests, 100);
        let by_name = |n: &str| web.backends.iter().find(|b| b.backend == n).unwrap();
        assert_eq!(by_name("blue").desired, Some(0.75));
        assert_eq!(by_name("green").desired, Some(0.0), "drained");
        assert_eq!(by_name("red").desired, Some(0.25));
        assert_eq!(by_name("blue").observed, Some(0.7));
        assert_eq!(by_name("green").observed, Some(0.0));
    }
}
