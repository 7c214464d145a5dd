//! Problems found in a table: a field path and a reason.

use std::fmt;

/// One problem in a table, located by its field path
/// (`routes[2].rules[0].split.weights.gren`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where the problem is, as a path of fields and indices.
    pub path: String,
    /// What is wrong there, in lowercase.
    pub reason: String,
}

/// A table that was rejected whole, with every problem found in it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct InvalidTable {
    /// Every problem, in the order found (document order).
    pub problems: Vec<Problem>,
}

// === impl Problem ===

impl Problem {
    /// A problem at `path` for `reason`.
    pub fn new(path: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.reason)
        } else {
            write!(f, "{}: {}", self.path, self.reason)
        }
    }
}

// === impl InvalidTable ===

impl InvalidTable {
    /// A rejection with a single problem.
    pub fn one(path: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            problems: vec![Problem::new(path, reason)],
        }
    }
}

impl fmt::Display for InvalidTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid table ({} problem", self.problems.len())?;
        if self.problems.len() != 1 {
            f.write_str("s")?;
        }
        f.write_str(")")?;
        for problem in &self.problems {
            write!(f, "\n  {problem}")?;
        }
        Ok(())
    }
}

/// Joins a field path and a child: `join("routes[0]", "name")`.
pub(crate) fn join(parent: &str, child: &str) -> String {
    if parent.is_empty() {
        child.to_owned()
    } else if child.starts_with('[') {
        format!("{parent}{child}")
    } else {
        format!("{parent}.{child}")
    }
}
