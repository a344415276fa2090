//! Turns a definition and its lock into an image: fetches inputs, assembles
//! each layer's tree, writes layer blobs through the shared compression pool
//! (several layers at once), and makes the config and manifest. Layers whose
//! recipe, inputs and lower layers are unchanged come from the layer cache
//! without any compression.
//!
//! This file orchestrates; `assemble` makes a layer's tree, `keys` its cache
//! key, `base` reads a base image, `config` makes the image config and
//! `check` holds the whole-image checks. Nothing here prints: progress goes
//! to the caller's [`Reporter`].

mod assemble;
mod base;
pub mod check;
mod config;
pub mod error;
mod keys;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use error::{BuildError, Context, Result};
use serde_json::json;

use crate::build::check::{ImageView, LayerFacts};
use crate::cache::Cache;
use crate::cache::layers::{LayerRecord, read_record};
use crate::clock::format_rfc3339;
use crate::image::lock::StorePath;
use crate::image::lock::{Artifact, Lock};
use crate::image::spec::{Compression, DEFAULT_NIX_MAX_LAYERS, Definition, LayerSpec, SourceKind};
use crate::inputs::archive::Stage;
use crate::inputs::nix;
use crate::inputs::{Skeleton, Tree};
use crate::layer::{self, BlobInfo, Pool};
use crate::oci::{self, Blob, BlobSource, Image};
use crate::sources::Sources;
use assemble::assemble;
use base::*;
use config::*;
use keys::*;

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
        let closure = lock
            .nix_closure(&spec.name, src)
            .ok_or_else(|| BuildError::NoClosure {
                items: src.nix.join(", "),
                layer: spec.name.clone(),
                definition: def.path.clone(),
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
                                .map_err(|w| BuildError::NoEntry {
                                    what: w.to_string(),
                                })
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
                        .map_err(BuildError::from)
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
                results[j] = Some(h.join().map_err(|_| BuildError::WriterPanicked)??);
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
            results[j] = Some(h.join().map_err(|_| BuildError::WriterPanicked)??);
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
        return Err(BuildError::ImageCheck {
            definition: def.path.clone(),
            file: file.clone(),
            what: what.clone(),
            more,
        });
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

#[cfg(test)]
mod tests {
    use super::assemble::passwd_files;
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
