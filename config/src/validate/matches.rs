//! Validation of request matches: paths, headers, query parameters, method.

use super::checks::{check_path, check_regex};
use super::{MAX_VALUE_MATCHES, METHODS, Validator};
use crate::problem::join;
use crate::spec::{MatchSpec, PathMatchKind, PathMatchSpec, ValueMatchKind, ValueMatchSpec};

// === impl Validator (matches) ===

impl Validator {
    pub(super) fn request_match(&mut self, path: &str, m: MatchSpec) -> MatchSpec {
        let path_spec = m.path.unwrap_or(PathMatchSpec {
            kind: PathMatchKind::PathPrefix,
            value: "/".to_owned(),
        });
        let value_path = join(path, "path.value");
        let value = match path_spec.kind {
            PathMatchKind::RegularExpression => {
                if let Err(reason) = check_regex(&path_spec.value) {
                    self.error(&value_path, reason);
                }
                path_spec.value
            }
            PathMatchKind::Exact | PathMatchKind::PathPrefix => {
                if let Err(reason) = check_path(&path_spec.value) {
                    self.error(&value_path, reason);
                }
                // Gateway API ignores a prefix's trailing slash.
                let mut value = path_spec.value;
                if path_spec.kind == PathMatchKind::PathPrefix && value.len() > 1 {
                    while value.len() > 1 && value.ends_with('/') {
                        value.pop();
                    }
                }
                value
            }
        };
        let headers = self.value_matches(&join(path, "headers"), m.headers, true);
        let query_params = self.value_matches(&join(path, "query_params"), m.query_params, false);
        if let Some(method) = &m.method
            && !METHODS.contains(&method.as_str())
        {
            self.error(
                join(path, "method"),
                format!(
                    "unknown method {method:?}: expected one of {}",
                    METHODS.join(", ")
                ),
            );
        }
        MatchSpec {
            path: Some(PathMatchSpec {
                kind: path_spec.kind,
                value,
            }),
            headers,
            query_params,
            method: m.method,
        }
    }

    /// Header names are lowercased (HTTP names are case-insensitive); query
    /// names are kept. Later duplicates are dropped: the spec says the first wins.
    fn value_matches(
        &mut self,
        path: &str,
        list: Vec<ValueMatchSpec>,
        is_header: bool,
    ) -> Vec<ValueMatchSpec> {
        self.too_many(path, list.len(), MAX_VALUE_MATCHES, "conditions");
        let mut out: Vec<ValueMatchSpec> = Vec::with_capacity(list.len());
        for (i, mut entry) in list.into_iter().enumerate() {
            let entry_path = format!("{path}[{i}]");
            if is_header {
                entry.name = entry.name.to_ascii_lowercase();
                if http::HeaderName::from_bytes(entry.name.as_bytes()).is_err() {
                    self.error(
                        join(&entry_path, "name"),
                        format!("invalid header name {:?}", entry.name),
                    );
                }
            } else if entry.name.is_empty() || entry.name.len() > 256 {
                self.error(
                    join(&entry_path, "name"),
                    "a query parameter name needs 1-256 bytes",
                );
            }
            match entry.kind {
                ValueMatchKind::Exact => {
                    if is_header && http::HeaderValue::from_str(&entry.value).is_err() {
                        self.error(
                            join(&entry_path, "value"),
                            "invalid header value (control characters are not allowed)",
                        );
                    }
                }
                ValueMatchKind::RegularExpression => {
                    if let Err(reason) = check_regex(&entry.value) {
                        self.error(join(&entry_path, "value"), reason);
                    }
                }
            }
            if out.iter().any(|existing| existing.name == entry.name) {
                self.warn(
                    join(&entry_path, "name"),
                    format!(
                        "{:?} is matched by an earlier condition; this one is ignored",
                        entry.name
                    ),
                );
                continue;
            }
            out.push(entry);
        }
        out
    }
}
