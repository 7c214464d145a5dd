//! Helpers shared by the config crate's integration tests.
// Test helpers: a panic is the failure report, so unwrap is the point.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use switchyard_config::compile::Action;
use switchyard_config::pick::Split;
use switchyard_config::{CompiledTable, RequestHead, Target, parse_table};

/// Compiles YAML or JSON, panicking with every problem on failure.
pub fn compile(text: &str) -> CompiledTable {
    let table = parse_table(text.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    CompiledTable::compile(table).unwrap_or_else(|e| panic!("{e}"))
}

/// A request for routing: `GET http://host/path?query` plus headers.
pub struct Req {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
}

impl Req {
    pub fn get(host: &str, path_and_query: &str) -> Self {
        Self::new(Method::GET, host, path_and_query)
    }

    pub fn new(method: Method, host: &str, path_and_query: &str) -> Self {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::HOST, HeaderValue::from_str(host).unwrap());
        Self {
            method,
            uri: path_and_query.parse().unwrap(),
            headers,
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
        self
    }

    pub fn head(&self) -> RequestHead<'_> {
        RequestHead::new(&self.method, &self.uri, &self.headers)
    }
}

/// Where the table sends `req`: the backend name, `"500"` for an unresolved
/// share, `"direct:<status>"`, or `"404"` when no route matches.
pub fn route_to(table: &CompiledTable, req: &Req, random: u64) -> String {
    let head = req.head();
    let Some(found) = table.route(&head) else {
        return "404".to_owned();
    };
    match &found.rule.action {
        Action::Backend(id) => table.backend(*id).name.clone(),
        Action::DirectResponse { status, .. } => format!("direct:{status}"),
        Action::Split(split) => {
            let key = split.cohort().and_then(|c| c.key(&head));
            match split.pick(key.as_deref(), random).map(|p| p.target) {
                Some(Target::Backend(id)) => table.backend(id).name.clone(),
                Some(Target::Unresolved) => "500".to_owned(),
                None => "503".to_owned(),
            }
        }
    }
}

/// The split of the first rule of the first route.
pub fn first_split(table: &CompiledTable) -> &Split {
    match &table.rules()[0].action {
        Action::Split(split) => split,
        other => panic!("expected a split, got {other:?}"),
    }
}

/// A native table with backends `b0..bN` and one split rule over them.
pub fn split_table(weights: &[u32], extra: &str) -> String {
    let mut text = String::from("backends:\n");
    for i in 0..weights.len() {
        text.push_str(&format!(
            "  b{i}: {{ endpoints: [\"127.0.0.1:{}\"] }}\n",
            9000 + i
        ));
    }
    text.push_str("routes:\n  - name: r\n    rules:\n      - split:\n          weights: {");
    let entries: Vec<String> = weights
        .iter()
        .enumerate()
        .map(|(i, w)| format!(" b{i}: {w}"))
        .collect();
    text.push_str(&entries.join(","));
    text.push_str(" }\n");
    text.push_str(extra);
    text
}
