//! The layer cache keys: a layer's key hashes its recipe, the digests of its
//! inputs and the keys of the layers below it, so an unchanged layer is found
//! again; local folders are fingerprinted by their contents.

use std::path::Path;

use super::error::{Context, Result};
use serde_json::json;

use super::LAYER_FORMAT;
use crate::image::lock::Artifact;
use crate::image::lock::StorePath;
use crate::image::spec::{Definition, LayerSpec};
use crate::inputs::Skeleton;
use crate::layer;
use crate::oci;

/// The cache key of a layer of store paths: they are content-addressed and
/// pinned by narHash, and the layer holds nothing else, so neither the
/// definition nor the layers below play a part. The same store path makes
/// the same layer in any image.
pub(super) fn nix_layer_key(def: &Definition, paths: &[&StorePath]) -> String {
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
pub(super) fn layer_key(
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
pub(super) fn fingerprint(root: &Path) -> Result<String> {
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
