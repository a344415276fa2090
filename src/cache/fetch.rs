//! The content-addressed download cache and the ways an input gets into it:
//! a `ferry vendor` bundle (folder or .tar), an http(s) or file URL, a
//! Debian mirror (see `crate::debian`), or `pip download`. Every byte is hashed while it
//! streams and checked against the lock before it is renamed into the cache.
//! Registries are reached only through their ordinary clients, so no host
//! name lives here.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::image::lock::{Artifact, ArtifactKind};
use crate::image::spec::SourceSpec;

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
    #[error(transparent)]
    Debian(Box<crate::debian::DebianError>),
    #[error("`{}`", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> FetchError + '_ {
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

/// What a stream must hold: exactly the locked size, named in errors as `what`.
struct Expect<'a> {
    size: u64,
    what: &'a str,
}

/// Hashes a reader into a temp file in the cache; returns (temp path, sha256,
/// size). With `expect`, no more than its size and one byte is ever read (an
/// endless stream cannot fill the disk before the hash check), and any other
/// length is an error.
fn stream_to_temp(
    cache: &Cache,
    r: &mut dyn Read,
    label: &str,
    total: Option<u64>,
    expect: Option<Expect>,
    progress: Progress,
) -> Result<(tempfile::TempPath, String, u64), FetchError> {
    let total = expect.as_ref().map(|e| e.size).or(total);
    let mut r = r.take(
        expect
            .as_ref()
            .map_or(u64::MAX, |e| e.size.saturating_add(1)),
    );
    let dir = cache.tmp()?;
    let tmp = tempfile::Builder::new()
        .prefix("dl-")
        .tempfile_in(&dir)
        .map_err(io_err(&dir))?;
    let (file, path) = tmp.into_parts();
    let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n: u64 = 0;
    let mut last = 0u64;
    loop {
        let k = r.read(&mut buf).map_err(|e| FetchError::Http {
            url: label.to_string(),
            reason: e.to_string(),
        })?;
        if k == 0 {
            break;
        }
        n += k as u64;
        if let Some(e) = expect.as_ref().filter(|e| n > e.size) {
            return Err(FetchError::Size {
                what: e.what.to_string(),
                expected: e.size,
                got: None,
            });
        }
        h.update(&buf[..k]);
        w.write_all(&buf[..k]).map_err(io_err(&path))?;
        if n - last >= 8 << 20 {
            progress(label, n, total);
            last = n;
        }
    }
    let file = w.into_inner().map_err(|e| FetchError::Io {
        path: path.to_path_buf(),
        source: e.into_error(),
    })?;
    if let Some(e) = expect.filter(|e| n != e.size) {
        return Err(FetchError::Size {
            what: e.what.to_string(),
            expected: e.size,
            got: Some(n),
        });
    }
    file.sync_all().map_err(io_err(&path))?;
    progress(label, n, total);
    Ok((path, hex::encode(h.finalize()), n))
}

/// Moves a verified temp file into the cache under its sha256.
fn commit(cache: &Cache, tmp: tempfile::TempPath, sha256: &str) -> Result<PathBuf, FetchError> {
    let dest = cache.download(sha256);
    let dir = dest.parent().expect("cache path has a parent");
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    crate::fsutil::readable(&tmp).map_err(io_err(&tmp))?;
    tmp.persist(&dest).map_err(|e| FetchError::Io {
        path: dest.clone(),
        source: e.error,
    })?;
    write_stamp(&dest, &cache.download_stamp(sha256))?;
    Ok(dest)
}

/// Puts the bytes of `r` into the cache; returns (path, sha256, size).
pub fn cache_reader(
    cache: &Cache,
    r: &mut dyn Read,
    label: &str,
    total: Option<u64>,
    progress: Progress,
) -> Result<(PathBuf, String, u64), FetchError> {
    let (tmp, sha, size) = stream_to_temp(cache, r, label, total, None, progress)?;
    let p = commit(cache, tmp, &sha)?;
    Ok((p, sha, size))
}

/// Opens a URL (http, https or file) of the definition `definition` as a
/// reader with its length when known. A `file://` URL may name only a regular
/// file under the definition's own folder, links resolved: a definition that
/// arrives in a pull request cannot have `/root/.ssh/id_rsa` hashed into its
/// lock and its image.
pub fn open_url(url: &str, definition: &Path) -> Result<(Box<dyn Read>, Option<u64>), FetchError> {
    if let Some(path) = url.strip_prefix("file://") {
        let cannot = |e: std::io::Error| FetchError::Http {
            url: url.to_string(),
            reason: e.to_string(),
        };
        let dir = crate::fsutil::parent_dir(definition);
        let real = std::fs::canonicalize(path).map_err(cannot)?;
        let root = std::fs::canonicalize(dir).map_err(io_err(dir))?;
        if !real.starts_with(&root) {
            return Err(FetchError::OutsideFileUrl {
                definition: definition.to_path_buf(),
                url: url.to_string(),
                dir: root,
            });
        }
        let f = crate::fsutil::open_regular(&real).map_err(cannot)?;
        let len = f.metadata().ok().map(|m| m.len());
        return Ok((Box::new(BufReader::new(f)), len));
    }
    match http_get(url)? {
        Some((r, len)) => Ok((r, len)),
        None => Err(FetchError::Http {
            url: url.to_string(),
            reason: "server answered 404 Not Found".into(),
        }),
    }
}

/// A reader that may cross to another thread (a pool file downloads on one).
pub type SendRead = Box<dyn Read + Send>;

/// GETs an http(s) URL, retrying transport errors and server errors; `None`
/// when the server answers 404 or 410 (a mirror without the file).
fn http_get(url: &str) -> Result<Option<(SendRead, Option<u64>)>, FetchError> {
    Ok(http_request(url, None)?.map(|resp| {
        let len = resp.content_length();
        (Box::new(resp) as SendRead, len)
    }))
}

fn http_request(
    url: &str,
    accept: Option<&str>,
) -> Result<Option<reqwest::blocking::Response>, FetchError> {
    let client = reqwest::blocking::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(20))
        .timeout(None)
        .user_agent(concat!("ferry/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| FetchError::Http {
            url: url.to_string(),
            reason: e.to_string(),
        })?;
    let mut last = String::new();
    for attempt in 0..4u32 {
        if attempt > 0 {
            std::thread::sleep(std::time::Duration::from_millis(500 << attempt));
        }
        let mut req = client.get(url);
        if let Some(a) = accept {
            req = req.header(reqwest::header::ACCEPT, a);
        }
        match req.send() {
            Ok(resp) if resp.status().is_success() => return Ok(Some(resp)),
            Ok(resp) if matches!(resp.status().as_u16(), 404 | 410) => return Ok(None),
            Ok(resp) if resp.status().is_server_error() => {
                last = format!("server answered {}", resp.status())
            }
            Ok(resp) => {
                return Err(FetchError::Http {
                    url: url.to_string(),
                    reason: format!("server answered {}", resp.status()),
                });
            }
            Err(e) => last = e.to_string(),
        }
    }
    Err(FetchError::Http {
        url: url.to_string(),
        reason: format!("{last} (after 4 attempts)"),
    })
}

/// GETs a web page asking for `accept`; `None` on 404. The flag says
/// whether the server answered JSON.
pub fn open_page(url: &str, accept: &str) -> Result<Option<(SendRead, bool)>, FetchError> {
    Ok(http_request(url, Some(accept))?.map(|resp| {
        let json = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("json"));
        (Box::new(resp) as SendRead, json)
    }))
}

/// Resolves a link of the page at `base` (which may be relative).
pub fn join_url(base: &str, link: &str) -> Result<String, FetchError> {
    let bad = |reason: String| FetchError::Http {
        url: link.to_string(),
        reason,
    };
    let u = reqwest::Url::parse(base)
        .and_then(|b| b.join(link))
        .map_err(|e| bad(e.to_string()))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(bad("a package index links to http(s) files only".into()));
    }
    Ok(u.to_string())
}

/// Opens a file of a configured mirror (http, https or file): `None` when
/// the mirror does not have it. A mirror is the user's configuration, not a
/// definition's, so a `file://` mirror may lie anywhere; its files must
/// still be regular files.
pub fn open_optional(url: &str) -> Result<Option<(SendRead, Option<u64>)>, FetchError> {
    if let Some(path) = url.strip_prefix("file://") {
        return match crate::fsutil::open_regular(Path::new(path)) {
            Ok(f) => {
                let len = f.metadata().ok().map(|m| m.len());
                Ok(Some((Box::new(BufReader::new(f)), len)))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(FetchError::Http {
                url: url.to_string(),
                reason: e.to_string(),
            }),
        };
    }
    http_get(url)
}

/// Streams `r` into the cache, which must give exactly `size` bytes hashing
/// to `sha256` (`what`, a URL say, is named when it does not); returns the
/// cached file.
pub fn fetch_verified(
    cache: &Cache,
    r: &mut dyn Read,
    label: &str,
    what: &str,
    size: u64,
    sha256: &str,
    progress: Progress,
) -> Result<PathBuf, FetchError> {
    let expect = Expect { size, what };
    let (tmp, sha, _) = stream_to_temp(cache, r, label, None, Some(expect), progress)?;
    if sha != sha256 {
        return Err(FetchError::Mismatch {
            file: what.to_string(),
            name: label.to_string(),
            expected: sha256.to_string(),
            found: sha,
        });
    }
    commit(cache, tmp, &sha)
}

/// Where inputs may come from besides the network.
pub struct Sources<'a> {
    pub cache: &'a Cache,
    pub offline: bool,
    pub mirror: Option<&'a Path>,
    pub progress: Progress<'a>,
    /// Every artifact of the lock: what a `.tar` bundle may put in the cache.
    pub locked: &'a [Artifact],
    /// The definition file, under whose folder `file://` URLs must lie.
    pub definition: &'a Path,
    /// The definition's Debian archive and the mirrors serving it.
    pub archive: Option<&'a crate::debian::Archive>,
    pub debian_mirrors: &'a crate::debian::Mirrors,
}

impl Sources<'_> {
    /// Fetches every Debian package of `artifacts` that is neither in the
    /// cache nor in the mirror from the Debian mirrors, several at once,
    /// verifying each against the lock.
    pub fn prefetch_debs(&self, artifacts: &[&Artifact]) -> Result<(), FetchError> {
        if self.offline {
            return Ok(());
        }
        let mut missing: Vec<Artifact> = Vec::new();
        for a in artifacts.iter().filter(|a| a.kind == ArtifactKind::Deb) {
            if self.cache.cached_download(&a.sha256, a.size).is_some()
                || missing.iter().any(|m| m.sha256 == a.sha256)
            {
                continue;
            }
            if let Some(m) = self.mirror
                && self.take_from_mirror(m, a)?.is_some()
            {
                continue;
            }
            missing.push((*a).clone());
        }
        self.download_debs(missing)
    }

    /// Downloads `debs` from the Debian mirrors; a lock written before ferry
    /// read the archive has no pool paths, which the indexes then give.
    fn download_debs(&self, mut debs: Vec<Artifact>) -> Result<(), FetchError> {
        if debs.is_empty() {
            return Ok(());
        }
        let debian = |e: crate::debian::DebianError| FetchError::Debian(Box::new(e));
        if debs.iter().any(|a| a.path.is_empty()) {
            let archive = self.archive.ok_or_else(|| FetchError::Tool {
                tool: "the lock".into(),
                what: self.definition.display().to_string(),
                reason: "its debs have no archive path and the definition has no `[debian]` table"
                    .into(),
            })?;
            crate::debian::fill_paths(
                &mut debs,
                archive,
                self.debian_mirrors,
                self.cache,
                self.progress,
            )
            .map_err(debian)?;
        }
        let refs: Vec<&Artifact> = debs.iter().collect();
        crate::debian::download(&refs, self.debian_mirrors, self.cache, self.progress)
            .map_err(debian)
    }

    /// Makes sure the locked artifact is in the cache and returns its path.
    pub fn ensure(&self, a: &Artifact, src: &SourceSpec) -> Result<PathBuf, FetchError> {
        if let Some(path) = self.cache.cached_download(&a.sha256, a.size) {
            return Ok(path);
        }
        if let Some(m) = self.mirror
            && let Some(p) = self.take_from_mirror(m, a)?
        {
            return Ok(p);
        }
        if self.offline {
            return Err(FetchError::Offline {
                file: a.file.clone(),
                sha256: a.sha256.clone(),
                mirror: self.mirror.is_some(),
            });
        }
        let (tmp, sha, _) = match a.kind {
            ArtifactKind::Url => {
                let url = src.url.as_deref().unwrap_or_default();
                let (mut r, _) = open_url(url, self.definition)?;
                let expect = Expect {
                    size: a.size,
                    what: url,
                };
                stream_to_temp(
                    self.cache,
                    &mut r,
                    &a.file,
                    None,
                    Some(expect),
                    self.progress,
                )?
            }
            ArtifactKind::Deb => {
                self.download_debs(vec![a.clone()])?;
                return self
                    .cache
                    .cached_download(&a.sha256, a.size)
                    .ok_or_else(|| FetchError::Offline {
                        file: a.file.clone(),
                        sha256: a.sha256.clone(),
                        mirror: false,
                    });
            }
            ArtifactKind::Pypi => {
                // from the index pip uses, by ferry itself; pip only when
                // the index does not list the file (a find-links folder)
                if let Some(p) = crate::pypi::fetch(a, self.cache, self.progress)? {
                    return Ok(p);
                }
                let file = pip_download(self.cache, PipWant::Locked(a), src, Some(&a.file))?;
                self.stream_file(&file, a)?
            }
        };
        if sha != a.sha256 {
            return Err(FetchError::Mismatch {
                file: a.file.clone(),
                name: a.name.clone(),
                expected: a.sha256.clone(),
                found: sha,
            });
        }
        commit(self.cache, tmp, &sha)
    }

    /// Hashes the regular file `p`, which must hold `a`'s locked size, into a temp file.
    fn stream_file(
        &self,
        p: &Path,
        a: &Artifact,
    ) -> Result<(tempfile::TempPath, String, u64), FetchError> {
        let mut f = crate::fsutil::open_regular(p).map_err(io_err(p))?;
        let what = p.display().to_string();
        let expect = Expect {
            size: a.size,
            what: &what,
        };
        stream_to_temp(
            self.cache,
            &mut f,
            &a.file,
            None,
            Some(expect),
            self.progress,
        )
    }

    fn take_from_mirror(&self, mirror: &Path, a: &Artifact) -> Result<Option<PathBuf>, FetchError> {
        if mirror.is_dir() {
            let p = mirror.join("sha256").join(&a.sha256);
            if std::fs::symlink_metadata(&p).is_err() {
                return Ok(None);
            }
            let (tmp, sha, _) = self.stream_file(&p, a)?;
            if sha != a.sha256 {
                return Err(FetchError::Mismatch {
                    file: p.display().to_string(),
                    name: a.name.clone(),
                    expected: a.sha256.clone(),
                    found: sha,
                });
            }
            return commit(self.cache, tmp, &sha).map(Some);
        }
        // a .tar bundle: take every locked member into the cache once,
        // verifying each; what no lock names, or is not a plain regular
        // member (a sparse one declares any size in no bytes), is never read
        let f = File::open(mirror).map_err(io_err(mirror))?;
        let mut ar = crate::inputs::archive::tar_reader(BufReader::new(f));
        let bad = |e: std::io::Error| FetchError::Io {
            path: mirror.to_path_buf(),
            source: e,
        };
        for entry in ar.entries().map_err(bad)? {
            let mut entry = entry.map_err(bad)?;
            let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let Some(hex) = name.trim_start_matches("./").strip_prefix("sha256/") else {
                continue;
            };
            // a member name becomes a cache path only as a digest
            if !crate::grammar::is_hex64(hex)
                || entry.header().entry_type() != tar::EntryType::Regular
                || self.cache.download(hex).exists()
            {
                continue;
            }
            let Some(locked) = self.locked.iter().find(|l| l.sha256 == hex) else {
                continue;
            };
            let expected = hex.to_string();
            let what = format!("{}:{name}", mirror.display());
            let expect = Expect {
                size: locked.size,
                what: &what,
            };
            let (tmp, sha, _) = stream_to_temp(
                self.cache,
                &mut entry,
                &name,
                None,
                Some(expect),
                self.progress,
            )?;
            if sha != expected {
                return Err(FetchError::Mismatch {
                    file: format!("{}:{name}", mirror.display()),
                    name: a.name.clone(),
                    expected,
                    found: sha,
                });
            }
            commit(self.cache, tmp, &sha)?;
        }
        let p = self.cache.download(&a.sha256);
        Ok(p.exists().then_some(p))
    }
}

/// What `pip download` is asked for.
pub enum PipWant<'a> {
    /// At lock time: a requirement as the definition writes it. pip may run
    /// an sdist's build backend to read its metadata, as it always does.
    Request(&'a str),
    /// At build time: the locked file. pip is given its sha256 with
    /// `--require-hashes` and checks it as the file arrives, before it
    /// unpacks or builds anything. pip then prepares an sdist's metadata; it
    /// does so without build isolation, with the build machine's own build
    /// backend (setuptools), since an isolated environment is filled from the
    /// index with no hash check (pypa/pip#11974): nothing but the hashed file
    /// is read from the index, and the sdist's own code runs only once its
    /// bytes are the locked ones.
    Locked(&'a Artifact),
}

/// Runs `pip download` for one requirement, for the image's platform when
/// the source names one; returns the downloaded file (kept in the cache's tmp).
pub fn pip_download(
    cache: &Cache,
    want: PipWant,
    src: &SourceSpec,
    want_file: Option<&str>,
) -> Result<PathBuf, FetchError> {
    let base = cache.tmp()?;
    let dir = tempfile::Builder::new()
        .prefix("pip-")
        .tempdir_in(&base)
        .map_err(io_err(&base))?
        .keep();
    let req = match &want {
        PipWant::Request(r) => r.to_string(),
        PipWant::Locked(a) => format!("{}=={}", a.name, a.version),
    };
    let req = req.as_str();
    let mut cmd = pip_command(&dir, &want, src, want_file)?;
    let out = cmd.output().map_err(|e| FetchError::Tool {
        tool: "pip download".into(),
        what: req.to_string(),
        reason: e.to_string(),
    })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let mut reason = err
            .lines()
            .filter(|l| {
                let l = l.trim_start();
                l.starts_with("ERROR")
                    || l.starts_with("error:")
                    || l.starts_with("ModuleNotFoundError")
                    || l.starts_with("Expected sha256")
                    || l.starts_with("Got ")
            })
            .map(str::trim)
            .collect::<Vec<_>>()
            .join(" ");
        if matches!(want, PipWant::Locked(_)) && is_sdist(want_file) && !reason.contains("sha256") {
            reason.push_str(" (a locked sdist's metadata is prepared with this machine's own build backend, never one from the index: install it, for setuptools `python3-setuptools` and `python3-wheel`)");
        }
        return Err(FetchError::Tool {
            tool: "pip download".into(),
            what: req.to_string(),
            reason,
        });
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(io_err(&dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().is_some_and(|n| n != "requirements.txt"))
        .collect();
    files.sort();
    if let Some(w) = want_file
        && let Some(f) = files.iter().find(|f| f.file_name().is_some_and(|n| n == w))
    {
        return Ok(f.clone());
    }
    files.into_iter().next().ok_or_else(|| FetchError::Tool {
        tool: "pip download".into(),
        what: req.to_string(),
        reason: "no file was written".into(),
    })
}

/// The `pip download` command line. A locked artifact goes through a
/// requirements file, the only place pip takes a hash: its name and version
/// were checked against PEP 508/440 when the lock was read, so the line
/// holds nothing else. A requested one follows `--`, so it is never an option.
fn pip_command(
    dir: &Path,
    want: &PipWant,
    src: &SourceSpec,
    want_file: Option<&str>,
) -> Result<Command, FetchError> {
    let mut cmd = Command::new("python3");
    cmd.args([
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--disable-pip-version-check",
        "-q",
        "-d",
    ]);
    cmd.arg(dir);
    if is_sdist(want_file) {
        cmd.args(["--no-binary", ":all:"]);
        if matches!(want, PipWant::Locked(_)) {
            cmd.arg("--no-build-isolation");
        }
    } else {
        cmd.args(["--only-binary", ":all:"]);
        for p in &src.platform {
            cmd.args(["--platform", p]);
        }
        if let Some(v) = &src.python_version {
            cmd.args(["--python-version", v, "--implementation", "cp"]);
        }
    }
    match want {
        PipWant::Request(r) => {
            cmd.arg("--").arg(r);
        }
        PipWant::Locked(a) => {
            // pip downloads into `dir` too: the file is kept apart from it
            let reqs = dir.join("requirements.txt");
            let line = format!("{}=={} --hash=sha256:{}\n", a.name, a.version, a.sha256);
            std::fs::write(&reqs, line).map_err(io_err(&reqs))?;
            cmd.arg("--require-hashes").arg("-r").arg(&reqs);
        }
    }
    Ok(cmd)
}

fn is_sdist(want_file: Option<&str>) -> bool {
    want_file.is_some_and(|f| !f.ends_with(".whl"))
}

fn write_stamp(file: &Path, stamp: &Path) -> Result<(), FetchError> {
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

/// sha256 and size of a file.
pub fn hash_file(path: &Path) -> std::io::Result<(String, u64)> {
    let mut f = File::open(path)?;
    let mut h = HashWriter(Sha256::new());
    let n = std::io::copy(&mut f, &mut h)?;
    Ok((hex::encode(h.0.finalize()), n))
}

/// A `Write` that only hashes.
pub struct HashWriter(pub Sha256);

impl Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cached_download_edited_in_place_is_not_reused() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache {
            root: dir.path().to_path_buf(),
        };
        let quiet = |_: &str, _: u64, _: Option<u64>| {};
        let (p, sha, size) =
            cache_reader(&cache, &mut &b"honest bytes"[..], "x", None, &quiet).unwrap();
        assert_eq!(cache.cached_download(&sha, size), Some(p.clone()));
        // a copy of the cache (new inode, new times) is re-hashed and kept
        let bytes = std::fs::read(&p).unwrap();
        std::fs::remove_file(&p).unwrap();
        std::fs::write(&p, &bytes).unwrap();
        assert_eq!(cache.cached_download(&sha, size), Some(p.clone()));
        // the same size, other bytes, same inode: refused and removed
        {
            let mut w = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
            w.write_all(b"evil").unwrap();
        }
        assert_eq!(cache.cached_download(&sha, size), None);
        assert!(!p.exists());
        // a digest that is not one is never a path
        assert_eq!(cache.cached_download("../../etc/passwd", size), None);
    }

    fn url_artifact(size: u64, sha256: &str) -> Artifact {
        Artifact {
            kind: ArtifactKind::Url,
            name: "x".into(),
            version: String::new(),
            arch: String::new(),
            file: "x.tgz".into(),
            path: String::new(),
            size,
            sha256: sha256.into(),
        }
    }

    static NO_MIRRORS: std::sync::LazyLock<crate::debian::Mirrors> =
        std::sync::LazyLock::new(|| crate::debian::Mirrors::new(&[]));

    fn sources<'a>(
        cache: &'a Cache,
        mirror: Option<&'a Path>,
        locked: &'a [Artifact],
    ) -> Sources<'a> {
        Sources {
            cache,
            offline: false,
            mirror,
            progress: &|_: &str, _: u64, _: Option<u64>| {},
            locked,
            definition: Path::new("image.toml"),
            archive: None,
            debian_mirrors: &NO_MIRRORS,
        }
    }

    #[test]
    fn a_url_sending_more_than_its_locked_size_is_cut_off() {
        use std::net::TcpListener;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        // a server whose body has no end (it stops at 64 MiB only so that an
        // unbounded reader still ends the test)
        let server = std::thread::spawn(move || {
            let (mut c, _) = listener.accept().unwrap();
            let mut req = Vec::new();
            let mut b = [0u8; 1];
            while !req.ends_with(b"\r\n\r\n") && c.read(&mut b).unwrap() == 1 {
                req.push(b[0]);
            }
            let _ = c.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
            let chunk = vec![b'z'; 1 << 16];
            let mut sent = 0u64;
            while sent < 64 << 20 && c.write_all(&chunk).is_ok() {
                sent += chunk.len() as u64;
            }
            sent
        });
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache {
            root: dir.path().to_path_buf(),
        };
        let a = url_artifact(1000, &"ab".repeat(32));
        let url = format!("http://127.0.0.1:{port}/endless.tgz");
        let src = SourceSpec {
            url: Some(url.clone()),
            ..Default::default()
        };
        let locked = [a.clone()];
        let err = sources(&cache, None, &locked)
            .ensure(&a, &src)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&url) && err.contains("more than the 1000 bytes"),
            "{err}"
        );
        let sent = server.join().unwrap();
        assert!(sent < 64 << 20, "the whole endless body was read");
    }

    #[test]
    fn a_bundle_folder_member_is_a_regular_file_of_its_locked_size() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache {
            root: dir.path().join("cache"),
        };
        let mirror = dir.path().join("bundle");
        std::fs::create_dir_all(mirror.join("sha256")).unwrap();
        let good = b"locked bytes";
        let hex = hex::encode(Sha256::digest(good));
        let a = url_artifact(good.len() as u64, &hex);
        let locked = [a.clone()];
        let member = mirror.join("sha256").join(&hex);
        let elsewhere = dir.path().join("elsewhere");
        std::fs::write(&elsewhere, good).unwrap();
        // a link, even to the right bytes, is not a member
        std::os::unix::fs::symlink(&elsewhere, &member).unwrap();
        let err = sources(&cache, Some(&mirror), &locked)
            .ensure(&a, &SourceSpec::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains(&member.display().to_string()), "{err}");
        // nor is a link to an endless device
        std::fs::remove_file(&member).unwrap();
        std::os::unix::fs::symlink("/dev/zero", &member).unwrap();
        let err = sources(&cache, Some(&mirror), &locked)
            .ensure(&a, &SourceSpec::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains(&member.display().to_string()), "{err}");
        // a longer file is read no further than its locked size and one byte
        std::fs::remove_file(&member).unwrap();
        std::fs::write(&member, [&good[..], b"and more"].concat()).unwrap();
        let err = sources(&cache, Some(&mirror), &locked)
            .ensure(&a, &SourceSpec::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("more than the 12 bytes"), "{err}");
        // the honest file is taken
        std::fs::write(&member, good).unwrap();
        let p = sources(&cache, Some(&mirror), &locked)
            .ensure(&a, &SourceSpec::default())
            .unwrap();
        assert_eq!(std::fs::read(p).unwrap(), good);
    }

    #[test]
    fn a_bundle_tar_gives_only_locked_regular_members() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache {
            root: dir.path().join("cache"),
        };
        let good = b"locked bytes";
        let hex = hex::encode(Sha256::digest(good));
        let other = b"bytes no lock names";
        let other_hex = hex::encode(Sha256::digest(other));
        let a = url_artifact(good.len() as u64, &hex);
        let locked = [a.clone()];
        let bundle = dir.path().join("bundle.tar");
        let mut b = tar::Builder::new(File::create(&bundle).unwrap());
        let mut h = tar::Header::new_gnu();
        h.set_size(other.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, format!("sha256/{other_hex}"), &other[..])
            .unwrap();
        // a sparse member declares its size (here 1 MiB of holes, 60 GB as
        // easily) in no bytes: it is never read
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::GNUSparse);
        h.set_size(0);
        h.set_mode(0o644);
        let gnu = h.as_gnu_mut().unwrap();
        gnu.set_real_size(1 << 20);
        gnu.sparse[0].set_offset(1 << 20);
        gnu.sparse[0].set_length(0);
        b.append_data(&mut h, format!("sha256/{hex}"), &[][..])
            .unwrap();
        b.into_inner().unwrap();
        let got = sources(&cache, Some(&bundle), &locked).take_from_mirror(&bundle, &a);
        assert!(matches!(got, Ok(None)), "{got:?}");
        assert!(
            !cache.download(&other_hex).exists(),
            "a member no lock names was taken into the cache"
        );
    }
}
