//! Serde types for Gateway API `HTTPRoute` (v1 and v1beta1).
//!
//! Every field of the v1 schema is known here, so a misspelt field is an error
//! rather than silently ignored. Fields we do not support yet are still
//! modelled (as raw JSON) so that the converter can reject them by field path.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use crate::duration::GwDuration;
use crate::spec::{PathMatchKind, ValueMatchKind};

/// An `HTTPRoute` object.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpRoute {
    /// `gateway.networking.k8s.io/v1` or `.../v1beta1`.
    pub api_version: String,
    /// Always `HTTPRoute`.
    pub kind: String,
    /// Kubernetes object metadata.
    pub metadata: ObjectMeta,
    /// The route itself.
    #[serde(default)]
    pub spec: HttpRouteSpec,
    /// Written by controllers; ignored on input.
    #[serde(default)]
    pub status: Option<Value>,
}

/// The subset of Kubernetes `ObjectMeta` with every field named.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ObjectMeta {
    /// Object name.
    #[serde(default)]
    pub name: Option<String>,
    /// Namespace; `default` when absent.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Creation time (RFC 3339); the oldest route wins precedence ties.
    #[serde(default)]
    pub creation_timestamp: Option<String>,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// Generation (set by the API server).
    #[serde(default)]
    pub generation: Option<i64>,
    /// Other server-managed fields, accepted and ignored.
    #[serde(default)]
    pub uid: Option<String>,
    /// See `uid`.
    #[serde(default)]
    pub resource_version: Option<String>,
    /// See `uid`.
    #[serde(default)]
    pub generate_name: Option<String>,
    /// See `uid`.
    #[serde(default)]
    pub self_link: Option<String>,
    /// See `uid`.
    #[serde(default)]
    pub deletion_timestamp: Option<String>,
    /// See `uid`.
    #[serde(default)]
    pub deletion_grace_period_seconds: Option<i64>,
    /// See `uid`.
    #[serde(default)]
    pub owner_references: Option<Value>,
    /// See `uid`.
    #[serde(default)]
    pub finalizers: Option<Vec<String>>,
    /// See `uid`.
    #[serde(default)]
    pub managed_fields: Option<Value>,
}

/// `HTTPRouteSpec`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpRouteSpec {
    /// Gateways or Services the route attaches to (not used in standalone mode).
    #[serde(default)]
    pub parent_refs: Vec<ParentReference>,
    /// Hostnames.
    #[serde(default)]
    pub hostnames: Vec<String>,
    /// Rules; absent means one rule matching `PathPrefix /` with no backends.
    #[serde(default)]
    pub rules: Option<Vec<HttpRouteRule>>,
}

/// `ParentReference`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ParentReference {
    /// API group of the parent.
    #[serde(default)]
    pub group: Option<String>,
    /// Kind of the parent (`Gateway`, `Service`).
    #[serde(default)]
    pub kind: Option<String>,
    /// Namespace of the parent.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Name of the parent.
    pub name: String,
    /// Listener name.
    #[serde(default)]
    pub section_name: Option<String>,
    /// Listener port.
    #[serde(default)]
    pub port: Option<i64>,
}

/// `HTTPRouteRule`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpRouteRule {
    /// Rule name.
    #[serde(default)]
    pub name: Option<String>,
    /// Matches; absent means `PathPrefix /`.
    #[serde(default)]
    pub matches: Option<Vec<HttpRouteMatch>>,
    /// Filters (not supported yet: rejected when present).
    #[serde(default)]
    pub filters: Option<Vec<Value>>,
    /// Backends with weights.
    #[serde(default)]
    pub backend_refs: Option<Vec<HttpBackendRef>>,
    /// Timeouts.
    #[serde(default)]
    pub timeouts: Option<HttpRouteTimeouts>,
    /// Retry policy (not supported yet: rejected when present).
    #[serde(default)]
    pub retry: Option<Value>,
    /// Session persistence (not supported yet: rejected when present).
    #[serde(default)]
    pub session_persistence: Option<Value>,
}

/// `HTTPRouteMatch`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpRouteMatch {
    /// Path match.
    #[serde(default)]
    pub path: Option<HttpPathMatch>,
    /// Header matches.
    #[serde(default)]
    pub headers: Vec<HttpValueMatch>,
    /// Query parameter matches.
    #[serde(default)]
    pub query_params: Vec<HttpValueMatch>,
    /// Method.
    #[serde(default)]
    pub method: Option<String>,
}

/// `HTTPPathMatch`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpPathMatch {
    /// Match type; `PathPrefix` when absent.
    #[serde(rename = "type", default)]
    pub kind: Option<PathMatchKind>,
    /// Value; `/` when absent.
    #[serde(default)]
    pub value: Option<String>,
}

/// `HTTPHeaderMatch` and `HTTPQueryParamMatch`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpValueMatch {
    /// Match type; `Exact` when absent.
    #[serde(rename = "type", default)]
    pub kind: Option<ValueMatchKind>,
    /// Header or parameter name.
    pub name: String,
    /// Value or regular expression.
    pub value: String,
}

/// `HTTPBackendRef`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpBackendRef {
    /// API group; core (`""`) when absent.
    #[serde(default)]
    pub group: Option<String>,
    /// Kind; `Service` when absent.
    #[serde(default)]
    pub kind: Option<String>,
    /// Name; resolved against the table's `backends` map.
    pub name: String,
    /// Namespace; the route's own when absent.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Port of the Service.
    #[serde(default)]
    pub port: Option<i64>,
    /// Weight, 0..=1,000,000; 1 when absent.
    #[serde(default)]
    pub weight: Option<i64>,
    /// Filters (not supported yet: rejected when present).
    #[serde(default)]
    pub filters: Option<Vec<Value>>,
}

/// `HTTPRouteTimeouts`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpRouteTimeouts {
    /// Whole request.
    #[serde(default)]
    pub request: Option<GwDuration>,
    /// One backend attempt.
    #[serde(default)]
    pub backend_request: Option<GwDuration>,
}
