//! The control plane's one place that changes a group's desired table:
//! validate, record durably, then push.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use switchyard_config::spec::TableSpec;
use switchyard_config::{CompiledTable, InvalidTable, Table, parse_table};

use crate::edit::EditError;
use crate::fleet::Fleet;
use crate::store::{Change, ChangeNote, Store};
use crate::tokens::Tokens;

/// The daemon's state.
#[derive(Debug)]
pub struct Control {
    store: Arc<Mutex<Store>>,
    fleet: Arc<Fleet>,
    tokens: Tokens,
    /// One change at a time, so read-modify-write edits never interleave.
    changes: tokio::sync::Mutex<()>,
}

/// Who asks for a change and why.
#[derive(Debug, Clone)]
pub struct Request {
    /// Group to change.
    pub group: String,
    /// Token name.
    pub actor: String,
    /// Caller's message.
    pub message: String,
    /// Validate and diff only.
    pub dry_run: bool,
}

/// The result of a change (or of a dry run).
#[derive(Debug, Clone, Serialize)]
pub struct ChangeOutcome {
    /// Group.
    pub group: String,
    /// The version desired now (or that would be, on a dry run).
    pub version: String,
    /// The version desired before.
    pub previous: Option<String>,
    /// Whether the desired version changed (false on a dry run or no-op).
    pub changed: bool,
    /// Whether this was a dry run.
    pub dry_run: bool,
    /// Unified diff of the tables as YAML.
    pub diff: String,
    /// Warnings of the new table.
    pub warnings: Vec<String>,
}

/// Why a change was refused.
#[derive(Debug)]
pub enum ChangeError {
    /// The table is invalid: every problem (422).
    Invalid(InvalidTable),
    /// An edit does not fit the table (404 or 400).
    Edit(EditError),
    /// Nothing to act on (404).
    NotFound(String),
    /// The store failed (500); nothing changed.
    Internal(anyhow::Error),
}

impl Control {
    /// Opens the store in `data` and publishes every group's desired table.
    pub fn open(data: &Path, tokens: Tokens, drift_threshold: Duration) -> anyhow::Result<Self> {
        let store = Store::open(data)?;
        let fleet = Fleet::new(drift_threshold);
        for (group, version) in store.desired()? {
            let body = store.table(&version)?.ok_or_else(|| {
                anyhow::anyhow!("group {group}: desired version {version} is not in the store")
            })?;
            let table = parse_table(&body).map_err(|invalid| {
                anyhow::anyhow!(
                    "group {group}: stored version {version} no longer parses: {invalid}"
                )
            })?;
            anyhow::ensure!(
                table.version().as_str() == version,
                "group {group}: stored version {version} now hashes to {}",
                table.version()
            );
            fleet.publish(&group, Arc::new(table));
        }
        Ok(Self {
            store: Arc::new(Mutex::new(store)),
            fleet,
            tokens,
            changes: tokio::sync::Mutex::new(()),
        })
    }

    /// The fleet.
    pub fn fleet(&self) -> &Arc<Fleet> {
        &self.fleet
    }

    /// The tokens.
    pub fn tokens(&self) -> &Tokens {
        &self.tokens
    }

    /// Makes the table in `bytes` the group's desired table.
    pub async fn apply(
        &self,
        request: &Request,
        bytes: &[u8],
    ) -> Result<ChangeOutcome, ChangeError> {
        let table = validate(bytes)?;
        let _one_at_a_time = self.changes.lock().await;
        self.commit(request, "apply", table).await
    }

    /// Changes the group's desired table with `edit`.
    pub async fn edit(
        &self,
        request: &Request,
        kind: &str,
        edit: impl FnOnce(&mut TableSpec) -> Result<(), EditError>,
    ) -> Result<ChangeOutcome, ChangeError> {
        let _one_at_a_time = self.changes.lock().await;
        let current = self.fleet.desired(&request.group).ok_or_else(|| {
            ChangeError::NotFound(format!("group {:?} has no table yet", request.group))
        })?;
        let mut spec = current.spec().clone();
        edit(&mut spec).map_err(ChangeError::Edit)?;
        let table = Table::from_spec(spec, Vec::new()).map_err(ChangeError::Invalid)?;
        let table = compile_check(table)?;
        self.commit(request, kind, table).await
    }

    /// Re-applies a stored version byte for byte: `version`, or the one
    /// before the group's latest change.
    pub async fn rollback(
        &self,
        request: &Request,
        version: Option<&str>,
    ) -> Result<ChangeOutcome, ChangeError> {
        let _one_at_a_time = self.changes.lock().await;
        let target = match version {
            Some(version) => self.resolve(version).await?,
            None => self
                .history(Some(&request.group), 1)
                .await?
                .first()
                .and_then(|c| c.previous.clone())
                .ok_or_else(|| {
                    ChangeError::NotFound(format!(
                        "group {:?} has no earlier version to roll back to",
                        request.group
                    ))
                })?,
        };
        let store = self.store.clone();
        let lookup = target.clone();
        let body = blocking(move || lock(&store).table(&lookup))
            .await?
            .ok_or_else(|| {
                ChangeError::NotFound(format!("version {target} is not in the store"))
            })?;
        let table = validate(&body)?;
        if table.version().as_str() != target {
            return Err(ChangeError::Internal(anyhow::anyhow!(
                "stored version {target} now hashes to {}",
                table.version()
            )));
        }
        self.commit(request, "rollback", table).await
    }

    /// The one stored version `prefix` names (`sha256:` may be left out).
    async fn resolve(&self, prefix: &str) -> Result<String, ChangeError> {
        let full = if prefix.starts_with("sha256:") {
            prefix.to_owned()
        } else {
            format!("sha256:{prefix}")
        };
        if full.len() < "sha256:".len() + 8 {
            return Err(ChangeError::Edit(EditError::Invalid(format!(
                "version {prefix:?} is too short: give at least 8 hex digits"
            ))));
        }
        let store = self.store.clone();
        let lookup = full.clone();
        let found = blocking(move || lock(&store).resolve(&lookup)).await?;
        match found.as_slice() {
            [version] => Ok(version.clone()),
            [] => Err(ChangeError::NotFound(format!(
                "version {prefix} is not in the store"
            ))),
            _ => Err(ChangeError::Edit(EditError::Invalid(format!(
                "version {prefix} is ambiguous: give more digits"
            )))),
        }
    }

    /// The newest `limit` changes, newest first.
    pub async fn history(
        &self,
        group: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Change>, ChangeError> {
        let store = self.store.clone();
        let group = group.map(ToOwned::to_owned);
        blocking(move || lock(&store).history(group.as_deref(), limit)).await
    }

    /// The canonical JSON of a stored version.
    pub async fn table(&self, version: &str) -> Result<Option<Vec<u8>>, ChangeError> {
        let store = self.store.clone();
        let version = version.to_owned();
        blocking(move || lock(&store).table(&version)).await
    }

    /// Records and publishes `table`; the caller holds the change lock.
    async fn commit(
        &self,
        request: &Request,
        kind: &str,
        table: Table,
    ) -> Result<ChangeOutcome, ChangeError> {
        let previous = self.fleet.desired(&request.group);
        let previous_version = previous.as_ref().map(|t| t.version().as_str().to_owned());
        let mut outcome = ChangeOutcome {
            group: request.group.clone(),
            version: table.version().as_str().to_owned(),
            previous: previous_version.clone(),
            changed: false,
            dry_run: request.dry_run,
            diff: diff(previous.as_deref(), &table),
            warnings: table.warnings().iter().map(ToString::to_string).collect(),
        };
        if request.dry_run || previous_version.as_deref() == Some(outcome.version.as_str()) {
            return Ok(outcome);
        }
        let store = self.store.clone();
        let (group, version, actor, message, kind_owned) = (
            request.group.clone(),
            outcome.version.clone(),
            request.actor.clone(),
            request.message.clone(),
            kind.to_owned(),
        );
        let body = table.canonical_json().to_vec();
        blocking(move || {
            lock(&store).record(
                &group,
                &version,
                &body,
                previous_version.as_deref(),
                &ChangeNote {
                    actor: &actor,
                    kind: &kind_owned,
                    message: &message,
                },
            )
        })
        .await?;
        // Durable first, then pushed: a proxy never runs a version the
        // store could lose.
        self.fleet.publish(&request.group, Arc::new(table));
        outcome.changed = true;
        tracing::info!(group = %request.group, version = %outcome.version, actor = %request.actor, kind, "change recorded and pushed");
        Ok(outcome)
    }
}

/// Parses, validates and compiles a table, as a proxy would.
pub fn validate(bytes: &[u8]) -> Result<Table, ChangeError> {
    let table = parse_table(bytes).map_err(ChangeError::Invalid)?;
    compile_check(table)
}

fn compile_check(table: Table) -> Result<Table, ChangeError> {
    // Compiling catches what only the compiler checks (regular expressions).
    CompiledTable::compile(table.clone()).map_err(ChangeError::Invalid)?;
    Ok(table)
}

fn diff(previous: Option<&Table>, new: &Table) -> String {
    let old = previous.map(Table::to_yaml).unwrap_or_default();
    let new_text = new.to_yaml();
    similar::TextDiff::from_lines(&old, &new_text)
        .unified_diff()
        .context_radius(3)
        .header(
            previous.map_or("(none)", |t| t.version().as_str()),
            new.version().as_str(),
        )
        .to_string()
}

fn lock(store: &Mutex<Store>) -> std::sync::MutexGuard<'_, Store> {
    store.lock().unwrap_or_else(|p| p.into_inner())
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> Result<T, ChangeError> {
    // SQLite commits wait for fsync: keep them off the async workers.
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result.map_err(ChangeError::Internal),
        Err(join) => Err(ChangeError::Internal(anyhow::anyhow!(
            "store task failed: {join}"
        ))),
    }
}
