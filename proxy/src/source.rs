//! Standalone table source: a file, reloaded like nginx on `SIGHUP` and
//! whenever it changes.
//!
//! The *directory* is watched, because Kubernetes updates a ConfigMap volume
//! by swapping a `..data` symlink, which never touches the file itself. A
//! poll of the content is the fallback for file systems without events.
//! Either way a bad table is logged with every problem and the last good one
//! keeps serving.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};

use crate::state::Applier;

/// Events within this window are handled once (editors and ConfigMap
/// updates write in several steps).
const SETTLE: Duration = Duration::from_millis(100);

/// Why a reload happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    /// File-system event or poll: apply only if the bytes changed.
    Change,
    /// SIGHUP: re-read and re-validate even if unchanged.
    Signal,
}

/// Reads and applies `path` at start. Errors are for the caller to report
/// (the binary exits 64, like `nginx -t` failing).
pub fn load_initial(applier: &Applier, path: &Path) -> anyhow::Result<Vec<u8>> {
    let bytes = std::fs::read(path)
        .map_err(|e| anyhow::anyhow!("cannot read table {}: {e}", path.display()))?;
    applier
        .apply_logged(&bytes, &origin(path))
        .map_err(|invalid| anyhow::anyhow!("table {}: {invalid}", path.display()))?;
    Ok(bytes)
}

/// Watches `path` until `shutdown`, applying every new content.
pub async fn watch_file(
    path: PathBuf,
    applier: Applier,
    mut last: Vec<u8>,
    poll_interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    warn_if_subpath_mount(&path);
    let (events_tx, mut events) = mpsc::channel::<()>(16);
    let directory = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let file_name = path.file_name().map(ToOwned::to_owned);
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let relevant = event.is_ok_and(|event| changes_table(&event, file_name.as_deref()));
        if relevant {
            // A full channel already holds a pending reload.
            let _ = events_tx.try_send(());
        }
    })
    .and_then(|mut watcher| {
        watcher.watch(&directory, RecursiveMode::NonRecursive)?;
        Ok(watcher)
    });
    let _watcher = match watcher {
        Ok(watcher) => Some(watcher),
        Err(error) => {
            tracing::warn!(%error, "cannot watch the table's directory; relying on polling and SIGHUP");
            None
        }
    };
    let mut hangup = hangup_signal();
    let mut poll = tokio::time::interval(poll_interval);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let trigger = tokio::select! {
            _ = crate::state::stopped(&mut shutdown) => return,
            Some(()) = events.recv() => {
                tokio::time::sleep(SETTLE).await;
                while events.try_recv().is_ok() {}
                Trigger::Change
            }
            Some(()) = recv_signal(&mut hangup) => Trigger::Signal,
            _ = poll.tick() => Trigger::Change,
        };
        let bytes = match tokio::fs::read(&path).await {
            Ok(bytes) => bytes,
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "cannot read the table; the last good table keeps serving");
                continue;
            }
        };
        if trigger == Trigger::Change && bytes == last {
            continue;
        }
        if trigger == Trigger::Signal {
            tracing::info!(path = %path.display(), "SIGHUP: reloading the table");
        }
        // The result is logged; a rejection keeps the old table.
        let _ = applier.apply_logged(&bytes, &origin(&path));
        last = bytes;
    }
}

/// Whether a file-system event may have changed the table: a change (not
/// a mere read: our own reads of the file raise open and access events,
/// which would otherwise trigger a read again, forever) of the table file
/// itself or of the `..data` style entries a ConfigMap volume swaps; the
/// directory may be busy with other files.
fn changes_table(event: &notify::Event, file_name: Option<&std::ffi::OsStr>) -> bool {
    if matches!(event.kind, notify::EventKind::Access(_)) {
        return false;
    }
    event.paths.iter().any(|p| {
        let name = p.file_name();
        name == file_name || name.is_some_and(|n| n.to_string_lossy().starts_with(".."))
    })
}

fn origin(path: &Path) -> String {
    format!("file {}", path.display())
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = Option<()>;

#[cfg(unix)]
fn hangup_signal() -> Hangup {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
}
#[cfg(not(unix))]
fn hangup_signal() -> Hangup {
    None
}

#[cfg(unix)]
async fn recv_signal(signal: &mut Hangup) -> Option<()> {
    match signal {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
}
#[cfg(not(unix))]
async fn recv_signal(_: &mut Hangup) -> Option<()> {
    std::future::pending().await
}

/// A file mounted with `subPath` is a mount point of its own, and Kubernetes
/// never updates it: reloads would silently never happen.
fn warn_if_subpath_mount(path: &Path) {
    let Ok(canonical) = path.canonicalize() else {
        return;
    };
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let is_mount_point = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .any(|mount_point| Path::new(mount_point) == canonical);
    if is_mount_point {
        tracing::warn!(path = %path.display(), "the table file is a mount point of its own (a Kubernetes subPath mount?); such files are never updated, so mount the ConfigMap as a directory");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{AccessKind, AccessMode, CreateKind, DataChange, EventKind, ModifyKind};

    fn event(kind: EventKind, path: &str) -> notify::Event {
        notify::Event::new(kind).add_path(PathBuf::from(path))
    }

    #[test]
    fn reads_of_the_table_are_not_changes() {
        let name = Some(std::ffi::OsStr::new("table.yaml"));
        let read = EventKind::Access(AccessKind::Close(AccessMode::Read));
        let opened = EventKind::Access(AccessKind::Open(AccessMode::Any));
        for kind in [read, opened] {
            assert!(!changes_table(&event(kind, "/etc/sy/table.yaml"), name));
        }
        let written = EventKind::Modify(ModifyKind::Data(DataChange::Any));
        assert!(changes_table(&event(written, "/etc/sy/table.yaml"), name));
        let swapped = EventKind::Create(CreateKind::Any);
        assert!(changes_table(&event(swapped, "/etc/sy/..data_tmp"), name));
        assert!(!changes_table(&event(written, "/etc/sy/other.yaml"), name));
    }
}
