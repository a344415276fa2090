//! A `Packages` index, read as a stream of deb822 stanzas with only the
//! fields the resolver and the lock use kept, and the catalogue the
//! closure resolver in `crate::image::apt` asks: a package's candidate is its
//! highest version for the architecture (or `all`) among every suite, as
//! apt chooses when every suite has the same priority.

use std::collections::BTreeMap;
use std::io::BufRead;

use super::version;
use crate::image::apt::{AptError, Catalog, PackageInfo, parse_depends};
use crate::image::lock;

/// The longest line an index may have (a `Description` line is far shorter).
const MAX_LINE: usize = 1 << 20;
/// The most stanzas ferry reads of all indexes (Debian's main has about 65,000).
pub const MAX_STANZAS: usize = 1_000_000;

/// One binary package of an index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    pub package: String,
    pub version: String,
    pub arch: String,
    pub depends: String,
    pub pre_depends: String,
    pub provides: String,
    /// `pool/main/g/glibc/libc6_2.36-9+deb12u14_amd64.deb`
    pub filename: String,
    pub size: u64,
    pub sha256: String,
    /// The suite whose index listed it (its order in the definition).
    pub suite: usize,
}

/// Reads every stanza of `r` into `out`; `what` names the index in errors.
pub fn read(
    r: &mut dyn BufRead,
    suite: usize,
    what: &str,
    out: &mut Vec<Record>,
) -> Result<(), String> {
    let mut rec = Record {
        suite,
        ..Default::default()
    };
    let mut line = Vec::new();
    let mut lineno = 0usize;
    let mut field: Option<&'static str> = None;
    loop {
        line.clear();
        let n = std::io::Read::take(&mut *r, MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(|e| format!("{what}: {e}"))?;
        lineno += 1;
        if n > MAX_LINE {
            return Err(format!(
                "{what}:{lineno}: a line longer than {MAX_LINE} bytes"
            ));
        }
        let text = std::str::from_utf8(&line)
            .map_err(|_| format!("{what}:{lineno}: not UTF-8"))?
            .trim_end_matches(['\n', '\r']);
        if text.is_empty() {
            if !rec.package.is_empty() {
                finish(&mut rec, what, lineno)?;
                if out.len() >= MAX_STANZAS {
                    return Err(format!("{what}: more than {MAX_STANZAS} packages"));
                }
                out.push(std::mem::replace(
                    &mut rec,
                    Record {
                        suite,
                        ..Default::default()
                    },
                ));
            }
            if n == 0 {
                return Ok(());
            }
            field = None;
            continue;
        }
        if text.starts_with([' ', '\t']) {
            // a continuation line: only the relation fields may be folded
            match field {
                Some("Depends") => push_folded(&mut rec.depends, text),
                Some("Pre-Depends") => push_folded(&mut rec.pre_depends, text),
                Some("Provides") => push_folded(&mut rec.provides, text),
                _ => {}
            }
            continue;
        }
        let Some((key, value)) = text.split_once(':') else {
            return Err(format!("{what}:{lineno}: not a `Field: value` line"));
        };
        let value = value.trim().to_string();
        field = None;
        match key {
            "Package" => rec.package = value,
            "Version" => rec.version = value,
            "Architecture" => rec.arch = value,
            "Depends" => (rec.depends, field) = (value, Some("Depends")),
            "Pre-Depends" => (rec.pre_depends, field) = (value, Some("Pre-Depends")),
            "Provides" => (rec.provides, field) = (value, Some("Provides")),
            "Filename" => rec.filename = value,
            "Size" => {
                rec.size = value
                    .parse()
                    .map_err(|_| format!("{what}:{lineno}: a bad Size `{value}`"))?
            }
            "SHA256" => rec.sha256 = value.to_ascii_lowercase(),
            _ => {}
        }
    }
}

fn push_folded(to: &mut String, line: &str) {
    to.push(' ');
    to.push_str(line.trim());
}

/// Checks what the lock and a download will take from a stanza.
fn finish(rec: &mut Record, what: &str, lineno: usize) -> Result<(), String> {
    let at = |m: String| {
        format!(
            "{what}: package `{}` (before line {lineno}): {m}",
            rec.package
        )
    };
    if !crate::grammar::is_deb_name(&rec.package) {
        return Err(format!(
            "{what}:{lineno}: a bad package name `{}`",
            rec.package.escape_debug()
        ));
    }
    if !crate::grammar::is_deb_version(&rec.version) {
        return Err(at(format!(
            "a bad Version `{}`",
            rec.version.escape_debug()
        )));
    }
    if !crate::grammar::is_deb_arch(&rec.arch) {
        return Err(at(format!(
            "a bad Architecture `{}`",
            rec.arch.escape_debug()
        )));
    }
    if !lock::is_pool_path(&rec.filename) {
        return Err(at(format!(
            "a bad Filename `{}`",
            rec.filename.escape_debug()
        )));
    }
    if !crate::grammar::is_hex64(&rec.sha256) {
        return Err(at("no SHA256 field".into()));
    }
    Ok(())
}

/// Every package of a set of indexes, by name.
#[derive(Debug, Default)]
pub struct Index {
    records: Vec<Record>,
    by_name: BTreeMap<String, Vec<usize>>,
    /// virtual name → packages whose candidate provides it
    provided_by: BTreeMap<String, Vec<String>>,
}

impl Index {
    pub fn new(records: Vec<Record>, arch: &str) -> Index {
        let mut by_name: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, r) in records.iter().enumerate() {
            if r.arch == arch || r.arch == "all" {
                by_name.entry(r.package.clone()).or_default().push(i);
            }
        }
        let mut ix = Index {
            records,
            by_name,
            provided_by: BTreeMap::new(),
        };
        let mut provided_by: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for name in ix.by_name.keys() {
            if let Some(c) = ix.candidate(name) {
                for p in parse_depends(&c.provides).into_iter().flatten() {
                    provided_by.entry(p).or_default().push(name.clone());
                }
            }
        }
        ix.provided_by = provided_by;
        ix
    }

    /// The highest version of `name` for the index's architecture; among
    /// equal versions, the one of the earliest suite.
    pub fn candidate(&self, name: &str) -> Option<&Record> {
        let ids = self.by_name.get(name)?;
        let mut best: Option<&Record> = None;
        for &i in ids {
            let r = &self.records[i];
            best = match best {
                None => Some(r),
                Some(b) => match version::compare(&r.version, &b.version) {
                    std::cmp::Ordering::Greater => Some(r),
                    std::cmp::Ordering::Equal if r.suite < b.suite => Some(r),
                    _ => Some(b),
                },
            };
        }
        best
    }

    /// `name` at exactly `version`.
    pub fn exact(&self, name: &str, version: &str) -> Option<&Record> {
        self.by_name
            .get(name)?
            .iter()
            .map(|&i| &self.records[i])
            .find(|r| r.version == version)
    }

    /// The record whose file has this sha256 (what a lock pinned).
    pub fn by_sha256(&self, name: &str, sha256: &str) -> Option<&Record> {
        self.by_name
            .get(name)?
            .iter()
            .map(|&i| &self.records[i])
            .find(|r| r.sha256 == sha256)
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }
}

impl Catalog for Index {
    fn info(&mut self, name: &str) -> Result<Option<PackageInfo>, AptError> {
        Ok(self.candidate(name).map(|c| {
            let mut depends = parse_depends(&c.pre_depends);
            depends.extend(parse_depends(&c.depends));
            PackageInfo {
                depends,
                provides: parse_depends(&c.provides).into_iter().flatten().collect(),
            }
        }))
    }

    fn providers(&mut self, name: &str) -> Result<Vec<String>, AptError> {
        Ok(self.provided_by.get(name).cloned().unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "3eb1ea6d85488f488cc2a163b98ad640ef88cee4c79287cf14e361aaf6206f47";

    fn stanza(p: &str, v: &str, a: &str, extra: &str) -> String {
        format!(
            "Package: {p}\nVersion: {v}\nArchitecture: {a}\n{extra}Filename: pool/main/x/{p}/{p}_{v}_{a}.deb\nSize: 10\nSHA256: {SHA}\nDescription: a\n long text\n\n"
        )
    }

    fn index(suites: &[&str]) -> Index {
        let mut out = Vec::new();
        for (i, s) in suites.iter().enumerate() {
            read(&mut s.as_bytes(), i, "Packages", &mut out).unwrap();
        }
        Index::new(out, "amd64")
    }

    #[test]
    fn the_highest_version_of_any_suite_wins() {
        let main = stanza("libc6", "2.36-9+deb12u9", "amd64", "Depends: libgcc-s1\n")
            + &stanza("mawk", "1.3.4", "amd64", "Provides: awk\n")
            + &stanza("other", "1", "arm64", "");
        let security = stanza(
            "libc6",
            "2.36-9+deb12u10",
            "amd64",
            "Depends: libgcc-s1,\n libcrypt1\n",
        );
        let mut ix = index(&[&main, &security]);
        let c = ix.candidate("libc6").unwrap();
        assert_eq!((c.version.as_str(), c.suite), ("2.36-9+deb12u10", 1));
        assert_eq!(
            ix.info("libc6").unwrap().unwrap().depends,
            vec![vec!["libgcc-s1".to_string()], vec!["libcrypt1".to_string()]],
            "a folded Depends is read whole"
        );
        assert_eq!(ix.providers("awk").unwrap(), vec!["mawk".to_string()]);
        assert!(ix.candidate("other").is_none(), "another architecture");
        assert!(ix.exact("libc6", "2.36-9+deb12u9").is_some());
    }

    #[test]
    fn hostile_stanzas_are_refused() {
        let mut out = Vec::new();
        let bad_path = stanza("a", "1", "amd64", "").replace("pool/main", "../../etc");
        let err = read(&mut bad_path.as_bytes(), 0, "P", &mut out).unwrap_err();
        assert!(err.contains("`a`"), "{err}");
        let bad_name = stanza("-o", "1", "amd64", "");
        assert!(read(&mut bad_name.as_bytes(), 0, "P", &mut out).is_err());
        let long = format!("Package: a\nDescription: {}\n", "x".repeat(MAX_LINE + 10));
        assert!(read(&mut long.as_bytes(), 0, "P", &mut out).is_err());
        let no_hash = stanza("a", "1", "amd64", "").replace(SHA, "");
        assert!(read(&mut no_hash.as_bytes(), 0, "P", &mut out).is_err());
    }
}
