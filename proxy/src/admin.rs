//! The admin listener: probes, the current table, backends, table upload.
//!
//! Reads are GET, changes are POST (Envoy and Linkerd style). It listens on
//! loopback by default; `POST /table` also requires a bearer token.

use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use serde::Serialize;
use serde_json::json;
use switchyard_config::load::MAX_TABLE_BYTES;
use switchyard_config::spec::TableSpec;

use crate::body::{ClientBody, ProxyBody};
use crate::settings::LogLevel;
use crate::state::Applier;

/// `GET /config`: the table in force, its version first.
#[derive(Debug, Serialize)]
struct ConfigView<'a> {
    version: &'a str,
    origin: &'a str,
    warnings: Vec<String>,
    table: &'a TableSpec,
}

/// The admin API over one applier (and its state).
#[derive(Debug, Clone)]
pub struct Admin {
    applier: Applier,
    token: Option<Arc<str>>,
    log_level: Option<LogLevel>,
}

// === impl Admin ===

impl Admin {
    /// An admin API; `token` enables `POST /table`.
    pub fn new(applier: Applier, token: Option<String>, log_level: Option<LogLevel>) -> Self {
        Self {
            applier,
            token: token.map(Arc::from),
            log_level,
        }
    }

    /// Handles one admin request.
    pub async fn handle(&self, request: Request<ClientBody>) -> Response<ProxyBody> {
        let path = request.uri().path().to_owned();
        let method = request.method().clone();
        match (path.as_str(), method) {
            ("/live", Method::GET) => text(StatusCode::OK, "live\n"),
            ("/ready", Method::GET) => self.ready(),
            ("/config", Method::GET) => self.config(request.uri().query()),
            ("/backends", Method::GET) => self.backends(),
            ("/metrics", Method::GET) => self.metrics(),
            ("/table", Method::POST) => self.post_table(request).await,
            ("/log-level", Method::POST) => self.log_level(request).await,
            ("/healthcheck/fail", Method::POST) => {
                self.applier.state().set_health_failed(true);
                text(StatusCode::OK, "readiness now fails\n")
            }
            ("/healthcheck/ok", Method::POST) => {
                self.applier.state().set_health_failed(false);
                text(StatusCode::OK, "readiness restored\n")
            }
            ("/live" | "/ready" | "/config" | "/backends" | "/metrics", _) => {
                method_not_allowed("GET")
            }
            ("/table" | "/log-level" | "/healthcheck/fail" | "/healthcheck/ok", _) => {
                method_not_allowed("POST")
            }
            _ => text(StatusCode::NOT_FOUND, "unknown admin path\n"),
        }
    }

    fn ready(&self) -> Response<ProxyBody> {
        let state = self.applier.state();
        match (state.not_ready_reason(), state.snapshot()) {
            (None, Some(snapshot)) => text(
                StatusCode::OK,
                &format!(
                    "ready {} from {}\n",
                    snapshot.table.version(),
                    snapshot.origin
                ),
            ),
            (reason, _) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("not ready: {}\n", reason.unwrap_or("no table loaded")),
            ),
        }
    }

    fn config(&self, query: Option<&str>) -> Response<ProxyBody> {
        let Some(snapshot) = self.applier.state().snapshot() else {
            return text(StatusCode::SERVICE_UNAVAILABLE, "no table loaded\n");
        };
        let table = snapshot.table.table();
        let warnings: Vec<String> = table.warnings().iter().map(ToString::to_string).collect();
        let document = ConfigView {
            version: table.version().as_str(),
            origin: &snapshot.origin,
            warnings,
            table: table.spec(),
        };
        let yaml = query.is_some_and(|q| q.split('&').any(|p| p == "format=yaml"));
        if yaml {
            match switchyard_config::table::to_yaml_value(&document) {
                Some(body) => with_type(StatusCode::OK, body, "application/yaml"),
                None => text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "table does not render as YAML\n",
                ),
            }
        } else {
            json_response(StatusCode::OK, &document)
        }
    }

    fn metrics(&self) -> Response<ProxyBody> {
        let state = self.applier.state();
        let backends = state
            .snapshot()
            .map(|s| s.backends.to_vec())
            .unwrap_or_default();
        with_type(
            StatusCode::OK,
            state.metrics().render(&backends),
            crate::metrics::CONTENT_TYPE,
        )
    }

    fn backends(&self) -> Response<ProxyBody> {
        let Some(snapshot) = self.applier.state().snapshot() else {
            return json_response(StatusCode::OK, &json!({ "backends": [] }));
        };
        let backends: Vec<serde_json::Value> = snapshot
            .backends
            .iter()
            .zip(snapshot.table.backends())
            .map(|(backend, compiled)| {
                let endpoints: Vec<serde_json::Value> = backend
                    .endpoints()
                    .iter()
                    .map(|e| {
                        json!({
                            "address": e.addr(),
                            "in_flight": e.in_flight(),
                            "idle_connections": e.idle_connections(),
                            "ejected": e.is_ejected(),
                            "connect_failures": e.connect_failures(),
                        })
                    })
                    .collect();
                json!({
                    "name": backend.name(),
                    "protocol": compiled.protocol,
                    "state": backend.drain_status().state,
                    "drain": backend.drain_status(),
                    "in_flight_requests": (backend.in_flight() - backend.open_tunnels()).max(0),
                    "endpoints": endpoints,
                })
            })
            .collect();
        json_response(
            StatusCode::OK,
            &json!({ "version": snapshot.table.version(), "backends": backends }),
        )
    }

    async fn log_level(&self, request: Request<ClientBody>) -> Response<ProxyBody> {
        let Some(log_level) = &self.log_level else {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "log level changes are not available in this process\n",
            );
        };
        let body = match Limited::new(request.into_body(), 4096).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(error) => {
                return text(StatusCode::PAYLOAD_TOO_LARGE, &format!("{error}\n"));
            }
        };
        let directives = String::from_utf8_lossy(&body).trim().to_owned();
        match log_level.set(&directives) {
            Ok(()) => {
                tracing::info!(%directives, "log level changed");
                text(StatusCode::OK, &format!("log level: {directives}\n"))
            }
            Err(reason) => text(
                StatusCode::BAD_REQUEST,
                &format!("invalid log directives {directives:?}: {reason}\n"),
            ),
        }
    }

    async fn post_table(&self, request: Request<ClientBody>) -> Response<ProxyBody> {
        let Some(token) = &self.token else {
            return text(
                StatusCode::FORBIDDEN,
                "POST /table is disabled: start the proxy with --admin-token-file\n",
            );
        };
        let presented = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !presented.is_some_and(|p| constant_time_eq(p.as_bytes(), token.as_bytes())) {
            let mut response = text(StatusCode::UNAUTHORIZED, "missing or wrong bearer token\n");
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return response;
        }
        let bytes = match Limited::new(request.into_body(), MAX_TABLE_BYTES)
            .collect()
            .await
        {
            Ok(collected) => collected.to_bytes(),
            Err(error) => {
                return text(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!("could not read the table: {error}\n"),
                );
            }
        };
        match self.applier.apply_logged(&bytes, "admin") {
            Ok(applied) => {
                let warnings: Vec<String> =
                    applied.warnings.iter().map(ToString::to_string).collect();
                json_response(
                    StatusCode::OK,
                    &json!({ "version": applied.version, "changed": applied.changed, "warnings": warnings }),
                )
            }
            Err(invalid) => {
                let errors: Vec<String> =
                    invalid.problems.iter().map(ToString::to_string).collect();
                json_response(StatusCode::BAD_REQUEST, &json!({ "errors": errors }))
            }
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn text(status: StatusCode, body: &str) -> Response<ProxyBody> {
    with_type(status, body.to_owned(), "text/plain; charset=utf-8")
}

fn json_response<T: Serialize>(status: StatusCode, value: &T) -> Response<ProxyBody> {
    let mut body = serde_json::to_string_pretty(value).unwrap_or_default();
    body.push('\n');
    with_type(status, body, "application/json")
}

fn with_type(status: StatusCode, body: String, content_type: &'static str) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::full(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn method_not_allowed(allow: &'static str) -> Response<ProxyBody> {
    let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}
