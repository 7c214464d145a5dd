//! The HTTP/JSON API of the daemon.
//!
//! | call | role |
//! |---|---|
//! | `GET /live`, `GET /ready` | none (probes) |
//! | `GET /v1/subscribe?group=G&node=ID` (stream), `POST /v1/report` | proxy |
//! | `GET /v1/status[?group=G]`, `GET /v1/history[?group=G&limit=N]`, `GET /v1/tables/VERSION` | proxy |
//! | `POST /v1/groups/G/{apply,weights,drain,undrain,rollback}` | admin |
//!
//! An admin token may do everything; wrong or missing tokens get 401, a
//! proxy token on an admin call 403, and nothing changes.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use serde::de::DeserializeOwned;
use serde_json::json;
use switchyard_config::load::MAX_TABLE_BYTES;
use switchyard_config::wire::{REPORT_PATH, Report, SUBSCRIBE_PATH};

use crate::daemon::{ChangeError, Control, Request as ChangeRequest};
use crate::edit::{self, EditError};
use crate::tokens::{Denied, Role, Token};
use bodies::{ApplyBody, DrainBody, RollbackBody, UndrainBody, WeightsBody};

mod bodies;

/// Response body of every call.
pub type Body = BoxBody<Bytes, Infallible>;

/// Request bodies above this are refused with 413 (a table as a JSON string
/// can be twice its size once escaped).
pub const MAX_BODY_BYTES: usize = 2 * MAX_TABLE_BYTES + 64 * 1024;

/// Handles one request.
pub async fn handle(control: Arc<Control>, request: Request<Incoming>) -> Response<Body> {
    let path = request.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let method = request.method().clone();
    match (method, segments.as_slice()) {
        (Method::GET, ["live"]) => text(StatusCode::OK, "live\n"),
        (Method::GET, ["ready"]) => text(StatusCode::OK, "ready\n"),
        (Method::GET, _) if path == SUBSCRIBE_PATH => subscribe(&control, &request),
        (Method::POST, _) if path == REPORT_PATH => report(&control, request).await,
        (Method::GET, ["v1", "status"]) => status(&control, &request),
        (Method::GET, ["v1", "history"]) => history(&control, &request).await,
        (Method::GET, ["v1", "tables", version]) => table(&control, &request, version).await,
        (Method::POST, ["v1", "groups", group, action]) => {
            change(&control, request, group, action).await
        }
        (_, ["live" | "ready"] | ["v1", "status" | "history"] | ["v1", "tables", _]) => {
            error(StatusCode::METHOD_NOT_ALLOWED, "use GET")
        }
        (_, ["v1", "groups", _, _] | ["v1", "report"]) => {
            error(StatusCode::METHOD_NOT_ALLOWED, "use POST")
        }
        _ => error(StatusCode::NOT_FOUND, "unknown path"),
    }
}

/// A refused call, kept small; it becomes a JSON error response.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    message: String,
}

impl Refusal {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    fn into_response(self) -> Response<Body> {
        let mut response = error(self.status, &self.message);
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

fn authorize<'a>(
    control: &'a Control,
    request: &Request<Incoming>,
    role: Role,
) -> Result<&'a Token, Refusal> {
    let header = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    control
        .tokens()
        .check(header, role)
        .map_err(|denied| match denied {
            Denied::Unauthenticated => {
                Refusal::new(StatusCode::UNAUTHORIZED, "missing or unknown bearer token")
            }
            Denied::Forbidden => Refusal::new(
                StatusCode::FORBIDDEN,
                "this token's role may not change tables (an admin token is needed)",
            ),
        })
}

fn subscribe(control: &Control, request: &Request<Incoming>) -> Response<Body> {
    if let Err(denied) = authorize(control, request, Role::Proxy) {
        return denied.into_response();
    }
    let query = Query::parse(request.uri().query());
    let (group, node) = match (query.name("group"), query.name("node")) {
        (Ok(group), Ok(node)) => (group, node),
        (Err(message), _) | (_, Err(message)) => return error(StatusCode::BAD_REQUEST, &message),
    };
    let (receiver, subscription) = control.fleet().subscribe(&group, &node);
    tracing::info!(%group, %node, "proxy subscribed");
    let lines = futures_util::stream::unfold(
        (receiver, subscription),
        |(mut receiver, subscription)| async move {
            loop {
                // The sender lives as long as the fleet; an error means shutdown.
                receiver.changed().await.ok()?;
                let line = receiver.borrow_and_update().clone();
                if let Some(line) = line {
                    return Some((Ok(Frame::data(line)), (receiver, subscription)));
                }
            }
        },
    );
    let mut response = Response::new(StreamBody::new(lines).boxed());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/x-ndjson"),
    );
    response
}

async fn report(control: &Control, request: Request<Incoming>) -> Response<Body> {
    if let Err(denied) = authorize(control, &request, Role::Proxy) {
        return denied.into_response();
    }
    let report: Report = match read_json(request).await {
        Ok(report) => report,
        Err(refused) => return refused.into_response(),
    };
    if let Err(message) = check_name("group", &report.group).and(check_name("node", &report.node)) {
        return error(StatusCode::BAD_REQUEST, &message);
    }
    control.fleet().report(report);
    Response::new(Full::new(Bytes::new()).boxed())
}

fn status(control: &Control, request: &Request<Incoming>) -> Response<Body> {
    if let Err(denied) = authorize(control, request, Role::Proxy) {
        return denied.into_response();
    }
    let query = Query::parse(request.uri().query());
    match query.get("group") {
        Some(group) => json_response(StatusCode::OK, &control.fleet().status(group)),
        None => {
            let groups: Vec<_> = control
                .fleet()
                .group_names()
                .iter()
                .map(|g| control.fleet().status(g))
                .collect();
            json_response(StatusCode::OK, &json!({ "groups": groups }))
        }
    }
}

async fn history(control: &Control, request: &Request<Incoming>) -> Response<Body> {
    if let Err(denied) = authorize(control, request, Role::Proxy) {
        return denied.into_response();
    }
    let query = Query::parse(request.uri().query());
    let limit = match query.get("limit").map(str::parse::<u32>) {
        None => 50,
        Some(Ok(limit)) => limit.min(10_000),
        Some(Err(_)) => return error(StatusCode::BAD_REQUEST, "limit must be a number"),
    };
    match control.history(query.get("group"), limit).await {
        Ok(changes) => json_response(StatusCode::OK, &json!({ "changes": changes })),
        Err(failure) => change_error(failure),
    }
}

async fn table(control: &Control, request: &Request<Incoming>, version: &str) -> Response<Body> {
    if let Err(denied) = authorize(control, request, Role::Proxy) {
        return denied.into_response();
    }
    match control.table(version).await {
        Ok(Some(body)) => {
            let mut response = Response::new(Full::new(Bytes::from(body)).boxed());
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            response
        }
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            &format!("version {version} is not in the store"),
        ),
        Err(failure) => change_error(failure),
    }
}

async fn change(
    control: &Control,
    request: Request<Incoming>,
    group: &str,
    action: &str,
) -> Response<Body> {
    let actor = match authorize(control, &request, Role::Admin) {
        Ok(token) => token.name.clone(),
        Err(denied) => return denied.into_response(),
    };
    if let Err(message) = check_name("group", group) {
        return error(StatusCode::BAD_REQUEST, &message);
    }
    let base = |message: String, dry_run: bool| ChangeRequest {
        group: group.to_owned(),
        actor: actor.clone(),
        message,
        dry_run,
    };
    let outcome = match action {
        "apply" => match read_json::<ApplyBody>(request).await {
            Ok(body) => {
                control
                    .apply(&base(body.message, body.dry_run), body.table.as_bytes())
                    .await
            }
            Err(refused) => return refused.into_response(),
        },
        "weights" => match read_json::<WeightsBody>(request).await {
            Ok(body) => {
                let message = or_default(body.message, || {
                    let pairs: Vec<String> = body
                        .weights
                        .iter()
                        .map(|(b, w)| format!("{b}={w}"))
                        .collect();
                    format!("set-weights {} {}", body.route, pairs.join(" "))
                });
                control
                    .edit(&base(message, body.dry_run), "set-weights", |spec| {
                        edit::set_weights(spec, &body.route, &body.weights)
                    })
                    .await
            }
            Err(refused) => return refused.into_response(),
        },
        "drain" => match read_json::<DrainBody>(request).await {
            Ok(body) => {
                let message = or_default(body.message, || {
                    format!("drain {} deadline {}", body.backend, body.deadline)
                });
                control
                    .edit(&base(message, body.dry_run), "drain", |spec| {
                        edit::drain(spec, &body.backend, body.deadline, body.mode)
                    })
                    .await
            }
            Err(refused) => return refused.into_response(),
        },
        "undrain" => match read_json::<UndrainBody>(request).await {
            Ok(body) => {
                let message = or_default(body.message, || format!("undrain {}", body.backend));
                control
                    .edit(&base(message, body.dry_run), "undrain", |spec| {
                        edit::undrain(spec, &body.backend)
                    })
                    .await
            }
            Err(refused) => return refused.into_response(),
        },
        "rollback" => match read_json::<RollbackBody>(request).await {
            Ok(body) => {
                control
                    .rollback(&base(body.message, body.dry_run), body.version.as_deref())
                    .await
            }
            Err(refused) => return refused.into_response(),
        },
        _ => return error(StatusCode::NOT_FOUND, &format!("unknown action {action:?}")),
    };
    match outcome {
        Ok(outcome) => json_response(StatusCode::OK, &outcome),
        Err(failure) => change_error(failure),
    }
}

fn or_default(message: String, default: impl FnOnce() -> String) -> String {
    if message.is_empty() {
        default()
    } else {
        message
    }
}

fn change_error(failure: ChangeError) -> Response<Body> {
    match failure {
        ChangeError::Invalid(invalid) => {
            let problems: Vec<_> = invalid
                .problems
                .iter()
                .map(|p| json!({ "path": p.path, "reason": p.reason }))
                .collect();
            json_response(
                StatusCode::UNPROCESSABLE_ENTITY,
                &json!({
                    "error": format!("invalid table ({} problems); nothing changed", problems.len()),
                    "problems": problems,
                }),
            )
        }
        ChangeError::Edit(EditError::NotFound(message)) | ChangeError::NotFound(message) => {
            error(StatusCode::NOT_FOUND, &message)
        }
        ChangeError::Edit(EditError::Invalid(message)) => error(StatusCode::BAD_REQUEST, &message),
        ChangeError::Internal(failure) => {
            tracing::error!(error = %format!("{failure:#}"), "change failed; nothing changed");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("the store failed; nothing changed: {failure:#}"),
            )
        }
    }
}

async fn read_json<T: DeserializeOwned>(request: Request<Incoming>) -> Result<T, Refusal> {
    let bytes = match Limited::new(request.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(failure) => {
            let too_large = failure.is::<http_body_util::LengthLimitError>();
            return Err(if too_large {
                Refusal::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("request body is over {MAX_BODY_BYTES} bytes"),
                )
            } else {
                Refusal::new(
                    StatusCode::BAD_REQUEST,
                    format!("cannot read the body: {failure}"),
                )
            });
        }
    };
    serde_json::from_slice(&bytes)
        .map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")))
}

/// Group and node names: what fits a label and a file name.
fn check_name(what: &str, name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{what} {name:?} must be 1 to 253 characters of letters, digits, `-`, `_` and `.`"
        ))
    }
}

/// Query parameters, percent-decoded.
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(query: Option<&str>) -> Self {
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(&s.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        };
        Self(
            query
                .unwrap_or("")
                .split('&')
                .filter(|pair| !pair.is_empty())
                .map(|pair| {
                    let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                    (decode(name), decode(value))
                })
                .collect(),
        )
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// A required, valid name parameter.
    fn name(&self, name: &str) -> Result<String, String> {
        let value = self
            .get(name)
            .ok_or_else(|| format!("query parameter `{name}` is required"))?;
        check_name(name, value)?;
        Ok(value.to_owned())
    }
}

fn json_response<T: serde::Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    let mut body = serde_json::to_vec(value).unwrap_or_else(|e| {
        format!("{{\"error\":\"response does not serialize: {e}\"}}").into_bytes()
    });
    body.push(b'\n');
    let mut response = Response::new(Full::new(Bytes::from(body)).boxed());
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

fn error(status: StatusCode, message: &str) -> Response<Body> {
    json_response(status, &json!({ "error": message }))
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())).boxed());
    *response.status_mut() = status;
    response
}
