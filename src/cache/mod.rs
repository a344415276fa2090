//! The local cache (`<cache>/`): the folder and its content-addressed
//! downloads and blobs, each kept with a fingerprint so a file edited in
//! place is never reused (this file); how a download gets into it
//! (`fetch`; where a locked input comes from is `crate::sources`); the layer
//! cache's records (`layers`); collecting its garbage (`gc`); and the
//! advisory lock that keeps a collection from racing a build (`lock`). It
//! knows nothing of how layers or images are built.

pub mod fetch;
pub mod gc;
pub mod layers;
pub mod lock;

use std::path::{Path, PathBuf};

use crate::digest::hash_file;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(
        "sha256 mismatch for `{file}` (expected {expected}, found {found}): the file changed upstream or in transit; run `ferry lock --update {name}` if the change is expected"
    )]
    Mismatch {
        file: String,
        name: String,
        expected: String,
        found: String,
    },
    #[error("`{file}` (sha256 {sha256}) is not in the cache{}, and --offline forbids downloading: run `ferry vendor` where the network is, and build with `--mirror BUNDLE`", if *mirror { " or the mirror" } else { "" })]
    Offline {
        file: String,
        sha256: String,
        mirror: bool,
    },
    #[error("`{what}` {} the {expected} bytes the lock records: the file changed upstream or in transit, or is not the locked one", match got { Some(n) => format!("ended after {n} of"), None => "holds more than".into() })]
    Size {
        what: String,
        expected: u64,
        /// What arrived when it was short; `None` when it was longer.
        got: Option<u64>,
    },
    #[error("`{}`: `url = \"{url}\"` names a file outside the definition's folder `{}` (links resolved): copy the file into that folder and name the copy", definition.display(), dir.display())]
    OutsideFileUrl {
        definition: PathBuf,
        url: String,
        dir: PathBuf,
    },
    #[error("cannot download `{url}`: {reason}")]
    Http { url: String, reason: String },
    #[error("`{tool}` failed for `{what}`: {reason}")]
    Tool {
        tool: String,
        what: String,
        reason: String,
    },
    #[error("`{}`", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> FetchError + '_ {
    move |source| FetchError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The cache folder: downloads, built layer blobs and the layer index.
#[derive(Debug, Clone)]
pub struct Cache {
    pub root: PathBuf,
}

impl Cache {
    pub fn new(explicit: Option<PathBuf>) -> Cache {
        let root = explicit.unwrap_or_else(|| {
            if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
                PathBuf::from(x).join("ferry")
            } else if let Some(h) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
                PathBuf::from(h).join(".cache/ferry")
            } else {
                PathBuf::from(".ferry-cache")
            }
        });
        Cache { root }
    }

    pub fn download(&self, sha256: &str) -> PathBuf {
        self.root.join("downloads/sha256").join(sha256)
    }
    pub fn blob(&self, digest: &str) -> PathBuf {
        self.root
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    }
    /// Where the fingerprint of a cached blob is kept (see [`Cache::stamp_blob`]).
    pub fn blob_stamp(&self, digest: &str) -> PathBuf {
        self.root
            .join("blobs/stamps")
            .join(digest.trim_start_matches("sha256:"))
    }

    /// Where the fingerprint of a download is kept.
    fn download_stamp(&self, sha256: &str) -> PathBuf {
        self.root.join("downloads/stamps").join(sha256)
    }

    /// Records the fingerprint (size, device, inode, mtime, ctime) of a blob
    /// ferry has just written and verified. Any write to the file later,
    /// through any name, changes its mtime and ctime.
    pub fn stamp_blob(&self, digest: &str) -> Result<(), FetchError> {
        write_stamp(&self.blob(digest), &self.blob_stamp(digest))
    }

    /// The cached blob `digest` of `size` bytes, if it is still what ferry
    /// wrote: its fingerprint is unchanged, or (when it is not, say after a
    /// copy of the cache) its bytes hash to `digest` again, which renews the
    /// stamp. A blob that fails is removed, so it is built or copied anew.
    pub fn cached_blob(&self, digest: &str, size: u64) -> Option<PathBuf> {
        let hex = digest.strip_prefix("sha256:")?;
        let p = self.blob(digest);
        still_verified(&p, &self.blob_stamp(digest), hex, size).then_some(p)
    }

    /// The cached download `sha256` of `size` bytes, checked as
    /// [`Cache::cached_blob`] checks a blob.
    pub fn cached_download(&self, sha256: &str, size: u64) -> Option<PathBuf> {
        let p = self.download(sha256);
        still_verified(&p, &self.download_stamp(sha256), sha256, size).then_some(p)
    }

    pub fn layer_record(&self, key: &str) -> PathBuf {
        self.root.join("layers").join(format!("{key}.json"))
    }
    pub fn tmp(&self) -> Result<PathBuf, FetchError> {
        let p = self.root.join("tmp");
        std::fs::create_dir_all(&p).map_err(io_err(&p))?;
        Ok(p)
    }
}

/// Reports download progress: (what, bytes so far, total if known).
pub type Progress<'a> = &'a (dyn Fn(&str, u64, Option<u64>) + Sync);

pub(crate) fn write_stamp(file: &Path, stamp: &Path) -> Result<(), FetchError> {
    let text = fingerprint(file).map_err(io_err(file))?;
    let dir = stamp.parent().expect("stamp path has a parent");
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    crate::fsutil::write_atomic(stamp, text.as_bytes()).map_err(io_err(stamp))
}

/// Whether `file` still holds the `size` bytes hashing to `hex` it held when
/// `stamp` was written; re-hashed (and re-stamped) when the fingerprint
/// differs, removed when the bytes did change.
fn still_verified(file: &Path, stamp: &Path, hex: &str, size: u64) -> bool {
    if !crate::grammar::is_hex64(hex) {
        return false;
    }
    let Ok(m) = std::fs::symlink_metadata(file) else {
        return false;
    };
    if !m.file_type().is_file() || m.len() != size {
        return false;
    }
    let recorded = std::fs::read_to_string(stamp).ok();
    if recorded.is_some() && recorded == fingerprint(file).ok() {
        return true;
    }
    match hash_file(file) {
        Ok((h, n)) if h == hex && n == size => write_stamp(file, stamp).is_ok(),
        _ => {
            let _ = std::fs::remove_file(stamp);
            let _ = std::fs::remove_file(file);
            false
        }
    }
}

/// What identifies one version of a file's bytes without reading them.
fn fingerprint(p: &Path) -> std::io::Result<String> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(p)?;
    Ok(format!(
        "size {} dev {} ino {} mtime {}.{:09} ctime {}.{:09}\n",
        m.size(),
        m.dev(),
        m.ino(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec()
    ))
}
