//! `ferry build`: definition + lock → OCI layout (and docker-archive).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use serde_json::json;

use super::{Term, human};
use crate::build::{self, Reporter};
use crate::cache::Cache;
use crate::cache::lock::{Mode, lock};
use crate::cli::BuildArgs;
use crate::layer::BlobInfo;
use crate::oci;

impl Reporter for Term {
    fn layer_started(&self, index: usize, name: &str) {
        self.line(&format!("layer {} `{name}`: reading inputs", index + 1));
    }
    fn layer_done(&self, index: usize, name: &str, info: &BlobInfo, cached: bool) {
        let how = if cached { "cached" } else { "built" };
        self.line(&format!(
            "layer {} `{name}`: {how}, {} → {} {}",
            index + 1,
            human(info.uncompressed_size),
            human(info.size),
            &info.digest[..19]
        ));
    }
    fn download(&self, what: &str, done: u64, total: Option<u64>) {
        Term::download(self, what, done, total);
    }
}

pub fn run(a: BuildArgs) -> Result<ExitCode> {
    let term = Term::new(false);
    let cache = Cache::new(a.cache.cache);
    let _cache_lock = lock(&cache.root, Mode::Shared, |m| eprintln!("{m}"))?;
    let built_in = a.definition.is_none();
    let (def, lock) = super::definition_and_lock(a.definition, &cache, &term)?;
    let jobs = a.jobs.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let opts = build::Options {
        cache: &cache,
        offline: a.offline,
        mirror: a.mirror.as_deref(),
        jobs,
        debian_mirrors: &crate::debian::Mirrors::new(&a.debian.debian_mirror),
    };
    let built = build::build(&def, &lock, &opts, &term)?;
    let short = def
        .spec
        .name
        .rsplit('/')
        .next()
        .unwrap_or(&def.spec.name)
        .to_string();
    let out = a.out.unwrap_or_else(|| PathBuf::from("out").join(&short));
    oci::write_layout(&built.image, &out)
        .with_context(|| format!("writing the layout `{}`", out.display()))?;
    let layer_digests: Vec<&str> = built
        .layers
        .iter()
        .map(|l| l.blob.digest.as_str())
        .collect();
    crate::cache::gc::record_build(
        &cache,
        &def.spec.name,
        &built.image.manifest_digest,
        &layer_digests,
    )
    .context("recording the build in the cache (for `ferry gc --local`)")?;
    if let Some(tar) = &a.docker_archive {
        oci::write_docker_archive(&built.image, tar)
            .with_context(|| format!("writing the docker-archive `{}`", tar.display()))?;
    }
    let total: u64 = built.layers.iter().map(|l| l.blob.size).sum();
    if built_in && built.image.manifest_digest != crate::image::default_image::expected_digest() {
        // same definition and lock, other bytes: say so loudly, it is a bug or a tampered input
        eprintln!(
            "warning: the built-in image built to {}, but this ferry was released with {}: please report it",
            built.image.manifest_digest,
            crate::image::default_image::expected_digest()
        );
    }
    if a.json {
        let v = json!({
            "reference": built.image.reference,
            "manifest_digest": built.image.manifest_digest,
            "config_digest": built.image.config_digest,
            "layout": out,
            "docker_archive": a.docker_archive,
            "size": total,
            "layers": built.layers.iter().map(|l| json!({
                "name": l.name, "digest": l.blob.digest, "diff_id": l.blob.diff_id,
                "size": l.blob.size, "uncompressed_size": l.blob.uncompressed_size, "cached": l.cached,
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    }
    term.line(&format!(
        "built {} {} ({} layers, {}) → {}{}",
        built.image.reference,
        built.image.manifest_digest,
        built.layers.len(),
        human(total),
        out.display(),
        a.docker_archive
            .map(|t| format!(" and {}", t.display()))
            .unwrap_or_default()
    ));
    Ok(ExitCode::SUCCESS)
}
