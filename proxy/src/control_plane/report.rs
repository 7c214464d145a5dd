//! Reports to the control plane: applied version, NACK, drain state, and
//! traffic counts since the previous report.

use std::collections::HashMap;

use switchyard_config::wire::{BackendReport, Nack, PairTraffic, Report};

use super::ControlPlane;
use crate::state::Applier;

/// Builds reports and remembers what the previous one counted.
#[derive(Debug)]
pub(super) struct Reporter {
    node: String,
    group: String,
    nack: Option<Nack>,
    /// Totals (all responses, 5xx) per (route, backend) at the last report.
    last_totals: HashMap<(String, String), (u64, u64)>,
}

impl Reporter {
    pub(super) fn new(plane: &ControlPlane) -> Self {
        Self {
            node: plane.node_id.clone(),
            group: plane.group.clone(),
            nack: None,
            last_totals: HashMap::new(),
        }
    }

    /// A pushed table was refused; the next report says why.
    pub(super) fn nack(&mut self, nack: Nack) {
        tracing::warn!(version = %nack.version, reason = %nack.reason, "refused a table from the control plane; the current table keeps serving");
        self.nack = Some(nack);
    }

    /// A pushed table was applied: any earlier refusal is history.
    pub(super) fn applied(&mut self) {
        self.nack = None;
    }

    /// The report of now; counts are the change since the previous one.
    pub(super) fn build(&mut self, applier: &Applier) -> Report {
        let mut report = Report {
            node: self.node.clone(),
            group: self.group.clone(),
            nack: self.nack.clone(),
            ..Report::default()
        };
        let Some(snapshot) = applier.state().snapshot() else {
            return report;
        };
        report.applied = Some(snapshot.table.version().as_str().to_owned());
        report.source = snapshot.origin.clone();
        let mut per_backend: HashMap<&str, (u64, u64)> = HashMap::new();
        let mut totals = HashMap::new();
        let local_app_route = snapshot
            .table
            .local_app_rule()
            .map(|found| found.rule.route);
        for ((route, backend), all, errors) in snapshot.metrics.pair_totals() {
            // The sidecar's inbound route is not the table's: not reported.
            if Some(route as usize) == local_app_route {
                continue;
            }
            let route_name = &snapshot.table.routes()[route as usize].name;
            let backend_name = &snapshot.table.backends()[backend as usize].name;
            let key = (route_name.clone(), backend_name.clone());
            let (last_all, last_errors) = self.last_totals.get(&key).copied().unwrap_or((0, 0));
            // A series removed and re-created by a swap starts again from 0.
            let delta = |now: u64, before: u64| if now >= before { now - before } else { now };
            let (new_all, new_errors) = (delta(all, last_all), delta(errors, last_errors));
            if new_all > 0 {
                report.traffic.push(PairTraffic {
                    route: key.0.clone(),
                    backend: key.1.clone(),
                    requests: new_all,
                });
            }
            let entry = per_backend.entry(backend_name.as_str()).or_default();
            entry.0 += new_all;
            entry.1 += new_errors;
            totals.insert(key, (all, errors));
        }
        self.last_totals = totals;
        report.backends = snapshot
            .backends
            .iter()
            .map(|backend| {
                let drain = backend.drain_status();
                let (requests, errors) = per_backend.get(backend.name()).copied().unwrap_or((0, 0));
                BackendReport {
                    name: backend.name().to_owned(),
                    state: drain.state.to_owned(),
                    in_flight: backend.in_flight(),
                    drain_deadline_in_seconds: drain.deadline_in_seconds,
                    requests,
                    errors,
                }
            })
            .collect();
        report
    }
}
