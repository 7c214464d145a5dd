//! GitOps source: a directory with one table file per group
//! (`edge-gateway.yaml` is group `edge-gateway`), applied when it changes.
//!
//! Polling rather than file events: a git checkout or a ConfigMap swap
//! touches many entries at once, and a poll every second costs nothing at
//! this scale. An invalid file is logged once per content and changes
//! nothing; drift shows in status as usual.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::daemon::{ChangeError, Control, Request};

/// Applies the files of `directory` every `interval` until the task is dropped.
pub async fn watch(control: Arc<Control>, directory: PathBuf, interval: Duration) {
    let mut seen: HashMap<PathBuf, Vec<u8>> = HashMap::new();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for (group, path) in table_files(&directory) {
            let Ok(bytes) = tokio::fs::read(&path).await else {
                continue;
            };
            if seen.get(&path) == Some(&bytes) {
                continue;
            }
            let request = Request {
                group: group.clone(),
                actor: "gitops".to_owned(),
                message: format!("file {}", path.display()),
                dry_run: false,
            };
            match control.apply(&request, &bytes).await {
                Ok(outcome) if outcome.changed => {
                    tracing::info!(%group, path = %path.display(), version = %outcome.version, "applied from the watched directory");
                }
                Ok(_) => {}
                Err(ChangeError::Invalid(invalid)) => {
                    for problem in &invalid.problems {
                        tracing::error!(%group, path = %path.display(), %problem, "table file rejected; the group keeps its desired version");
                    }
                }
                Err(ChangeError::Internal(failure)) => {
                    tracing::error!(%group, path = %path.display(), error = %format!("{failure:#}"), "could not record the table file; will retry");
                    // Not marked as seen: the next tick tries again.
                    continue;
                }
                Err(other) => {
                    tracing::error!(%group, path = %path.display(), error = ?other, "table file not applied");
                }
            }
            seen.insert(path, bytes);
        }
    }
}

/// `(group, path)` of every `*.yaml`, `*.yml` and `*.json` file.
fn table_files(directory: &Path) -> Vec<(String, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(directory) else {
        tracing::warn!(directory = %directory.display(), "cannot read the watched directory");
        return Vec::new();
    };
    let mut files: Vec<(String, PathBuf)> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            path.is_file()
                && path
                    .extension()
                    .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
        })
        .filter_map(|path| {
            let group = path.file_stem()?.to_str()?.to_owned();
            // Hidden files are editors' temporaries and ConfigMap internals.
            (!group.starts_with('.')).then_some((group, path))
        })
        .collect();
    files.sort();
    files
}
