//! Messages of the control channel between `switchyard-control` and proxies.
//!
//! They live here, next to the table they carry, so that both ends compile
//! the same types without the proxy depending on the control plane's store.
//!
//! The channel is plain HTTP/JSON over one HTTP/2 connection per proxy:
//! - `GET /v1/subscribe?group=G&node=ID` answers with a stream of
//!   newline-delimited [`Push`] objects: the group's current table at once,
//!   then every new one. The control plane serializes each version once and
//!   writes the same bytes to every subscriber.
//! - `POST /v1/report` carries a [`Report`]: after every push (an ACK when
//!   `applied` is the pushed version, a NACK in `nack` otherwise) and every
//!   few seconds with drain state and traffic counts.

use serde::{Deserialize, Serialize};

/// The path proxies subscribe on.
pub const SUBSCRIBE_PATH: &str = "/v1/subscribe";
/// The path proxies report on.
pub const REPORT_PATH: &str = "/v1/report";

/// One table pushed to a proxy (one line of the subscription stream).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Push {
    /// The table's version as the control plane computed it.
    pub version: String,
    /// The table in canonical JSON, exactly as stored.
    pub table: Box<serde_json::value::RawValue>,
}

/// What a proxy tells the control plane about itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The proxy's `--node-id`.
    pub node: String,
    /// The proxy's `--group`.
    pub group: String,
    /// The version it serves (none before its first table).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied: Option<String>,
    /// Where the serving table came from (`control-plane`, `cache FILE`).
    #[serde(default)]
    pub source: String,
    /// The last pushed version it refused, while it still serves another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nack: Option<Nack>,
    /// Per backend of the serving table.
    #[serde(default)]
    pub backends: Vec<BackendReport>,
    /// Requests per (route, backend) since the previous report.
    #[serde(default)]
    pub traffic: Vec<PairTraffic>,
}

/// A refused version and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nack {
    /// The pushed version.
    pub version: String,
    /// Every reason, one per line.
    pub reason: String,
}

/// The state of one backend on one proxy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendReport {
    /// Backend name.
    pub name: String,
    /// `active`, `draining` or `drained`.
    pub state: String,
    /// Requests and tunnels running on it now.
    pub in_flight: i64,
    /// Seconds left before a drain cuts what still runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_deadline_in_seconds: Option<f64>,
    /// Responses since the previous report.
    pub requests: u64,
    /// 5xx responses since the previous report.
    pub errors: u64,
}

/// Responses of one (route, backend) pair since the previous report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairTraffic {
    /// Route name.
    pub route: String,
    /// Backend name.
    pub backend: String,
    /// Responses.
    pub requests: u64,
}
