//! Changes made on the desired table rather than sent whole: weights and
//! drains. Each produces a new spec that is validated like any other table.

use std::collections::BTreeMap;

use switchyard_config::GwDuration;
use switchyard_config::spec::{DrainMode, DrainSpec, TableSpec};

/// Why an edit cannot be made (answered 404 or 400).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EditError {
    /// A named route or backend is not in the table.
    NotFound(String),
    /// The edit does not fit the table.
    Invalid(String),
}

impl std::fmt::Display for EditError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotFound(what) | Self::Invalid(what) => f.write_str(what),
        }
    }
}

/// Replaces the weights of every split of `route` with `weights` (backends
/// not named get weight 0, so the command states the whole split).
pub fn set_weights(
    spec: &mut TableSpec,
    route: &str,
    weights: &BTreeMap<String, u32>,
) -> Result<(), EditError> {
    let found = spec
        .routes
        .iter_mut()
        .find(|r| r.name == route)
        .ok_or_else(|| EditError::NotFound(format!("route {route:?} is not in the table")))?;
    let mut splits = 0;
    for rule in &mut found.rules {
        if let Some(split) = &mut rule.split {
            let mut new = weights.clone();
            for name in split.weights.keys() {
                new.entry(name.clone()).or_insert(0);
            }
            split.weights = new;
            splits += 1;
        }
    }
    if splits == 0 {
        return Err(EditError::Invalid(format!(
            "route {route:?} has no split rule to set weights on"
        )));
    }
    Ok(())
}

/// Marks `backend` as draining.
pub fn drain(
    spec: &mut TableSpec,
    backend: &str,
    deadline: GwDuration,
    mode: DrainMode,
) -> Result<(), EditError> {
    let found = spec
        .backends
        .get_mut(backend)
        .ok_or_else(|| EditError::NotFound(format!("backend {backend:?} is not in the table")))?;
    found.drain = Some(DrainSpec { deadline, mode });
    Ok(())
}

/// Clears a drain of `backend`.
pub fn undrain(spec: &mut TableSpec, backend: &str) -> Result<(), EditError> {
    let found = spec
        .backends
        .get_mut(backend)
        .ok_or_else(|| EditError::NotFound(format!("backend {backend:?} is not in the table")))?;
    found.drain = None;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn spec() -> TableSpec {
        switchyard_config::parse_table(
            b"backends:\n  blue: { endpoints: [\"127.0.0.1:1\"] }\n  green: { endpoints: [\"127.0.0.1:2\"] }\nroutes:\n- name: web\n  rules:\n  - split: { weights: { blue: 100, green: 0 } }\n- name: api\n  rules:\n  - backend: blue\n",
        )
        .unwrap()
        .spec()
        .clone()
    }

    #[test]
    fn set_weights_states_the_whole_split() {
        let mut spec = spec();
        set_weights(&mut spec, "web", &[("green".to_owned(), 10)].into()).unwrap();
        let split = spec.routes[0].rules[0].split.as_ref().unwrap();
        assert_eq!(split.weights["blue"], 0);
        assert_eq!(split.weights["green"], 10);
        assert!(matches!(
            set_weights(&mut spec, "nope", &BTreeMap::new()),
            Err(EditError::NotFound(_))
        ));
        assert!(matches!(
            set_weights(&mut spec, "api", &BTreeMap::new()),
            Err(EditError::Invalid(_))
        ));
    }

    #[test]
    fn drain_and_undrain_toggle_the_backend() {
        let mut spec = spec();
        drain(&mut spec, "green", "30s".parse().unwrap(), DrainMode::Soft).unwrap();
        assert_eq!(
            spec.backends["green"].drain.as_ref().unwrap().mode,
            DrainMode::Soft
        );
        undrain(&mut spec, "green").unwrap();
        assert!(spec.backends["green"].drain.is_none());
        assert!(drain(&mut spec, "red", "1s".parse().unwrap(), DrainMode::Hard).is_err());
    }
}
