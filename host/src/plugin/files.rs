//! Plugins loaded from files (`--plugin NAME=PATH`, `plugins:` in `--config`) and reloaded
//! when a file changes: `notify` watches each file's directory (so editors' and cargo's
//! write-then-rename is seen), changes are debounced, and a file whose bytes did not change
//! is not reloaded. A file that fails to load is logged; the last good version keeps serving.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use notify::{RecursiveMode, Watcher};
use sha2::{Digest, Sha256};

use super::Plugins;
use super::loader::Source;

/// Quiet time after the last change before a file is reloaded.
const DEBOUNCE: Duration = Duration::from_millis(150);

/// Keeps the watch alive; dropping it stops reloading.
pub struct FileWatch {
    _watcher: notify::RecommendedWatcher,
}

fn load_file(plugins: &Plugins, name: &str, path: &PathBuf, last: &mut HashMap<String, Vec<u8>>) {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(plugin = name, path = %path.display(), "plugin file not readable, keeping the loaded version: {e}");
            return;
        }
    };
    let digest = Sha256::digest(&bytes).to_vec();
    if last.get(name) == Some(&digest) {
        return;
    }
    match plugins.load(name, &bytes, Source::File(path.display().to_string())) {
        Ok(_) => {
            last.insert(name.to_string(), digest);
        }
        Err(e) => {
            tracing::error!(plugin = name, path = %path.display(), "plugin file refused, keeping the loaded version: {e}")
        }
    }
}

/// Loads every file now and reloads each one when it changes.
pub fn watch(
    plugins: Arc<Plugins>,
    files: Vec<(String, PathBuf)>,
) -> notify::Result<Option<FileWatch>> {
    if files.is_empty() {
        return Ok(None);
    }
    let files: Vec<(String, PathBuf)> = files
        .into_iter()
        .map(|(n, p)| (n, std::path::absolute(&p).unwrap_or(p)))
        .collect();
    let mut last = HashMap::new();
    for (name, path) in &files {
        load_file(&plugins, name, path, &mut last);
    }
    let (tx, rx) = mpsc::channel::<notify::Result<notify::Event>>();
    let mut watcher = notify::recommended_watcher(tx)?;
    let mut dirs: Vec<PathBuf> = files
        .iter()
        .filter_map(|(_, p)| p.parent().map(PathBuf::from))
        .collect();
    dirs.sort();
    dirs.dedup();
    for d in &dirs {
        if let Err(e) = watcher.watch(d, RecursiveMode::NonRecursive) {
            tracing::error!(dir = %d.display(), "cannot watch plugin directory: {e}");
        }
    }
    std::thread::Builder::new()
        .name("plugin-files".into())
        .spawn(move || {
            let mut pending: HashMap<usize, Instant> = HashMap::new();
            loop {
                let wait = pending
                    .values()
                    .min()
                    .map_or(Duration::from_secs(3600), |t| {
                        (*t + DEBOUNCE).saturating_duration_since(Instant::now())
                    });
                match rx.recv_timeout(wait) {
                    Ok(Ok(event)) => {
                        for p in &event.paths {
                            for (i, (_, path)) in files.iter().enumerate() {
                                if p == path {
                                    pending.insert(i, Instant::now());
                                }
                            }
                        }
                    }
                    Ok(Err(e)) => tracing::warn!("plugin file watch: {e}"),
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                }
                let due: Vec<usize> = pending
                    .iter()
                    .filter(|(_, t)| t.elapsed() >= DEBOUNCE)
                    .map(|(i, _)| *i)
                    .collect();
                for i in due {
                    pending.remove(&i);
                    let (name, path) = &files[i];
                    if path.exists() {
                        load_file(&plugins, name, path, &mut last);
                    }
                }
            }
        })
        .map_err(|e| notify::Error::generic(&e.to_string()))?;
    Ok(Some(FileWatch { _watcher: watcher }))
}
