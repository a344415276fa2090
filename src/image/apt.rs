//! Debian dependency closures, resolved at lock time only (never when
//! building) on a catalogue: the archive's indexes as ferry reads them
//! (`crate::debian::Index`), a table in tests. One alternative is
//! chosen per dependency: one already chosen or requested wins, else the
//! first that exists; packages earlier layers already have count as
//! installed, so a layer holds only what it adds.

use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, thiserror::Error)]
pub enum AptError {
    #[error(
        "Debian package `{name}` is in none of the definition's suites (needed by {by}): check the name, and `[debian]`'s suites and components"
    )]
    Unknown { name: String, by: String },
}

/// What the closure needs to know of a package.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackageInfo {
    /// Pre-Depends and Depends: each clause a list of alternatives.
    pub depends: Vec<Vec<String>>,
    pub provides: Vec<String>,
}

/// Answers questions about packages; the archive's index in real use, a table in tests.
pub trait Catalog {
    /// `None` when no real package has this name (it may be virtual).
    fn info(&mut self, name: &str) -> Result<Option<PackageInfo>, AptError>;
    /// Real packages that provide a virtual name.
    fn providers(&mut self, name: &str) -> Result<Vec<String>, AptError>;
}

/// Parses a `Depends:` value into clauses of alternative package names.
pub fn parse_depends(v: &str) -> Vec<Vec<String>> {
    v.split(',')
        .map(|clause| {
            clause
                .split('|')
                .filter_map(|alt| {
                    let name = alt.split_whitespace().next()?.split(':').next()?;
                    (!name.is_empty()).then(|| name.to_string())
                })
                .collect::<Vec<_>>()
        })
        .filter(|c| !c.is_empty())
        .collect()
}

/// The closure of `requested`, without what `installed` has or `exclude` names.
pub fn closure(
    cat: &mut dyn Catalog,
    requested: &[String],
    installed: &BTreeSet<String>,
    exclude: &[String],
) -> Result<Vec<String>, AptError> {
    let mut chosen: BTreeSet<String> = BTreeSet::new();
    let mut provided: BTreeSet<String> = BTreeSet::new();
    let mut why: BTreeMap<String, String> = BTreeMap::new();
    let wanted: BTreeSet<&String> = requested.iter().collect();
    let mut queue: Vec<String> = requested.iter().rev().cloned().collect();
    for r in requested {
        why.insert(r.clone(), "the definition".into());
    }
    let have = |n: &str, chosen: &BTreeSet<String>, provided: &BTreeSet<String>| {
        chosen.contains(n)
            || provided.contains(n)
            || installed.contains(n)
            || exclude.iter().any(|e| e == n)
    };
    while let Some(name) = queue.pop() {
        if have(&name, &chosen, &provided) {
            continue;
        }
        let by = why.get(&name).cloned().unwrap_or_default();
        let Some(info) = cat.info(&name)? else {
            // virtual: take a provider already chosen or requested, else the first
            let providers = cat.providers(&name)?;
            if providers.iter().any(|p| have(p, &chosen, &provided)) {
                continue;
            }
            let pick = providers
                .iter()
                .find(|p| wanted.contains(p))
                .or_else(|| providers.first())
                .cloned()
                .ok_or_else(|| AptError::Unknown {
                    name: name.clone(),
                    by: by.clone(),
                })?;
            why.entry(pick.clone())
                .or_insert_with(|| format!("`{name}` for {by}"));
            queue.push(pick);
            continue;
        };
        chosen.insert(name.clone());
        provided.extend(info.provides.iter().cloned());
        for clause in info.depends.iter().rev() {
            if clause.iter().any(|alt| {
                have(alt, &chosen, &provided) || wanted.contains(alt) || queue.contains(alt)
            }) {
                continue;
            }
            let mut pick = None;
            for alt in clause {
                if cat.info(alt)?.is_some() || !cat.providers(alt)?.is_empty() {
                    pick = Some(alt.clone());
                    break;
                }
            }
            let pick = pick.ok_or_else(|| AptError::Unknown {
                name: clause.join(" | "),
                by: format!("`{name}`"),
            })?;
            why.entry(pick.clone())
                .or_insert_with(|| format!("`{name}`"));
            queue.push(pick);
        }
    }
    Ok(chosen.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Table(BTreeMap<&'static str, (&'static str, &'static str)>);

    impl Catalog for Table {
        fn info(&mut self, name: &str) -> Result<Option<PackageInfo>, AptError> {
            Ok(self.0.get(name).map(|(deps, provides)| PackageInfo {
                depends: parse_depends(deps),
                provides: parse_depends(provides).into_iter().flatten().collect(),
            }))
        }
        fn providers(&mut self, name: &str) -> Result<Vec<String>, AptError> {
            Ok(self
                .0
                .iter()
                .filter(|(_, (_, p))| parse_depends(p).iter().flatten().any(|x| x == name))
                .map(|(k, _)| k.to_string())
                .collect())
        }
    }

    fn table() -> Table {
        Table(BTreeMap::from([
            (
                "bash",
                ("base-files (>= 2.1.12), debianutils (>= 5.6-0.1)", ""),
            ),
            ("base-files", ("", "")),
            ("debianutils", ("libc6 (>= 2.34)", "")),
            ("libc6", ("libgcc-s1", "")),
            (
                "libgcc-s1",
                ("gcc-12-base (= 12.2.0-14), libc6 (>= 2.35)", ""),
            ),
            ("gcc-12-base", ("", "")),
            (
                "init-system-helpers",
                ("usrmerge | usr-is-merged, perl-base", ""),
            ),
            ("usrmerge", ("perl:any", "")),
            ("usr-is-merged", ("", "")),
            ("perl-base", ("", "")),
            ("perl", ("perl-base", "")),
            ("gawk", ("libc6", "awk")),
            ("mawk", ("libc6", "awk")),
            ("needs-awk", ("awk", "")),
        ]))
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn follows_dependencies_once() {
        let c = closure(&mut table(), &s(&["bash"]), &BTreeSet::new(), &[]).unwrap();
        assert_eq!(
            c,
            s(&[
                "base-files",
                "bash",
                "debianutils",
                "gcc-12-base",
                "libc6",
                "libgcc-s1"
            ])
        );
    }

    #[test]
    fn prefers_a_requested_alternative_over_the_first() {
        let c = closure(
            &mut table(),
            &s(&["init-system-helpers", "usr-is-merged"]),
            &BTreeSet::new(),
            &[],
        )
        .unwrap();
        assert!(
            !c.contains(&"usrmerge".to_string()) && !c.contains(&"perl".to_string()),
            "{c:?}"
        );
        let c = closure(
            &mut table(),
            &s(&["init-system-helpers"]),
            &BTreeSet::new(),
            &[],
        )
        .unwrap();
        assert!(
            c.contains(&"usrmerge".to_string()),
            "without a preference the first alternative is taken: {c:?}"
        );
    }

    #[test]
    fn virtual_packages_take_a_requested_provider() {
        let c = closure(
            &mut table(),
            &s(&["needs-awk", "mawk"]),
            &BTreeSet::new(),
            &[],
        )
        .unwrap();
        assert!(
            c.contains(&"mawk".to_string()) && !c.contains(&"gawk".to_string()),
            "{c:?}"
        );
    }

    #[test]
    fn installed_and_excluded_packages_are_left_out() {
        let installed: BTreeSet<String> = s(&["libc6", "libgcc-s1", "gcc-12-base"])
            .into_iter()
            .collect();
        let c = closure(&mut table(), &s(&["bash"]), &installed, &s(&["base-files"])).unwrap();
        assert_eq!(c, s(&["bash", "debianutils"]));
    }

    #[test]
    fn unknown_package_is_named() {
        let err = closure(&mut table(), &s(&["nope"]), &BTreeSet::new(), &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`nope`") && err.contains("the definition"),
            "{err}"
        );
    }
}
