//! How bytes get into the cache: from an http(s) or file URL, a page of an
//! index, or `pip download`, each hashed while it streams and checked
//! against the lock before it is renamed into the cache; `sources` chooses
//! among them and the mirrors. Registries are reached only through their
//! ordinary clients, so no host name lives here.

use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use super::{Cache, FetchError, Progress, io_err, write_stamp};
use crate::image::lock::Artifact;
use crate::image::spec::SourceSpec;

/// What a stream must hold: exactly the locked size, named in errors as `what`.
pub(crate) struct Expect<'a> {
    pub(crate) size: u64,
    pub(crate) what: &'a str,
}

/// Hashes a reader into a temp file in the cache; returns (temp path, sha256,
/// size). With `expect`, no more than its size and one byte is ever read (an
/// endless stream cannot fill the disk before the hash check), and any other
/// length is an error.
pub(crate) fn stream_to_temp(
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
pub(crate) fn commit(
    cache: &Cache,
    tmp: tempfile::TempPath,
    sha256: &str,
) -> Result<PathBuf, FetchError> {
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
