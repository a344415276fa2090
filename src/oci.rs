//! OCI image layouts and docker-archives: writing them atomically from built
//! blobs, and reading them back (as a base image, for `verify` and for
//! `inspect`). JSON blobs are written canonically: compact, keys sorted.
//!
//! The index, manifest and config are built as `serde_json` values, not as
//! `oci-spec` types: their canonical bytes are the image digest (the
//! committed `images/spark/image.digest` pins it), and `oci-spec`'s types
//! drop the keys they do not model (a base image's Docker config keeps
//! them), write some empty fields and leave out others by their own rules.
//! Byte identity through them could not be shown, so the values stay.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::fsutil;
use crate::layer::{self, TarHeader};

pub const MT_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MT_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MT_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_MT_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MT_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("`{}`", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{}`: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> OciError + '_ {
    move |source| OciError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub use crate::digest::{canonical, sha256_hex};

/// A blob of the image and where its bytes are.
#[derive(Debug, Clone)]
pub enum BlobSource {
    File(PathBuf),
    Bytes(Vec<u8>),
}

#[derive(Debug, Clone)]
pub struct Blob {
    pub digest: String,
    pub size: u64,
    pub source: BlobSource,
}

/// A finished image: its blobs and the names it goes by.
#[derive(Debug, Clone)]
pub struct Image {
    pub blobs: Vec<Blob>,
    pub manifest_digest: String,
    pub manifest_size: u64,
    pub config_digest: String,
    pub layer_digests: Vec<String>,
    /// `name:tag`, as a runtime names the image.
    pub reference: String,
    pub tag: String,
    pub created: u64,
}

impl Image {
    pub fn index_json(&self) -> Vec<u8> {
        canonical(&json!({
            "schemaVersion": 2,
            "mediaType": MT_INDEX,
            "manifests": [{
                "mediaType": MT_MANIFEST,
                "digest": self.manifest_digest,
                "size": self.manifest_size,
                "annotations": {
                    "org.opencontainers.image.ref.name": self.tag,
                    "io.containerd.image.name": self.reference,
                },
            }],
        }))
    }
}

fn blob_name(digest: &str) -> String {
    format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"))
}

fn write_blob(dir: &Path, b: &Blob) -> Result<(), OciError> {
    let dest = dir.join(blob_name(&b.digest));
    match &b.source {
        // a copy, never a hard link: a link would share the cached blob's
        // inode, and an edit under the output would poison the cache (the
        // kernel's copy_file_range makes this a reflink where the file
        // system can)
        BlobSource::File(p) => {
            std::fs::copy(p, &dest).map_err(io_err(&dest))?;
            File::open(&dest)
                .and_then(|f| f.sync_all())
                .map_err(io_err(&dest))
        }
        BlobSource::Bytes(bytes) => {
            let mut f = File::create(&dest).map_err(io_err(&dest))?;
            f.write_all(bytes).map_err(io_err(&dest))?;
            f.sync_all().map_err(io_err(&dest))
        }
    }
}

/// Writes an OCI image layout at `out`, replacing an earlier layout there.
/// The layout is assembled in a temp folder beside `out` and renamed into
/// place, so `out` never holds a half-written image.
pub fn write_layout(img: &Image, out: &Path) -> Result<(), OciError> {
    if out.exists()
        && !out.join("oci-layout").exists()
        && std::fs::read_dir(out)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        return Err(OciError::Invalid {
            path: out.to_path_buf(),
            message: "exists and is not an OCI image layout; refusing to replace it (choose another --out)".into(),
        });
    }
    let parent = fsutil::parent_dir(out);
    std::fs::create_dir_all(parent).map_err(io_err(parent))?;
    let tmp = tempfile::Builder::new()
        .prefix(".ferry-layout-")
        .tempdir_in(parent)
        .map_err(io_err(parent))?;
    {
        use std::os::unix::fs::PermissionsExt;
        let p = tmp.path();
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).map_err(io_err(p))?;
    }
    let blobs = tmp.path().join("blobs/sha256");
    std::fs::create_dir_all(&blobs).map_err(io_err(&blobs))?;
    for b in &img.blobs {
        write_blob(tmp.path(), b)?;
    }
    let put = |name: &str, bytes: &[u8]| -> Result<(), OciError> {
        let p = tmp.path().join(name);
        let mut f = File::create(&p).map_err(io_err(&p))?;
        f.write_all(bytes).map_err(io_err(&p))?;
        f.sync_all().map_err(io_err(&p))
    };
    put("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    put("index.json", &img.index_json())?;
    fsutil::sync_dir(&blobs);
    fsutil::sync_dir(tmp.path());
    let tmp_path = tmp.keep();
    if out.exists() {
        let old = tempfile::Builder::new()
            .prefix(".ferry-old-")
            .tempdir_in(parent)
            .map_err(io_err(parent))?;
        let old_path = old.path().join("layout");
        std::fs::rename(out, &old_path).map_err(io_err(out))?;
        std::fs::rename(&tmp_path, out).map_err(io_err(out))?;
        drop(old);
    } else {
        std::fs::rename(&tmp_path, out).map_err(io_err(out))?;
    }
    fsutil::sync_dir(parent);
    Ok(())
}

/// Writes a `docker load`-able archive that is also an OCI layout (the
/// format `docker save` writes since Docker 25): blobs, index.json,
/// oci-layout, plus manifest.json for older Docker.
pub fn write_docker_archive(img: &Image, out: &Path) -> Result<(), OciError> {
    let parent = fsutil::parent_dir(out);
    std::fs::create_dir_all(parent).map_err(io_err(parent))?;
    let tmp = tempfile::Builder::new()
        .prefix(".ferry-")
        .suffix(".tar.part")
        .tempfile_in(parent)
        .map_err(io_err(parent))?;
    let mut w = BufWriter::with_capacity(1 << 20, tmp.as_file());
    let t = img.created;
    let werr = io_err(out);
    let manifest_json = canonical(&json!([{
        "Config": blob_name(&img.config_digest),
        "RepoTags": [img.reference],
        "Layers": img.layer_digests.iter().map(|d| blob_name(d)).collect::<Vec<_>>(),
    }]));
    let dir = |w: &mut BufWriter<&File>, p: &str| {
        layer::write_header(
            w,
            &TarHeader {
                path: p,
                kind: b'5',
                mode: 0o755,
                uid: 0,
                gid: 0,
                size: 0,
                mtime: t,
                link: "",
            },
        )
    };
    let file =
        |w: &mut BufWriter<&File>, p: &str, size: u64, r: &mut dyn Read| -> std::io::Result<()> {
            layer::write_header(
                w,
                &TarHeader {
                    path: p,
                    kind: b'0',
                    mode: 0o644,
                    uid: 0,
                    gid: 0,
                    size,
                    mtime: t,
                    link: "",
                },
            )?;
            let n = std::io::copy(&mut r.take(size), w)?;
            if n != size {
                return Err(std::io::Error::other(format!(
                    "`{p}` is shorter than recorded"
                )));
            }
            layer::pad(w, size)
        };
    (|| -> std::io::Result<()> {
        dir(&mut w, "blobs/")?;
        dir(&mut w, "blobs/sha256/")?;
        let mut blobs: Vec<&Blob> = img.blobs.iter().collect();
        blobs.sort_by(|a, b| a.digest.cmp(&b.digest));
        blobs.dedup_by(|a, b| a.digest == b.digest);
        for b in blobs {
            let name = blob_name(&b.digest);
            match &b.source {
                BlobSource::File(p) => {
                    file(&mut w, &name, b.size, &mut BufReader::new(File::open(p)?))?
                }
                BlobSource::Bytes(bytes) => file(&mut w, &name, b.size, &mut &bytes[..])?,
            }
        }
        let index = img.index_json();
        file(&mut w, "index.json", index.len() as u64, &mut &index[..])?;
        file(
            &mut w,
            "manifest.json",
            manifest_json.len() as u64,
            &mut &manifest_json[..],
        )?;
        let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
        file(&mut w, "oci-layout", layout.len() as u64, &mut &layout[..])?;
        w.write_all(&[0u8; 1024])?;
        w.flush()
    })()
    .map_err(werr)?;
    drop(w);
    tmp.as_file().sync_all().map_err(io_err(out))?;
    fsutil::readable(tmp.path()).map_err(io_err(out))?;
    tmp.persist(out).map_err(|e| OciError::Io {
        path: out.to_path_buf(),
        source: e.error,
    })?;
    fsutil::sync_dir(parent);
    Ok(())
}

/// A descriptor as read from a manifest or index.
#[derive(Debug, Clone)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    pub annotations: serde_json::Map<String, Value>,
}

fn descriptor(v: &Value, at: &str, path: &Path) -> Result<Descriptor, OciError> {
    let invalid = |m: String| OciError::Invalid {
        path: path.to_path_buf(),
        message: m,
    };
    let digest = v["digest"]
        .as_str()
        .ok_or_else(|| invalid(format!("{at}: no `digest`")))?
        .to_string();
    let hex = digest
        .strip_prefix("sha256:")
        .ok_or_else(|| invalid(format!("{at}: digest `{digest}` is not sha256")))?;
    if hex.len() != 64
        || !hex
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        return Err(invalid(format!("{at}: digest `{digest}` is malformed")));
    }
    Ok(Descriptor {
        media_type: v["mediaType"].as_str().unwrap_or_default().to_string(),
        digest,
        size: v["size"]
            .as_u64()
            .ok_or_else(|| invalid(format!("{at}: no `size`")))?,
        annotations: v["annotations"].as_object().cloned().unwrap_or_default(),
    })
}

/// An image read from a layout folder.
#[derive(Debug, Clone)]
pub struct LayoutImage {
    pub dir: PathBuf,
    pub manifest: Descriptor,
    pub config: Descriptor,
    pub config_json: Value,
    pub layers: Vec<Descriptor>,
}

impl LayoutImage {
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        self.dir.join(blob_name(digest))
    }
    pub fn diff_ids(&self) -> Vec<String> {
        self.config_json["rootfs"]["diff_ids"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Reads a layout's own JSON file (`oci-layout`, `index.json`), opened as
/// [`open_blob`] opens a blob, and no more than `limit` bytes of it.
fn read_json(path: &Path, limit: u64) -> Result<Value, OciError> {
    let f = open_regular(path, "a layout file")?;
    let mut bytes = Vec::new();
    f.take(limit)
        .read_to_end(&mut bytes)
        .map_err(io_err(path))?;
    serde_json::from_slice(&bytes).map_err(|e| OciError::Invalid {
        path: path.to_path_buf(),
        message: format!("not valid JSON: {e}"),
    })
}

/// The largest JSON blob (manifest, config) read into memory.
pub const MAX_JSON_BLOB: u64 = 16 << 20;

/// Opens a blob of a layout, refusing anything but a regular file: a blob
/// that is a symlink (to `/dev/zero`, or to a file elsewhere on the build
/// machine), a device or a folder is not image content.
pub fn open_blob(p: &Path) -> Result<File, OciError> {
    open_regular(p, "a blob")
}

/// Opens `p` without following a link or waiting on a FIFO, and only if it
/// is a regular file; `what` names it in the refusal.
fn open_regular(p: &Path, what: &str) -> Result<File, OciError> {
    crate::fsutil::open_regular(p).map_err(|e| {
        if e.kind() == std::io::ErrorKind::InvalidInput && e.get_ref().is_some() {
            OciError::Invalid {
                path: p.to_path_buf(),
                message: format!(
                    "is not a regular file ({what} may not be a symlink, device, FIFO or folder)"
                ),
            }
        } else {
            OciError::Io {
                path: p.to_path_buf(),
                source: e,
            }
        }
    })
}

/// Reads and checks a small JSON blob against its descriptor: its size is
/// checked before it is read, and no more than the descriptor's size (plus
/// one byte, to see a longer file) is ever read.
fn read_blob_json(dir: &Path, d: &Descriptor) -> Result<Value, OciError> {
    let p = dir.join(blob_name(&d.digest));
    let invalid = |m: String| OciError::Invalid {
        path: p.clone(),
        message: m,
    };
    if d.size > MAX_JSON_BLOB {
        return Err(invalid(format!(
            "the descriptor says {} bytes, over the {MAX_JSON_BLOB}-byte limit for a JSON blob",
            d.size
        )));
    }
    let f = open_blob(&p)?;
    let on_disk = f.metadata().map_err(io_err(&p))?.len();
    if on_disk != d.size {
        return Err(invalid(format!(
            "size is {on_disk} bytes, the descriptor says {}",
            d.size
        )));
    }
    let mut bytes = Vec::new();
    f.take(d.size + 1)
        .read_to_end(&mut bytes)
        .map_err(io_err(&p))?;
    if bytes.len() as u64 != d.size {
        return Err(invalid(format!(
            "size is {} bytes, the descriptor says {}",
            bytes.len(),
            d.size
        )));
    }
    let found = format!("sha256:{}", sha256_hex(&bytes));
    if found != d.digest {
        return Err(invalid(format!(
            "digest mismatch (expected {}, found {found})",
            d.digest
        )));
    }
    serde_json::from_slice(&bytes).map_err(|e| invalid(format!("not valid JSON: {e}")))
}

/// Opens the (first) image of an OCI layout, checking the JSON blobs' digests.
pub fn open_layout(dir: &Path) -> Result<LayoutImage, OciError> {
    let invalid = |p: PathBuf, m: String| OciError::Invalid {
        path: p,
        message: m,
    };
    let layout = read_json(&dir.join("oci-layout"), 1 << 16)?;
    if layout["imageLayoutVersion"].as_str() != Some("1.0.0") {
        return Err(invalid(
            dir.join("oci-layout"),
            "imageLayoutVersion is not 1.0.0".into(),
        ));
    }
    let index_path = dir.join("index.json");
    let index = read_json(&index_path, 16 << 20)?;
    let manifests = index["manifests"]
        .as_array()
        .ok_or_else(|| invalid(index_path.clone(), "no `manifests`".into()))?;
    let first = manifests
        .first()
        .ok_or_else(|| invalid(index_path.clone(), "`manifests` is empty".into()))?;
    let manifest = descriptor(first, "manifests[0]", &index_path)?;
    if manifest.media_type != MT_MANIFEST && manifest.media_type != DOCKER_MT_MANIFEST {
        return Err(invalid(
            index_path,
            format!(
                "manifests[0]: media type `{}` is not an image manifest",
                manifest.media_type
            ),
        ));
    }
    let manifest_json = read_blob_json(dir, &manifest)?;
    let mpath = dir.join(blob_name(&manifest.digest));
    if manifest_json["schemaVersion"].as_u64() != Some(2) {
        return Err(invalid(mpath, "schemaVersion is not 2".into()));
    }
    let config = descriptor(&manifest_json["config"], "config", &mpath)?;
    if config.media_type != MT_CONFIG && config.media_type != DOCKER_MT_CONFIG {
        return Err(invalid(
            mpath,
            format!(
                "config media type `{}` is not an image config",
                config.media_type
            ),
        ));
    }
    let config_json = read_blob_json(dir, &config)?;
    let layers = manifest_json["layers"]
        .as_array()
        .ok_or_else(|| invalid(mpath.clone(), "no `layers`".into()))?
        .iter()
        .enumerate()
        .map(|(i, l)| descriptor(l, &format!("layers[{i}]"), &mpath))
        .collect::<Result<Vec<_>, _>>()?;
    // oci-spec checks the config's schema as a second reader would
    serde_json::from_value::<oci_spec::image::ImageConfiguration>(config_json.clone()).map_err(
        |e| OciError::Invalid {
            path: dir.join(blob_name(&config.digest)),
            message: format!("not an OCI image config: {e}"),
        },
    )?;
    Ok(LayoutImage {
        dir: dir.to_path_buf(),
        manifest,
        config,
        config_json,
        layers,
    })
}

/// Opens a layer blob as an uncompressed tar stream, by its media type.
pub fn open_layer(path: &Path, media_type: &str) -> Result<Box<dyn Read>, OciError> {
    let f = BufReader::with_capacity(1 << 20, open_blob(path)?);
    Ok(
        if media_type.ends_with("+gzip")
            || media_type.ends_with(".tar.gzip")
            || media_type == "application/vnd.docker.image.rootfs.diff.tar.gzip"
        {
            Box::new(flate2::read::MultiGzDecoder::new(f))
        } else if media_type.ends_with("+zstd") {
            Box::new(zstd::stream::read::Decoder::new(f).map_err(io_err(path))?)
        } else if media_type.ends_with(".tar")
            || media_type == "application/vnd.docker.image.rootfs.diff.tar"
        {
            Box::new(f)
        } else {
            return Err(OciError::Invalid {
                path: path.to_path_buf(),
                message: format!("unknown layer media type `{media_type}`"),
            });
        },
    )
}

/// Hashes a file: (sha256:<hex>, size).
pub fn digest_file(path: &Path) -> Result<(String, u64), OciError> {
    let mut f = open_blob(path)?;
    let mut h = crate::digest::HashWriter(Sha256::new());
    let n = std::io::copy(&mut f, &mut h).map_err(io_err(path))?;
    Ok((format!("sha256:{}", hex::encode(h.0.finalize())), n))
}

/// Checks every digest, size, diff_id and media type; the first fault is the error.
pub fn verify(dir: &Path, progress: &dyn Fn(usize, usize)) -> Result<LayoutImage, OciError> {
    let img = open_layout(dir)?;
    let diff_ids = img.diff_ids();
    let cpath = img.blob_path(&img.config.digest);
    if img.config_json["rootfs"]["type"].as_str() != Some("layers") {
        return Err(OciError::Invalid {
            path: cpath,
            message: "rootfs.type is not `layers`".into(),
        });
    }
    if diff_ids.len() != img.layers.len() {
        return Err(OciError::Invalid {
            path: cpath,
            message: format!(
                "{} diff_ids for {} layers",
                diff_ids.len(),
                img.layers.len()
            ),
        });
    }
    for (i, (l, want)) in img.layers.iter().zip(&diff_ids).enumerate() {
        progress(i, img.layers.len());
        let p = img.blob_path(&l.digest);
        let (digest, size) = digest_file(&p)?;
        let bad = |m: String| OciError::Invalid {
            path: p.clone(),
            message: format!("layer {i}: {m}"),
        };
        if size != l.size {
            return Err(bad(format!(
                "size is {size} bytes, the manifest says {}",
                l.size
            )));
        }
        if digest != l.digest {
            return Err(bad(format!(
                "digest mismatch (expected {}, found {digest})",
                l.digest
            )));
        }
        let mut r = open_layer(&p, &l.media_type)?;
        let mut h = crate::digest::HashWriter(Sha256::new());
        std::io::copy(&mut r, &mut h).map_err(|e| bad(format!("cannot decompress: {e}")))?;
        let found = format!("sha256:{}", hex::encode(h.0.finalize()));
        if &found != want {
            return Err(bad(format!(
                "diff_id mismatch (config says {want}, content is {found})"
            )));
        }
    }
    Ok(img)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-image layout whose manifest blob is a symlink to `target`
    /// (`None`: to a file holding the right bytes, outside the layout).
    fn layout_with_linked_manifest(dir: &Path, target: Option<&Path>) {
        let config = canonical(&json!({
            "architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": []},
        }));
        let cd = sha256_hex(&config);
        let manifest = canonical(&json!({
            "schemaVersion": 2, "mediaType": MT_MANIFEST,
            "config": {"mediaType": MT_CONFIG, "digest": format!("sha256:{cd}"), "size": config.len()},
            "layers": [],
        }));
        let md = sha256_hex(&manifest);
        let blobs = dir.join("layout/blobs/sha256");
        std::fs::create_dir_all(&blobs).unwrap();
        std::fs::write(blobs.join(&cd), &config).unwrap();
        let outside = dir.join("elsewhere.json");
        std::fs::write(&outside, &manifest).unwrap();
        std::os::unix::fs::symlink(target.unwrap_or(&outside), blobs.join(&md)).unwrap();
        std::fs::write(
            dir.join("layout/oci-layout"),
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        )
        .unwrap();
        std::fs::write(
            dir.join("layout/index.json"),
            canonical(&json!({"schemaVersion": 2, "manifests": [
                {"mediaType": MT_MANIFEST, "digest": format!("sha256:{md}"), "size": manifest.len()}
            ]})),
        )
        .unwrap();
    }

    #[test]
    fn json_blobs_are_not_read_through_links() {
        for target in [None, Some(Path::new("/dev/zero"))] {
            let dir = tempfile::tempdir().unwrap();
            layout_with_linked_manifest(dir.path(), target);
            let err = match open_layout(&dir.path().join("layout")) {
                Ok(_) => panic!("a manifest behind a symlink to {target:?} was read"),
                Err(e) => e.to_string(),
            };
            assert!(
                err.contains("blobs/sha256/") && err.contains("regular file"),
                "{err}"
            );
        }
    }

    #[test]
    fn the_layout_files_are_regular_files_never_links_or_fifos() {
        let dir = tempfile::tempdir().unwrap();
        layout_with_linked_manifest(dir.path(), None);
        let layout = dir.path().join("layout");
        for e in std::fs::read_dir(layout.join("blobs/sha256")).unwrap() {
            let p = e.unwrap().path();
            let bytes = std::fs::read(&p).unwrap();
            std::fs::remove_file(&p).unwrap();
            std::fs::write(&p, bytes).unwrap();
        }
        assert!(open_layout(&layout).is_ok());
        let copy = dir.path().join("oci-layout-copy");
        std::fs::rename(layout.join("oci-layout"), &copy).unwrap();
        std::os::unix::fs::symlink(&copy, layout.join("oci-layout")).unwrap();
        let err = match open_layout(&layout) {
            Ok(_) => panic!("a linked oci-layout was read"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains("oci-layout") && err.contains("regular file"),
            "{err}"
        );
        // a FIFO would block the reader forever: it must be refused at once
        std::fs::remove_file(layout.join("oci-layout")).unwrap();
        std::fs::rename(&copy, layout.join("oci-layout")).unwrap();
        std::fs::remove_file(layout.join("index.json")).unwrap();
        let fifo = layout.join("index.json");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(open_layout(&layout).err().map(|e| e.to_string()));
        });
        let err = rx
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("reading a layout whose index.json is a FIFO blocked")
            .expect("a FIFO index.json was read");
        assert!(
            err.contains("index.json") && err.contains("regular file"),
            "{err}"
        );
    }
}
