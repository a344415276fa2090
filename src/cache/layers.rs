//! The layer cache's records (`<cache>/layers/<key>.json`): what a built
//! layer was (its blob, media type, skeleton) and the facts the image checks
//! read, so an unchanged layer is reused without reading its tree again.
//! `build` writes them, `gc` drops those whose blob it removes.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::Cache;
use crate::inputs::Skeleton;
use crate::layer::BlobInfo;

/// A built layer as recorded in the layer cache.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct LayerRecord {
    pub name: String,
    pub blob: BlobInfo,
    pub media_type: String,
    pub skeleton: Skeleton,
    #[serde(default)]
    pub facts: LayerFacts,
}

/// A layer record whose blob is still what ferry wrote (see [`Cache::cached_blob`]).
pub fn read_record(cache: &Cache, key: &str) -> Option<LayerRecord> {
    let bytes = std::fs::read(cache.layer_record(key)).ok()?;
    let rec: LayerRecord = serde_json::from_slice(&bytes).ok()?;
    cache.cached_blob(&rec.blob.digest, rec.blob.size)?;
    Some(rec)
}

/// What one layer tells the image checks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerFacts {
    /// Every regular file (hard links included).
    pub files: BTreeSet<String>,
    /// ELF files with their DT_NEEDED and RUNPATH/RPATH entries.
    pub elf: BTreeMap<String, ElfNeeds>,
    /// Jars with their manifest Class-Path entries.
    pub jars: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ElfNeeds {
    pub needed: Vec<String>,
    pub runpath: Vec<String>,
}
