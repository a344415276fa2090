//! The file table of one layer, and the sources that fill it.
//!
//! Every input (archive, .deb, wheel, local folder, declared item) becomes
//! entries in a [`Tree`]: image paths mapped to metadata and a handle on the
//! bytes. The tree enforces the rules that keep hostile inputs harmless:
//! no `..`, no device nodes, hard links only to earlier entries of the same
//! layer, and a path beneath a symlink is resolved inside the image root
//! (chroot semantics), never on the build machine. Nothing here writes
//! outside the staging folder it is given.

pub mod archive;
pub mod deb;
pub mod local;
pub mod nix;
pub mod wheel;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// Where an entry came from, for error messages: the archive (or folder) and
/// the name of the entry inside it.
#[derive(Debug, Clone)]
pub struct Origin {
    pub source: String,
    pub entry: String,
}

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("`{}`: entry `{}`: {reason}", origin.source, origin.entry)]
    Refused { origin: Origin, reason: String },
    #[error("`{source_name}`: {reason}")]
    Corrupt { source_name: String, reason: String },
    #[error("`{}`", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl InputError {
    pub fn refused(origin: &Origin, reason: impl std::fmt::Display) -> Self {
        InputError::Refused {
            origin: origin.clone(),
            reason: reason.to_string(),
        }
    }
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        InputError::Io {
            path: path.into(),
            source,
        }
    }
}

/// The bytes of a regular file.
#[derive(Debug, Clone)]
pub enum Data {
    /// A file on the build machine: a staged archive member or a local source file.
    Path(PathBuf),
    /// Small generated content (declared files, /etc/passwd, console scripts).
    Bytes(Arc<[u8]>),
}

#[derive(Debug, Clone)]
pub enum Kind {
    Dir,
    /// `group` ties hard links together: entries sharing a group are one inode.
    File {
        data: Data,
        size: u64,
        group: u64,
    },
    Symlink(String),
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub kind: Kind,
    /// Permission bits including setuid/setgid/sticky (0o7777 at most).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: u64,
}

impl Entry {
    pub fn new(kind: Kind, mode: u32, uid: u32, gid: u32, mtime: u64) -> Entry {
        Entry {
            kind,
            mode,
            uid,
            gid,
            mtime,
        }
    }

    /// An entry owned by root (uid and gid 0).
    pub fn root_owned(kind: Kind, mode: u32, mtime: u64) -> Entry {
        Entry::new(kind, mode, 0, 0, mtime)
    }
}

/// What a layer leaves behind for the layers above it: its directories (so an
/// upper layer's implicit parents keep their owner and mode) and symlinks (so
/// a path beneath them resolves as the runtime would).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Skeleton {
    pub dirs: BTreeMap<String, (u32, u32, u32)>,
    pub symlinks: BTreeMap<String, String>,
}

impl Skeleton {
    pub fn extend(&mut self, other: &Skeleton) {
        for (p, m) in &other.dirs {
            self.symlinks.remove(p);
            self.dirs.insert(p.clone(), *m);
        }
        for (p, t) in &other.symlinks {
            self.dirs.remove(p);
            self.symlinks.insert(p.clone(), t.clone());
        }
    }
}

/// A folder's worth of limits that keep absurd inputs from doing harm.
pub const MAX_PATH: usize = 4096;
const MAX_DEPTH: usize = 256;

/// How much of one layer (or one base layer's skeleton) is held in memory:
/// an archive of millions of tiny entries, or of long names, is refused
/// before it exhausts the build machine.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub entries: usize,
    pub path_bytes: usize,
}

impl Limits {
    pub const DEFAULT: Limits = Limits {
        entries: 1_000_000,
        path_bytes: 256 << 20,
    };

    /// Whether one more name of `len` bytes fits beside `count` names of `bytes` bytes.
    pub fn check(&self, count: usize, bytes: usize, len: usize) -> Result<(), LimitFault> {
        if count >= self.entries {
            return Err(LimitFault::Entries {
                limit: self.entries,
            });
        }
        if bytes.saturating_add(len) > self.path_bytes {
            return Err(LimitFault::PathBytes {
                limit: self.path_bytes,
            });
        }
        Ok(())
    }
}

/// A layer past one of its [`Limits`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitFault {
    #[error("the layer holds more than {limit} entries (the limit)")]
    Entries { limit: usize },
    #[error("the layer's path names exceed {limit} bytes (the limit)")]
    PathBytes { limit: usize },
}

/// Why a path from an archive or a definition is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathFault {
    #[error("path is longer than {max} bytes")]
    TooLong { max: usize },
    #[error("path contains a NUL byte")]
    Nul,
    #[error("path has a `..` component")]
    DotDot,
    #[error("path is deeper than {max} folders")]
    TooDeep { max: usize },
}
const MAX_LINK_HOPS: usize = 40;

#[derive(Debug)]
pub struct Tree {
    entries: BTreeMap<String, Entry>,
    below: Skeleton,
    created: u64,
    next_group: u64,
    limits: Limits,
    /// The bytes of every key of `entries`.
    path_bytes: usize,
}

/// Splits a path from an archive or a definition into clean components.
/// `..` is refused rather than resolved: no honest archive needs it.
pub fn clean_components(path: &str) -> Result<Vec<&str>, PathFault> {
    if path.len() > MAX_PATH {
        return Err(PathFault::TooLong { max: MAX_PATH });
    }
    if path.contains('\0') {
        return Err(PathFault::Nul);
    }
    let mut out = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err(PathFault::DotDot),
            c => out.push(c),
        }
    }
    if out.len() > MAX_DEPTH {
        return Err(PathFault::TooDeep { max: MAX_DEPTH });
    }
    Ok(out)
}

/// Joins `dest` and a relative path into an image path (no leading slash).
pub fn image_path(dest: &str, rel: &str) -> Result<String, PathFault> {
    let mut parts = clean_components(dest)?;
    parts.extend(clean_components(rel)?);
    Ok(parts.join("/"))
}

/// Applies `strip_prefix`: `None` when the entry lies outside the prefix.
pub fn strip(name: &str, prefix: Option<&str>) -> Option<String> {
    let name = name.trim_start_matches("./").trim_start_matches('/');
    match prefix {
        None => Some(name.to_string()),
        Some(p) => {
            let p = p.trim_start_matches("./").trim_matches('/');
            if p.is_empty() {
                return Some(name.to_string());
            }
            let rest = name.strip_prefix(p)?;
            if rest.is_empty() {
                Some(String::new())
            } else {
                rest.strip_prefix('/').map(str::to_string)
            }
        }
    }
}

/// Resolves `parts` through symlinks inside an image root, as a chroot
/// would: `..` never climbs above the root and absolute targets start over
/// at it. Every component but the last is followed; the last too with
/// `follow_last`. `link_at` answers whether an image path is a symlink.
/// Bounded as Linux is: at most 40 links followed, no target and no path
/// (as far as it is resolved) longer than 4096 bytes, so a chain of long
/// targets cannot ask for gigabytes of folders.
pub fn resolve_in_root<'a>(
    parts: &[&str],
    follow_last: bool,
    link_at: impl Fn(&str) -> Option<&'a str>,
) -> Result<String, &'static str> {
    let mut pending: Vec<&str> = parts.iter().rev().copied().collect();
    // the path resolved so far, and where each of its components starts
    let mut done = String::new();
    let mut starts: Vec<usize> = Vec::new();
    let mut hops = 0;
    while let Some(c) = pending.pop() {
        if c == ".." {
            if let Some(s) = starts.pop() {
                done.truncate(s);
            }
            continue;
        }
        starts.push(done.len());
        if !done.is_empty() {
            done.push('/');
        }
        done.push_str(c);
        if done.len() > MAX_PATH || starts.len() > MAX_DEPTH {
            return Err(
                "path is longer than 4096 bytes (or deeper than 256 folders) once symlinks are resolved",
            );
        }
        if pending.is_empty() && !follow_last {
            break;
        }
        if let Some(target) = link_at(&done) {
            hops += 1;
            if hops > MAX_LINK_HOPS {
                return Err("too many levels of symlinks");
            }
            if target.contains('\0') {
                return Err("symlink target contains NUL");
            }
            if target.len() > MAX_PATH {
                return Err("symlink target is longer than 4096 bytes");
            }
            let s = starts.pop().expect("just pushed");
            done.truncate(s);
            if target.starts_with('/') {
                done.clear();
                starts.clear();
            }
            pending.extend(
                target
                    .split('/')
                    .filter(|t| !t.is_empty() && *t != ".")
                    .rev(),
            );
        }
    }
    Ok(done)
}

/// The names in a folder of the build machine, sorted, so every walk is in
/// the same order whatever the file system's.
pub fn sorted_names(dir: &std::path::Path) -> Result<Vec<std::ffi::OsString>, InputError> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| InputError::io(dir, e))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .map_err(|e| InputError::io(dir, e))?;
    names.sort();
    Ok(names)
}

impl Tree {
    pub fn new(created: u64, below: Skeleton) -> Tree {
        Tree {
            entries: BTreeMap::new(),
            below,
            created,
            next_group: 0,
            limits: Limits::DEFAULT,
            path_bytes: 0,
        }
    }

    #[cfg(test)]
    pub fn with_limits(mut self, limits: Limits) -> Tree {
        self.limits = limits;
        self
    }

    pub fn created(&self) -> u64 {
        self.created
    }

    pub fn entries(&self) -> &BTreeMap<String, Entry> {
        &self.entries
    }

    pub fn new_group(&mut self) -> u64 {
        self.next_group += 1;
        self.next_group
    }

    /// The directories and symlinks this layer adds, for the layers above.
    pub fn skeleton(&self) -> Skeleton {
        let mut s = Skeleton::default();
        for (p, e) in &self.entries {
            match &e.kind {
                Kind::Dir => {
                    s.dirs.insert(p.clone(), (e.mode, e.uid, e.gid));
                }
                Kind::Symlink(t) => {
                    s.symlinks.insert(p.clone(), t.clone());
                }
                Kind::File { .. } => {}
            }
        }
        s
    }

    fn link_at(&self, path: &str) -> Option<&str> {
        match self.entries.get(path) {
            Some(Entry {
                kind: Kind::Symlink(t),
                ..
            }) => Some(t),
            Some(_) => None,
            None => self.below.symlinks.get(path).map(String::as_str),
        }
    }

    /// Resolves every component but the last through symlinks, inside the
    /// image root. With `follow_last`, the last component is resolved too.
    fn resolve(
        &self,
        path: &str,
        follow_last: bool,
        origin: &Origin,
    ) -> Result<String, InputError> {
        let parts = clean_components(path).map_err(|r| InputError::refused(origin, r))?;
        resolve_in_root(&parts, follow_last, |p| self.link_at(p))
            .map_err(|r| InputError::refused(origin, r))
    }

    /// Makes sure every parent of `path` exists as a directory in this layer,
    /// taking owner and mode from the layer below when it has the directory.
    fn ensure_parents(&mut self, path: &str, origin: &Origin) -> Result<(), InputError> {
        let mut end = 0;
        while let Some(i) = path[end..].find('/') {
            let parent = &path[..end + i];
            end += i + 1;
            match self.entries.get(parent) {
                Some(Entry {
                    kind: Kind::Dir, ..
                }) => continue,
                Some(_) => {
                    return Err(InputError::refused(
                        origin,
                        format!("`/{parent}` is a file in this layer, not a folder"),
                    ));
                }
                None => {
                    let (mode, uid, gid) = self
                        .below
                        .dirs
                        .get(parent)
                        .copied()
                        .unwrap_or((0o755, 0, 0));
                    let mtime = self.created;
                    self.put(
                        parent.to_string(),
                        Entry::new(Kind::Dir, mode, uid, gid, mtime),
                        origin,
                    )?;
                }
            }
        }
        Ok(())
    }

    /// Adds an entry at `path` (an image path). A later entry replaces an
    /// earlier one at the same path; a folder entry over a symlink to a folder
    /// keeps the link (as dpkg does), and a non-folder entry cannot replace a
    /// folder that still has content.
    pub fn insert(
        &mut self,
        path: &str,
        mut entry: Entry,
        origin: &Origin,
    ) -> Result<(), InputError> {
        entry.mode &= 0o7777;
        entry.mtime = entry.mtime.min(self.created);
        let is_dir = matches!(entry.kind, Kind::Dir);
        // An overlay whiteout would delete files of lower layers at run time,
        // and a parent folder is written into the layer like any entry: every
        // component counts, of the path as given and as resolved.
        let whiteout = |p: &str| p.split('/').any(|n| n.starts_with(".wh."));
        if whiteout(path) {
            return Err(InputError::refused(
                origin,
                "`.wh.` names are overlay whiteouts",
            ));
        }
        let resolved = self.resolve(path, is_dir, origin)?;
        if whiteout(&resolved) {
            return Err(InputError::refused(
                origin,
                format!("resolves to `/{resolved}`, and `.wh.` names are overlay whiteouts"),
            ));
        }
        if resolved.is_empty() {
            // The image root itself: only folders may land there, and it is not an entry.
            return if is_dir {
                Ok(())
            } else {
                Err(InputError::refused(origin, "cannot replace the image root"))
            };
        }
        self.ensure_parents(&resolved, origin)?;
        if let Some(old) = self.entries.get(&resolved)
            && matches!(old.kind, Kind::Dir)
            && !is_dir
            && self.has_children(&resolved)
        {
            return Err(InputError::refused(
                origin,
                format!("would replace the non-empty folder `/{resolved}` with a non-folder"),
            ));
        }
        self.put(resolved, entry, origin)
    }

    /// Sets the entry at `key`, counting a new key against the limits.
    fn put(&mut self, key: String, entry: Entry, origin: &Origin) -> Result<(), InputError> {
        if !self.entries.contains_key(&key) {
            self.limits
                .check(self.entries.len(), self.path_bytes, key.len())
                .map_err(|m| InputError::refused(origin, m))?;
            self.path_bytes += key.len();
        }
        self.entries.insert(key, entry);
        Ok(())
    }

    fn has_children(&self, dir: &str) -> bool {
        let prefix = format!("{dir}/");
        self.entries
            .range(prefix.clone()..)
            .next()
            .is_some_and(|(k, _)| k.starts_with(&prefix))
    }

    /// Adds a hard link at `path` to the earlier entry `target` of this layer.
    pub fn insert_hardlink(
        &mut self,
        path: &str,
        target: &str,
        mtime: u64,
        origin: &Origin,
    ) -> Result<(), InputError> {
        let resolved_target = self.resolve(target, false, origin)?;
        let Some(Entry {
            kind: Kind::File { data, size, group },
            mode,
            uid,
            gid,
            ..
        }) = self.entries.get(&resolved_target).cloned()
        else {
            return Err(InputError::refused(
                origin,
                format!(
                    "hard link to `{target}`, which is not an earlier regular file of this layer"
                ),
            ));
        };
        self.insert(
            path,
            Entry::new(Kind::File { data, size, group }, mode, uid, gid, mtime),
            origin,
        )
    }

    /// Removes every entry matching one of `patterns` (and its content).
    pub fn exclude(&mut self, patterns: &[String]) {
        if patterns.is_empty() {
            return;
        }
        self.entries
            .retain(|p, _| !patterns.iter().any(|pat| glob_match_or_parent(pat, p)));
    }

    /// Sets mode and owner of every entry matching `pattern`.
    pub fn set_meta(
        &mut self,
        pattern: &str,
        mode: Option<u32>,
        owner: Option<(u32, u32)>,
    ) -> usize {
        let mut n = 0;
        for (p, e) in self.entries.iter_mut() {
            if glob_match(pattern, p) {
                n += 1;
                if let Some(m) = mode {
                    e.mode = m;
                }
                if let Some((u, g)) = owner {
                    e.uid = u;
                    e.gid = g;
                }
            }
        }
        n
    }
}

/// True when `pattern` matches `path` or one of its parents.
pub fn glob_match_or_parent(pattern: &str, path: &str) -> bool {
    if glob_match(pattern, path) {
        return true;
    }
    let mut p = path;
    while let Some(i) = p.rfind('/') {
        p = &p[..i];
        if glob_match(pattern, p) {
            return true;
        }
    }
    false
}

/// Matches an image path against a glob: `*` and `?` within one segment,
/// `**` across any number of segments. Leading slashes are ignored.
///
/// Hand-written rather than `globset`: this is the grammar definitions are
/// written in, and globset's differs from it (`[...]` classes, `{a,b}`
/// alternatives and `\` escapes, where these match literally; `dir/**`
/// not matching `dir` itself, where this does), so a definition that
/// builds today would select other files.
pub fn glob_match(pattern: &str, path: &str) -> bool {
    let pat: Vec<&str> = pattern.split('/').filter(|s| !s.is_empty()).collect();
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match_segments(&pat, &segs)
}

fn match_segments(pat: &[&str], segs: &[&str]) -> bool {
    match pat.first() {
        None => segs.is_empty(),
        Some(&"**") => (0..=segs.len()).any(|i| match_segments(&pat[1..], &segs[i..])),
        Some(p) => {
            !segs.is_empty()
                && match_one(p.as_bytes(), segs[0].as_bytes())
                && match_segments(&pat[1..], &segs[1..])
        }
    }
}

fn match_one(p: &[u8], s: &[u8]) -> bool {
    match p.first() {
        None => s.is_empty(),
        Some(b'*') => (0..=s.len()).any(|i| match_one(&p[1..], &s[i..])),
        Some(b'?') => !s.is_empty() && match_one(&p[1..], &s[1..]),
        Some(c) => s.first() == Some(c) && match_one(&p[1..], &s[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> Origin {
        Origin {
            source: "test.tar".into(),
            entry: "e".into(),
        }
    }

    fn file(bytes: &[u8]) -> Entry {
        Entry {
            kind: Kind::File {
                data: Data::Bytes(bytes.into()),
                size: bytes.len() as u64,
                group: 0,
            },
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 99,
        }
    }

    fn link(t: &str) -> Entry {
        Entry {
            kind: Kind::Symlink(t.into()),
            mode: 0o777,
            uid: 0,
            gid: 0,
            mtime: 0,
        }
    }

    #[test]
    fn a_layer_holds_no_more_entries_or_path_bytes_than_its_limits() {
        let small = Limits {
            entries: 10,
            path_bytes: 1 << 20,
        };
        let mut t = Tree::new(0, Skeleton::default()).with_limits(small);
        for i in 0..10 {
            t.insert(&format!("f{i}"), file(b"x"), &origin()).unwrap();
        }
        // a replaced entry is no new one
        t.insert("f0", file(b"y"), &origin()).unwrap();
        let err = t
            .insert("f10", file(b"x"), &origin())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("test.tar") && err.contains("10 entries"),
            "{err}"
        );
        // implicit parents count too
        let mut t = Tree::new(0, Skeleton::default()).with_limits(small);
        let err = t
            .insert("a/b/c/d/e/f/g/h/i/j/k", file(b"x"), &origin())
            .unwrap_err()
            .to_string();
        assert!(err.contains("10 entries"), "{err}");
        let small = Limits {
            entries: 1000,
            path_bytes: 100,
        };
        let mut t = Tree::new(0, Skeleton::default()).with_limits(small);
        t.insert(&"a".repeat(60), file(b"x"), &origin()).unwrap();
        let err = t
            .insert(&"b".repeat(60), file(b"x"), &origin())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("test.tar") && err.contains("100 bytes"),
            "{err}"
        );
    }

    #[test]
    fn dotdot_is_refused() {
        assert!(clean_components("a/../../etc/passwd").is_err());
        assert!(image_path("/opt", "../../x").is_err());
        assert_eq!(image_path("/opt/", "./a//b").unwrap(), "opt/a/b");
    }

    #[test]
    fn parents_are_emitted_and_mtime_clamped() {
        let mut t = Tree::new(10, Skeleton::default());
        t.insert("a/b/c", file(b"x"), &origin()).unwrap();
        let keys: Vec<_> = t.entries().keys().cloned().collect();
        assert_eq!(keys, ["a", "a/b", "a/b/c"]);
        assert_eq!(t.entries()["a/b/c"].mtime, 10);
    }

    #[test]
    fn paths_beneath_symlinks_resolve_inside_the_root() {
        let mut t = Tree::new(0, Skeleton::default());
        t.insert("bin", link("usr/bin"), &origin()).unwrap();
        t.insert("evil", link("/../../../../tmp"), &origin())
            .unwrap();
        t.insert("bin/bash", file(b"x"), &origin()).unwrap();
        t.insert("evil/owned", file(b"x"), &origin()).unwrap();
        assert!(t.entries().contains_key("usr/bin/bash"));
        assert!(t.entries().contains_key("tmp/owned"));
        assert!(!t.entries().contains_key("bin/bash"));
        // a folder entry over a symlink to a folder keeps the link
        t.insert(
            "bin",
            Entry {
                kind: Kind::Dir,
                mode: 0o755,
                uid: 0,
                gid: 0,
                mtime: 0,
            },
            &origin(),
        )
        .unwrap();
        assert!(matches!(t.entries()["bin"].kind, Kind::Symlink(_)));
    }

    #[test]
    fn symlinks_from_lower_layers_are_followed() {
        let mut below = Skeleton::default();
        below.symlinks.insert("lib".into(), "usr/lib".into());
        below.dirs.insert("usr".into(), (0o700, 5, 6));
        let mut t = Tree::new(0, below);
        t.insert("lib/x.so", file(b"x"), &origin()).unwrap();
        assert!(t.entries().contains_key("usr/lib/x.so"));
        let usr = &t.entries()["usr"];
        assert_eq!((usr.mode, usr.uid, usr.gid), (0o700, 5, 6));
    }

    #[test]
    fn symlink_loops_are_refused() {
        let mut t = Tree::new(0, Skeleton::default());
        t.insert("a", link("b"), &origin()).unwrap();
        t.insert("b", link("a"), &origin()).unwrap();
        let err = t.insert("a/x", file(b"x"), &origin()).unwrap_err();
        assert!(err.to_string().contains("too many levels"), "{err}");
    }

    #[test]
    fn whiteouts_are_refused_in_every_component() {
        let mut t = Tree::new(0, Skeleton::default());
        for p in [
            "etc/.wh.passwd",
            ".wh.etc/x",
            "a/.wh..wh..opq/b",
            "a/.wh.b/c/d",
        ] {
            let err = t.insert(p, file(b"x"), &origin()).unwrap_err();
            assert!(err.to_string().contains("whiteout"), "{p}: {err}");
        }
        // nor through a symlink whose target names one
        t.insert("x", link(".wh.etc"), &origin()).unwrap();
        let err = t.insert("x/y", file(b"x"), &origin()).unwrap_err();
        assert!(err.to_string().contains("whiteout"), "{err}");
        assert!(
            !t.entries().keys().any(|k| k.contains(".wh.")),
            "{:?}",
            t.entries().keys()
        );
    }

    #[test]
    fn hardlink_needs_earlier_file() {
        let mut t = Tree::new(0, Skeleton::default());
        let err = t.insert_hardlink("a", "nope", 0, &origin()).unwrap_err();
        assert!(
            err.to_string().contains("not an earlier regular file"),
            "{err}"
        );
        t.insert("f", file(b"x"), &origin()).unwrap();
        t.insert_hardlink("g", "f", 0, &origin()).unwrap();
        assert!(matches!(t.entries()["g"].kind, Kind::File { .. }));
    }

    #[test]
    fn file_cannot_replace_full_folder() {
        let mut t = Tree::new(0, Skeleton::default());
        t.insert("d/x", file(b"x"), &origin()).unwrap();
        assert!(t.insert("d", file(b"y"), &origin()).is_err());
        assert!(t.insert("d/x/y", file(b"y"), &origin()).is_err());
    }

    #[test]
    fn globs() {
        assert!(glob_match("/usr/share/doc/**", "usr/share/doc/a/b"));
        assert!(glob_match("usr/*/doc", "usr/share/doc"));
        assert!(!glob_match("usr/*/doc", "usr/share/x/doc"));
        assert!(glob_match("**/*.pyc", "a/b/c.pyc"));
        assert!(glob_match_or_parent(
            "usr/share/man",
            "usr/share/man/man1/ls.1.gz"
        ));
        assert_eq!(
            strip("./spark-3/bin/x", Some("spark-3/")),
            Some("bin/x".into())
        );
        assert_eq!(strip("other/x", Some("spark-3")), None);
        assert_eq!(strip("spark-3x/y", Some("spark-3")), None);
    }
}
