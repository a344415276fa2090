//! Collecting the garbage of the local cache: layer blobs only old builds need.
//!
//! Every `ferry build` records the image it built as
//! `<cache>/builds/<name>/<seq>-<manifest hex>`, one layer blob hex a line.
//! `ferry gc --local` keeps the newest N builds of each name and removes the
//! layer blobs (and their `layers/<key>.json` records) that only dropped
//! builds name. Whatever no build record names is kept: blobs of builds made
//! before records existed, base image layers, and every download (a lock may
//! still pin it). When unsure, keep.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::cache::Cache;
use crate::fsutil::{escape_name, unescape_name, write_atomic};
use crate::grammar::is_hex64;

#[derive(Debug, thiserror::Error)]
pub enum CacheGcError {
    #[error("cannot read or change `{}`", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the build record `{}` is not a list of sha256 digests, so which blobs it needs is unknown; nothing was removed. Delete it and run `ferry gc --local` again",
        path.display()
    )]
    BadRecord { path: PathBuf },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CacheGcError + '_ {
    move |source| CacheGcError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Records a build as the newest of `name`; building the newest one again records nothing.
pub fn record_build(
    cache: &Cache,
    name: &str,
    manifest_digest: &str,
    layer_digests: &[&str],
) -> Result<(), CacheGcError> {
    let dir = cache.root.join("builds").join(escape_name(name));
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let hex = manifest_digest.trim_start_matches("sha256:");
    let mut last: Option<(u128, String)> = None;
    for e in std::fs::read_dir(&dir).map_err(io(&dir))? {
        let file = e
            .map_err(io(&dir))?
            .file_name()
            .to_string_lossy()
            .into_owned();
        let Some((seq, h)) = file.split_once('-') else {
            continue;
        };
        let Ok(seq) = seq.parse::<u128>() else {
            continue;
        };
        if last.as_ref().is_none_or(|(s, _)| seq > *s) {
            last = Some((seq, h.to_string()));
        }
    }
    if last.as_ref().is_some_and(|(_, h)| h == hex) {
        return Ok(());
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let seq = now.max(last.map_or(0, |(s, _)| s + 1));
    let body: String = layer_digests
        .iter()
        .map(|d| format!("{}\n", d.trim_start_matches("sha256:")))
        .collect();
    let path = dir.join(format!("{seq}-{hex}"));
    write_atomic(&path, body.as_bytes()).map_err(io(&path))?;
    for e in std::fs::read_dir(&dir).map_err(io(&dir))? {
        let p = e.map_err(io(&dir))?.path();
        let file = p.file_name().unwrap_or_default().to_string_lossy();
        if p != path && file.ends_with(&format!("-{hex}")) {
            std::fs::remove_file(&p).map_err(io(&p))?;
        }
    }
    Ok(())
}

/// A build as recorded in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Build {
    pub path: PathBuf,
    pub name: String,
    pub seq: u128,
    /// Layer blob hexes, or `None` when the record is unreadable.
    pub blobs: Option<BTreeSet<String>>,
}

/// What gc removes from the cache.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Per name, newest first.
    pub kept: Vec<Build>,
    pub dropped: Vec<Build>,
    /// Blob hexes only dropped builds name.
    pub remove: BTreeSet<String>,
}

/// Splits `items` into the newest `keep` of each name (by sequence number,
/// ties by path) and the rest; both lists go by name, newest first. The
/// cache's gc and the hosts' gc keep images by the same rule.
pub fn keep_newest<T: Clone, P: Ord + ?Sized>(
    items: &[T],
    keep: usize,
    key: fn(&T) -> (&str, u128, &P),
) -> (Vec<T>, Vec<T>) {
    let mut by_name: BTreeMap<&str, Vec<&T>> = BTreeMap::new();
    for it in items {
        by_name.entry(key(it).0).or_default().push(it);
    }
    let (mut kept, mut dropped) = (Vec::new(), Vec::new());
    for list in by_name.values_mut() {
        list.sort_by(|a, b| {
            let (ka, kb) = (key(a), key(b));
            kb.1.cmp(&ka.1).then(ka.2.cmp(kb.2))
        });
        for (i, it) in list.iter().enumerate() {
            if i < keep { &mut kept } else { &mut dropped }.push((*it).clone());
        }
    }
    (kept, dropped)
}

/// Keeps the newest `keep` builds per name; the blobs only dropped builds
/// name go. Fails when a kept build's record cannot be read.
pub fn plan(builds: &[Build], keep: usize) -> Result<Plan, CacheGcError> {
    let (kept, dropped) = keep_newest(builds, keep, |b| (&b.name, b.seq, &b.path));
    let mut p = Plan {
        kept,
        dropped,
        ..Plan::default()
    };
    let mut needed = BTreeSet::new();
    for b in &p.kept {
        let blobs = b.blobs.as_ref().ok_or_else(|| CacheGcError::BadRecord {
            path: b.path.clone(),
        })?;
        needed.extend(blobs.iter().cloned());
    }
    p.remove = p
        .dropped
        .iter()
        .flat_map(|b| b.blobs.iter().flatten())
        .filter(|h| !needed.contains(*h))
        .cloned()
        .collect();
    Ok(p)
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, CacheGcError> {
    let mut v = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(io(dir))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io(dir)(e)),
    };
    v.sort();
    Ok(v)
}

/// Reads every build record of the cache.
pub fn builds(cache: &Cache) -> Result<Vec<Build>, CacheGcError> {
    let mut out = Vec::new();
    for dir in sorted_entries(&cache.root.join("builds"))? {
        let Some(name) = dir
            .file_name()
            .and_then(|n| unescape_name(&n.to_string_lossy()))
        else {
            continue;
        };
        for path in sorted_entries(&dir)? {
            let file = path.file_name().unwrap_or_default().to_string_lossy();
            let Some(seq) = file.split_once('-').and_then(|(s, _)| s.parse().ok()) else {
                continue;
            };
            let text = std::fs::read_to_string(&path).map_err(io(&path))?;
            let blobs: BTreeSet<String> = text.lines().map(str::to_string).collect();
            let ok = blobs.iter().all(|h| is_hex64(h));
            out.push(Build {
                name: name.clone(),
                seq,
                blobs: ok.then_some(blobs),
                path,
            });
        }
    }
    Ok(out)
}

/// What gc did (or would do) to the cache.
pub struct Outcome {
    pub plan: Plan,
    /// Bytes of the blobs removed (that were there).
    pub bytes_freed: u64,
    /// Layer records removed because their blob went.
    pub layer_records: usize,
}

/// Removes dropped build records, the blobs only they name, and the layer
/// records pointing at those blobs; with `dry_run` it only counts.
pub fn gc(cache: &Cache, keep: usize, dry_run: bool) -> Result<Outcome, CacheGcError> {
    let plan = plan(&builds(cache)?, keep)?;
    let mut bytes_freed = 0;
    for hex in &plan.remove {
        if let Ok(m) = std::fs::metadata(cache.blob(hex)) {
            bytes_freed += m.len();
        }
    }
    let mut stale_records = Vec::new();
    for path in sorted_entries(&cache.root.join("layers"))? {
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        let Ok(rec) = serde_json::from_slice::<super::layers::LayerRecord>(&bytes) else {
            continue;
        };
        if plan
            .remove
            .contains(rec.blob.digest.trim_start_matches("sha256:"))
        {
            stale_records.push(path);
        }
    }
    if !dry_run {
        // records first: a layer record never points at a missing blob
        for p in stale_records
            .iter()
            .chain(plan.dropped.iter().map(|b| &b.path))
        {
            std::fs::remove_file(p).map_err(io(p))?;
        }
        for hex in &plan.remove {
            // the blob, then its fingerprint (a stamp without a blob is inert)
            for p in [cache.blob(hex), cache.blob_stamp(hex)] {
                match std::fs::remove_file(&p) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(&p)(e)),
                    _ => {}
                }
            }
        }
    }
    Ok(Outcome {
        plan,
        bytes_freed,
        layer_records: stale_records.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(c: char) -> String {
        c.to_string().repeat(64)
    }

    fn build(name: &str, seq: u128, blobs: &[char]) -> Build {
        Build {
            path: PathBuf::from(format!("builds/{name}/{seq}")),
            name: name.into(),
            seq,
            blobs: Some(blobs.iter().map(|c| h(*c)).collect()),
        }
    }

    #[test]
    fn only_blobs_no_kept_build_names_go() {
        let b = vec![
            build("spark", 1, &['a', '1']),
            build("spark", 3, &['a', '3']),
            build("spark", 2, &['a', '2', '1']),
            build("busybox", 1, &['b']),
        ];
        let p = plan(&b, 2).unwrap();
        assert_eq!(p.dropped.len(), 1);
        assert_eq!(p.dropped[0].seq, 1);
        // `1` is also in the kept build 2
        assert!(p.remove.is_empty());
        let p = plan(&b, 1).unwrap();
        assert_eq!(p.remove, BTreeSet::from([h('1'), h('2')]));
        let mut bad = b.clone();
        bad[1].blobs = None;
        assert!(matches!(plan(&bad, 1), Err(CacheGcError::BadRecord { .. })));
        // an unreadable record that is dropped anyway is just forgotten
        let mut bad = b;
        bad[0].blobs = None;
        assert_eq!(plan(&bad, 2).unwrap().dropped.len(), 1);
    }

    #[test]
    fn builds_are_recorded_newest_last_and_gc_removes_the_oldest_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache {
            root: dir.path().to_path_buf(),
        };
        for c in ['a', '1', '2', '3'] {
            let p = cache.blob(&h(c));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, c.to_string()).unwrap();
        }
        for (m, l) in [('7', '1'), ('8', '2'), ('9', '3')] {
            record_build(
                &cache,
                "ferry/x",
                &format!("sha256:{}", h(m)),
                &[&h('a'), &h(l)],
            )
            .unwrap();
        }
        // the newest again: no new record
        record_build(&cache, "ferry/x", &h('9'), &[&h('a'), &h('3')]).unwrap();
        let all = builds(&cache).unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].name, "ferry/x");
        let dry = gc(&cache, 2, true).unwrap();
        assert_eq!(dry.plan.remove, BTreeSet::from([h('1')]));
        assert!(cache.blob(&h('1')).exists());
        let done = gc(&cache, 2, false).unwrap();
        assert_eq!(done.bytes_freed, 1);
        assert!(!cache.blob(&h('1')).exists() && cache.blob(&h('2')).exists());
        assert_eq!(builds(&cache).unwrap().len(), 2);
    }
}
