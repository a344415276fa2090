//! Collecting the garbage of a host's store: blobs no kept image references.
//!
//! Every push records the image it put on a host as an empty file
//! `<store>/images/<name>/<seq>-<manifest hex>` ([`record_script`]); `<name>`
//! is the reference without its tag, escaped, and `<seq>` grows with each
//! push of that name. `ferry gc` lists the records with their manifests (read
//! from the store) and the blobs in one round trip, decides what to remove
//! (pure: [`plan`]), and removes it in a second one.
//!
//! Safety comes first: a blob a kept image names is never removed; when the
//! manifest of a kept image cannot be read, nothing on that host is removed;
//! a blob no record names at all is kept while it is young (a push may be
//! storing it right now). Docker's own copies of images are not touched.
//! gc holds the store's lock exclusively from its listing to its removal,
//! and gives up at once when a push or pull holds it (they hold it shared
//! for their whole run): a blob a push in flight found present is never
//! removed under it. A dry run holds it shared, so it can run beside pushes.

use crate::ssh::Script;
use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::{
    BadValue, LockMode, PushError, check_hex, check_reference, check_store, each_host, lock_store,
};
use crate::cache::gc::keep_newest;
use crate::fsutil::{escape_name, unescape_name};
use crate::grammar::is_hex64;
use crate::ssh::{Remote, SshError, SshOptions, Target};

/// A blob no record names is kept this long after it was written: a push may
/// be under way and not have recorded its image yet.
pub const UNRECORDED_GRACE_SECS: u64 = 3600;
/// Interrupted transfers (`<hex>.part`) older than this are removed.
pub const STALE_PART_SECS: u64 = 24 * 3600;

/// The repository part of a reference: `ferry/busybox:1.35` → `ferry/busybox`.
pub fn image_name(reference: &str) -> &str {
    let no_digest = reference.split_once('@').map_or(reference, |(n, _)| n);
    match no_digest.rsplit_once(':') {
        // a `:` before the last `/` is a registry's port, not a tag
        Some((n, tag)) if !tag.contains('/') => n,
        _ => no_digest,
    }
}

/// `$1` the store, `$2` the escaped name, `$3` the manifest's hex.
const RECORD: &str = r#"S=$1 name=$2 m=$3
d=$S/images/$name
mkdir -p -- "$d" || exit 2
cd -- "$d" || exit 2
last=$(ls | sort -n | tail -n 1)
case "$last" in *-"$m") exit 0;; esac
rm -f -- *-"$m"
n=$(date +%s%N)
prev=${last%%-*}
if [ -n "$prev" ] && [ "$n" -le "$prev" ]; then n=$((prev + 1)); fi
: > "$n-$m" || exit 2"#;

/// Records a pushed image on the host, as the newest of its name. Pushing the
/// newest image again records nothing; pushing an older one again moves it
/// to the front. The sequence is the host's clock in nanoseconds, but always
/// above the last one, so a clock set back cannot reorder images.
pub fn record_script(store: &str, reference: &str, manifest_hex: &str) -> Result<Script, BadValue> {
    check_store(store)?;
    check_reference(reference)?;
    check_hex("manifest digest", manifest_hex)?;
    Ok(Script::new(RECORD)
        .arg(store)
        .arg(escape_name(image_name(reference)))
        .arg(manifest_hex))
}

const NOW_MARK: &str = "--ferry-now--";
const RECORD_MARK: &str = "--ferry-record--";
const BLOB_MARK: &str = "--ferry-blob--";

/// The most of a manifest the listing prints: a record naming a layer
/// instead must not send the layer back.
const MANIFEST_MAX: u64 = 4 << 20;

/// `$1` the store, `$2` [`MANIFEST_MAX`]. The marks are the `*_MARK`
/// constants (a test checks them).
const LIST: &str = r#"cd -- "$1" 2>/dev/null || exit 0
echo --ferry-now-- $(date +%s)
for f in images/*/*; do
  [ -f "$f" ] || continue
  printf '%s %s ' --ferry-record-- "$f"
  head -c "$2" < "blobs/sha256/${f##*-}" 2>/dev/null | tr -d '\n'
  echo
done
if [ -d blobs/sha256 ]; then find blobs/sha256 -maxdepth 1 -type f -printf '--ferry-blob-- %s %T@ %f\n' || exit 2; fi"#;

/// Prints the host's clock, each record with its manifest on one line (JSON
/// has no raw newlines inside strings, so dropping them keeps it valid), and
/// every file of the blob store with its size and age.
pub fn list_script(store: &str) -> Result<Script, BadValue> {
    check_store(store)?;
    Ok(Script::new(LIST).arg(store).arg(MANIFEST_MAX.to_string()))
}

/// An image a push recorded on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Relative to the store: `images/<escaped name>/<seq>-<hex>`.
    pub path: String,
    pub name: String,
    pub seq: u128,
    pub manifest: String,
    /// Every blob the image needs (manifest, config, layers), or `None` when
    /// the manifest is missing from the store or unreadable.
    pub blobs: Option<BTreeSet<String>>,
}

/// A file of the blob store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub size: u64,
    pub age_secs: u64,
}

/// What [`list_script`] found on a host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    pub records: Vec<Record>,
    /// Complete blobs: hex → file.
    pub blobs: BTreeMap<String, Stored>,
    /// Interrupted transfers: hex → `<hex>.part` file.
    pub parts: BTreeMap<String, Stored>,
}

/// The blobs an image manifest names, itself included.
fn manifest_blobs(hex: &str, json: &str) -> Option<BTreeSet<String>> {
    let v: Value = serde_json::from_str(json).ok()?;
    let digest = |d: &Value| -> Option<String> {
        let h = d.get("digest")?.as_str()?.strip_prefix("sha256:")?;
        is_hex64(h).then(|| h.to_string())
    };
    let mut set = BTreeSet::from([hex.to_string(), digest(v.get("config")?)?]);
    for l in v.get("layers")?.as_array()? {
        set.insert(digest(l)?);
    }
    Some(set)
}

impl Listing {
    /// Parses the output of [`list_script`]; lines it does not know are ignored.
    pub fn parse(out: &str) -> Listing {
        let mut now = 0u64;
        let mut files = Vec::new();
        let mut listing = Listing::default();
        for line in out.lines() {
            let mut w = line.splitn(3, ' ');
            match (w.next(), w.next(), w.next()) {
                (Some(NOW_MARK), Some(t), _) => now = t.trim().parse().unwrap_or(0),
                (Some(RECORD_MARK), Some(path), json) => {
                    let Some((dir, file)) =
                        path.strip_prefix("images/").and_then(|p| p.split_once('/'))
                    else {
                        continue;
                    };
                    let (Some(name), Some((seq, hex))) = (unescape_name(dir), file.split_once('-'))
                    else {
                        continue;
                    };
                    let (Ok(seq), true) = (seq.parse::<u128>(), is_hex64(hex)) else {
                        continue;
                    };
                    listing.records.push(Record {
                        path: path.to_string(),
                        name,
                        seq,
                        manifest: hex.to_string(),
                        blobs: json.and_then(|j| manifest_blobs(hex, j.trim())),
                    });
                }
                (Some(BLOB_MARK), Some(size), Some(rest)) => {
                    let Some((mtime, name)) = rest.split_once(' ') else {
                        continue;
                    };
                    let mtime = mtime.split('.').next().unwrap_or("").parse::<u64>();
                    if let (Ok(size), Ok(mtime)) = (size.parse::<u64>(), mtime) {
                        files.push((name.to_string(), size, mtime));
                    }
                }
                _ => {}
            }
        }
        for (name, size, mtime) in files {
            let file = Stored {
                size,
                age_secs: now.saturating_sub(mtime),
            };
            if let Some(hex) = name.strip_suffix(".part") {
                if is_hex64(hex) {
                    listing.parts.insert(hex.to_string(), file);
                }
            } else if is_hex64(&name) {
                listing.blobs.insert(name, file);
            }
        }
        listing
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GcError {
    #[error(
        "the manifest sha256:{manifest} of the kept image `{name}` is missing or unreadable in the store, so which blobs it needs is unknown; nothing was removed. Push that image again (or remove `{path}` from the store) and run gc again"
    )]
    UnknownManifest {
        name: String,
        manifest: String,
        path: String,
    },
}

/// What gc does on one host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Per name, newest first.
    pub kept: Vec<Record>,
    pub dropped: Vec<Record>,
    /// Blobs to remove: hex → size.
    pub remove: BTreeMap<String, u64>,
    /// `.part` files to remove: hex → size.
    pub remove_parts: BTreeMap<String, u64>,
    /// Blobs that stay: hex → size.
    pub keep: BTreeMap<String, u64>,
}

impl Plan {
    pub fn bytes_freed(&self) -> u64 {
        self.remove.values().chain(self.remove_parts.values()).sum()
    }
}

/// Keeps the newest `keep` images of each name and every blob they name; the
/// other blobs go, except young ones no record names (a push under way).
pub fn plan(listing: &Listing, keep: usize) -> Result<Plan, GcError> {
    let (kept, dropped) = keep_newest(&listing.records, keep, |r| {
        (&r.name, r.seq, r.path.as_str())
    });
    let mut p = Plan {
        kept,
        dropped,
        ..Plan::default()
    };
    let mut needed = BTreeSet::new();
    for r in &p.kept {
        let blobs = r.blobs.as_ref().ok_or_else(|| GcError::UnknownManifest {
            name: r.name.clone(),
            manifest: r.manifest.clone(),
            path: r.path.clone(),
        })?;
        needed.extend(blobs.iter().cloned());
    }
    let recorded: BTreeSet<&String> = listing
        .records
        .iter()
        .flat_map(|r| r.blobs.iter().flatten().chain(std::iter::once(&r.manifest)))
        .collect();
    for (hex, f) in &listing.blobs {
        let young_stranger = !recorded.contains(hex) && f.age_secs < UNRECORDED_GRACE_SECS;
        if needed.contains(hex) || young_stranger {
            p.keep.insert(hex.clone(), f.size);
        } else {
            p.remove.insert(hex.clone(), f.size);
        }
    }
    for (hex, f) in &listing.parts {
        if f.age_secs >= STALE_PART_SECS {
            p.remove_parts.insert(hex.clone(), f.size);
        }
    }
    Ok(p)
}

/// `$1` the store; on stdin the files to remove, relative to it, one a
/// line (on the command line, a few hundred would pass the 128 KiB Linux
/// allows one argument, and sshd passes the whole line as one). The names
/// hold no blank, quote or backslash ([`remove_script`] checks them), so
/// `xargs` splits them as they are, and runs `rm` a few times rather than
/// once a file.
const REMOVE: &str = r#"cd -- "$1" || exit 2
xargs rm -f -- || exit 2
rmdir images/* 2>/dev/null; true"#;

/// A record's path as [`record_script`] makes it:
/// `images/<escaped name>/<digits>-<hex>`. The listing comes from the
/// host, which could send anything.
fn check_record_path(path: &str) -> Result<(), BadValue> {
    let ok = path
        .strip_prefix("images/")
        .and_then(|p| p.split_once('/'))
        .is_some_and(|(name, file)| {
            !name.is_empty()
                && name != "."
                && name != ".."
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-%".contains(&b))
                && file.split_once('-').is_some_and(|(seq, hex)| {
                    !seq.is_empty() && seq.bytes().all(|b| b.is_ascii_digit()) && is_hex64(hex)
                })
        });
    if ok {
        Ok(())
    } else {
        Err(BadValue::new(
            "image record",
            path,
            "is not `images/<name>/<seq>-<sha256>`",
        ))
    }
}

/// Removes the dropped records first (so no image points at a missing blob),
/// then the blobs and stale `.part` files: the script, and its stdin (the
/// files, one a line; each is checked, so none holds a newline, a blank, a
/// quote or a backslash).
pub fn remove_script(store: &str, p: &Plan) -> Result<(Script, Vec<u8>), BadValue> {
    check_store(store)?;
    let mut files = Vec::new();
    for r in &p.dropped {
        check_record_path(&r.path)?;
        files.push(r.path.clone());
    }
    for hex in p.remove.keys() {
        check_hex("blob digest", hex)?;
        files.push(format!("blobs/sha256/{hex}"));
        // under gc's exclusive lock no push holds it
        files.push(format!("locks/{hex}"));
    }
    for hex in p.remove_parts.keys() {
        check_hex("blob digest", hex)?;
        files.push(format!("blobs/sha256/{hex}.part"));
    }
    let mut list = String::new();
    for f in files {
        list.push_str(&f);
        list.push('\n');
    }
    Ok((Script::new(REMOVE).arg(store), list.into_bytes()))
}

#[derive(Debug, thiserror::Error)]
pub enum HostGcError {
    #[error(transparent)]
    Push(#[from] PushError),
    #[error("on `{host}`: {source}")]
    Plan {
        host: String,
        #[source]
        source: GcError,
    },
}

/// A transport error is the host's, as a push reports it.
impl From<SshError> for HostGcError {
    fn from(e: SshError) -> HostGcError {
        HostGcError::Push(e.into())
    }
}

/// The result of gc on one host.
pub struct HostOutcome {
    pub target: Target,
    pub seconds: f64,
    pub result: Result<Plan, HostGcError>,
}

/// Collects the garbage of every host, `parallel` at a time; with `dry_run`
/// it only plans. The outcomes keep the targets' order.
pub fn gc_all(
    targets: &[Target],
    store: &str,
    keep: usize,
    dry_run: bool,
    ssh: &SshOptions,
    parallel: usize,
) -> Vec<HostOutcome> {
    each_host(targets, parallel, |t| {
        let t0 = std::time::Instant::now();
        let result = gc_host(t, store, keep, dry_run, ssh);
        HostOutcome {
            target: t.clone(),
            seconds: t0.elapsed().as_secs_f64(),
            result,
        }
    })
}

fn gc_host(
    target: &Target,
    store: &str,
    keep: usize,
    dry_run: bool,
    ssh: &SshOptions,
) -> Result<Plan, HostGcError> {
    let label = target.label();
    let list = list_script(store).map_err(|e| e.on(&label))?;
    let remote = Remote::connect(target, ssh)?;
    // alone while it removes (a push in flight holds the store shared, from
    // its listing to its record); without waiting: gc can be run again
    let mode = if dry_run {
        LockMode::Shared
    } else {
        LockMode::Exclusive
    };
    let lock = lock_store(
        &remote,
        store,
        mode,
        0,
        "nothing was removed; run gc again when it has ended",
    )?;
    let out = remote.run_ok("listing the store", &list, &[])?;
    let listing = Listing::parse(&String::from_utf8_lossy(&out));
    let p = plan(&listing, keep).map_err(|source| HostGcError::Plan {
        host: target.label(),
        source,
    })?;
    if !dry_run && (!p.dropped.is_empty() || !p.remove.is_empty() || !p.remove_parts.is_empty()) {
        let (remove, files) = remove_script(store, &p).map_err(|e| e.on(&label))?;
        remote.run_ok("removing blobs", &remove, &files)?;
    }
    lock.release()?;
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(c: char) -> String {
        c.to_string().repeat(64)
    }

    fn manifest(config: char, layers: &[char]) -> String {
        serde_json::json!({
            "schemaVersion": 2,
            "config": {"digest": format!("sha256:{}", h(config)), "size": 1},
            "layers": layers.iter().map(|l| serde_json::json!({"digest": format!("sha256:{}", h(*l)), "size": 1})).collect::<Vec<_>>(),
        })
        .to_string()
    }

    #[test]
    fn names_drop_the_tag_and_escape_into_one_component() {
        assert_eq!(image_name("ferry/busybox:1.35"), "ferry/busybox");
        assert_eq!(image_name("reg:5000/spark"), "reg:5000/spark");
        assert_eq!(image_name("reg:5000/spark:3.5@sha256:ab"), "reg:5000/spark");
        let e = escape_name("reg:5000/ferry/busy box%");
        assert_eq!(e, "reg%3A5000%2Fferry%2Fbusy%20box%25");
        assert_eq!(
            unescape_name(&e).as_deref(),
            Some("reg:5000/ferry/busy box%")
        );
        assert_eq!(unescape_name("bad%4"), None);
        let s = record_script("/var/lib/ferry", "ferry/busybox:1.35", &h('d')).unwrap();
        assert_eq!(s.text(), RECORD);
        assert_eq!(s.values(), ["/var/lib/ferry", "ferry%2Fbusybox", &h('d')]);
        // the marks the parser looks for are the ones the listing prints
        for mark in [NOW_MARK, RECORD_MARK, BLOB_MARK] {
            assert!(LIST.contains(&format!("{mark} ")), "{mark}");
        }
    }

    /// Three versions of one image (1 oldest) and one of another; blobs
    /// `a` (shared by all), `1`/`2`/`3` (one per version), configs `c`, `d`, `e`.
    fn listing_out() -> String {
        let mut out = format!("{NOW_MARK} 100000\n");
        for (seq, m, cfg, layer) in [
            (10, '7', 'c', '1'),
            (20, '8', 'd', '2'),
            (30, '9', 'e', '3'),
        ] {
            out.push_str(&format!(
                "{RECORD_MARK} images/ferry%2Fbusybox/{seq}-{} {}\n",
                h(m),
                manifest(cfg, &['a', layer])
            ));
        }
        out.push_str(&format!(
            "{RECORD_MARK} images/other/5-{} {}\n",
            h('6'),
            manifest('f', &['a'])
        ));
        for c in ['a', '1', '2', '3', 'c', 'd', 'e', 'f', '6', '7', '8', '9'] {
            out.push_str(&format!("{BLOB_MARK} 10 90000.5 {}\n", h(c)));
        }
        out
    }

    #[test]
    fn the_oldest_version_loses_only_what_no_kept_image_needs() {
        let l = Listing::parse(&listing_out());
        assert_eq!(l.records.len(), 4);
        assert_eq!(l.records[0].name, "ferry/busybox");
        let p = plan(&l, 2).unwrap();
        let seqs = |rs: &[Record]| rs.iter().map(|r| r.seq).collect::<Vec<_>>();
        assert_eq!(seqs(&p.kept), vec![30, 20, 5]);
        assert_eq!(seqs(&p.dropped), vec![10]);
        assert_eq!(
            p.remove.keys().cloned().collect::<Vec<_>>(),
            vec![h('1'), h('7'), h('c')]
        );
        assert!(p.keep.contains_key(&h('a')) && p.keep.contains_key(&h('f')));
        assert_eq!(p.bytes_freed(), 30);
        // keeping more than there are removes nothing
        let p = plan(&l, 5).unwrap();
        assert!(p.remove.is_empty() && p.dropped.is_empty());
        // keeping one: two versions go, the shared layer stays
        let p = plan(&l, 1).unwrap();
        assert_eq!(p.remove.len(), 6);
        assert!(!p.remove.contains_key(&h('a')));
    }

    #[test]
    fn unknown_or_young_blobs_and_parts_follow_the_safe_rules() {
        let mut out = listing_out();
        // a blob no record names: young stays (a push is under way), old goes
        out.push_str(&format!("{BLOB_MARK} 5 99999 {}\n", h('b')));
        out.push_str(&format!("{BLOB_MARK} 5 1000 {}\n", h('0')));
        // parts: a fresh one stays, a day-old one goes
        out.push_str(&format!("{BLOB_MARK} 7 99000 {}.part\n", h('4')));
        out.push_str(&format!("{BLOB_MARK} 8 1000 {}.part\n", h('5')));
        out.push_str(&format!("{BLOB_MARK} 8 1000 junk\n"));
        let p = plan(&Listing::parse(&out), 2).unwrap();
        assert!(p.keep.contains_key(&h('b')));
        assert!(p.remove.contains_key(&h('0')));
        assert_eq!(p.remove_parts, BTreeMap::from([(h('5'), 8)]));
        let (s, files) = remove_script("/srv/st", &p).unwrap();
        assert_eq!(s.text(), REMOVE);
        assert_eq!(s.values(), ["/srv/st"]);
        let files = String::from_utf8(files).unwrap();
        let files: Vec<&str> = files.lines().collect();
        assert!(
            files[0].starts_with("images/ferry%2Fbusybox/10-"),
            "{files:?}"
        );
        assert!(
            files.contains(&format!("blobs/sha256/{}.part", h('5')).as_str()),
            "{files:?}"
        );
    }

    /// What [`gc_host`] does on a host, with a local `sh`: the lock, the
    /// listing, the plan and the removal. `Err` with the exit status when a
    /// step refused.
    fn gc_here(store: &std::path::Path) -> Result<Plan, Option<i32>> {
        use crate::deliver::tests::{hold, release, sh_run, stand_ins};
        let bin = stand_ins();
        let st = store.to_str().unwrap();
        let lock =
            hold(&crate::deliver::scripts::store_lock_script(st, LockMode::Exclusive, 0).unwrap())?;
        let (code, out) = sh_run(&list_script(st).unwrap(), store, bin.path(), b"");
        if code != Some(0) {
            return Err(code);
        }
        let p = plan(&Listing::parse(&out), 1).unwrap();
        let (remove, files) = remove_script(st, &p).unwrap();
        let (code, _) = sh_run(&remove, store, bin.path(), &files);
        if code != Some(0) {
            return Err(code);
        }
        release(lock);
        Ok(p)
    }

    /// A push lists the store, finds an old blob no image records (an image
    /// gc dropped earlier, say) and plans not to send it; gc must not remove
    /// it under the push's feet.
    #[test]
    fn gc_while_a_push_holds_the_store_removes_nothing_it_listed() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        let blobs = store.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).unwrap();
        let x = h('a');
        std::fs::write(blobs.join(&x), b"x").unwrap();
        let old = std::process::Command::new("touch")
            .args(["-d", "@1000"])
            .arg(blobs.join(&x))
            .status()
            .unwrap();
        assert!(old.success());
        // the push holds the store for its whole run
        let push = crate::deliver::tests::hold(
            &crate::deliver::scripts::store_lock_script(
                store.to_str().unwrap(),
                LockMode::Shared,
                0,
            )
            .unwrap(),
        )
        .unwrap();
        let bin = crate::deliver::tests::stand_ins();
        let (_, out) = crate::deliver::tests::sh_run(
            &crate::deliver::scripts::list_script(
                store.to_str().unwrap(),
                "a:b",
                crate::deliver::Runtime::Docker,
            )
            .unwrap(),
            dir.path(),
            bin.path(),
            b"",
        );
        assert!(
            crate::deliver::HostState::parse(&out)
                .blobs
                .contains_key(&x)
        );
        let refused = gc_here(&store);
        assert!(blobs.join(&x).exists(), "gc removed a blob the push listed");
        assert_eq!(
            refused.unwrap_err(),
            Some(crate::deliver::scripts::EXIT_LOCKED)
        );
        crate::deliver::tests::release(push);
        // with the push over, the old blob goes
        assert!(gc_here(&store).unwrap().remove.contains_key(&x));
        assert!(!blobs.join(&x).exists());
    }

    /// sshd hands the command line to the login shell as one argument, and
    /// Linux refuses any argument over 128 KiB (E2BIG): the list of files
    /// to remove cannot be part of it.
    #[test]
    fn a_gc_of_5000_blobs_fits_a_command_line_and_removes_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        for d in ["blobs/sha256", "locks", "images/x"] {
            std::fs::create_dir_all(store.join(d)).unwrap();
        }
        let mut p = Plan::default();
        for i in 0..5000u32 {
            let hex = format!("{:064x}", u64::from(i) + 1);
            std::fs::write(store.join("blobs/sha256").join(&hex), b"x").unwrap();
            std::fs::write(store.join("locks").join(&hex), b"").unwrap();
            p.remove.insert(hex, 1);
        }
        let part = h('5');
        std::fs::write(store.join(format!("blobs/sha256/{part}.part")), b"x").unwrap();
        p.remove_parts.insert(part, 1);
        let record = format!("images/x/1-{}", h('6'));
        std::fs::write(store.join(&record), b"").unwrap();
        p.dropped.push(Record {
            path: record,
            name: "x".into(),
            seq: 1,
            manifest: h('6'),
            blobs: None,
        });
        let (s, files) = remove_script(store.to_str().unwrap(), &p).unwrap();
        let line = s.command_line().unwrap();
        assert!(line.len() < 100 << 10, "{} bytes", line.len());
        let bin = crate::deliver::tests::stand_ins();
        let (code, _) = crate::deliver::tests::sh_run(&s, &store, bin.path(), &files);
        assert_eq!(code, Some(0));
        assert_eq!(
            crate::deliver::tests::tree(&store),
            ["blobs", "blobs/sha256", "locks", "images"]
                .iter()
                .map(std::path::PathBuf::from)
                .collect()
        );
    }

    #[test]
    fn a_kept_image_with_an_unreadable_manifest_stops_the_host() {
        let mut out = listing_out();
        out.push_str(&format!("{RECORD_MARK} images/other/6-{} \n", h('5')));
        let e = plan(&Listing::parse(&out), 2).unwrap_err();
        assert!(matches!(e, GcError::UnknownManifest { ref name, .. } if name == "other"));
        // a dropped image's manifest may be gone: it is only forgotten
        let mut out = format!("{RECORD_MARK} images/x/1-{} \n", h('5'));
        out.push_str(&format!(
            "{RECORD_MARK} images/x/2-{} {}\n",
            h('6'),
            manifest('f', &['a'])
        ));
        let p = plan(&Listing::parse(&out), 1).unwrap();
        assert_eq!(p.dropped.len(), 1);
    }
}
