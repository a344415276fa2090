//! Nix store closures as layer sources: reading a closure from
//! `nix path-info`, ordering its store paths by popularity, cutting them into
//! image layers under a budget, and turning store paths into tree entries
//! with the modes Nix itself gives them.
//!
//! It runs `nix` only to read store metadata; it never builds, fetches or
//! writes to the store, and it knows nothing of locks or image layouts.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use super::{Data, Entry, InputError, Kind, Origin, Tree};
use crate::image::lock::StorePath;

/// Where store paths live, in the image as on the build machine.
pub const STORE_DIR: &str = "/nix/store";

#[derive(Debug, thiserror::Error)]
pub enum NixError {
    #[error("cannot run `nix`: install Nix (Debian: `apt-get install nix-bin`) or put it on PATH")]
    Missing(#[source] std::io::Error),
    #[error("`nix path-info {args}` failed: {stderr}")]
    Failed { args: String, stderr: String },
    #[error("`nix path-info` printed JSON ferry does not understand: {0}")]
    Json(String),
    #[error("`{path}` is not in the Nix store: build it first (`nix build`, `nix-build`)")]
    NotBuilt { path: String },
    #[error(
        "store path `{path}` changed since the lock was written (narHash {expected} in the lock, {found} in the store): run `ferry lock --update`"
    )]
    Changed {
        path: String,
        expected: String,
        found: String,
    },
    #[error(
        "`{drv}`: this Nix takes a .drv as the derivation file, not its outputs: write `{drv}^out` (or `^*` for every output)"
    )]
    Derivation { drv: String },
    #[error("the closure has a reference cycle through `{path}`, which Nix never makes")]
    Cycle { path: String },
}

/// Reads the closure of a `nix` source's `items` (store paths or
/// installables already built), with relative paths and flake references
/// taken from `dir`, the definition's folder. Sorted by path.
pub fn closure(items: &[String], dir: &Path) -> Result<Vec<StorePath>, NixError> {
    let paths = path_info(items, true, Some(dir))?;
    // Nix 2.8 reads `x.drv` as its outputs; later Nix as the .drv file itself
    if let Some(drv) = items
        .iter()
        .find(|i| i.ends_with(".drv") && paths.iter().any(|p| p.path == **i))
    {
        return Err(NixError::Derivation { drv: drv.clone() });
    }
    Ok(paths)
}

/// Runs `nix path-info --json` on `items` (store paths or installables),
/// with `--recursive` for their whole closure. The result is sorted by path.
fn path_info(
    items: &[String],
    recursive: bool,
    dir: Option<&Path>,
) -> Result<Vec<StorePath>, NixError> {
    let mut args = vec![
        "path-info".to_string(),
        "--extra-experimental-features".into(),
        "nix-command flakes".into(),
        "--json".into(),
    ];
    if recursive {
        args.push("--recursive".into());
    }
    args.extend(items.iter().cloned());
    let mut cmd = Command::new("nix");
    cmd.args(&args);
    if let Some(dir) = dir {
        cmd.current_dir(dir);
    }
    let out = cmd.output().map_err(NixError::Missing)?;
    if !out.status.success() {
        // a path that is not built is the common failure: name it plainly
        if let Err(e @ NixError::NotBuilt { .. }) = parse_path_info(&out.stdout) {
            return Err(e);
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        // `--recursive` says it in words: error: path '/nix/store/...' is not valid
        if let Some(path) = stderr
            .lines()
            .find_map(|l| l.split_once("path '")?.1.split_once("' is not valid"))
            .map(|(p, _)| p.to_string())
        {
            return Err(NixError::NotBuilt { path });
        }
        return Err(NixError::Failed {
            args: args[4..].join(" "),
            stderr: stderr.trim().lines().last().unwrap_or("").to_string(),
        });
    }
    parse_path_info(&out.stdout)
}

/// Parses `nix path-info --json`: a list of objects with a `path` field (Nix
/// 2.8 and until 2.18) or an object keyed by path (later Nix), where a path
/// not in the store is `null` or has `"valid": false`.
pub fn parse_path_info(json: &[u8]) -> Result<Vec<StorePath>, NixError> {
    let v: Value = serde_json::from_slice(json).map_err(|e| NixError::Json(e.to_string()))?;
    let items: Vec<(String, &Value)> = match &v {
        Value::Array(list) => list
            .iter()
            .map(|o| {
                let p = o["path"]
                    .as_str()
                    .ok_or_else(|| NixError::Json("an entry has no `path`".into()))?;
                Ok((p.to_string(), o))
            })
            .collect::<Result<_, NixError>>()?,
        Value::Object(map) => map.iter().map(|(k, o)| (k.clone(), o)).collect(),
        _ => return Err(NixError::Json("neither a list nor an object".into())),
    };
    // store paths are full paths in every Nix so far; take bare
    // `<hash>-<name>` too, so a terser format does not silently drop references
    let full = |p: &str| {
        if p.starts_with('/') {
            p.to_string()
        } else {
            format!("{STORE_DIR}/{p}")
        }
    };
    let mut out = Vec::new();
    for (path, o) in items {
        let path = full(&path);
        if o.is_null() || o["valid"] == Value::Bool(false) {
            return Err(NixError::NotBuilt { path });
        }
        let nar_hash = o["narHash"]
            .as_str()
            .ok_or_else(|| NixError::Json(format!("`{path}` has no `narHash`")))?
            .to_string();
        let nar_size = o["narSize"]
            .as_u64()
            .ok_or_else(|| NixError::Json(format!("`{path}` has no `narSize`")))?;
        let mut references: Vec<String> = o["references"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).map(full).collect())
            .unwrap_or_default();
        references.retain(|r| *r != path);
        references.sort();
        references.dedup();
        out.push(StorePath {
            path,
            nar_hash,
            nar_size,
            references,
        });
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Checks that every locked path is in the store with the narHash the lock
/// recorded, so a build never packs store content the lock did not see.
pub fn verify(locked: &[&StorePath]) -> Result<(), NixError> {
    if locked.is_empty() {
        return Ok(());
    }
    let items: Vec<String> = locked.iter().map(|p| p.path.clone()).collect();
    let found: BTreeMap<String, String> = path_info(&items, false, None)?
        .into_iter()
        .map(|p| (p.path, p.nar_hash))
        .collect();
    for p in locked {
        match found.get(&p.path) {
            None => {
                return Err(NixError::NotBuilt {
                    path: p.path.clone(),
                });
            }
            Some(h) if *h != p.nar_hash => {
                return Err(NixError::Changed {
                    path: p.path.clone(),
                    expected: p.nar_hash.clone(),
                    found: h.clone(),
                });
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// The name part of a store path first, then its hash: the tie-break of
/// nixpkgs' popularity order, so equally popular paths sort by package.
fn package_key(base: &str) -> String {
    match base.split_once('-') {
        Some((hash, name)) => format!("{name}-{hash}"),
        None => base.to_string(),
    }
}

/// Orders a closure as nixpkgs' `referencesByPopularity` does: a path is
/// the more popular the more routes lead to it from the closure's roots
/// (every route adds the number of paths that rely on it along the way), so
/// widely shared dependencies come first and leaves last. Ties go by package
/// name. A dependency is always strictly more popular than what refers to
/// it, so the order also puts every path after its references.
pub fn popularity_order<'a>(closure: &[&'a StorePath]) -> Result<Vec<&'a StorePath>, NixError> {
    let index: BTreeMap<&str, usize> = closure
        .iter()
        .enumerate()
        .map(|(i, p)| (p.path.as_str(), i))
        .collect();
    // references outside the closure (a partial listing) are ignored
    let children: Vec<Vec<usize>> = closure
        .iter()
        .map(|p| {
            p.references
                .iter()
                .filter_map(|r| index.get(r.as_str()).copied())
                .collect()
        })
        .collect();
    let referenced: BTreeSet<usize> = children.iter().flatten().copied().collect();
    let mut memo: Vec<Option<BTreeMap<usize, u64>>> = vec![None; closure.len()];
    let mut popularity: BTreeMap<usize, u64> = BTreeMap::new();
    for root in (0..closure.len()).filter(|i| !referenced.contains(i)) {
        let below = contest(
            root,
            &children,
            &mut memo,
            &mut vec![false; closure.len()],
            closure,
        )?;
        *popularity.entry(root).or_default() += 1;
        for (d, v) in below {
            let slot = popularity.entry(d).or_default();
            *slot = slot.saturating_add(v.saturating_add(1));
        }
    }
    let mut order: Vec<usize> = (0..closure.len()).collect();
    order.sort_by(|a, b| {
        let pa = popularity.get(a).copied().unwrap_or(0);
        let pb = popularity.get(b).copied().unwrap_or(0);
        pb.cmp(&pa).then_with(|| {
            package_key(closure[*a].base_name()).cmp(&package_key(closure[*b].base_name()))
        })
    });
    Ok(order.into_iter().map(|i| closure[i]).collect())
}

/// The popularity of every path below `node`, counted from `node` down.
fn contest(
    node: usize,
    children: &[Vec<usize>],
    memo: &mut Vec<Option<BTreeMap<usize, u64>>>,
    visiting: &mut Vec<bool>,
    closure: &[&StorePath],
) -> Result<BTreeMap<usize, u64>, NixError> {
    if let Some(done) = &memo[node] {
        return Ok(done.clone());
    }
    if visiting[node] {
        return Err(NixError::Cycle {
            path: closure[node].path.clone(),
        });
    }
    visiting[node] = true;
    let mut out: BTreeMap<usize, u64> = BTreeMap::new();
    for &k in &children[node] {
        *out.entry(k).or_default() += 1;
        for (d, v) in contest(k, children, memo, visiting, closure)? {
            let slot = out.entry(d).or_default();
            *slot = slot.saturating_add(v.saturating_add(1));
        }
    }
    visiting[node] = false;
    memo[node] = Some(out.clone());
    Ok(out)
}

/// Cuts a popularity-ordered closure into at most `max_layers` layers,
/// bottom first: one store path per layer, except that when the closure is
/// larger than the budget the least popular paths (the leaves, which change
/// most often) share the last layer, as nixpkgs' streamLayeredImage does.
/// A single-path layer's bytes depend on that path alone, so adding a
/// package reshuffles none of them: only the shared top layer changes.
pub fn cut_layers<'a>(ordered: &[&'a StorePath], max_layers: usize) -> Vec<Vec<&'a StorePath>> {
    let max_layers = max_layers.max(1);
    if ordered.len() <= max_layers {
        return ordered.iter().map(|p| vec![*p]).collect();
    }
    let solo = max_layers - 1;
    let mut layers: Vec<Vec<&StorePath>> = ordered[..solo].iter().map(|p| vec![*p]).collect();
    let mut rest = ordered[solo..].to_vec();
    rest.sort();
    layers.push(rest);
    layers
}

/// Adds store paths to `tree` at their own /nix/store path, normalised as
/// the store keeps them: root owned, folders 0555, files 0444 (0555 when
/// executable), every time the build's `created`. `/nix` and `/nix/store`
/// are folders of the layer itself (0755), so the layer's bytes do not
/// depend on the layers below it.
pub fn add_store_paths(tree: &mut Tree, paths: &[&StorePath]) -> Result<(), InputError> {
    for dir in ["nix", "nix/store"] {
        let origin = Origin {
            source: STORE_DIR.into(),
            entry: format!("/{dir}"),
        };
        let mtime = tree.created();
        tree.insert(dir, Entry::root_owned(Kind::Dir, 0o755, mtime), &origin)?;
    }
    for p in paths {
        let store_path = Path::new(&p.path);
        if store_path.parent() != Some(Path::new(STORE_DIR)) {
            return Err(InputError::refused(
                &Origin {
                    source: p.path.clone(),
                    entry: p.path.clone(),
                },
                format!("not a path directly under `{STORE_DIR}`"),
            ));
        }
        add_one(
            tree,
            store_path,
            &format!("nix/store/{}", p.base_name()),
            &p.path,
        )?;
    }
    Ok(())
}

fn add_one(tree: &mut Tree, p: &Path, target: &str, source: &str) -> Result<(), InputError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::symlink_metadata(p).map_err(|e| InputError::io(p, e))?;
    let origin = Origin {
        source: source.to_string(),
        entry: p.display().to_string(),
    };
    let mtime = tree.created();
    let ft = meta.file_type();
    if ft.is_dir() {
        tree.insert(target, Entry::root_owned(Kind::Dir, 0o555, mtime), &origin)?;
        let names = super::sorted_names(p)?;
        for name in names {
            let child = format!("{target}/{}", name.to_string_lossy());
            add_one(tree, &p.join(&name), &child, source)?;
        }
        Ok(())
    } else if ft.is_symlink() {
        let t = std::fs::read_link(p).map_err(|e| InputError::io(p, e))?;
        let kind = Kind::Symlink(t.to_string_lossy().into_owned());
        tree.insert(target, Entry::root_owned(kind, 0o777, mtime), &origin)
    } else if ft.is_file() {
        let group = tree.new_group();
        let kind = Kind::File {
            data: Data::Path(p.to_path_buf()),
            size: meta.len(),
            group,
        };
        let mode = if meta.permissions().mode() & 0o111 != 0 {
            0o555
        } else {
            0o444
        };
        tree.insert(target, Entry::root_owned(kind, mode, mtime), &origin)
    } else {
        Err(InputError::refused(
            &origin,
            "only files, folders and symlinks can be in the Nix store",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sp(name: &str, refs: &[&str]) -> StorePath {
        StorePath {
            path: format!("/nix/store/{name}"),
            nar_hash: format!("sha256-{name}"),
            nar_size: 1,
            references: refs.iter().map(|r| format!("/nix/store/{r}")).collect(),
        }
    }

    fn order(closure: &[StorePath]) -> Result<Vec<&StorePath>, NixError> {
        popularity_order(&closure.iter().collect::<Vec<_>>())
    }

    fn names(v: &[&StorePath]) -> Vec<String> {
        v.iter().map(|p| p.base_name().to_string()).collect()
    }

    /// The example of nixpkgs' closure-graph.py:
    /// A -> B, G; B -> C, E; C -> D, E; D -> F; E -> F.
    fn example() -> Vec<StorePath> {
        vec![
            sp("a-A", &["b-B", "g-G"]),
            sp("b-B", &["c-C", "e-E"]),
            sp("c-C", &["d-D", "e-E"]),
            sp("d-D", &["f-F"]),
            sp("e-E", &["f-F"]),
            sp("f-F", &[]),
            sp("g-G", &[]),
        ]
    }

    #[test]
    fn popularity_matches_nixpkgs_example() {
        let closure = example();
        let ordered = order(&closure).unwrap();
        // popularities F 9, E 5, D 4, C 3, B 2, G 2, A 1
        assert_eq!(
            names(&ordered),
            ["f-F", "e-E", "d-D", "c-C", "b-B", "g-G", "a-A"]
        );
    }

    #[test]
    fn every_path_comes_after_its_references() {
        let closure = example();
        let ordered = order(&closure).unwrap();
        let pos = |p: &str| ordered.iter().position(|x| x.path == p).unwrap();
        for p in &closure {
            for r in &p.references {
                assert!(pos(r) < pos(&p.path), "{r} must come before {}", p.path);
            }
        }
    }

    #[test]
    fn cycles_are_refused_not_looped() {
        let closure = vec![
            sp("r-R", &["a-A"]),
            sp("a-A", &["b-B"]),
            sp("b-B", &["a-A"]),
        ];
        assert!(matches!(order(&closure), Err(NixError::Cycle { .. })));
    }

    #[test]
    fn budget_groups_the_least_popular_paths_last() {
        let closure = example();
        let ordered = order(&closure).unwrap();
        let all = cut_layers(&ordered, 100);
        assert_eq!(all.len(), 7);
        assert!(all.iter().all(|l| l.len() == 1));
        let cut = cut_layers(&ordered, 4);
        assert_eq!(cut.len(), 4);
        assert_eq!(names(&cut[0]), ["f-F"]);
        assert_eq!(names(&cut[2]), ["d-D"]);
        assert_eq!(names(&cut[3]), ["a-A", "b-B", "c-C", "g-G"]);
        assert_eq!(cut_layers(&ordered, 1).len(), 1);
    }

    #[test]
    fn adding_a_package_keeps_the_other_layers() {
        let closure = example();
        let before = order(&closure).unwrap();
        let mut more = example();
        more.push(sp("h-H", &["f-F"]));
        let after = order(&more).unwrap();
        let layers = |o: &[&StorePath]| -> BTreeSet<Vec<String>> {
            cut_layers(o, 100).iter().map(|l| names(l)).collect()
        };
        let (b, a) = (layers(&before), layers(&after));
        assert!(b.is_subset(&a), "{b:?} vs {a:?}");
        assert_eq!(
            a.difference(&b).collect::<Vec<_>>(),
            [&vec!["h-H".to_string()]]
        );
    }

    #[test]
    fn path_info_of_nix_2_8_and_of_later_nix() {
        let old = br#"[{"path":"/nix/store/b-lib","narHash":"sha256-x","narSize":5,"references":["/nix/store/a-base","/nix/store/b-lib"],"deriver":"/nix/store/q.drv"},
            {"path":"/nix/store/a-base","narHash":"sha256-y","narSize":7,"references":[]}]"#;
        let new = br#"{"/nix/store/b-lib":{"narHash":"sha256-x","narSize":5,"references":["b-lib","a-base"],"ca":null},
            "/nix/store/a-base":{"narHash":"sha256-y","narSize":7,"references":[]}}"#;
        let a = parse_path_info(old).unwrap();
        assert_eq!(a, parse_path_info(new).unwrap());
        assert_eq!(a[1].path, "/nix/store/b-lib");
        assert_eq!(a[1].references, ["/nix/store/a-base"]);
        assert_eq!(a[1].nar_size, 5);
    }

    #[test]
    fn a_path_not_in_the_store_is_named() {
        let old = br#"[{"path":"/nix/store/x-gone","valid":false}]"#;
        let new = br#"{"/nix/store/x-gone":null}"#;
        for json in [&old[..], &new[..]] {
            match parse_path_info(json) {
                Err(NixError::NotBuilt { path }) => assert_eq!(path, "/nix/store/x-gone"),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn store_paths_get_nix_modes() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("abc-pkg");
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::write(root.join("bin/tool"), b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(
            root.join("bin/tool"),
            std::fs::Permissions::from_mode(0o700),
        )
        .unwrap();
        std::fs::write(root.join("data"), b"x").unwrap();
        std::fs::set_permissions(root.join("data"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        std::os::unix::fs::symlink("bin/tool", root.join("link")).unwrap();
        let mut tree = Tree::new(42, Default::default());
        add_one(&mut tree, &root, "nix/store/abc-pkg", "test").unwrap();
        let modes: Vec<(String, u32, u64)> = tree
            .entries()
            .iter()
            .map(|(k, e)| (k.clone(), e.mode, e.mtime))
            .collect();
        assert_eq!(
            modes,
            [
                ("nix".to_string(), 0o755, 42),
                ("nix/store".into(), 0o755, 42),
                ("nix/store/abc-pkg".into(), 0o555, 42),
                ("nix/store/abc-pkg/bin".into(), 0o555, 42),
                ("nix/store/abc-pkg/bin/tool".into(), 0o555, 42),
                ("nix/store/abc-pkg/data".into(), 0o444, 42),
                ("nix/store/abc-pkg/link".into(), 0o777, 42),
            ]
        );
    }
}
