//! The durable store: every table version, the audit trail, and the desired
//! version of each group, in one SQLite file.
//!
//! SQLite in WAL mode with `synchronous = FULL` makes each commit durable
//! before it returns, and a transaction is all or nothing, so a crash at any
//! moment loses no change the caller was told about and leaves no half-made
//! one. Every change (a new table, its audit record, the group's desired
//! version) is one transaction.

use std::path::Path;
use std::time::{Duration, SystemTime};

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

/// One audit record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// Sequence number, increasing.
    pub id: i64,
    /// Group changed.
    pub group: String,
    /// When, RFC 3339 (UTC).
    pub at: String,
    /// The token name that made the change.
    pub actor: String,
    /// What kind of change (`apply`, `set-weights`, `drain`, `rollback`, ...).
    pub kind: String,
    /// Free text from the caller (or the file a GitOps apply came from).
    pub message: String,
    /// The group's version before, if any.
    pub previous: Option<String>,
    /// The group's version after.
    pub version: String,
}

/// What a new change records besides the versions.
#[derive(Debug, Clone)]
pub struct ChangeNote<'a> {
    /// Token name.
    pub actor: &'a str,
    /// Kind of change.
    pub kind: &'a str,
    /// Message.
    pub message: &'a str,
}

/// The store (one connection; callers serialize access).
#[derive(Debug)]
pub struct Store {
    connection: Connection,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tables (
    version    TEXT PRIMARY KEY,
    body       BLOB NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS changes (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    group_name TEXT NOT NULL,
    at         INTEGER NOT NULL,
    actor      TEXT NOT NULL,
    kind       TEXT NOT NULL,
    message    TEXT NOT NULL,
    previous   TEXT REFERENCES tables(version),
    version    TEXT NOT NULL REFERENCES tables(version)
);
CREATE INDEX IF NOT EXISTS changes_by_group ON changes(group_name, id);
CREATE TABLE IF NOT EXISTS desired (
    group_name TEXT PRIMARY KEY,
    version    TEXT NOT NULL REFERENCES tables(version)
);
";

impl Store {
    /// Opens (or creates) the store in `directory`.
    pub fn open(directory: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(directory)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", directory.display()))?;
        let path = directory.join("switchyard.sqlite");
        let connection = Connection::open(&path)
            .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
        // WAL + FULL: a commit is on disk when it returns, and readers never
        // see a half-written transaction.
        connection.pragma_update(None, "journal_mode", "WAL")?;
        connection.pragma_update(None, "synchronous", "FULL")?;
        connection.pragma_update(None, "foreign_keys", "ON")?;
        connection.busy_timeout(Duration::from_secs(5))?;
        connection.execute_batch(SCHEMA)?;
        let integrity: String = connection.query_row("PRAGMA quick_check", [], |row| row.get(0))?;
        anyhow::ensure!(
            integrity == "ok",
            "store {} failed its integrity check: {integrity}",
            path.display()
        );
        Ok(Self { connection })
    }

    /// Records `version` (with `body`, its canonical JSON) as `group`'s
    /// desired version, in one transaction. Returns the change's id.
    pub fn record(
        &mut self,
        group: &str,
        version: &str,
        body: &[u8],
        previous: Option<&str>,
        note: &ChangeNote<'_>,
    ) -> anyhow::Result<i64> {
        let now = unix_millis(SystemTime::now());
        let transaction = self.connection.transaction()?;
        // Content-addressed and immutable: the same version is the same bytes.
        transaction.execute(
            "INSERT OR IGNORE INTO tables (version, body, created_at) VALUES (?1, ?2, ?3)",
            params![version, body, now],
        )?;
        transaction.execute(
            "INSERT INTO changes (group_name, at, actor, kind, message, previous, version)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                group,
                now,
                note.actor,
                note.kind,
                note.message,
                previous,
                version
            ],
        )?;
        let id = transaction.last_insert_rowid();
        transaction.execute(
            "INSERT INTO desired (group_name, version) VALUES (?1, ?2)
             ON CONFLICT(group_name) DO UPDATE SET version = excluded.version",
            params![group, version],
        )?;
        transaction.commit()?;
        Ok(id)
    }

    /// The canonical JSON of a stored version.
    pub fn table(&self, version: &str) -> anyhow::Result<Option<Vec<u8>>> {
        Ok(self
            .connection
            .query_row(
                "SELECT body FROM tables WHERE version = ?1",
                params![version],
                |row| row.get(0),
            )
            .optional()?)
    }

    /// Stored versions starting with `prefix` (at most two: one is an
    /// answer, two mean the prefix is ambiguous).
    pub fn resolve(&self, prefix: &str) -> anyhow::Result<Vec<String>> {
        let mut statement = self.connection.prepare(
            "SELECT version FROM tables WHERE substr(version, 1, length(?1)) = ?1 LIMIT 2",
        )?;
        let rows = statement.query_map(params![prefix], |row| row.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every group's desired version.
    pub fn desired(&self) -> anyhow::Result<Vec<(String, String)>> {
        let mut statement = self
            .connection
            .prepare("SELECT group_name, version FROM desired ORDER BY group_name")?;
        let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The newest `limit` changes, newest first, of one group or all.
    pub fn history(&self, group: Option<&str>, limit: u32) -> anyhow::Result<Vec<Change>> {
        let mut statement = self.connection.prepare(
            "SELECT id, group_name, at, actor, kind, message, previous, version FROM changes
             WHERE ?1 IS NULL OR group_name = ?1 ORDER BY id DESC LIMIT ?2",
        )?;
        let rows = statement.query_map(params![group, limit], |row| {
            Ok(Change {
                id: row.get(0)?,
                group: row.get(1)?,
                at: rfc3339(row.get(2)?),
                actor: row.get(3)?,
                kind: row.get(4)?,
                message: row.get(5)?,
                previous: row.get(6)?,
                version: row.get(7)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

fn unix_millis(time: SystemTime) -> i64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Unix milliseconds as RFC 3339 with millisecond precision.
pub fn rfc3339(millis: i64) -> String {
    let time = SystemTime::UNIX_EPOCH + Duration::from_millis(millis.max(0).unsigned_abs());
    humantime::format_rfc3339_millis(time).to_string()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn note() -> ChangeNote<'static> {
        ChangeNote {
            actor: "alice",
            kind: "apply",
            message: "first",
        }
    }

    #[test]
    fn a_change_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store = Store::open(dir.path()).unwrap();
            store.record("edge", "v1", b"{}", None, &note()).unwrap();
            store
                .record("edge", "v2", b"{\"a\":1}", Some("v1"), &note())
                .unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(
            store.desired().unwrap(),
            vec![("edge".to_owned(), "v2".to_owned())]
        );
        assert_eq!(store.table("v2").unwrap().unwrap(), b"{\"a\":1}");
        let history = store.history(Some("edge"), 10).unwrap();
        assert_eq!(history.len(), 2);
        assert_eq!(history[0].previous.as_deref(), Some("v1"));
        assert_eq!(history[0].actor, "alice");
        assert!(store.history(Some("other"), 10).unwrap().is_empty());
    }

    #[test]
    fn a_change_naming_an_unknown_previous_version_is_refused_whole() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let refused = store.record("edge", "v1", b"{}", Some("nope"), &note());
        assert!(refused.is_err(), "foreign key on `previous` holds");
        assert!(store.desired().unwrap().is_empty());
        assert!(store.table("v1").unwrap().is_none(), "rolled back whole");
    }
}
