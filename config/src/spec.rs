//! The native table schema, as written in YAML or JSON.
//!
//! These types are also the table's canonical form: validation normalises a
//! `TableSpec` (defaults filled in, names lowercased, route timeouts pushed
//! down to rules) and the version is the hash of that normalised spec's JSON.
//! Every canonical form is itself valid native input, so a table can always be
//! re-applied from what `/config` shows.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::duration::GwDuration;

/// A whole routing table: named backends and the routes that use them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableSpec {
    /// Backends by name (a version of a service: `blue`, `green`, ...).
    #[serde(default)]
    pub backends: BTreeMap<String, BackendSpec>,
    /// Routes; their order is their age, the last tie-break of precedence.
    #[serde(default)]
    pub routes: Vec<RouteSpec>,
}

/// One backend: a set of endpoints serving one version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendSpec {
    /// Endpoints as `host:port` (`127.0.0.1:9001`, `[::1]:9001`, `blue.svc:80`).
    pub endpoints: Vec<String>,
    /// Protocol spoken to the endpoints.
    #[serde(default)]
    pub protocol: Protocol,
    /// When present, the backend is being drained and gets no new requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain: Option<DrainSpec>,
    /// When present, the proxy speaks TLS to the endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<BackendTlsSpec>,
}

/// TLS towards a backend's endpoints. The files are read by each proxy
/// when it applies the table (a proxy that cannot read them refuses it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendTlsSpec {
    /// PEM bundle of the CAs to trust; absent: the system's roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// Name sent as SNI and verified in the certificate; absent: the
    /// endpoint's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// Client certificate chain (PEM) for mutual TLS; needs `client_key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<String>,
    /// Client private key (PEM) for mutual TLS; needs `client_cert`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key: Option<String>,
}

/// Upstream protocol of a backend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// HTTP/1.1 with keep-alive.
    #[default]
    Http1,
    /// HTTP/2 over cleartext with prior knowledge.
    Http2,
}

/// A drain instruction for a backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrainSpec {
    /// How long in-flight work may run before it is cut.
    pub deadline: GwDuration,
    /// Whether sticky cohorts already on the backend stay until the deadline.
    #[serde(default)]
    pub mode: DrainMode,
}

/// How a drain treats sticky cohorts already on the backend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DrainMode {
    /// Everyone goes elsewhere at once.
    #[default]
    Hard,
    /// Cohorts already on the backend keep it until the deadline.
    Soft,
}

/// A route: hostnames and ordered rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    /// Unique name, used in metrics and logs.
    pub name: String,
    /// Hostnames (exact or `*.suffix`); empty means every host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
    /// Sidecar outbound only: the `IP:port` destinations (a Service's
    /// cluster IP and port) whose intercepted connections this route
    /// serves. A route with destinations answers nothing else, and such a
    /// connection sees only the routes that name its destination.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destinations: Vec<String>,
    /// Default timeouts for the route's rules (a rule's own win).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<TimeoutsSpec>,
    /// Largest request body this route accepts, in bytes (413 above); the
    /// proxy's `--max-request-body-bytes` applies when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_request_body_bytes: Option<u64>,
    /// Rules; a request takes the most specific matching one.
    pub rules: Vec<RuleSpec>,
}

/// Timeouts, named as in Gateway API `HTTPRouteTimeouts`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsSpec {
    /// From the request's start to the end of the response headers, retries included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<GwDuration>,
    /// One attempt to a backend, from sending the request to the response headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_request: Option<GwDuration>,
}

/// A rule: when it matches, and where it sends the request.
///
/// Exactly one of `backend`, `split` and `direct_response` is set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Optional name (Gateway API `rules[].name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Any one of these matches selects the rule; empty means `PathPrefix /`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<MatchSpec>,
    /// Timeouts for this rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<TimeoutsSpec>,
    /// Send every request to this backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// Split requests between backends by weight, optionally sticky by cohort.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<SplitSpec>,
    /// Answer directly without a backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct_response: Option<DirectResponseSpec>,
}

/// A request match; every condition given must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchSpec {
    /// Path condition; absent means `PathPrefix /`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathMatchSpec>,
    /// Header conditions (names are case-insensitive).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<ValueMatchSpec>,
    /// Query parameter conditions (names are case-sensitive).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query_params: Vec<ValueMatchSpec>,
    /// HTTP method (`GET`, `POST`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

/// A path condition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathMatchSpec {
    /// How `value` is compared.
    #[serde(rename = "type", default)]
    pub kind: PathMatchKind,
    /// The path, prefix or regular expression.
    #[serde(default = "root_path")]
    pub value: String,
}

/// Path comparison kinds (Gateway API names).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PathMatchKind {
    /// The whole path equals the value.
    Exact,
    /// The path starts with the value, element by element (`/abc` matches `/abc/d`, not `/abcd`).
    #[default]
    PathPrefix,
    /// The whole path matches the regular expression.
    RegularExpression,
}

/// A header or query parameter condition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValueMatchSpec {
    /// How `value` is compared.
    #[serde(rename = "type", default)]
    pub kind: ValueMatchKind,
    /// Header or parameter name.
    pub name: String,
    /// Expected value or regular expression.
    pub value: String,
}

/// Value comparison kinds (Gateway API names).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ValueMatchKind {
    /// Equal, byte for byte.
    #[default]
    Exact,
    /// The whole value matches the regular expression.
    RegularExpression,
}

/// A weighted split between backends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitSpec {
    /// Weight per backend name: integers 0..=1,000,000, proportional to their sum.
    pub weights: BTreeMap<String, u32>,
    /// When set, a request's backend is a stable function of its cohort key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cohort: Option<CohortSpec>,
    /// How requests without a cohort key are spread.
    #[serde(default, skip_serializing_if = "is_default")]
    pub mode: SplitMode,
    /// Shares of references that resolve to no backend: they are answered 500.
    /// Produced from `HTTPRoute` input; each is reported as a warning.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unresolved: Vec<UnresolvedSpec>,
}

/// How requests without a cohort key are spread over a split.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SplitMode {
    /// Independent random choice per request.
    #[default]
    Random,
    /// A low-discrepancy sequence: reproducible shares for load tests, exact
    /// to within one request over any run of requests.
    Sequence,
}

/// Where a cohort key comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CohortSpec {
    /// Key source: `header:NAME`, `cookie:NAME` or `query:NAME`.
    pub from: String,
    /// Second source, tried when the first is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
    /// When a request has no key, the proxy makes one and sets it in this cookie.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assign_cookie: Option<AssignCookieSpec>,
}

/// A cookie the proxy sets to keep a key-less client on its cohort.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssignCookieSpec {
    /// Cookie name.
    pub name: String,
    /// Cookie lifetime (`Max-Age`).
    #[serde(default = "default_cookie_max_age")]
    pub max_age: GwDuration,
}

/// A weighted reference that names no backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnresolvedSpec {
    /// The reference as written (`namespace/name`, with kind if not a Service).
    #[serde(rename = "ref")]
    pub reference: String,
    /// Its weight in the split.
    pub weight: u32,
}

/// A response made by the proxy itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectResponseSpec {
    /// Status code, 200..=599.
    pub status: u16,
    /// Body text.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub body: String,
}

fn root_path() -> String {
    "/".to_owned()
}

fn default_cookie_max_age() -> GwDuration {
    GwDuration(std::time::Duration::from_secs(30 * 24 * 3600))
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}
