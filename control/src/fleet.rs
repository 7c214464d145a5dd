//! The fleet in memory: each group's desired table (as the bytes pushed to
//! subscribers) and the latest report of each proxy.
//!
//! Nothing here is durable on purpose: desired versions are rebuilt from the
//! store at start, and proxies re-subscribe and report within seconds.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use serde::Serialize;
use switchyard_config::Table;
use switchyard_config::wire::{BackendReport, Nack, Report};
use tokio::sync::watch;

mod share;

pub use share::RouteShare;

/// Reports older than this no longer count towards observed traffic shares.
const SHARE_WINDOW: Duration = Duration::from_secs(60);

/// All groups.
#[derive(Debug)]
pub struct Fleet {
    groups: Mutex<HashMap<String, Group>>,
    /// A proxy out of sync for longer than this is flagged as drifting.
    drift_threshold: Duration,
}

#[derive(Debug)]
struct Group {
    desired: Option<Desired>,
    /// The push line of the desired version, shared by every subscriber.
    push: watch::Sender<Option<Bytes>>,
    proxies: BTreeMap<String, Proxy>,
}

#[derive(Debug, Clone)]
struct Desired {
    table: Arc<Table>,
    since: SystemTime,
}

#[derive(Debug, Default)]
struct Proxy {
    /// Open subscriptions (normally 0 or 1; 2 while a reconnect overlaps).
    subscriptions: u32,
    last_seen: Option<SystemTime>,
    report: Report,
    /// When it first reported a version other than the desired one.
    out_of_sync_since: Option<Instant>,
    traffic: VecDeque<(Instant, Vec<switchyard_config::wire::PairTraffic>)>,
}

/// Keeps a proxy counted as connected while its subscription stream lives.
#[derive(Debug)]
pub struct Subscription {
    fleet: Arc<Fleet>,
    group: String,
    node: String,
}

/// One group's status.
#[derive(Debug, Clone, Serialize)]
pub struct GroupStatus {
    /// Group name.
    pub group: String,
    /// The desired version.
    pub desired: Option<String>,
    /// When it became desired (RFC 3339).
    pub desired_since: Option<String>,
    /// Whether every connected proxy runs the desired version (and one is).
    pub live: bool,
    /// Connected proxies.
    pub connected: usize,
    /// Connected proxies on the desired version.
    pub in_sync: usize,
    /// Each proxy.
    pub proxies: Vec<ProxyStatus>,
    /// Each backend of the desired table across the connected proxies.
    pub backends: Vec<BackendSummary>,
    /// Observed traffic share per route and backend against the desired one.
    pub traffic: Vec<RouteShare>,
}

/// One proxy's status.
#[derive(Debug, Clone, Serialize)]
pub struct ProxyStatus {
    /// `--node-id`.
    pub node: String,
    /// Whether its subscription stream is open.
    pub connected: bool,
    /// Last subscription or report (RFC 3339).
    pub last_seen: Option<String>,
    /// The version it serves.
    pub applied: Option<String>,
    /// Whether that is the desired version.
    pub in_sync: bool,
    /// Out of sync for longer than the drift threshold.
    pub drift: bool,
    /// Where its table came from.
    pub source: String,
    /// A refused version with the reason.
    pub nack: Option<Nack>,
    /// Backends as it reported them.
    pub backends: Vec<BackendReport>,
}

/// A backend across a group's connected proxies.
#[derive(Debug, Clone, Serialize)]
pub struct BackendSummary {
    /// Backend name.
    pub name: String,
    /// Proxies where it is active, draining, drained.
    pub active: usize,
    /// See `active`.
    pub draining: usize,
    /// See `active`.
    pub drained: usize,
    /// Requests and tunnels running on it, summed.
    pub in_flight: i64,
}

impl Fleet {
    /// An empty fleet.
    pub fn new(drift_threshold: Duration) -> Arc<Self> {
        Arc::new(Self {
            groups: Mutex::new(HashMap::new()),
            drift_threshold,
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Group>> {
        // A panic while holding the lock leaves plain data; keep serving.
        self.groups.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The desired table of `group`.
    pub fn desired(&self, group: &str) -> Option<Arc<Table>> {
        self.lock()
            .get(group)
            .and_then(|g| g.desired.as_ref())
            .map(|d| d.table.clone())
    }

    /// Makes `table` the desired table of `group` and pushes it to every
    /// subscriber (serialized once here).
    pub fn publish(&self, group: &str, table: Arc<Table>) {
        let line = push_line(&table);
        let mut groups = self.lock();
        let entry = groups.entry(group.to_owned()).or_insert_with(Group::new);
        entry.desired = Some(Desired {
            table,
            since: SystemTime::now(),
        });
        entry.push.send_replace(Some(line));
    }

    /// Registers a subscriber: the receiver yields the group's push lines.
    pub fn subscribe(
        self: &Arc<Self>,
        group: &str,
        node: &str,
    ) -> (watch::Receiver<Option<Bytes>>, Subscription) {
        let mut groups = self.lock();
        let entry = groups.entry(group.to_owned()).or_insert_with(Group::new);
        let proxy = entry.proxies.entry(node.to_owned()).or_default();
        proxy.subscriptions += 1;
        proxy.last_seen = Some(SystemTime::now());
        let mut receiver = entry.push.subscribe();
        // The current table goes out at once.
        receiver.mark_changed();
        (
            receiver,
            Subscription {
                fleet: self.clone(),
                group: group.to_owned(),
                node: node.to_owned(),
            },
        )
    }

    /// Records a proxy's report.
    pub fn report(&self, report: Report) {
        let mut groups = self.lock();
        let entry = groups
            .entry(report.group.clone())
            .or_insert_with(Group::new);
        let desired = entry
            .desired
            .as_ref()
            .map(|d| d.table.version().as_str().to_owned());
        let proxy = entry.proxies.entry(report.node.clone()).or_default();
        let now = Instant::now();
        proxy.last_seen = Some(SystemTime::now());
        if desired.is_some() && report.applied == desired {
            proxy.out_of_sync_since = None;
        } else if proxy.out_of_sync_since.is_none() {
            proxy.out_of_sync_since = Some(now);
        }
        if !report.traffic.is_empty() {
            proxy.traffic.push_back((now, report.traffic.clone()));
        }
        while proxy
            .traffic
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > SHARE_WINDOW)
        {
            proxy.traffic.pop_front();
        }
        proxy.report = report;
    }

    /// Every group with a desired version or a proxy, by name.
    pub fn group_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.lock().keys().cloned().collect();
        names.sort();
        names
    }

    /// The status of `group` (an empty one if unknown).
    pub fn status(&self, group: &str) -> GroupStatus {
        let groups = self.lock();
        let now = Instant::now();
        let Some(entry) = groups.get(group) else {
            return GroupStatus {
                group: group.to_owned(),
                desired: None,
                desired_since: None,
                live: false,
                connected: 0,
                in_sync: 0,
                proxies: Vec::new(),
                backends: Vec::new(),
                traffic: Vec::new(),
            };
        };
        let desired = entry.desired.as_ref();
        let desired_version = desired.map(|d| d.table.version().as_str().to_owned());
        let proxies: Vec<ProxyStatus> = entry
            .proxies
            .iter()
            .map(|(node, proxy)| {
                let in_sync = desired_version.is_some() && proxy.report.applied == desired_version;
                ProxyStatus {
                    node: node.clone(),
                    connected: proxy.subscriptions > 0,
                    last_seen: proxy.last_seen.map(rfc3339),
                    applied: proxy.report.applied.clone(),
                    in_sync,
                    drift: !in_sync
                        && proxy
                            .out_of_sync_since
                            .is_some_and(|since| now.duration_since(since) > self.drift_threshold),
                    source: proxy.report.source.clone(),
                    nack: proxy.report.nack.clone(),
                    backends: proxy.report.backends.clone(),
                }
            })
            .collect();
        let connected: Vec<&ProxyStatus> = proxies.iter().filter(|p| p.connected).collect();
        let in_sync = connected.iter().filter(|p| p.in_sync).count();
        let backends = desired
            .map(|d| summarize_backends(&d.table, &connected))
            .unwrap_or_default();
        let traffic = desired
            .map(|d| {
                let samples = entry
                    .proxies
                    .values()
                    .filter(|p| p.subscriptions > 0)
                    .flat_map(|p| p.traffic.iter())
                    .filter(|(at, _)| now.duration_since(*at) <= SHARE_WINDOW)
                    .flat_map(|(_, pairs)| pairs.iter());
                share::route_shares(&d.table, samples)
            })
            .unwrap_or_default();
        GroupStatus {
            group: group.to_owned(),
            desired: desired_version,
            desired_since: desired.map(|d| rfc3339(d.since)),
            live: !connected.is_empty() && in_sync == connected.len(),
            connected: connected.len(),
            in_sync,
            proxies,
            backends,
            traffic,
        }
    }
}

fn summarize_backends(table: &Table, connected: &[&ProxyStatus]) -> Vec<BackendSummary> {
    table
        .spec()
        .backends
        .keys()
        .map(|name| {
            let mut summary = BackendSummary {
                name: name.clone(),
                active: 0,
                draining: 0,
                drained: 0,
                in_flight: 0,
            };
            for report in connected
                .iter()
                .flat_map(|p| p.backends.iter())
                .filter(|b| &b.name == name)
            {
                match report.state.as_str() {
                    "draining" => summary.draining += 1,
                    "drained" => summary.drained += 1,
                    _ => summary.active += 1,
                }
                summary.in_flight += report.in_flight;
            }
            summary
        })
        .collect()
}

/// The push line of a table: `{"version":"…","table":<canonical JSON>}\n`.
pub fn push_line(table: &Table) -> Bytes {
    let canonical = table.canonical_json();
    let version = table.version().as_str();
    let mut line = Vec::with_capacity(canonical.len() + version.len() + 32);
    line.extend_from_slice(b"{\"version\":\"");
    // A version is lowercase hex: nothing to escape.
    line.extend_from_slice(version.as_bytes());
    line.extend_from_slice(b"\",\"table\":");
    // Compact JSON never contains a raw newline, so lines frame pushes.
    line.extend_from_slice(canonical);
    line.extend_from_slice(b"}\n");
    Bytes::from(line)
}

fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

impl Group {
    fn new() -> Self {
        Self {
            desired: None,
            push: watch::channel(None).0,
            proxies: BTreeMap::new(),
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut groups = self.fleet.lock();
        if let Some(proxy) = groups
            .get_mut(&self.group)
            .and_then(|g| g.proxies.get_mut(&self.node))
        {
            proxy.subscriptions = proxy.subscriptions.saturating_sub(1);
            proxy.last_seen = Some(SystemTime::now());
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use switchyard_config::wire::Push;

    fn table(blue: u32, green: u32) -> Arc<Table> {
        let text = format!(
            "backends:\n  blue: {{ endpoints: [\"127.0.0.1:1\"] }}\n  green: {{ endpoints: [\"127.0.0.1:2\"] }}\nroutes:\n- name: web\n  rules:\n  - split: {{ weights: {{ blue: {blue}, green: {green} }} }}\n"
        );
        Arc::new(switchyard_config::parse_table(text.as_bytes()).unwrap())
    }

    #[test]
    fn a_push_line_parses_back_to_the_same_version() {
        let table = table(90, 10);
        let line = push_line(&table);
        assert!(line.ends_with(b"\n") && !line[..line.len() - 1].contains(&b'\n'));
        let push: Push = serde_json::from_slice(&line).unwrap();
        assert_eq!(push.version, table.version().as_str());
        let reparsed = switchyard_config::parse_table(push.table.get().as_bytes()).unwrap();
        assert_eq!(reparsed.version(), table.version());
    }

    #[test]
    fn live_needs_every_connected_proxy_on_the_desired_version() {
        let fleet = Fleet::new(Duration::from_secs(30));
        let old = table(100, 0);
        let new = table(50, 50);
        fleet.publish("edge", new.clone());
        assert!(!fleet.status("edge").live, "no proxy connected");
        let (_rx_a, a) = fleet.subscribe("edge", "a");
        let (_rx_b, b) = fleet.subscribe("edge", "b");
        let report = |node: &str, version: &Table| Report {
            node: node.to_owned(),
            group: "edge".to_owned(),
            applied: Some(version.version().as_str().to_owned()),
            ..Report::default()
        };
        fleet.report(report("a", &new));
        fleet.report(report("b", &old));
        let status = fleet.status("edge");
        assert_eq!(
            (status.connected, status.in_sync, status.live),
            (2, 1, false)
        );
        drop(b);
        let status = fleet.status("edge");
        assert_eq!(
            (status.connected, status.in_sync, status.live),
            (1, 1, true)
        );
        drop(a);
        assert!(!fleet.status("edge").live);
    }
}
