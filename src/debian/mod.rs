//! Debian packages read from the archive by ferry itself, never through the
//! build machine's apt: the definition's `[debian]` table names the suites,
//! components and architecture; the mirrors are configuration
//! (`--debian-mirror`, `FERRY_DEBIAN_MIRROR`, else the Debian URIs of the
//! machine's apt sources), tried in order. At lock time each suite's
//! `InRelease` is fetched and its signature checked against the archive
//! keyring ([`release`]), its `Packages` index checked against the hash the
//! signed file gives and read ([`packages`]), and the closure resolved on
//! that index. At build time each pinned `pool/...` file is downloaded from
//! the first mirror that has it, hashed while it streams, and checked
//! against the lock before it enters the cache.

pub mod packages;
pub mod release;
pub mod sources;
pub mod version;

use std::io::{BufReader, Read};
use std::path::PathBuf;

use crate::cache::fetch;
use crate::cache::{Cache, FetchError, Progress};
use crate::image::lock::Artifact;
use crate::image::spec::Definition;
pub use packages::Index;

/// The keyring `debian-archive-keyring` installs, used when the definition names none.
pub const SYSTEM_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";
/// The most an `InRelease` may hold (Debian's are about 150 KiB).
const MAX_RELEASE: u64 = 16 << 20;
/// The most a decompressed `Packages` index may hold (Debian's main: 50 MiB).
const MAX_INDEX: u64 = 1 << 30;
/// Pool files fetched at once.
const PARALLEL: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum DebianError {
    #[error(
        "no Debian mirror is configured and this machine's apt sources name none: set `--debian-mirror URL` or `FERRY_DEBIAN_MIRROR` (several, in order: the archive, its security archive, a snapshot for pins that left them)"
    )]
    NoMirror,
    #[error("Debian mirror `{url}`: {reason}")]
    BadMirror { url: String, reason: String },
    #[error("keyring `{}`: {reason}", path.display())]
    Keyring { path: PathBuf, reason: String },
    #[error(
        "`{url}`: its OpenPGP signature does not verify against any key of `{}`: the file was altered, or the keyring is not the archive's",
        keyring.display()
    )]
    Signature { url: String, keyring: PathBuf },
    #[error("`{url}`: {reason}")]
    Release { url: String, reason: String },
    #[error("no Debian mirror serves suite `{suite}` (tried {}): add one that does with --debian-mirror", tried.join(", "))]
    NoSuite { suite: String, tried: Vec<String> },
    #[error("`{file}`: {reason}")]
    Index { file: String, reason: String },
    #[error(
        "cannot download `{path}` from any Debian mirror (tried {tried}; {last}): the pin is no longer served there; add a mirror that still has it, a snapshot say, with --debian-mirror, or run `ferry lock --update {name}` (which changes the image)"
    )]
    NotServed {
        path: String,
        name: String,
        tried: usize,
        last: String,
    },
    #[error(
        "deb `{name}` {version} is locked without its archive path (a lock written before ferry read the archive itself) and the indexes of {suites} do not list its sha256 {sha256}: run `ferry lock` where a mirror still serves it"
    )]
    NoPath {
        name: String,
        version: String,
        sha256: String,
        suites: String,
    },
    #[error(transparent)]
    Fetch(#[from] FetchError),
}

/// Where a definition's Debian packages come from (its `[debian]` table).
#[derive(Debug, Clone)]
pub struct Archive {
    pub suites: Vec<String>,
    pub components: Vec<String>,
    pub arch: String,
    pub keyring: PathBuf,
}

impl Archive {
    /// The definition's archive; `None` when it has no `[debian]` table.
    pub fn of(def: &Definition) -> Option<Archive> {
        let d = def.spec.debian.as_ref()?;
        Some(Archive {
            suites: d.suites.clone(),
            components: if d.components.is_empty() {
                vec!["main".into()]
            } else {
                d.components.clone()
            },
            arch: d
                .architecture
                .clone()
                .or_else(|| def.spec.architecture.clone())
                .unwrap_or_else(|| "amd64".into()),
            keyring: match &d.keyring {
                Some(k) => def.dir.join(k),
                None => PathBuf::from(SYSTEM_KEYRING),
            },
        })
    }
}

/// The configured mirrors, in the order they are tried.
#[derive(Debug, Clone, Default)]
pub struct Mirrors {
    given: Vec<String>,
    /// Where apt's sources are read from (`/` but in tests).
    root: PathBuf,
}

impl Mirrors {
    /// `given` from `--debian-mirror` / `FERRY_DEBIAN_MIRROR` (either may
    /// hold several, separated by spaces or commas); none means apt's.
    pub fn new(given: &[String]) -> Mirrors {
        Mirrors {
            given: given
                .iter()
                .flat_map(|g| g.split([' ', ',', '\n']))
                .filter(|u| !u.is_empty())
                .map(|u| u.trim_end_matches('/').to_string())
                .collect(),
            root: PathBuf::from("/"),
        }
    }

    /// The base URLs, checked.
    pub fn urls(&self) -> Result<Vec<String>, DebianError> {
        let urls = if self.given.is_empty() {
            sources::apt_mirrors(&self.root)
        } else {
            self.given.clone()
        };
        if urls.is_empty() {
            return Err(DebianError::NoMirror);
        }
        for u in &urls {
            let ok_scheme =
                u.starts_with("http://") || u.starts_with("https://") || u.starts_with("file:/");
            if !ok_scheme || u.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(DebianError::BadMirror {
                    url: u.escape_debug().to_string(),
                    reason: "a mirror is an http://, https:// or file:// URL".into(),
                });
            }
        }
        Ok(urls)
    }
}

/// Reads `url` whole, at most `max` bytes; `None` when the mirror does not have it.
fn get_small(url: &str, max: u64) -> Result<Option<Vec<u8>>, DebianError> {
    let Some((r, _)) = fetch::open_optional(url)? else {
        return Ok(None);
    };
    let mut buf = Vec::new();
    r.take(max + 1)
        .read_to_end(&mut buf)
        .map_err(|e| FetchError::Http {
            url: url.to_string(),
            reason: e.to_string(),
        })?;
    if buf.len() as u64 > max {
        return Err(DebianError::Release {
            url: url.to_string(),
            reason: format!("more than {max} bytes"),
        });
    }
    Ok(Some(buf))
}

/// Seconds since the epoch now (the one wall-clock read: Valid-Until).
fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// One suite's verified release, from the first mirror that has it.
fn suite_release(
    suite: &str,
    urls: &[String],
    keyring: &release::Keyring,
) -> Result<(String, release::Release), DebianError> {
    for m in urls {
        let url = format!("{m}/dists/{suite}/InRelease");
        let Some(text) = get_small(&url, MAX_RELEASE)? else {
            continue;
        };
        let r = release::verify(&text, &url, keyring)?;
        if r.codename != suite && r.suite != suite {
            return Err(DebianError::Release {
                url,
                reason: format!(
                    "is the release of `{}` (suite `{}`), not of `{suite}`: the mirror serves another suite under this name",
                    r.codename, r.suite
                ),
            });
        }
        if let Some(until) = r.valid_until
            && until < now()
            && std::env::var_os("FERRY_DEBIAN_ALLOW_EXPIRED").is_none()
        {
            return Err(DebianError::Release {
                url,
                reason: format!(
                    "expired at {} (its Valid-Until): the mirror is stale, or it is a snapshot; set FERRY_DEBIAN_ALLOW_EXPIRED=1 to use it anyway",
                    crate::clock::format_rfc3339(until)
                ),
            });
        }
        return Ok((m.clone(), r));
    }
    Err(DebianError::NoSuite {
        suite: suite.to_string(),
        tried: urls.to_vec(),
    })
}

/// Reads every suite's and component's `Packages` index for `arch`.
pub fn load_index(
    archive: &Archive,
    arch: &str,
    mirrors: &Mirrors,
    cache: &Cache,
    progress: Progress,
) -> Result<Index, DebianError> {
    let urls = mirrors.urls()?;
    let keyring = release::Keyring::load(&archive.keyring)?;
    let mut records = Vec::new();
    for (i, suite) in archive.suites.iter().enumerate() {
        let (mirror, rel) = suite_release(suite, &urls, &keyring)?;
        let base = format!("{mirror}/dists/{suite}");
        for comp in &archive.components {
            let stem = format!("{comp}/binary-{arch}/Packages");
            let pick = [".xz", ".gz", ""]
                .iter()
                .find_map(|ext| {
                    let p = format!("{stem}{ext}");
                    rel.files
                        .get(&p)
                        .map(|(size, sha)| (p, *ext, *size, sha.clone()))
                })
                .ok_or_else(|| DebianError::Release {
                    url: format!("{base}/InRelease"),
                    reason: format!("lists no `{stem}` index"),
                })?;
            let (path, ext, size, sha) = pick;
            let file = index_file(cache, &base, suite, &path, &rel, size, &sha, progress)?;
            let label = format!("{base}/{path}");
            let f = std::fs::File::open(&file).map_err(|e| FetchError::Io {
                path: file.clone(),
                source: e,
            })?;
            let raw: Box<dyn Read> = match ext {
                ".xz" => Box::new(xz2::read::XzDecoder::new_stream(
                    BufReader::new(f),
                    xz2::stream::Stream::new_stream_decoder(512 << 20, 0).map_err(|e| {
                        DebianError::Index {
                            file: label.clone(),
                            reason: e.to_string(),
                        }
                    })?,
                )),
                ".gz" => Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(f))),
                _ => Box::new(f),
            };
            let mut r = BufReader::with_capacity(1 << 20, raw.take(MAX_INDEX));
            packages::read(&mut r, i, &label, &mut records).map_err(|reason| {
                DebianError::Index {
                    file: label.clone(),
                    reason,
                }
            })?;
        }
    }
    Ok(Index::new(records, arch))
}

/// The index file `path` of a release, from the cache or its mirror
/// (by its hash when the release offers that, so an index replaced while
/// it downloads is never mixed up), checked against the signed hash.
#[allow(clippy::too_many_arguments)]
fn index_file(
    cache: &Cache,
    base: &str,
    suite: &str,
    path: &str,
    rel: &release::Release,
    size: u64,
    sha: &str,
    progress: Progress,
) -> Result<PathBuf, DebianError> {
    if let Some(p) = cache.cached_download(sha, size) {
        return Ok(p);
    }
    let named = format!("{base}/{path}");
    let mut tries = Vec::new();
    if rel.by_hash {
        let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
        tries.push(format!("{base}/{dir}/by-hash/SHA256/{sha}"));
    }
    tries.push(named.clone());
    for url in &tries {
        let Some((mut r, _)) = fetch::open_optional(url)? else {
            continue;
        };
        let label = format!("{suite}/{path}");
        let file = fetch::fetch_verified(cache, &mut r, &label, &named, size, sha, progress)
            .map_err(|e| match e {
                FetchError::Mismatch { found, .. } => DebianError::Index {
                    file: named.clone(),
                    reason: format!(
                        "its sha256 is {found}, not the {sha} its signed InRelease gives: the index was altered"
                    ),
                },
                FetchError::Size { .. } => DebianError::Index {
                    file: named.clone(),
                    reason: format!(
                        "is not the {size} bytes its signed InRelease gives: the index was altered"
                    ),
                },
                e => e.into(),
            })?;
        return Ok(file);
    }
    Err(DebianError::Release {
        url: named,
        reason: "is listed in its InRelease but the mirror does not serve it".into(),
    })
}

/// Downloads the pinned .debs `arts` that the cache lacks from the first
/// mirror serving each, several at once, every byte checked against the lock.
pub fn download(
    arts: &[&Artifact],
    mirrors: &Mirrors,
    cache: &Cache,
    progress: Progress,
) -> Result<(), DebianError> {
    if arts.is_empty() {
        return Ok(());
    }
    let urls = mirrors.urls()?;
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failed: std::sync::Mutex<Option<DebianError>> = std::sync::Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..PARALLEL.min(arts.len()) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(a) = arts.get(i) else { break };
                    if failed.lock().map(|f| f.is_some()).unwrap_or(true) {
                        break;
                    }
                    if let Err(e) = download_one(a, &urls, cache, progress) {
                        if let Ok(mut f) = failed.lock() {
                            f.get_or_insert(e);
                        }
                        break;
                    }
                }
            });
        }
    });
    match failed.into_inner() {
        Ok(Some(e)) => Err(e),
        _ => Ok(()),
    }
}

fn download_one(
    a: &Artifact,
    urls: &[String],
    cache: &Cache,
    progress: Progress,
) -> Result<PathBuf, DebianError> {
    if let Some(p) = cache.cached_download(&a.sha256, a.size) {
        return Ok(p);
    }
    let mut last = String::from("no mirror has it");
    for m in urls {
        let url = format!("{m}/{}", a.path);
        match fetch::open_optional(&url) {
            Ok(Some((mut r, _))) => {
                return fetch::fetch_verified(
                    cache, &mut r, &a.file, &url, a.size, &a.sha256, progress,
                )
                .map_err(|e| match e {
                    FetchError::Mismatch { found, .. } => FetchError::Mismatch {
                        file: url.clone(),
                        name: a.name.clone(),
                        expected: a.sha256.clone(),
                        found,
                    }
                    .into(),
                    e => e.into(),
                });
            }
            Ok(None) => last = format!("{url}: not found"),
            Err(e) => last = e.to_string(),
        }
    }
    Err(DebianError::NotServed {
        path: a.path.clone(),
        name: a.name.clone(),
        tried: urls.len(),
        last,
    })
}

/// Fills in the archive path of locked .debs that have none (locks written
/// before ferry read the archive), from the indexes, matched by sha256.
pub fn fill_paths(
    arts: &mut [Artifact],
    archive: &Archive,
    mirrors: &Mirrors,
    cache: &Cache,
    progress: Progress,
) -> Result<usize, DebianError> {
    let mut arches: Vec<String> = arts
        .iter()
        .filter(|a| a.kind == crate::image::lock::ArtifactKind::Deb && a.path.is_empty())
        .map(|a| {
            if a.arch == "all" {
                archive.arch.clone()
            } else {
                a.arch.clone()
            }
        })
        .collect();
    arches.sort();
    arches.dedup();
    let mut filled = 0;
    for arch in arches {
        let ix = load_index(archive, &arch, mirrors, cache, progress)?;
        for a in arts.iter_mut().filter(|a| {
            a.kind == crate::image::lock::ArtifactKind::Deb
                && a.path.is_empty()
                && (a.arch == arch || a.arch == "all")
        }) {
            let r = ix
                .by_sha256(&a.name, &a.sha256)
                .ok_or_else(|| DebianError::NoPath {
                    name: a.name.clone(),
                    version: a.version.clone(),
                    sha256: a.sha256.clone(),
                    suites: archive.suites.join(", "),
                })?;
            a.path = r.filename.clone();
            filled += 1;
        }
    }
    Ok(filled)
}

/// Turns an index record into a lock artifact.
pub fn pin(r: &packages::Record) -> Artifact {
    Artifact {
        kind: crate::image::lock::ArtifactKind::Deb,
        name: r.package.clone(),
        version: r.version.clone(),
        arch: r.arch.clone(),
        file: r
            .filename
            .rsplit_once('/')
            .map_or(r.filename.as_str(), |(_, f)| f)
            .to_string(),
        path: r.filename.clone(),
        size: r.size,
        sha256: r.sha256.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_machine_without_debian_sources_is_told_what_to_set() {
        let root = tempfile::tempdir().unwrap();
        let m = Mirrors {
            given: vec![],
            root: root.path().to_path_buf(),
        };
        let err = m.urls().unwrap_err().to_string();
        assert!(
            err.contains("--debian-mirror") && err.contains("FERRY_DEBIAN_MIRROR"),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1);
    }

    #[test]
    fn given_mirrors_are_split_trimmed_and_checked() {
        let m = Mirrors::new(&["http://a.test/debian/ http://b.test/debian-security".into()]);
        assert_eq!(
            m.urls().unwrap(),
            vec!["http://a.test/debian", "http://b.test/debian-security"]
        );
        for bad in ["ftp://a.test/debian", "a.test/debian"] {
            assert!(Mirrors::new(&[bad.into()]).urls().is_err(), "{bad}");
        }
    }
}
