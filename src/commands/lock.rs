//! `ferry lock`: resolve every source of a definition and pin it.

use std::collections::BTreeSet;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};

use super::{Term, human};
use crate::cache::lock::{self as cache_lock, Mode};
use crate::cache::{Cache, fetch};
use crate::cli::LockArgs;
use crate::debian::{self, Archive, Index, Mirrors};
use crate::grammar::split_req;
use crate::image::apt;
use crate::image::lock::{Artifact, ArtifactKind, Closure, Lock, NixClosure, lock_path};
use crate::image::spec::{Definition, SourceKind, SourceSpec, url_file_name};
use crate::inputs::nix;

pub fn run(a: LockArgs) -> Result<ExitCode> {
    let term = Term::new(a.check);
    let def = Definition::load(&a.definition)?;
    let lp = lock_path(&def.path);
    let old = Lock::read(&lp)?;
    let cache = Cache::new(a.cache.cache);

    if a.check {
        let Some(old) = old else {
            eprintln!(
                "error: `{}` is missing: run `ferry lock {}`",
                lp.display(),
                def.path.display()
            );
            return Ok(ExitCode::FAILURE);
        };
        let mut missing = Vec::new();
        let mut used = BTreeSet::new();
        for layer in &def.spec.layers {
            for src in &layer.sources {
                match old.resolve(&layer.name, src) {
                    Ok(arts) => used.extend(arts.into_iter().cloned()),
                    Err(what) => missing.push(what),
                }
            }
        }
        let mut unused: Vec<_> = old
            .artifacts
            .iter()
            .filter(|x| !used.contains(*x))
            .map(|x| format!("{} `{}`", kind_name(x.kind), x.file))
            .collect();
        let (changed, unused_nix) = check_nix(&def, &old)?;
        missing.extend(changed);
        unused.extend(unused_nix);
        if missing.is_empty() && unused.is_empty() {
            println!("ok: `{}` is up to date", lp.display());
            return Ok(ExitCode::SUCCESS);
        }
        let mut parts = Vec::new();
        if !missing.is_empty() {
            parts.push(format!("not locked: {}", missing.join(", ")));
        }
        if !unused.is_empty() {
            parts.push(format!("no longer used: {}", unused.join(", ")));
        }
        eprintln!(
            "error: `{}` is out of date ({}): run `ferry lock {}`",
            lp.display(),
            parts.join("; "),
            def.path.display()
        );
        return Ok(ExitCode::FAILURE);
    }
    // `--check` reads no cache; resolving downloads into it
    let _cache_lock = cache_lock::lock(&cache.root, Mode::Shared, |m| eprintln!("{m}"))?;

    let update_all = a.update.as_ref().is_some_and(|u| u.is_empty());
    let named: BTreeSet<String> = a.update.clone().unwrap_or_default().into_iter().collect();
    let mut matched = BTreeSet::new();
    let mut new = Lock {
        version: crate::image::lock::LOCK_VERSION,
        closures: Vec::new(),
        artifacts: Vec::new(),
        nix: Vec::new(),
    };
    let old = old.unwrap_or_default();
    let mut debian = Debian {
        archive: Archive::of(&def),
        mirrors: Mirrors::new(&a.debian.debian_mirror),
        cache: &cache,
        term: &term,
        indexes: Default::default(),
    };
    // Debian packages earlier sources already bring: closures leave them out
    let mut installed: BTreeSet<String> = BTreeSet::new();
    for layer in &def.spec.layers {
        for src in &layer.sources {
            if src.kind() == SourceKind::Path {
                continue;
            }
            if src.kind() == SourceKind::Nix {
                let wanted = update_all
                    || source_names(src)
                        .iter()
                        .any(|n| named.contains(n) && matched.insert(n.clone()));
                let closure = match old.nix_closure(&layer.name, src) {
                    Some(c) if !wanted => c.clone(),
                    _ => lock_nix(&def, &layer.name, src, &term)
                        .with_context(|| format!("locking layer `{}`", layer.name))?,
                };
                new.nix.push(closure);
                continue;
            }
            let wanted = update_all
                || source_names(src)
                    .iter()
                    .any(|n| named.contains(n) && matched.insert(n.clone()));
            let kept = if wanted {
                Err(String::new())
            } else {
                old.resolve(&layer.name, src)
            };
            let arts: Vec<Artifact> = match kept {
                Ok(arts) => {
                    if src.closure {
                        new.closures.extend(
                            old.closures
                                .iter()
                                .find(|c| c.layer == layer.name && c.requested == src.deb)
                                .cloned(),
                        );
                    }
                    let mut arts: Vec<Artifact> = arts.into_iter().cloned().collect();
                    debian
                        .add_paths(src, &mut arts)
                        .with_context(|| format!("locking layer `{}`", layer.name))?;
                    arts
                }
                Err(_) if src.closure => {
                    let (closure, arts) =
                        resolve_closure(&mut debian, &layer.name, src, &old, wanted, &installed)
                            .with_context(|| format!("locking layer `{}`", layer.name))?;
                    new.closures.push(closure);
                    arts
                }
                Err(_) => resolve(&cache, &mut debian, &def.path, src, &term)
                    .with_context(|| format!("locking layer `{}`", layer.name))?,
            };
            installed.extend(
                arts.iter()
                    .filter(|a| a.kind == ArtifactKind::Deb)
                    .map(|a| a.name.clone()),
            );
            new.artifacts.extend(arts);
        }
    }
    for n in &named {
        if !matched.contains(n)
            && !def
                .spec
                .layers
                .iter()
                .flat_map(|l| &l.sources)
                .any(|s| source_names(s).contains(n))
        {
            bail!(
                "`--update {n}`: no source of `{}` is named `{n}`",
                def.path.display()
            );
        }
    }
    let text = new.to_text();
    let before = std::fs::read_to_string(&lp).unwrap_or_default();
    if before == text {
        term.line(&format!(
            "`{}` is up to date ({} artifacts)",
            lp.display(),
            new.artifacts.len()
        ));
    } else {
        new.write(&lp)
            .with_context(|| format!("writing `{}`", lp.display()))?;
        term.line(&format!(
            "wrote `{}` ({} artifacts)",
            lp.display(),
            new.artifacts.len()
        ));
    }
    Ok(ExitCode::SUCCESS)
}

fn kind_name(k: ArtifactKind) -> &'static str {
    match k {
        ArtifactKind::Deb => "deb",
        ArtifactKind::Pypi => "pypi",
        ArtifactKind::Url => "url",
    }
}

/// Reads a `nix` source's closure from the store.
fn lock_nix(def: &Definition, layer: &str, src: &SourceSpec, term: &Term) -> Result<NixClosure> {
    let paths = nix::closure(&src.nix, &def.dir)?;
    let size: u64 = paths.iter().map(|p| p.nar_size).sum();
    term.line(&format!(
        "layer `{layer}`: {} Nix store paths ({}) in the closure of {}",
        paths.len(),
        human(size),
        src.nix.join(", ")
    ));
    Ok(NixClosure {
        layer: layer.to_string(),
        requested: src.nix.clone(),
        paths,
    })
}

/// For `--check`: the `nix` sources whose closure in the store is no longer
/// the locked one (an installable now names another build, or a path was
/// rebuilt with other content), and locked closures no source asks for.
fn check_nix(def: &Definition, old: &Lock) -> Result<(Vec<String>, Vec<String>)> {
    let mut changed = Vec::new();
    let mut used = BTreeSet::new();
    for layer in &def.spec.layers {
        for src in &layer.sources {
            let Some(c) = old.nix_closure(&layer.name, src) else {
                continue;
            };
            used.insert((c.layer.clone(), c.requested.clone()));
            let now = nix::closure(&src.nix, &def.dir)
                .with_context(|| format!("checking layer `{}`", layer.name))?;
            if now != c.paths {
                changed.push(format!(
                    "nix `{}` (its closure in the store is not the locked one)",
                    src.nix.join(", ")
                ));
            }
        }
    }
    let unused = old
        .nix
        .iter()
        .filter(|c| !used.contains(&(c.layer.clone(), c.requested.clone())))
        .map(|c| format!("nix `{}`", c.requested.join(", ")))
        .collect();
    Ok((changed, unused))
}

/// The names `--update` matches a source by: its name and its package names.
fn source_names(src: &SourceSpec) -> Vec<String> {
    let mut v = vec![src.display_name()];
    v.extend(src.deb.iter().map(|d| split_req(d, "=").0.to_string()));
    v.extend(src.pypi.iter().map(|p| split_req(p, "==").0.to_string()));
    v
}

/// The definition's Debian indexes, read once per architecture when a
/// source first needs them.
struct Debian<'a> {
    archive: Option<Archive>,
    mirrors: Mirrors,
    cache: &'a Cache,
    term: &'a Term,
    indexes: std::collections::BTreeMap<String, Index>,
}

impl Debian<'_> {
    /// The architecture a source's packages are for.
    fn arch(&self, src: &SourceSpec) -> String {
        src.arch
            .clone()
            .or_else(|| self.archive.as_ref().map(|a| a.arch.clone()))
            .unwrap_or_else(|| "amd64".into())
    }

    fn index(&mut self, arch: &str) -> Result<&mut Index> {
        if !self.indexes.contains_key(arch) {
            let Some(archive) = &self.archive else {
                bail!("a source has `deb` but the definition has no `[debian]` table");
            };
            let term = self.term;
            let progress = |w: &str, n: u64, t: Option<u64>| term.download(w, n, t);
            let ix = debian::load_index(archive, arch, &self.mirrors, self.cache, &progress)?;
            term.line(&format!(
                "read the Debian indexes of {} ({} packages for {arch}, signed by the keys of `{}`)",
                archive.suites.join(", "),
                ix.len(),
                archive.keyring.display()
            ));
            self.indexes.insert(arch.to_string(), ix);
        }
        Ok(self.indexes.get_mut(arch).expect("just inserted"))
    }

    /// Gives kept deb pins without an archive path (a lock from before ferry
    /// read the archive) theirs, found in the index by sha256; a pin the
    /// index no longer lists keeps none, and a build then says so.
    fn add_paths(&mut self, src: &SourceSpec, arts: &mut [Artifact]) -> Result<()> {
        if !arts
            .iter()
            .any(|a| a.kind == ArtifactKind::Deb && a.path.is_empty())
        {
            return Ok(());
        }
        let arch = self.arch(src);
        let term = self.term;
        let ix = self.index(&arch)?;
        for a in arts
            .iter_mut()
            .filter(|a| a.kind == ArtifactKind::Deb && a.path.is_empty())
        {
            match ix.by_sha256(&a.name, &a.sha256) {
                Some(r) => a.path = r.filename.clone(),
                None => term.line(&format!(
                    "warning: deb `{}` {} is no longer in the indexes: its pin is kept without an archive path",
                    a.name, a.version
                )),
            }
        }
        Ok(())
    }
}

/// Resolves a `closure = true` deb source on the index: its packages'
/// closure, less what is `installed` already, each package pinned (reusing
/// the old lock's pins unless `fresh`).
fn resolve_closure(
    debian: &mut Debian,
    layer: &str,
    src: &SourceSpec,
    old: &Lock,
    fresh: bool,
    installed: &BTreeSet<String>,
) -> Result<(Closure, Vec<Artifact>)> {
    let arch = debian.arch(src);
    let names: Vec<String> = src
        .deb
        .iter()
        .map(|d| split_req(d, "=").0.to_string())
        .collect();
    let term = debian.term;
    let ix = debian.index(&arch)?;
    let packages = apt::closure(ix, &names, installed, &src.exclude_packages)?;
    term.line(&format!(
        "layer `{layer}`: {} Debian packages in the closure of {}",
        packages.len(),
        names.join(", ")
    ));
    let mut arts = Vec::new();
    let mut pinned_now = 0;
    for p in &packages {
        let kept = old.artifacts.iter().find(|a| {
            a.kind == ArtifactKind::Deb && &a.name == p && (a.arch == arch || a.arch == "all")
        });
        match kept {
            Some(a) if !fresh => {
                let mut a = a.clone();
                if a.path.is_empty()
                    && let Some(r) = ix.by_sha256(&a.name, &a.sha256)
                {
                    a.path = r.filename.clone();
                }
                arts.push(a);
            }
            _ => {
                let r = ix
                    .candidate(p)
                    .ok_or_else(|| anyhow::anyhow!("Debian package `{p}` has no candidate"))?;
                arts.push(debian::pin(r));
                pinned_now += 1;
            }
        }
    }
    if pinned_now > 0 {
        term.line(&format!(
            "layer `{layer}`: pinned {pinned_now} Debian packages"
        ));
    }
    Ok((
        Closure {
            layer: layer.to_string(),
            requested: src.deb.clone(),
            packages,
        },
        arts,
    ))
}

fn resolve(
    cache: &Cache,
    debian: &mut Debian,
    def: &std::path::Path,
    src: &SourceSpec,
    term: &Term,
) -> Result<Vec<Artifact>> {
    let progress = |w: &str, n: u64, t: Option<u64>| term.download(w, n, t);
    match src.kind() {
        SourceKind::Path | SourceKind::Nix => Ok(vec![]),
        SourceKind::Url => {
            let url = src.url.as_deref().unwrap_or_default();
            let file = url_file_name(url);
            let (mut r, len) = fetch::open_url(url, def)?;
            let (_, sha, size) = fetch::cache_reader(cache, &mut r, &file, len, &progress)?;
            if let Some(want) = &src.sha256
                && !want.eq_ignore_ascii_case(&sha)
            {
                bail!(crate::cache::FetchError::Mismatch {
                    file,
                    name: src.display_name(),
                    expected: want.to_lowercase(),
                    found: sha
                });
            }
            term.line(&format!(
                "locked {file} ({}) sha256 {}",
                human(size),
                &sha[..12]
            ));
            Ok(vec![Artifact {
                kind: ArtifactKind::Url,
                name: src.display_name(),
                version: String::new(),
                arch: String::new(),
                file,
                path: String::new(),
                size,
                sha256: sha,
            }])
        }
        SourceKind::Deb => {
            let arch = debian.arch(src);
            let suites = debian
                .archive
                .as_ref()
                .map(|a| a.suites.join(", "))
                .unwrap_or_default();
            let ix = debian.index(&arch)?;
            let mut out = Vec::new();
            for d in &src.deb {
                let (name, version) = split_req(d, "=");
                let r = match version {
                    Some(v) => ix.exact(name, v),
                    None => ix.candidate(name),
                }
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "Debian package `{d}` is not in {suites} for {arch}: check the name{}",
                        if version.is_some() {
                            " and the version"
                        } else {
                            ""
                        }
                    )
                })?;
                let a = debian::pin(r);
                term.line(&format!(
                    "locked {} {} ({})",
                    a.name,
                    a.version,
                    human(a.size)
                ));
                out.push(a);
            }
            Ok(out)
        }
        SourceKind::Pypi => {
            let mut out = Vec::new();
            for p in &src.pypi {
                let (name, _) = split_req(p, "==");
                let want = || fetch::PipWant::Request(p);
                let file = fetch::pip_download(cache, want(), src, None).or_else(|e| {
                    fetch::pip_download(cache, want(), src, Some("sdist.tar.gz")).map_err(|_| e)
                })?;
                let file_name = file
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let version = version_from_file(&file_name).with_context(|| {
                    format!("`{file_name}`: cannot read the version from the file name")
                })?;
                let mut f = std::fs::File::open(&file)?;
                let (_, sha, size) =
                    fetch::cache_reader(cache, &mut f, &file_name, None, &progress)?;
                let _ = std::fs::remove_file(&file);
                term.line(&format!("locked {name} {version} ({})", human(size)));
                out.push(Artifact {
                    kind: ArtifactKind::Pypi,
                    name: name.to_string(),
                    version,
                    arch: String::new(),
                    file: file_name,
                    path: String::new(),
                    size,
                    sha256: sha,
                });
            }
            Ok(out)
        }
    }
}

/// `numpy-1.26.4-cp311-...whl` → 1.26.4; `pyspark-3.5.2.tar.gz` → 3.5.2.
fn version_from_file(f: &str) -> Option<String> {
    if let Some(stem) = f.strip_suffix(".whl") {
        return stem.split('-').nth(1).map(str::to_string);
    }
    let stem = f
        .strip_suffix(".tar.gz")
        .or_else(|| f.strip_suffix(".zip"))?;
    stem.rsplit_once('-').map(|(_, v)| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_from_file_names() {
        assert_eq!(
            version_from_file("numpy-1.26.4-cp311-cp311-manylinux_2_17_x86_64.whl").as_deref(),
            Some("1.26.4")
        );
        assert_eq!(
            version_from_file("pyspark-3.5.2.tar.gz").as_deref(),
            Some("3.5.2")
        );
        assert_eq!(version_from_file("x.exe"), None);
    }
}
