//! Parsing table bytes: JSON or (multi-document) YAML, native or `HTTPRoute`.
//!
//! A file holds either one native table (`backends` and `routes`), or any
//! number of `HTTPRoute` documents plus at most one native document that holds
//! only `backends` (which resolve the routes' `backendRefs` by name).
//!
//! Schema errors (unknown field, wrong type) are reported per backend and per
//! route, so one bad route does not hide the problems of the others.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::httproute::{self, HttpRoute};
use crate::problem::{InvalidTable, Problem, join};
use crate::spec::{BackendSpec, RouteSpec, TableSpec};
use crate::table::Table;

/// Largest table accepted, in bytes.
pub const MAX_TABLE_BYTES: usize = 16 * 1024 * 1024;

/// A table as parsed, before validation: the native model and the warnings
/// found on the way (unresolved `backendRefs`).
#[derive(Debug, Clone)]
pub struct Parsed {
    /// The table in the native model.
    pub spec: TableSpec,
    /// Problems that do not reject the table.
    pub warnings: Vec<Problem>,
}

/// Parses, validates and normalises a table from JSON or YAML bytes.
pub fn parse_table(bytes: &[u8]) -> Result<Table, InvalidTable> {
    let parsed = parse_spec(bytes)?;
    Table::from_spec(parsed.spec, parsed.warnings)
}

/// Parses bytes into the native model without validating it.
pub fn parse_spec(bytes: &[u8]) -> Result<Parsed, InvalidTable> {
    if bytes.len() > MAX_TABLE_BYTES {
        return Err(InvalidTable::one(
            "",
            format!(
                "table is {} bytes; at most {MAX_TABLE_BYTES} are accepted",
                bytes.len()
            ),
        ));
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|e| InvalidTable::one("", format!("table is not valid UTF-8: {e}")))?;
    let documents = read_documents(text)?;
    let single = documents.len() == 1;
    let mut errors = Vec::new();
    let mut native: Option<(String, Map<String, Value>)> = None;
    let mut routes: Vec<(String, Value)> = Vec::new();
    for (index, document) in documents.into_iter().enumerate() {
        let path = if single {
            String::new()
        } else {
            format!("documents[{index}]")
        };
        match document {
            Value::Null => {}
            Value::Object(map) if map.contains_key("apiVersion") || map.contains_key("kind") => {
                routes.push((path, Value::Object(map)));
            }
            Value::Object(map) => {
                if let Some((first, _)) = &native {
                    errors.push(Problem::new(
                        path,
                        format!("a second native document; the first is {}", describe(first)),
                    ));
                } else {
                    native = Some((path, map));
                }
            }
            _ => errors.push(Problem::new(
                path,
                "expected a mapping (a native table or an HTTPRoute)",
            )),
        }
    }

    let (native_path, native_map) = native.unwrap_or_default();
    let mut spec = decode_native(&native_path, native_map, &mut errors);
    let mut warnings = Vec::new();
    if !routes.is_empty() {
        if !spec.routes.is_empty() {
            errors.push(Problem::new(
                join(&native_path, "routes"),
                "a table with HTTPRoute documents takes its routes from them; the native document may hold only backends",
            ));
        }
        let decoded = routes
            .into_iter()
            .filter_map(|(path, value)| {
                decode::<HttpRoute>(&path, value, &mut errors).map(|route| (path, route))
            })
            .collect();
        let converted = httproute::convert(decoded, &spec.backends);
        errors.extend(converted.errors);
        warnings = converted.warnings;
        spec.routes = converted.routes;
    }
    if errors.is_empty() {
        Ok(Parsed { spec, warnings })
    } else {
        Err(InvalidTable { problems: errors })
    }
}

fn describe(path: &str) -> &str {
    if path.is_empty() { "the file" } else { path }
}

fn read_documents(text: &str) -> Result<Vec<Value>, InvalidTable> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') {
        return serde_json::from_str::<Value>(text)
            .map(|v| vec![v])
            .map_err(|e| InvalidTable::one("", format!("invalid JSON: {e}")));
    }
    serde_saphyr::from_multiple::<Value>(text)
        .map_err(|e| InvalidTable::one("", format!("invalid YAML: {e}")))
}

/// Decodes the native document field by field so that every backend and
/// every route reports its own schema error.
fn decode_native(path: &str, map: Map<String, Value>, errors: &mut Vec<Problem>) -> TableSpec {
    let mut spec = TableSpec::default();
    for (key, value) in map {
        let field_path = join(path, &key);
        match key.as_str() {
            "backends" => {
                let Some(entries) = expect_object(&field_path, value, errors) else {
                    continue;
                };
                let mut backends = BTreeMap::new();
                for (name, value) in entries {
                    let backend_path = join(&field_path, &name);
                    if let Some(backend) = decode::<BackendSpec>(&backend_path, value, errors) {
                        backends.insert(name, backend);
                    }
                }
                spec.backends = backends;
            }
            "routes" => {
                let Value::Array(items) = value else {
                    errors.push(Problem::new(field_path, "expected a list of routes"));
                    continue;
                };
                spec.routes = items
                    .into_iter()
                    .enumerate()
                    .filter_map(|(i, value)| {
                        decode::<RouteSpec>(&join(&field_path, &format!("[{i}]")), value, errors)
                    })
                    .collect();
            }
            _ => errors.push(Problem::new(
                field_path,
                "unknown field, expected `backends` or `routes`",
            )),
        }
    }
    spec
}

fn expect_object(
    path: &str,
    value: Value,
    errors: &mut Vec<Problem>,
) -> Option<Map<String, Value>> {
    match value {
        Value::Object(map) => Some(map),
        Value::Null => Some(Map::new()),
        _ => {
            errors.push(Problem::new(path, "expected a mapping"));
            None
        }
    }
}

/// Deserializes `value`, reporting a failure at its full field path.
fn decode<T: DeserializeOwned>(path: &str, value: Value, errors: &mut Vec<Problem>) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(decoded) => Some(decoded),
        Err(error) => {
            let inner = error.path().to_string();
            let full = if inner == "." {
                path.to_owned()
            } else {
                join(path, &inner)
            };
            errors.push(Problem::new(full, error.into_inner().to_string()));
            None
        }
    }
}
