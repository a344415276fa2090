//! Base images: a definition's `base` (an OCI layout or a docker archive)
//! read into the cache, its layers and config taken as the image's first
//! layers, and the skeleton of what they hold for the layers above.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::error::{BuildError, Context, Result};
use serde_json::{Value, json};

use super::BuiltLayer;
use super::check::LayerFacts;
use crate::cache::Cache;
use crate::image::spec::{BaseImage, Definition};
use crate::inputs::Skeleton;
use crate::layer::BlobInfo;
use crate::oci;

pub(super) struct Base {
    pub(super) layers: Vec<BuiltLayer>,
    pub(super) config: Value,
    pub(super) skeleton: Skeleton,
}

pub(super) fn load_base(def: &Definition, cache: &Cache) -> Result<Base> {
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
                return Err(BuildError::BaseDigest {
                    blob: src.clone(),
                    expected: l.digest.clone(),
                    expected_size: l.size,
                    found: digest,
                    size,
                });
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
            .ok_or(BuildError::NoDiffId { index: i })?;
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
pub(super) fn base_layer_skeleton(
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
pub(super) fn skeleton_of(
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
                    .map_err(|m| BuildError::BaseEntry {
                        what: what(),
                        name: name.clone(),
                        reason: m.to_string(),
                    })?;
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
                            return Err(BuildError::BaseEntry {
                                what: what(),
                                name,
                                reason: format!(
                                    "symlink target is longer than {} bytes",
                                    crate::inputs::MAX_PATH
                                ),
                            });
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

pub(super) struct CountingReader<R> {
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
pub(super) fn unpack_docker_archive(path: &Path, cache: &Cache) -> Result<tempfile::TempDir> {
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
        let parts = crate::inputs::clean_components(&name).map_err(|r| BuildError::BaseEntry {
            what: format!("base image `{}`", path.display()),
            name: name.clone(),
            reason: r.to_string(),
        })?;
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
    let cfg_name = m["Config"].as_str().ok_or_else(|| BuildError::NoConfig {
        archive: path.to_path_buf(),
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
            _ => Err(BuildError::BadMember {
                archive: path.to_path_buf(),
                field: field.to_string(),
                name: n.to_string(),
            }),
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
