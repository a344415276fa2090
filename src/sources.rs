//! Where a locked input comes from: the cache, a `ferry vendor` bundle
//! (folder or .tar), its URL, the Debian mirrors (through `crate::debian`),
//! PyPI (through `crate::pypi`) or `pip download`. Every byte is checked
//! against the lock before it is renamed into the cache. It sits above
//! `crate::cache`, `crate::debian` and `crate::pypi`, which all use the
//! cache, so none of them reaches back up.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use crate::cache::fetch::{Expect, PipWant, commit, open_url, pip_download, stream_to_temp};
use crate::cache::{Cache, FetchError, Progress, io_err};
use crate::debian::DebianError;
use crate::image::lock::{Artifact, ArtifactKind};
use crate::image::spec::SourceSpec;

/// Why a locked input could not be put in the cache.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Debian(Box<DebianError>),
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
    pub fn prefetch_debs(&self, artifacts: &[&Artifact]) -> Result<(), SourceError> {
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
    fn download_debs(&self, mut debs: Vec<Artifact>) -> Result<(), SourceError> {
        if debs.is_empty() {
            return Ok(());
        }
        let debian = |e: DebianError| SourceError::Debian(Box::new(e));
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
    pub fn ensure(&self, a: &Artifact, src: &SourceSpec) -> Result<PathBuf, SourceError> {
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
            }
            .into());
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
                    })
                    .map_err(SourceError::from);
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
            }
            .into());
        }
        Ok(commit(self.cache, tmp, &sha)?)
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

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use sha2::{Digest, Sha256};

    use super::*;
    use crate::cache::fetch::cache_reader;

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
