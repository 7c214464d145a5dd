//! Routing one request: match a rule, pick a backend.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Response, StatusCode, request};
use switchyard_config::compile::{Action, BackendId};
use switchyard_config::pick::Split;
use switchyard_config::{Picked, RequestHead, Target};

use crate::backend::Backend;
use crate::body::ProxyBody;
use crate::error::ProxyError;
use crate::headers::DECISION_HEADER;
use crate::settings::Settings;
use crate::sidecar::Intercepted;
use crate::state::Snapshot;

/// Where a request goes.
#[derive(Debug)]
pub(crate) enum Routed {
    /// Forward to a backend.
    Forward(Decision),
    /// Answer directly (a `direct_response` rule).
    Respond(Response<ProxyBody>),
}

/// A routing decision for one request.
#[derive(Debug)]
pub(crate) struct Decision {
    pub(crate) backend: Arc<Backend>,
    /// Route and backend indices in the snapshot (for metrics).
    pub(crate) route_index: usize,
    pub(crate) backend_index: usize,
    /// Whether the cohort key chose the backend.
    pub(crate) sticky: bool,
    pub(crate) request_timeout: Option<Duration>,
    pub(crate) backend_request_timeout: Option<Duration>,
    /// A cohort cookie to set on the response (key-less sticky client).
    pub(crate) set_cookie: Option<HeaderValue>,
}

/// Matches the request against the snapshot's table and picks a backend.
pub(crate) fn decide(
    snapshot: &Snapshot,
    parts: &request::Parts,
    settings: &Settings,
) -> Result<Routed, ProxyError> {
    let head = RequestHead::new(&parts.method, &parts.uri, &parts.headers);
    let found = match parts.extensions.get::<Intercepted>() {
        None => snapshot.table.route(&head),
        Some(Intercepted::Outbound(destination)) => snapshot
            .table
            .route(&head.with_destination(Some(*destination))),
        Some(Intercepted::Inbound) => snapshot.table.local_app_rule(),
    }
    .ok_or(ProxyError::NoRoute)?;
    let rule = found.rule;
    let mut set_cookie = None;
    let mut sticky = false;
    let id = match &rule.action {
        Action::DirectResponse { status, body } => {
            let mut response = Response::new(ProxyBody::full(body.clone()));
            *response.status_mut() = StatusCode::from_u16(*status).unwrap_or(StatusCode::OK);
            return Ok(Routed::Respond(response));
        }
        Action::Backend(id) => {
            let backend = snapshot.table.backend(*id);
            if backend.drain.is_some() {
                return Err(ProxyError::Draining(backend.name.clone()));
            }
            *id
        }
        Action::Split(split) => {
            let target = match trusted_decision(snapshot, split, parts, settings) {
                Some(target) => target,
                None => {
                    let soft_open =
                        |id: BackendId| snapshot.backends[id.0 as usize].soft_drain_open();
                    let random = settings.split_random.next_u64();
                    let (picked, cookie) = pick(split, &head, random, soft_open);
                    set_cookie = cookie;
                    let picked = picked.ok_or(ProxyError::AllDraining)?;
                    sticky = picked.sticky;
                    picked.target
                }
            };
            match target {
                Target::Backend(id) => id,
                Target::Unresolved => return Err(ProxyError::UnresolvedBackend),
            }
        }
    };
    Ok(Routed::Forward(Decision {
        backend: snapshot.backends[id.0 as usize].clone(),
        route_index: rule.route,
        backend_index: id.0 as usize,
        sticky,
        request_timeout: rule.request_timeout,
        backend_request_timeout: rule.backend_request_timeout,
        set_cookie,
    }))
}

/// Picks by cohort key, assigning one (and a cookie) when configured and the
/// request has none; otherwise by weight.
fn pick(
    split: &Split,
    head: &RequestHead<'_>,
    random: u64,
    soft_open: impl Fn(BackendId) -> bool,
) -> (Option<Picked>, Option<HeaderValue>) {
    let Some(cohort) = split.cohort() else {
        return (split.pick(None, random), None);
    };
    if let Some(key) = cohort.key(head) {
        return (split.pick_with(Some(&key), random, soft_open), None);
    }
    let Some(assign) = cohort.assign_cookie() else {
        return (split.pick(None, random), None);
    };
    let key = uuid::Uuid::new_v4().simple().to_string();
    let cookie = format!(
        "{}={key}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax",
        assign.name,
        assign.max_age.as_secs()
    );
    let picked = split.pick(Some(key.as_bytes()), random);
    (picked, HeaderValue::from_str(&cookie).ok())
}

/// The backend an upstream proxy already chose, when this proxy trusts the
/// decision header and the split can still send there.
fn trusted_decision(
    snapshot: &Snapshot,
    split: &Split,
    parts: &request::Parts,
    settings: &Settings,
) -> Option<Target> {
    if !settings.trust_decision_header {
        return None;
    }
    let wanted = parts.headers.get(DECISION_HEADER)?.as_bytes();
    split
        .choices()
        .iter()
        .find_map(|choice| match choice.target {
            Target::Backend(id)
                if choice.effective_weight > 0
                    && snapshot.table.backend(id).name.as_bytes() == wanted =>
            {
                Some(choice.target)
            }
            _ => None,
        })
}
