//! A validated table and its version.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::problem::{InvalidTable, Problem};
use crate::spec::TableSpec;
use crate::validate::validate;

/// A table's version: `sha256:` and the hex digest of its canonical JSON.
///
/// The same table has the same version on every machine, whatever its input
/// format or key order; a version names exactly one table.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Version(String);

/// A validated, normalised, immutable table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    spec: TableSpec,
    canonical: Vec<u8>,
    version: Version,
    warnings: Vec<Problem>,
}

// === impl Version ===

impl Version {
    /// The version of canonical table bytes.
    fn of(canonical: &[u8]) -> Self {
        let digest = Sha256::digest(canonical);
        let mut text = String::with_capacity(7 + 64);
        text.push_str("sha256:");
        for byte in digest {
            text.push_str(&format!("{byte:02x}"));
        }
        Self(text)
    }

    /// The version as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// === impl Table ===

impl Table {
    /// Validates `spec`; `warnings` are those found while parsing (from
    /// `HTTPRoute` conversion). Any error rejects the whole table.
    pub fn from_spec(spec: TableSpec, warnings: Vec<Problem>) -> Result<Self, InvalidTable> {
        let from_httproute = !warnings.is_empty();
        let validated = validate(spec, !from_httproute);
        if !validated.errors.is_empty() {
            return Err(InvalidTable {
                problems: validated.errors,
            });
        }
        let mut all_warnings = warnings;
        all_warnings.extend(validated.warnings);
        // A spec of strings, integers, ordered maps and fixed-order structs
        // always serializes; failure here would be a bug in this crate.
        let canonical = serde_json::to_vec(&validated.spec).map_err(|e| {
            InvalidTable::one("", format!("internal error: table does not serialize: {e}"))
        })?;
        Ok(Self {
            version: Version::of(&canonical),
            spec: validated.spec,
            canonical,
            warnings: all_warnings,
        })
    }

    /// The normalised spec.
    pub fn spec(&self) -> &TableSpec {
        &self.spec
    }

    /// The version (content hash of [`Table::canonical_json`]).
    pub fn version(&self) -> &Version {
        &self.version
    }

    /// Problems reported but accepted (unresolved references, empty backends).
    pub fn warnings(&self) -> &[Problem] {
        &self.warnings
    }

    /// The canonical JSON: compact, keys in a fixed order, defaults explicit.
    /// It is valid native input and parses back to the same version.
    pub fn canonical_json(&self) -> &[u8] {
        &self.canonical
    }

    /// The table as indented JSON, for people.
    pub fn to_pretty_json(&self) -> String {
        serde_json::to_string_pretty(&self.spec).unwrap_or_default()
    }

    /// The table as YAML, for people.
    pub fn to_yaml(&self) -> String {
        serde_saphyr::to_string(&self.spec).unwrap_or_default()
    }
}

/// Renders any serializable value as YAML (for admin and CLI output), so
/// that callers need no YAML library of their own.
pub fn to_yaml_value<T: Serialize>(value: &T) -> Option<String> {
    serde_saphyr::to_string(value).ok()
}
