//! `ferry vendor`: every locked input of a definition into one bundle
//! (a folder `sha256/<hex>`, or the same as a .tar) for air-gapped builds.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result};

use super::{Term, human};
use crate::cache::Cache;
use crate::cache::lock::{self as cache_lock, Mode};
use crate::cli::VendorArgs;
use crate::image::lock::{LockError, lock_path};
use crate::layer::{self, TarHeader};
use crate::sources::Sources;

pub fn run(a: VendorArgs) -> Result<ExitCode> {
    let term = Term::new(false);
    let cache = Cache::new(a.cache.cache);
    let _cache_lock = cache_lock::lock(&cache.root, Mode::Shared, |m| eprintln!("{m}"))?;
    let (def, lock) = super::definition_and_lock(a.definition, &cache, &term)?;
    let lp = lock_path(&def.path);
    let progress = |w: &str, n: u64, t: Option<u64>| term.download(w, n, t);
    let archive = crate::debian::Archive::of(&def);
    let mirrors = crate::debian::Mirrors::new(&a.debian.debian_mirror);
    let sources = Sources {
        cache: &cache,
        offline: a.offline,
        mirror: a.mirror.as_deref(),
        progress: &progress,
        locked: &lock.artifacts,
        definition: &def.path,
        archive: archive.as_ref(),
        debian_mirrors: &mirrors,
    };
    // the Debian packages first, several at once
    let all = lock.for_definition(&def, &lp)?;
    sources.prefetch_debs(&all.iter().collect::<Vec<_>>())?;
    let mut files = Vec::new();
    for layer in &def.spec.layers {
        for src in &layer.sources {
            for art in lock
                .resolve(&layer.name, src)
                .map_err(|w| LockError::Stale {
                    path: lp.clone(),
                    def: def.path.clone(),
                    what: w,
                })?
            {
                let p = sources.ensure(art, src)?;
                files.push((art.clone(), p));
            }
        }
    }
    files.sort_by(|x, y| x.0.cmp(&y.0));
    files.dedup_by(|x, y| x.0 == y.0);
    let total: u64 = files.iter().map(|f| f.0.size).sum();
    let listing: String = files
        .iter()
        .map(|(a, _)| format!("{}  {}\n", a.sha256, a.file))
        .collect();
    let is_tar = a.to.extension().is_some_and(|e| e == "tar");
    if is_tar {
        let parent = crate::fsutil::parent_dir(&a.to);
        std::fs::create_dir_all(parent)?;
        let tmp = tempfile::Builder::new()
            .prefix(".ferry-")
            .suffix(".tar.part")
            .tempfile_in(parent)?;
        {
            let mut w = std::io::BufWriter::new(tmp.as_file());
            let mut put =
                |name: &str, size: u64, r: &mut dyn std::io::Read| -> std::io::Result<()> {
                    layer::write_header(
                        &mut w,
                        &TarHeader {
                            path: name,
                            kind: b'0',
                            mode: 0o644,
                            uid: 0,
                            gid: 0,
                            size,
                            mtime: def.created,
                            link: "",
                        },
                    )?;
                    std::io::copy(&mut std::io::Read::take(r, size), &mut w)?;
                    layer::pad(&mut w, size)
                };
            put("SHA256SUMS", listing.len() as u64, &mut listing.as_bytes())?;
            for (art, p) in &files {
                put(
                    &format!("sha256/{}", art.sha256),
                    art.size,
                    &mut std::fs::File::open(p)?,
                )?;
            }
            w.write_all(&[0u8; 1024])?;
            w.flush()?;
        }
        tmp.as_file().sync_all()?;
        crate::fsutil::readable(tmp.path())?;
        tmp.persist(&a.to)
            .map_err(|e| e.error)
            .with_context(|| format!("`{}`", a.to.display()))?;
    } else {
        let dir = a.to.join("sha256");
        std::fs::create_dir_all(&dir).with_context(|| format!("`{}`", dir.display()))?;
        for (art, p) in &files {
            let dest = dir.join(&art.sha256);
            if std::fs::metadata(&dest).is_ok_and(|m| m.len() == art.size) {
                continue;
            }
            let tmp = dir.join(format!(".{}.part", art.sha256));
            std::fs::copy(p, &tmp).with_context(|| format!("`{}`", tmp.display()))?;
            std::fs::File::open(&tmp)?.sync_all()?;
            std::fs::rename(&tmp, &dest)?;
        }
        // the listing is merged with what other images already vendored here
        let sums = a.to.join("SHA256SUMS");
        let mut lines: std::collections::BTreeSet<String> = std::fs::read_to_string(&sums)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect();
        lines.extend(listing.lines().map(str::to_string));
        let text: String = lines.into_iter().map(|l| l + "\n").collect();
        crate::fsutil::write_atomic(&sums, text.as_bytes())?;
    }
    term.line(&format!(
        "vendored {} inputs ({}) of `{}` into `{}`",
        files.len(),
        human(total),
        def.path.display(),
        a.to.display()
    ));
    Ok(ExitCode::SUCCESS)
}
