//! Turns a definition and its lock into an image: fetches inputs, assembles
//! each layer's tree, writes layer blobs through the shared compression pool
//! (several layers at once), and makes the config and manifest. Layers whose
//! recipe, inputs and lower layers are unchanged come from the layer cache
//! without any compression.

pub mod check;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};

use crate::build::check::{ImageView, LayerFacts};
use crate::cache::Cache;
use crate::cache::layers::{LayerRecord, read_record};
use crate::cache::sources::Sources;
use crate::clock::format_rfc3339;
use crate::image::lock::StorePath;
use crate::image::lock::{Artifact, Lock};
use crate::image::spec::{
    BaseImage, Compression, DEFAULT_NIX_MAX_LAYERS, Definition, LayerSpec, SourceKind, parse_mode,
};
use crate::inputs::archive::{self, Format, Placement, Stage};
use crate::inputs::nix;
use crate::inputs::{Data, Entry, Kind, Origin, Skeleton, Tree, deb, local, wheel};
use crate::layer::{self, BlobInfo, Pool};
use crate::oci::{self, Blob, BlobSource, Image};

/// Bump when the bytes a layer is written as change for the same inputs.
pub const LAYER_FORMAT: u32 = 1;

/// What the command layer hears while a build runs.
pub trait Reporter: Sync {
    fn layer_started(&self, index: usize, name: &str);
    fn layer_done(&self, index: usize, name: &str, info: &BlobInfo, cached: bool);
    fn download(&self, what: &str, done: u64, total: Option<u64>);
}

pub struct Options<'a> {
    pub cache: &'a Cache,
    pub offline: bool,
    pub mirror: Option<&'a Path>,
    pub jobs: usize,
    /// Where Debian packages are downloaded from.
    pub debian_mirrors: &'a crate::debian::Mirrors,
}

/// One layer of the finished image.
#[derive(Debug, Clone)]
pub struct BuiltLayer {
    pub name: String,
    pub blob: BlobInfo,
    pub media_type: String,
    pub path: PathBuf,
    pub cached: bool,
    pub annotations: BTreeMap<String, String>,
    pub facts: LayerFacts,
}

pub struct Built {
    pub image: Image,
    pub layers: Vec<BuiltLayer>,
}

struct Base {
    layers: Vec<BuiltLayer>,
    config: Value,
    skeleton: Skeleton,
}

fn owner(def: &Definition, s: &str) -> Result<(u32, u32)> {
    let users = def.users();
    let groups = def.groups();
    let (u, g) = match s.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (s, None),
    };
    let (uid, primary) = match u.parse::<u32>() {
        Ok(n) => (n, n),
        Err(_) => *users.get(u).ok_or_else(|| {
            anyhow!("owner `{s}`: no user `{u}` is declared (add a `[[layer.user]]`)")
        })?,
    };
    let gid = match g {
        None => primary,
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => *groups
                .get(g)
                .or_else(|| users.get(g).map(|x| &x.1))
                .ok_or_else(|| anyhow!("owner `{s}`: no group `{g}` is declared"))?,
        },
    };
    Ok((uid, gid))
}

fn mode_of(s: &Option<String>, default: u32) -> u32 {
    s.as_deref().and_then(parse_mode).unwrap_or(default)
}

/// A generated file; each gets its own link group (it is no hard link).
fn bytes_entry(tree: &mut Tree, content: &[u8], mode: u32, (uid, gid): (u32, u32)) -> Entry {
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

/// One image layer to make: a definition's `[[layer]]`, or one cut of a
/// `nix` source's closure (a `[[layer]]` with a `nix` source becomes one
/// image layer per store path, named `<layer>-<hash>-<name>`).
enum Unit<'a> {
    Layer(&'a LayerSpec),
    Nix {
        name: String,
        paths: Vec<&'a StorePath>,
    },
}

impl Unit<'_> {
    fn name(&self) -> &str {
        match self {
            Unit::Layer(spec) => &spec.name,
            Unit::Nix { name, .. } => name,
        }
    }
}

/// The image layers of the definition, bottom first: `nix` layers are cut
/// from their locked closures by popularity under their budget, leaving out
/// store paths an earlier `nix` layer already has. The locked paths are
/// checked against the store first.
fn plan_units<'a>(def: &'a Definition, lock: &'a Lock) -> Result<Vec<Unit<'a>>> {
    let mut units = Vec::new();
    let mut taken = std::collections::BTreeSet::new();
    let mut locked: Vec<&StorePath> = Vec::new();
    for spec in &def.spec.layers {
        let Some(src) = spec.sources.iter().find(|s| s.kind() == SourceKind::Nix) else {
            units.push(Unit::Layer(spec));
            continue;
        };
        let closure = lock.nix_closure(&spec.name, src).ok_or_else(|| {
            anyhow!(
                "the lock has no closure for nix `{}` in layer `{}`: run `ferry lock {}`",
                src.nix.join(", "),
                spec.name,
                def.path.display()
            )
        })?;
        locked.extend(&closure.paths);
        let fresh: Vec<&StorePath> = closure
            .paths
            .iter()
            .filter(|p| !taken.contains(&p.path))
            .collect();
        let order =
            nix::popularity_order(&fresh).with_context(|| format!("layer `{}`", spec.name))?;
        let budget = src.max_layers.unwrap_or(DEFAULT_NIX_MAX_LAYERS);
        for cut in nix::cut_layers(&order, budget) {
            let name = match cut.as_slice() {
                [one] => format!("{}-{}", spec.name, one.base_name()),
                more => format!("{}-rest-{}-paths", spec.name, more.len()),
            };
            taken.extend(cut.iter().map(|p| p.path.clone()));
            units.push(Unit::Nix { name, paths: cut });
        }
    }
    nix::verify(&locked).with_context(|| format!("`{}`", def.path.display()))?;
    Ok(units)
}

/// The cache key of a layer of store paths: they are content-addressed and
/// pinned by narHash, and the layer holds nothing else, so neither the
/// definition nor the layers below play a part. The same store path makes
/// the same layer in any image.
fn nix_layer_key(def: &Definition, paths: &[&StorePath]) -> String {
    let key = json!({
        "format": LAYER_FORMAT,
        "compressor": layer::compressor_id(def.spec.compression),
        "created": def.created,
        "nix": paths.iter().map(|p| [&p.path, &p.nar_hash]).collect::<Vec<_>>(),
        "checks": [def.spec.check.elf, def.spec.check.jar_class_path],
    });
    oci::sha256_hex(&oci::canonical(&key))
}

/// The layer cache key: everything the layer's bytes depend on.
fn layer_key(
    def: &Definition,
    spec: &LayerSpec,
    artifacts: &[&Artifact],
    below: &Skeleton,
) -> Result<String> {
    let mut paths = Vec::new();
    for src in &spec.sources {
        if let Some(p) = &src.path {
            paths.push(fingerprint(&def.dir.join(p))?);
        }
    }
    let key = json!({
        "format": LAYER_FORMAT,
        "compressor": layer::compressor_id(def.spec.compression),
        "created": def.created,
        "layer": serde_json::to_value(spec)?,
        "artifacts": artifacts.iter().map(|a| &a.sha256).collect::<Vec<_>>(),
        "paths": paths,
        "below": oci::sha256_hex(&oci::canonical(&serde_json::to_value(below)?)),
        "users": def.users(),
        "checks": [def.spec.check.elf, def.spec.check.jar_class_path],
        "groups": def.groups(),
    });
    Ok(oci::sha256_hex(&oci::canonical(&key)))
}

/// A stat fingerprint of a local source (as git's index does): any edit
/// changes size, mtime or ctime, so it invalidates the layer.
fn fingerprint(root: &Path) -> Result<String> {
    use std::os::unix::fs::MetadataExt;
    let mut h = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = std::fs::symlink_metadata(&p).with_context(|| format!("`{}`", p.display()))?;
        h.extend_from_slice(
            format!(
                "{}\0{}\0{}\0{}\0{}\0{}\0{}\n",
                p.display(),
                m.mode(),
                m.size(),
                m.mtime(),
                m.mtime_nsec(),
                m.ctime_nsec(),
                m.ino()
            )
            .as_bytes(),
        );
        if m.is_dir() {
            let mut kids: Vec<_> = std::fs::read_dir(&p)
                .with_context(|| format!("`{}`", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect();
            kids.sort();
            kids.reverse();
            stack.extend(kids);
        }
    }
    Ok(oci::sha256_hex(&h))
}

fn assemble(
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
                Entry {
                    kind: Kind::Dir,
                    mode: mode_of(&d.mode, 0o755),
                    uid: own.0,
                    gid: own.1,
                    mtime,
                },
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
            Entry {
                kind: Kind::Symlink(l.target.clone()),
                mode: 0o777,
                uid: 0,
                gid: 0,
                mtime,
            },
            &declared,
        )?;
    }
    for src in &spec.sources {
        let dest = src.dest.clone().unwrap_or_else(|| "/".into());
        let artifacts = lock.resolve(&spec.name, src).map_err(|what| {
            anyhow!(
                "the lock has no entry for {what}: run `ferry lock {}`",
                def.path.display()
            )
        })?;
        match src.kind() {
            SourceKind::Nix => {
                bail!("a layer with a `nix` source is cut into store path layers before assembly")
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
                        Entry {
                            kind: Kind::File {
                                data: Data::Path(data),
                                size: a.size,
                                group,
                            },
                            mode: mode_of(&src.mode, 0o644),
                            uid: 0,
                            gid: 0,
                            mtime,
                        },
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
                        bail!(
                            "`{}` is not what the lock says: it holds {} {} instead of {} {}",
                            a.file,
                            c.package,
                            c.version,
                            a.name,
                            a.version
                        );
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
                            bail!(
                                "`{}` is not what the lock says: it holds {name} {version} instead of {} {}",
                                a.file,
                                a.name,
                                a.version
                            );
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
            bail!(
                "{}: layer `{}`: mode pattern `{}` matches nothing in the layer",
                def.path.display(),
                spec.name,
                m.pattern
            );
        }
    }
    Ok(tree)
}

/// /etc/passwd and /etc/group for root and the layer's declared users.
fn passwd_files(spec: &LayerSpec) -> (String, String) {
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

/// Builds the image described by `def` with `lock`.
pub fn build(def: &Definition, lock: &Lock, opts: &Options, rep: &dyn Reporter) -> Result<Built> {
    let lock_path = crate::image::lock::lock_path(&def.path);
    let dl = |what: &str, n: u64, t: Option<u64>| rep.download(what, n, t);
    let archive = crate::debian::Archive::of(def);
    let sources = Sources {
        cache: opts.cache,
        offline: opts.offline,
        mirror: opts.mirror,
        progress: &dl,
        locked: &lock.artifacts,
        definition: &def.path,
        archive: archive.as_ref(),
        debian_mirrors: opts.debian_mirrors,
    };
    let base = load_base(def, opts.cache)?;
    let all = lock.for_definition(def, &lock_path)?;
    sources.prefetch_debs(&all.iter().collect::<Vec<_>>())?;
    let compression = def.spec.compression;
    let pool = Pool::new(opts.jobs);
    let mut skeleton = base.skeleton.clone();
    let units = plan_units(def, lock)?;
    let n = units.len();
    let mut results: Vec<Option<BuiltLayer>> = vec![None; n];
    std::thread::scope(|s| -> Result<()> {
        let mut running: std::collections::VecDeque<(
            usize,
            std::thread::ScopedJoinHandle<Result<BuiltLayer>>,
        )> = Default::default();
        for (i, unit) in units.iter().enumerate() {
            let key = match unit {
                Unit::Layer(spec) => {
                    let artifacts: Vec<&Artifact> = spec
                        .sources
                        .iter()
                        .map(|s| {
                            lock.resolve(&spec.name, s)
                                .map_err(|w| anyhow!("the lock has no entry for {w}"))
                        })
                        .collect::<Result<Vec<_>>>()?
                        .into_iter()
                        .flatten()
                        .collect();
                    layer_key(def, spec, &artifacts, &skeleton)?
                }
                Unit::Nix { paths, .. } => nix_layer_key(def, paths),
            };
            if let Some(rec) = read_record(opts.cache, &key) {
                skeleton.extend(&rec.skeleton);
                let path = opts.cache.blob(&rec.blob.digest);
                rep.layer_done(i, unit.name(), &rec.blob, true);
                results[i] = Some(built_layer(unit, rec, path, true, compression));
                continue;
            }
            rep.layer_started(i, unit.name());
            let stage_dir = tempfile::Builder::new()
                .prefix("stage-")
                .tempdir_in(opts.cache.tmp()?)?;
            let mut stage = Stage::new(stage_dir.path().to_path_buf());
            let tree = match unit {
                Unit::Layer(spec) => {
                    assemble(def, spec, lock, &sources, &mut stage, skeleton.clone())
                }
                Unit::Nix { paths, .. } => {
                    // no skeleton below: the layer's bytes are the store paths' alone
                    let mut tree = Tree::new(def.created, Skeleton::default());
                    nix::add_store_paths(&mut tree, paths)
                        .map(|()| tree)
                        .map_err(anyhow::Error::from)
                }
            }
            .with_context(|| format!("layer `{}`", unit.name()))?;
            let layer_skeleton = tree.skeleton();
            skeleton.extend(&layer_skeleton);
            let checks = &def.spec.check;
            let facts = check::gather(&tree, checks.elf, checks.jar_class_path);
            // at most two layers are written at once: they share the pool, and each holds its tree
            while running.len() >= 2 {
                let (j, h) = running.pop_front().expect("non-empty");
                results[j] = Some(h.join().map_err(|_| anyhow!("layer writer panicked"))??);
            }
            let pool = &pool;
            let cache = opts.cache;
            let name = unit.name().to_string();
            running.push_back((
                i,
                s.spawn(move || -> Result<BuiltLayer> {
                    let tmp = tempfile::Builder::new()
                        .prefix("blob-")
                        .tempfile_in(cache.tmp()?)?
                        .into_temp_path();
                    let info = layer::build_blob(&tree, pool, compression, &tmp)?;
                    drop(tree);
                    drop(stage_dir);
                    let dest = cache.blob(&info.digest);
                    std::fs::create_dir_all(dest.parent().expect("blob path has a parent"))?;
                    crate::fsutil::readable(&tmp)?;
                    tmp.persist(&dest)
                        .map_err(|e| e.error)
                        .with_context(|| format!("`{}`", dest.display()))?;
                    cache.stamp_blob(&info.digest)?;
                    let rec = LayerRecord {
                        name: name.clone(),
                        blob: info.clone(),
                        media_type: layer::media_type(compression).into(),
                        skeleton: layer_skeleton,
                        facts,
                    };
                    crate::fsutil::write_atomic(
                        &cache.layer_record(&key),
                        &serde_json::to_vec(&rec)?,
                    )?;
                    rep.layer_done(i, &name, &info, false);
                    Ok(built_layer(unit, rec, dest, false, compression))
                }),
            ));
        }
        for (j, h) in running {
            results[j] = Some(h.join().map_err(|_| anyhow!("layer writer panicked"))??);
        }
        Ok(())
    })?;
    let base_count = base.layers.len();
    let mut layers = base.layers;
    layers.extend(results.into_iter().map(|r| r.expect("every layer built")));
    check_image(def, &layers, &skeleton)?;
    let config = make_config(def, &base.config, &layers, base_count);
    let config_bytes = oci::canonical(&config);
    let config_digest = format!("sha256:{}", oci::sha256_hex(&config_bytes));
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": oci::MT_MANIFEST,
        "config": { "mediaType": oci::MT_CONFIG, "digest": config_digest, "size": config_bytes.len() },
        "layers": layers.iter().map(|l| json!({
            "mediaType": l.media_type,
            "digest": l.blob.digest,
            "size": l.blob.size,
            "annotations": l.annotations,
        })).collect::<Vec<_>>(),
        "annotations": {
            "org.opencontainers.image.created": format_rfc3339(def.created),
            "org.opencontainers.image.ref.name": def.spec.tag,
        },
    });
    let manifest_bytes = oci::canonical(&manifest);
    let manifest_digest = format!("sha256:{}", oci::sha256_hex(&manifest_bytes));
    let mut blobs: Vec<Blob> = layers
        .iter()
        .map(|l| Blob {
            digest: l.blob.digest.clone(),
            size: l.blob.size,
            source: BlobSource::File(l.path.clone()),
        })
        .collect();
    blobs.push(Blob {
        digest: config_digest.clone(),
        size: config_bytes.len() as u64,
        source: BlobSource::Bytes(config_bytes),
    });
    let manifest_size = manifest_bytes.len() as u64;
    blobs.push(Blob {
        digest: manifest_digest.clone(),
        size: manifest_size,
        source: BlobSource::Bytes(manifest_bytes),
    });
    let image = Image {
        blobs,
        manifest_digest,
        manifest_size,
        config_digest,
        layer_digests: layers.iter().map(|l| l.blob.digest.clone()).collect(),
        reference: format!("{}:{}", def.spec.name, def.spec.tag),
        tag: def.spec.tag.clone(),
        created: def.created,
    };
    Ok(Built { image, layers })
}

/// Runs the definition's `[check]`s over the merged image.
fn check_image(def: &Definition, layers: &[BuiltLayer], skeleton: &Skeleton) -> Result<()> {
    let c = &def.spec.check;
    if !c.elf && !c.jar_class_path {
        return Ok(());
    }
    let files = layers
        .iter()
        .flat_map(|l| l.facts.files.iter().cloned())
        .collect();
    let view = ImageView::new(files, skeleton.symlinks.clone());
    let facts: Vec<&LayerFacts> = layers.iter().map(|l| &l.facts).collect();
    let missing = check::missing(&view, &facts, &c.ignore, &c.library_path);
    if let Some((file, what)) = missing.first() {
        let more = if missing.len() > 1 {
            let rest: Vec<String> = missing
                .iter()
                .skip(1)
                .take(if std::env::var_os("FERRY_CHECK_ALL").is_some() {
                    usize::MAX
                } else {
                    4
                })
                .map(|(f, w)| format!("{f} needs {w}"))
                .collect();
            format!(
                " (and {} more: {}{})",
                missing.len() - 1,
                rest.join("; "),
                if missing.len() > 5 { "; ..." } else { "" }
            )
        } else {
            String::new()
        };
        bail!(
            "{}: image check: `{file}` needs {what}, which is not in the image{more}: add the package that has it, exclude the file, or list it in `check.ignore`",
            def.path.display()
        );
    }
    Ok(())
}

fn built_layer(
    unit: &Unit,
    rec: LayerRecord,
    path: PathBuf,
    cached: bool,
    c: Compression,
) -> BuiltLayer {
    let mut annotations = BTreeMap::new();
    annotations.insert("io.ferry.layer".to_string(), unit.name().to_string());
    if let Unit::Nix { paths, .. } = unit {
        let paths: Vec<&str> = paths.iter().map(|p| p.path.as_str()).collect();
        annotations.insert("io.ferry.nix.store-paths".to_string(), paths.join(" "));
    }
    annotations.insert("io.ferry.compressor".to_string(), layer::compressor_id(c));
    annotations.insert(
        "io.ferry.uncompressed-size".to_string(),
        rec.blob.uncompressed_size.to_string(),
    );
    BuiltLayer {
        name: unit.name().to_string(),
        blob: rec.blob,
        media_type: rec.media_type,
        path,
        cached,
        annotations,
        facts: rec.facts,
    }
}

fn make_config(def: &Definition, base: &Value, layers: &[BuiltLayer], base_count: usize) -> Value {
    let c = &def.spec.config;
    let bc = &base["config"];
    let mut env: Vec<String> = bc["Env"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    for (k, v) in &c.env {
        let kv = format!("{k}={v}");
        match env
            .iter_mut()
            .find(|e| e.split('=').next() == Some(k.as_str()))
        {
            Some(slot) => *slot = kv,
            None => env.push(kv),
        }
    }
    let mut cfg = serde_json::Map::new();
    if !env.is_empty() {
        cfg.insert("Env".into(), json!(env));
    }
    let pick = |mine: Option<Value>, key: &str| {
        mine.or_else(|| bc.get(key).filter(|v| !v.is_null()).cloned())
    };
    let fields = [
        (
            "Entrypoint",
            pick(c.entrypoint.as_ref().map(|v| json!(v)), "Entrypoint"),
        ),
        ("Cmd", pick(c.cmd.as_ref().map(|v| json!(v)), "Cmd")),
        (
            "WorkingDir",
            pick(c.workdir.as_ref().map(|v| json!(v)), "WorkingDir"),
        ),
        ("User", pick(c.user.as_ref().map(|v| json!(v)), "User")),
    ];
    for (k, v) in fields {
        if let Some(v) = v {
            cfg.insert(k.into(), v);
        }
    }
    let mut labels = bc["Labels"].as_object().cloned().unwrap_or_default();
    for (k, v) in &c.labels {
        labels.insert(k.clone(), json!(v));
    }
    if !labels.is_empty() {
        cfg.insert("Labels".into(), Value::Object(labels));
    }
    let mut ports = bc["ExposedPorts"].as_object().cloned().unwrap_or_default();
    for p in &c.exposed_ports {
        let p = if p.contains('/') {
            p.clone()
        } else {
            format!("{p}/tcp")
        };
        ports.insert(p, json!({}));
    }
    if !ports.is_empty() {
        cfg.insert("ExposedPorts".into(), Value::Object(ports));
    }
    let created = format_rfc3339(def.created);
    let mut history: Vec<Value> = base["history"].as_array().cloned().unwrap_or_default();
    for l in &layers[base_count..] {
        history.push(json!({ "created": created, "created_by": format!("ferry layer {}", l.name), "comment": format!("ferry {}", env!("CARGO_PKG_VERSION")) }));
    }
    json!({
        "architecture": def.spec.architecture.clone().unwrap_or_else(|| "amd64".into()),
        "os": "linux",
        "created": created,
        "config": Value::Object(cfg),
        "rootfs": { "type": "layers", "diff_ids": layers.iter().map(|l| &l.blob.diff_id).collect::<Vec<_>>() },
        "history": history,
    })
}

fn load_base(def: &Definition, cache: &Cache) -> Result<Base> {
    let dir_guard;
    let dir: PathBuf = match &def.base {
        BaseImage::Scratch => {
            return Ok(Base {
                layers: vec![],
                config: json!({}),
                skeleton: Skeleton::default(),
            });
        }
        BaseImage::OciLayout(p) => p.clone(),
        BaseImage::DockerArchive(p) => {
            dir_guard = unpack_docker_archive(p, cache)?;
            dir_guard.path().to_path_buf()
        }
    };
    let img = oci::open_layout(&dir)
        .with_context(|| format!("base image of `{}`", def.path.display()))?;
    let diff_ids = img.diff_ids();
    let mut layers = Vec::new();
    let mut skeleton = Skeleton::default();
    for (i, l) in img.layers.iter().enumerate() {
        let src = img.blob_path(&l.digest);
        let dest = cache.blob(&l.digest);
        if cache.cached_blob(&l.digest, l.size).is_none() {
            // copied (a hard link would let an edit of the base poison the
            // cache), and the copy is what is hashed
            let tmp = tempfile::Builder::new()
                .prefix("base-blob-")
                .tempfile_in(cache.tmp()?)?
                .into_temp_path();
            std::io::copy(
                &mut oci::open_blob(&src)?,
                &mut std::fs::File::create(&tmp)?,
            )
            .with_context(|| format!("`{}`", src.display()))?;
            let (digest, size) = oci::digest_file(&tmp)?;
            if digest != l.digest || size != l.size {
                bail!(
                    "base layer `{}`: digest mismatch (the manifest says {} of {} bytes, found {digest} of {size})",
                    src.display(),
                    l.digest,
                    l.size
                );
            }
            std::fs::create_dir_all(dest.parent().expect("parent"))?;
            crate::fsutil::readable(&tmp)?;
            tmp.persist(&dest)
                .map_err(|e| e.error)
                .with_context(|| format!("`{}`", dest.display()))?;
            cache.stamp_blob(&l.digest)?;
        }
        let diff_id = diff_ids
            .get(i)
            .cloned()
            .ok_or_else(|| anyhow!("base config lacks diff_id {i}"))?;
        let (size, sk) = base_layer_skeleton(cache, &dest, &l.media_type, &l.digest)?;
        skeleton.extend(&sk);
        let mut annotations = BTreeMap::new();
        annotations.insert("io.ferry.layer".to_string(), format!("base-{i}"));
        layers.push(BuiltLayer {
            name: format!("base-{i}"),
            blob: BlobInfo {
                diff_id,
                digest: l.digest.clone(),
                size: l.size,
                uncompressed_size: size,
            },
            media_type: if l
                .media_type
                .starts_with("application/vnd.docker.image.rootfs.diff.tar")
            {
                if l.media_type.ends_with("gzip") {
                    "application/vnd.oci.image.layer.v1.tar+gzip".into()
                } else {
                    "application/vnd.oci.image.layer.v1.tar".into()
                }
            } else {
                l.media_type.clone()
            },
            path: dest,
            cached: true,
            annotations,
            facts: LayerFacts::default(),
        });
    }
    Ok(Base {
        layers,
        config: img.config_json,
        skeleton,
    })
}

/// The folders and symlinks of a base layer, cached by its digest.
fn base_layer_skeleton(
    cache: &Cache,
    blob: &Path,
    media_type: &str,
    digest: &str,
) -> Result<(u64, Skeleton)> {
    let rec_path = cache.layer_record(&format!("base-{}", digest.trim_start_matches("sha256:")));
    if let Ok(bytes) = std::fs::read(&rec_path)
        && let Ok(v) = serde_json::from_slice::<(u64, Skeleton)>(&bytes)
    {
        return Ok(v);
    }
    let r = oci::open_layer(blob, media_type)?;
    let mut counted = CountingReader { inner: r, n: 0 };
    let what = format!("base layer `{}`", blob.display());
    let sk = skeleton_of(&mut counted, &what, crate::inputs::Limits::DEFAULT)?;
    std::io::copy(&mut counted, &mut std::io::sink())
        .with_context(|| format!("base layer `{}`", blob.display()))?;
    let v = (counted.n, sk);
    crate::fsutil::write_atomic(&rec_path, &serde_json::to_vec(&v)?)?;
    Ok(v)
}

/// Reads the folders and symlinks of the layer tar `r` (`what` in errors),
/// holding no more of them than `limits` allows.
fn skeleton_of(
    r: &mut dyn std::io::Read,
    what: &str,
    limits: crate::inputs::Limits,
) -> Result<Skeleton> {
    let mut sk = Skeleton::default();
    let mut path_bytes = 0usize;
    {
        let what = || what.to_string();
        let mut ar = crate::inputs::archive::tar_reader(r);
        for e in ar.entries().with_context(what)? {
            let e = e.with_context(what)?;
            let name = String::from_utf8_lossy(&e.path_bytes())
                .trim_start_matches("./")
                .trim_end_matches('/')
                .to_string();
            let h = e.header();
            let kept = matches!(
                h.entry_type(),
                tar::EntryType::Directory | tar::EntryType::Symlink
            );
            if kept && !sk.dirs.contains_key(&name) && !sk.symlinks.contains_key(&name) {
                let len = name.len() + e.link_name_bytes().map_or(0, |t| t.len());
                limits
                    .check(sk.dirs.len() + sk.symlinks.len(), path_bytes, len)
                    .map_err(|m| anyhow!("{}: entry `{name}`: {m}", what()))?;
                path_bytes += len;
            }
            match h.entry_type() {
                tar::EntryType::Directory => {
                    sk.dirs.insert(
                        name,
                        (
                            h.mode().unwrap_or(0o755),
                            h.uid().unwrap_or(0) as u32,
                            h.gid().unwrap_or(0) as u32,
                        ),
                    );
                }
                tar::EntryType::Symlink => {
                    if let Some(t) = e.link_name_bytes() {
                        if t.len() > crate::inputs::MAX_PATH {
                            bail!(
                                "{}: entry `{name}`: symlink target is longer than {} bytes",
                                what(),
                                crate::inputs::MAX_PATH
                            );
                        }
                        sk.symlinks
                            .insert(name, String::from_utf8_lossy(&t).into_owned());
                    }
                }
                _ => {}
            }
        }
    }
    Ok(sk)
}

struct CountingReader<R> {
    inner: R,
    n: u64,
}

impl<R: std::io::Read> std::io::Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let k = self.inner.read(buf)?;
        self.n += k as u64;
        Ok(k)
    }
}

/// Unpacks a `docker save` archive into a temp OCI-like folder: member names
/// are checked (no `..`, no links), and old-style archives (manifest.json
/// only) are turned into a layout.
fn unpack_docker_archive(path: &Path, cache: &Cache) -> Result<tempfile::TempDir> {
    let dir = tempfile::Builder::new()
        .prefix("base-")
        .tempdir_in(cache.tmp()?)?;
    let f =
        std::fs::File::open(path).with_context(|| format!("base image `{}`", path.display()))?;
    let mut ar = crate::inputs::archive::tar_reader(std::io::BufReader::new(f));
    let mut names = Vec::new();
    for e in ar
        .entries()
        .with_context(|| format!("base image `{}`", path.display()))?
    {
        let mut e = e.with_context(|| format!("base image `{}`", path.display()))?;
        let name = String::from_utf8_lossy(&e.path_bytes())
            .trim_start_matches("./")
            .to_string();
        if e.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let parts = crate::inputs::clean_components(&name)
            .map_err(|r| anyhow!("base image `{}`: entry `{name}`: {r}", path.display()))?;
        let dest = dir.path().join(parts.join("/"));
        std::fs::create_dir_all(dest.parent().expect("parent"))?;
        let mut out = std::fs::File::create(&dest)?;
        std::io::copy(&mut e, &mut out)?;
        names.push(parts.join("/"));
    }
    if dir.path().join("index.json").exists() && dir.path().join("oci-layout").exists() {
        return Ok(dir);
    }
    // old docker: manifest.json + <id>.json + <id>/layer.tar
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("manifest.json")).with_context(|| {
            format!(
                "base image `{}`: no manifest.json or index.json",
                path.display()
            )
        })?,
    )?;
    let m = &manifest[0];
    let cfg_name = m["Config"].as_str().ok_or_else(|| {
        anyhow!(
            "base image `{}`: manifest.json has no Config",
            path.display()
        )
    })?;
    // manifest.json is archive data: its names may only pick members this
    // archive holds (as extracted above), never a path of the build machine
    let member = |field: &str, n: &str| -> Result<PathBuf> {
        let clean = crate::inputs::clean_components(n)
            .ok()
            .filter(|p| !n.starts_with('/') && !p.is_empty())
            .map(|p| p.join("/"));
        match clean {
            Some(c) if names.contains(&c) => Ok(dir.path().join(c)),
            _ => bail!(
                "base image `{}`: manifest.json `{field}` names `{n}`, which is not a regular member of the archive (names must be relative, without `..`)",
                path.display()
            ),
        }
    };
    let cfg_bytes = std::fs::read(member("Config", cfg_name)?)?;
    let blobs = dir.path().join("blobs/sha256");
    std::fs::create_dir_all(&blobs)?;
    let cfg_digest = oci::sha256_hex(&cfg_bytes);
    std::fs::write(blobs.join(&cfg_digest), &cfg_bytes)?;
    let mut layers = Vec::new();
    for l in m["Layers"].as_array().cloned().unwrap_or_default() {
        let p = member("Layers", l.as_str().unwrap_or_default())?;
        let (digest, size) = oci::digest_file(&p)?;
        let mut magic = [0u8; 4];
        let _ = std::io::Read::read(&mut std::fs::File::open(&p)?, &mut magic)?;
        let mt = if magic[..2] == [0x1f, 0x8b] {
            "application/vnd.oci.image.layer.v1.tar+gzip"
        } else if magic == [0x28, 0xb5, 0x2f, 0xfd] {
            "application/vnd.oci.image.layer.v1.tar+zstd"
        } else {
            "application/vnd.oci.image.layer.v1.tar"
        };
        let dest = blobs.join(digest.trim_start_matches("sha256:"));
        if !dest.exists() {
            std::fs::rename(&p, &dest)?;
        }
        layers.push(json!({"mediaType": mt, "digest": digest, "size": size}));
    }
    let manifest = oci::canonical(&json!({
        "schemaVersion": 2, "mediaType": oci::MT_MANIFEST,
        "config": {"mediaType": oci::MT_CONFIG, "digest": format!("sha256:{cfg_digest}"), "size": cfg_bytes.len()},
        "layers": layers,
    }));
    let md = oci::sha256_hex(&manifest);
    std::fs::write(blobs.join(&md), &manifest)?;
    std::fs::write(
        dir.path().join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    std::fs::write(
        dir.path().join("index.json"),
        oci::canonical(
            &json!({"schemaVersion": 2, "manifests": [{"mediaType": oci::MT_MANIFEST, "digest": format!("sha256:{md}"), "size": manifest.len()}]}),
        ),
    )?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in members {
            let mut h = tar::Header::new_gnu();
            h.set_path(name).unwrap();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn a_base_skeleton_holds_no_more_entries_than_its_limits() {
        let mut b = tar::Builder::new(Vec::new());
        for i in 0..11 {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Directory);
            h.set_size(0);
            h.set_mode(0o755);
            h.set_path(format!("d{i}/")).unwrap();
            h.set_cksum();
            b.append(&h, &[][..]).unwrap();
        }
        let bytes = b.into_inner().unwrap();
        let small = crate::inputs::Limits {
            entries: 10,
            path_bytes: 1 << 20,
        };
        let err = skeleton_of(&mut &bytes[..], "base layer `x.tar`", small)
            .unwrap_err()
            .to_string();
        assert!(err.contains("x.tar") && err.contains("10 entries"), "{err}");
        let small = crate::inputs::Limits {
            entries: 1000,
            path_bytes: 20,
        };
        let err = skeleton_of(&mut &bytes[..], "base layer `x.tar`", small)
            .unwrap_err()
            .to_string();
        assert!(err.contains("x.tar") && err.contains("20 bytes"), "{err}");
    }

    #[test]
    fn docker_save_manifest_cannot_name_build_machine_paths() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("abs/victim");
        std::fs::create_dir_all(victim.parent().unwrap()).unwrap();
        std::fs::write(&victim, b"precious").unwrap();
        let cache = Cache {
            root: dir.path().join("cache"),
        };
        for (cfg, layer) in [
            ("cfg.json", victim.to_str().unwrap()),
            (victim.to_str().unwrap(), "l/layer.tar"),
            ("cfg.json", "../abs/victim"),
        ] {
            let manifest = format!(r#"[{{"Config":"{cfg}","Layers":["{layer}"]}}]"#);
            let archive = dir.path().join("base.tar");
            std::fs::write(
                &archive,
                tar_of(&[
                    ("manifest.json", manifest.as_bytes()),
                    ("cfg.json", b"{}"),
                    ("l/layer.tar", &[0u8; 1024]),
                ]),
            )
            .unwrap();
            let err = unpack_docker_archive(&archive, &cache)
                .err()
                .unwrap_or_else(|| panic!("{manifest} was accepted"));
            let msg = format!("{err:#}");
            assert!(
                msg.contains("base.tar") && (msg.contains(cfg) || msg.contains(layer)),
                "{msg}"
            );
            assert_eq!(std::fs::read(&victim).unwrap(), b"precious", "{manifest}");
        }
    }

    #[test]
    fn passwd_lists_root_and_declared_users_by_id() {
        let spec: LayerSpec = toml::from_str(
            "name = \"users\"\n[[user]]\nname = \"spark\"\nuid = 185\nhome = \"/opt/spark\"\n[[user]]\nname = \"zookeeper\"\nuid = 186\n",
        )
        .unwrap();
        let (passwd, group) = passwd_files(&spec);
        assert_eq!(
            passwd,
            "root:x:0:0:root:/root:/bin/sh\nspark:x:185:185::/opt/spark:/bin/sh\nzookeeper:x:186:186::/home/zookeeper:/bin/sh\n"
        );
        assert_eq!(group, "root:x:0:\nspark:x:185:\nzookeeper:x:186:\n");
    }
}
