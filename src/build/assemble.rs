//! Assembles one layer's tree from its recipe: the files, archives, wheels,
//! debs and store paths the lock pins, the created files and the passwd
//! and group files, owners and modes applied. It writes nothing.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::error::{BuildError, Result};

use crate::image::lock::Lock;
use crate::image::spec::{Definition, LayerSpec, SourceKind, parse_mode};
use crate::inputs::archive::{self, Format, Placement, Stage};
use crate::inputs::{Data, Entry, Kind, Origin, Skeleton, Tree, deb, local, wheel};
use crate::sources::Sources;

pub(super) fn owner(def: &Definition, s: &str) -> Result<(u32, u32)> {
    let users = def.users();
    let groups = def.groups();
    let (u, g) = match s.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (s, None),
    };
    let (uid, primary) = match u.parse::<u32>() {
        Ok(n) => (n, n),
        Err(_) => *users.get(u).ok_or_else(|| BuildError::NoUser {
            owner: s.to_string(),
            user: u.to_string(),
        })?,
    };
    let gid = match g {
        None => primary,
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => *groups
                .get(g)
                .or_else(|| users.get(g).map(|x| &x.1))
                .ok_or_else(|| BuildError::NoGroup {
                    owner: s.to_string(),
                    group: g.to_string(),
                })?,
        },
    };
    Ok((uid, gid))
}

pub(super) fn mode_of(s: &Option<String>, default: u32) -> u32 {
    s.as_deref().and_then(parse_mode).unwrap_or(default)
}

/// A generated file; each gets its own link group (it is no hard link).
pub(super) fn bytes_entry(
    tree: &mut Tree,
    content: &[u8],
    mode: u32,
    (uid, gid): (u32, u32),
) -> Entry {
    Entry {
        kind: Kind::File {
            data: Data::Bytes(Arc::from(content)),
            size: content.len() as u64,
            group: tree.new_group(),
        },
        mode,
        uid,
        gid,
        mtime: tree.created(),
    }
}

pub(super) fn assemble(
    def: &Definition,
    spec: &LayerSpec,
    lock: &Lock,
    sources: &Sources,
    stage: &mut Stage,
    below: Skeleton,
) -> Result<Tree> {
    let mut tree = Tree::new(def.created, below);
    let declared = Origin {
        source: def.path.display().to_string(),
        entry: format!("layer `{}`", spec.name),
    };
    let declare_dirs = |tree: &mut Tree| -> Result<()> {
        for d in &spec.dirs {
            let own = d
                .owner
                .as_deref()
                .map(|o| owner(def, o))
                .transpose()?
                .unwrap_or((0, 0));
            let mtime = tree.created();
            tree.insert(
                &d.path,
                Entry::new(Kind::Dir, mode_of(&d.mode, 0o755), own.0, own.1, mtime),
                &declared,
            )?;
        }
        Ok(())
    };
    // declared folders and links first, so sources' paths resolve through them
    declare_dirs(&mut tree)?;
    for l in &spec.symlinks {
        let mtime = tree.created();
        tree.insert(
            &l.path,
            Entry::root_owned(Kind::Symlink(l.target.clone()), 0o777, mtime),
            &declared,
        )?;
    }
    for src in &spec.sources {
        let dest = src.dest.clone().unwrap_or_else(|| "/".into());
        let artifacts = lock
            .resolve(&spec.name, src)
            .map_err(|what| BuildError::NotLocked {
                what: what.to_string(),
                definition: def.path.clone(),
            })?;
        match src.kind() {
            SourceKind::Nix => {
                return Err(BuildError::NixInAssembly);
            }
            SourceKind::Path => {
                let p = def.dir.join(src.path.as_deref().unwrap_or_default());
                local::add_path(
                    &mut tree,
                    &p,
                    &dest,
                    src.mode.as_deref().and_then(parse_mode),
                )?;
            }
            SourceKind::Url => {
                let a = artifacts[0];
                let file = sources.ensure(a, src)?;
                let fmt = Format::from_name(&a.file);
                let place = Placement {
                    source: a.file.clone(),
                    strip_prefix: src.strip_prefix.clone(),
                    dest: dest.clone(),
                };
                if src.unpack == Some(false) || fmt == Format::Plain {
                    let target = if dest.ends_with('/') {
                        format!("{dest}{}", a.file)
                    } else {
                        dest.clone()
                    };
                    let mut f = std::fs::File::open(&file)?;
                    let data = stage.put(&mut f, a.size, &a.file, &a.file)?;
                    let group = tree.new_group();
                    let mtime = tree.created();
                    let origin = Origin {
                        source: a.file.clone(),
                        entry: a.file.clone(),
                    };
                    tree.insert(
                        &target,
                        Entry::root_owned(
                            Kind::File {
                                data: Data::Path(data),
                                size: a.size,
                                group,
                            },
                            mode_of(&src.mode, 0o644),
                            mtime,
                        ),
                        &origin,
                    )?;
                } else if fmt == Format::Deb {
                    deb::add_deb(&mut tree, stage, &file, &place)?;
                } else {
                    archive::add_file(&mut tree, stage, &file, fmt, &place)?;
                }
            }
            SourceKind::Deb => {
                for a in artifacts {
                    let file = sources.ensure(a, src)?;
                    let place = Placement {
                        source: a.file.clone(),
                        strip_prefix: None,
                        dest: dest.clone(),
                    };
                    let c = deb::add_deb(&mut tree, stage, &file, &place)?;
                    if c.package != a.name || c.version != a.version {
                        return Err(BuildError::WrongPackage {
                            file: a.file.clone(),
                            found_name: c.package,
                            found_version: c.version,
                            name: a.name.clone(),
                            version: a.version.clone(),
                        });
                    }
                }
            }
            SourceKind::Pypi => {
                for a in artifacts {
                    let file = sources.ensure(a, src)?;
                    if a.file.ends_with(".whl") {
                        let target = wheel::WheelTarget {
                            site_packages: src.site_packages.clone().unwrap_or_default(),
                            bin_dir: src
                                .bin_dir
                                .clone()
                                .unwrap_or_else(|| "/usr/local/bin".into()),
                            python: src
                                .python
                                .clone()
                                .unwrap_or_else(|| "/usr/bin/python3".into()),
                        };
                        let (name, version) =
                            wheel::add_wheel(&mut tree, stage, &file, &a.file, &target)?;
                        if crate::grammar::normalize_name(&name)
                            != crate::grammar::normalize_name(&a.name)
                            || version != a.version
                        {
                            return Err(BuildError::WrongPackage {
                                file: a.file.clone(),
                                found_name: name,
                                found_version: version,
                                name: a.name.clone(),
                                version: a.version.clone(),
                            });
                        }
                    } else {
                        let place = Placement {
                            source: a.file.clone(),
                            strip_prefix: src.strip_prefix.clone(),
                            dest: dest.clone(),
                        };
                        archive::add_file(
                            &mut tree,
                            stage,
                            &file,
                            Format::from_name(&a.file),
                            &place,
                        )?;
                    }
                }
            }
        }
        tree.exclude(&src.exclude);
    }
    for f in &spec.files {
        let own = f
            .owner
            .as_deref()
            .map(|o| owner(def, o))
            .transpose()?
            .unwrap_or((0, 0));
        let e = bytes_entry(
            &mut tree,
            f.content.as_bytes(),
            mode_of(&f.mode, 0o644),
            own,
        );
        tree.insert(&f.path, e, &declared)?;
    }
    if !spec.users.is_empty() || !spec.groups.is_empty() {
        let (passwd, group) = passwd_files(spec);
        let e = bytes_entry(&mut tree, passwd.as_bytes(), 0o644, (0, 0));
        tree.insert("etc/passwd", e, &declared)?;
        let e = bytes_entry(&mut tree, group.as_bytes(), 0o644, (0, 0));
        tree.insert("etc/group", e, &declared)?;
    }
    // declared folders win over what archives said about the same folder
    declare_dirs(&mut tree)?;
    for m in &spec.modes {
        let own = m.owner.as_deref().map(|o| owner(def, o)).transpose()?;
        let n = tree.set_meta(&m.pattern, m.mode.as_deref().and_then(parse_mode), own);
        if n == 0 {
            return Err(BuildError::ModeMatchesNothing {
                definition: def.path.clone(),
                layer: spec.name.clone(),
                pattern: m.pattern.clone(),
            });
        }
    }
    Ok(tree)
}

/// /etc/passwd and /etc/group for root and the layer's declared users.
pub(super) fn passwd_files(spec: &LayerSpec) -> (String, String) {
    let mut users: BTreeMap<u32, String> = BTreeMap::new();
    let mut groups: BTreeMap<u32, String> = BTreeMap::new();
    users.insert(0, "root:x:0:0:root:/root:/bin/sh".into());
    groups.insert(0, "root:x:0:".into());
    for g in &spec.groups {
        groups.insert(g.gid, format!("{}:x:{}:", g.name, g.gid));
    }
    for u in &spec.users {
        let gid = u.gid.unwrap_or(u.uid);
        let home = u
            .home
            .clone()
            .unwrap_or_else(|| format!("/home/{}", u.name));
        let shell = u.shell.clone().unwrap_or_else(|| "/bin/sh".into());
        users.insert(
            u.uid,
            format!("{}:x:{}:{gid}::{home}:{shell}", u.name, u.uid),
        );
        groups
            .entry(gid)
            .or_insert_with(|| format!("{}:x:{gid}:", u.name));
    }
    let join = |m: BTreeMap<u32, String>| m.into_values().map(|l| l + "\n").collect::<String>();
    (join(users), join(groups))
}
