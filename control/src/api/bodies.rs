//! The JSON bodies of the admin calls (`POST /v1/groups/G/ACTION`):
//! unknown fields are refused, `message` and `dry_run` are optional.
//!
//! `message` and `dry_run` are repeated in each body rather than shared
//! through `#[serde(flatten)]`: serde does not support `flatten` together
//! with `deny_unknown_fields`, and a misspelt field must stay an error.

use std::collections::BTreeMap;

use serde::Deserialize;
use switchyard_config::GwDuration;
use switchyard_config::spec::DrainMode;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ApplyBody {
    pub(super) table: String,
    #[serde(default)]
    pub(super) message: String,
    #[serde(default)]
    pub(super) dry_run: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WeightsBody {
    pub(super) route: String,
    pub(super) weights: BTreeMap<String, u32>,
    #[serde(default)]
    pub(super) message: String,
    #[serde(default)]
    pub(super) dry_run: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DrainBody {
    pub(super) backend: String,
    #[serde(default = "default_deadline")]
    pub(super) deadline: GwDuration,
    #[serde(default)]
    pub(super) mode: DrainMode,
    #[serde(default)]
    pub(super) message: String,
    #[serde(default)]
    pub(super) dry_run: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UndrainBody {
    pub(super) backend: String,
    #[serde(default)]
    pub(super) message: String,
    #[serde(default)]
    pub(super) dry_run: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RollbackBody {
    #[serde(default)]
    pub(super) version: Option<String>,
    #[serde(default)]
    pub(super) message: String,
    #[serde(default)]
    pub(super) dry_run: bool,
}

fn default_deadline() -> GwDuration {
    GwDuration(std::time::Duration::from_secs(30))
}
