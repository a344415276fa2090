//! The image as a push sends it: its blobs on the local disk, its reference
//! and ids, and the `manifest.json` of the docker-archive a host loads. It
//! reads the layout; it does not talk to hosts.

use super::PushError;
use crate::grammar::is_hex64;
use crate::oci::{self, LayoutImage};
use serde_json::json;
use std::collections::BTreeSet;
use std::path::PathBuf;

/// One blob of the image on the local disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalBlob {
    /// The sha256 in hex, without `sha256:`.
    pub hex: String,
    pub size: u64,
    pub path: PathBuf,
}

/// What a push sends: the image's blobs and the name Docker gives it.
#[derive(Debug, Clone)]
pub struct PushImage {
    pub reference: String,
    pub config: LocalBlob,
    pub layers: Vec<LocalBlob>,
    pub manifest: LocalBlob,
    /// The config's `rootfs.diff_ids`, one per layer.
    pub diff_ids: Vec<String>,
}

fn hex_of(digest: &str) -> String {
    digest.trim_start_matches("sha256:").to_string()
}

impl PushImage {
    /// The image of a layout, named by `tag` or by the layout's
    /// `io.containerd.image.name` annotation.
    pub fn from_layout(img: &LayoutImage, tag: Option<&str>) -> Result<PushImage, PushError> {
        let reference = match tag {
            Some(t) => t.to_string(),
            None => img
                .manifest
                .annotations
                .get("io.containerd.image.name")
                .and_then(|v| v.as_str())
                .map(str::to_string)
                .ok_or_else(|| PushError::NoReference {
                    path: img.dir.join("index.json"),
                })?,
        };
        let blob = |d: &oci::Descriptor| LocalBlob {
            hex: hex_of(&d.digest),
            size: d.size,
            path: img.blob_path(&d.digest),
        };
        Ok(PushImage {
            reference,
            config: blob(&img.config),
            layers: img.layers.iter().map(blob).collect(),
            manifest: blob(&img.manifest),
            diff_ids: img.diff_ids(),
        })
    }

    /// Every blob once: config, layers in order, then the manifest.
    pub fn blobs(&self) -> Vec<&LocalBlob> {
        let mut seen = BTreeSet::new();
        std::iter::once(&self.config)
            .chain(&self.layers)
            .chain(std::iter::once(&self.manifest))
            .filter(|b| seen.insert(b.hex.clone()))
            .collect()
    }

    pub fn config_id(&self) -> String {
        format!("sha256:{}", self.config.hex)
    }
}

/// The `manifest.json` of a docker-archive whose blobs sit at `blobs/sha256/<hex>`.
pub fn docker_manifest(image: &PushImage) -> Vec<u8> {
    let path = |hex: &str| format!("blobs/sha256/{hex}");
    oci::canonical(&json!([{
        "Config": path(&image.config.hex),
        "RepoTags": [image.reference],
        "Layers": image.layers.iter().map(|l| path(&l.hex)).collect::<Vec<_>>(),
    }]))
}

/// An image id as Docker prints it (`sha256:<hex>`); Podman prints the bare hex.
pub(super) fn image_id(line: &str) -> Option<String> {
    let hex = line.strip_prefix("sha256:").unwrap_or(line);
    is_hex64(hex).then(|| format!("sha256:{hex}"))
}
