//! The advisory lock on the cache folder (`<cache>/lock`, flock(2) through
//! rustix, already a dependency: std's `File::lock` needs Rust 1.89, past
//! this crate's rust-version): commands that read or add to the cache (build,
//! lock, vendor) hold it shared, so they run side by side; `ferry gc
//! --local`, which deletes, holds it exclusively, so it never removes a blob
//! a build has found present and not yet recorded. The kernel drops the
//! lock when the process ends, however it ends. This module owns only the
//! lock; what is in the cache is the rest of `cache`'s (`fetch`,
//! `sources`, `gc`). Two sharers never clobber each other: every temp name
//! in the cache is made by `tempfile` (unique per process) and every final
//! name is content-addressed or written by rename.

use std::fs::File;

use rustix::fs::{FlockOperation, flock};
use std::path::{Path, PathBuf};

/// Held while the command runs; dropping it (closing the file) unlocks.
#[derive(Debug)]
pub struct CacheLock {
    _file: File,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Builds, locks and vendoring: they only add to the cache.
    Shared,
    /// Collecting the cache: it removes files.
    Exclusive,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot lock the cache `{}` (through `{}`)", root.display(), path.display())]
pub struct CacheLockError {
    root: PathBuf,
    path: PathBuf,
    #[source]
    source: std::io::Error,
}

/// Takes the lock on the cache at `root` in `mode`, creating the folder.
/// When another ferry holds it the other way, `waiting` is told (once)
/// what this command waits for, and the call blocks until it is free.
pub fn lock(
    root: &Path,
    mode: Mode,
    waiting: impl FnOnce(&str),
) -> Result<CacheLock, CacheLockError> {
    let path = root.join("lock");
    let err = |source| CacheLockError {
        root: root.to_path_buf(),
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(root).map_err(err)?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(err)?;
    let (now, blocking) = match mode {
        Mode::Shared => (
            FlockOperation::NonBlockingLockShared,
            FlockOperation::LockShared,
        ),
        Mode::Exclusive => (
            FlockOperation::NonBlockingLockExclusive,
            FlockOperation::LockExclusive,
        ),
    };
    match flock(&file, now) {
        Ok(()) => {}
        Err(rustix::io::Errno::WOULDBLOCK) => {
            waiting(&match mode {
                Mode::Shared => format!(
                    "waiting for `ferry gc --local` to finish with the cache `{}`",
                    root.display()
                ),
                Mode::Exclusive => format!(
                    "waiting for the ferry commands using the cache `{}` (builds, locks, vendoring) to finish",
                    root.display()
                ),
            });
            flock(&file, blocking).map_err(|e| err(e.into()))?;
        }
        Err(e) => return Err(err(e.into())),
    }
    Ok(CacheLock { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn sharers_do_not_wait_and_an_exclusive_holder_is_alone() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("cache");
        let waited = Cell::new(0);
        let wait = |_: &str| waited.set(waited.get() + 1);
        let a = lock(&root, Mode::Shared, wait).unwrap();
        let b = lock(&root, Mode::Shared, wait).unwrap();
        assert_eq!(waited.get(), 0);
        // a separate open file: flock locks belong to open files, so this
        // stands for another process
        let other = File::open(root.join("lock")).unwrap();
        assert_eq!(
            flock(&other, FlockOperation::NonBlockingLockExclusive),
            Err(rustix::io::Errno::WOULDBLOCK)
        );
        drop((a, b));
        flock(&other, FlockOperation::NonBlockingLockExclusive).unwrap();
        // and a sharer now waits, saying for whom
        let (tx, rx) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || {
            lock(&root, Mode::Shared, |m| tx.send(m.to_string()).unwrap()).is_ok()
        });
        let said = rx
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("the sharer says it waits");
        assert!(said.contains("ferry gc --local"), "{said}");
        flock(&other, FlockOperation::Unlock).unwrap();
        assert!(t.join().unwrap());
    }
}
