//! `ferry gc`: remove the blobs hosts keep for images nobody will load
//! again, and print per host what went and what stayed (or JSON); with
//! `--local`, the same for the layer blobs of old builds in the cache.

use std::process::ExitCode;

use anyhow::{Context, Result};
use serde_json::json;

use super::human;
use super::shared::{jump_label, ssh_options, targets};
use crate::cache::Cache;
use crate::cache::gc as cache_gc;
use crate::cache::lock::{self as cache_lock, Mode};
use crate::cli::GcArgs;
use crate::deliver::gc::{self, Record};

fn image_json(r: &Record) -> serde_json::Value {
    json!({"name": r.name, "manifest": format!("sha256:{}", r.manifest)})
}

fn run_local(a: GcArgs) -> Result<ExitCode> {
    let cache = Cache::new(a.cache.cache);
    // alone with the cache: a build in flight may have found a blob present
    // that this collection would remove before the build records it (a dry
    // run removes nothing, and shares)
    let mode = if a.dry_run {
        Mode::Shared
    } else {
        Mode::Exclusive
    };
    let _cache_lock = cache_lock::lock(&cache.root, mode, |m| eprintln!("{m}"))?;
    let o = cache_gc::gc(&cache, usize::from(a.keep), a.dry_run)
        .with_context(|| format!("collecting the cache `{}`", cache.root.display()))?;
    let build_json = |b: &cache_gc::Build| json!({"name": b.name, "record": b.path});
    if a.json {
        let v = json!({
            "dry_run": a.dry_run,
            "keep": a.keep,
            "cache": cache.root,
            "kept_builds": o.plan.kept.iter().map(build_json).collect::<Vec<_>>(),
            "dropped_builds": o.plan.dropped.iter().map(build_json).collect::<Vec<_>>(),
            "removed_blobs": o.plan.remove.iter().map(|h| format!("sha256:{h}")).collect::<Vec<_>>(),
            "removed_layer_records": o.layer_records,
            "bytes_freed": o.bytes_freed,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        let verb = if a.dry_run { "would remove" } else { "removed" };
        println!(
            "{}: kept {} build(s), dropped {}; {verb} {} layer blob(s) and {} layer record(s), {}",
            cache.root.display(),
            o.plan.kept.len(),
            o.plan.dropped.len(),
            o.plan.remove.len(),
            o.layer_records,
            human(o.bytes_freed)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// One line per host, after the details: what stayed, what went, how long it took.
fn summary(outcomes: &[gc::HostOutcome], dry_run: bool) {
    let w = outcomes
        .iter()
        .map(|o| o.target.label().len())
        .max()
        .unwrap_or(0)
        .max(4);
    let freed = if dry_run { "WOULD FREE" } else { "FREED" };
    println!();
    println!(
        "{:<w$}  {:>6}  {:>7}  {:>5}  {:>10}  {:>7}  RESULT",
        "HOST", "IMAGES", "DROPPED", "BLOBS", freed, "SECONDS"
    );
    for o in outcomes {
        let (kept, dropped, blobs, bytes, result) = match &o.result {
            Ok(p) => (
                p.kept.len().to_string(),
                p.dropped.len().to_string(),
                (p.remove.len() + p.remove_parts.len()).to_string(),
                human(p.bytes_freed()),
                "ok".to_string(),
            ),
            Err(e) => (
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                format!("error: {e}"),
            ),
        };
        println!(
            "{:<w$}  {kept:>6}  {dropped:>7}  {blobs:>5}  {bytes:>10}  {:>7.1}  {result}",
            o.target.label(),
            o.seconds,
        );
    }
}

pub fn run(a: GcArgs) -> Result<ExitCode> {
    if a.local {
        return run_local(a);
    }
    let targets = targets(&a.hosts, &a.ssh)?;
    let ssh = ssh_options(a.ssh);
    let outcomes = gc::gc_all(
        &targets,
        &a.store,
        usize::from(a.keep),
        a.dry_run,
        &ssh,
        usize::from(a.parallel),
    );
    let failed = outcomes.iter().filter(|o| o.result.is_err()).count();
    if a.json {
        let v = json!({
            "dry_run": a.dry_run,
            "keep": a.keep,
            "ok": failed == 0,
            "hosts": outcomes.iter().map(|o| match &o.result {
                Ok(p) => json!({
                    "host": o.target.label(),
                    "jump": jump_label(&o.target),
                    "ok": true,
                    "kept_images": p.kept.iter().map(image_json).collect::<Vec<_>>(),
                    "dropped_images": p.dropped.iter().map(image_json).collect::<Vec<_>>(),
                    "removed_blobs": p.remove.keys().map(|h| format!("sha256:{h}")).collect::<Vec<_>>(),
                    "removed_parts": p.remove_parts.len(),
                    "kept_blobs": p.keep.len(),
                    "bytes_freed": p.bytes_freed(),
                    "seconds": (o.seconds * 1000.0).round() / 1000.0,
                }),
                Err(e) => json!({
                    "host": o.target.label(),
                    "jump": jump_label(&o.target),
                    "ok": false,
                    "error": e.to_string(),
                    "seconds": (o.seconds * 1000.0).round() / 1000.0,
                }),
            }).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        let verb = if a.dry_run { "would remove" } else { "removed" };
        for o in &outcomes {
            let host = o.target.label();
            match &o.result {
                Ok(p) => {
                    for r in &p.kept {
                        println!("{host}: keep {} sha256:{}", r.name, &r.manifest[..12]);
                    }
                    for r in &p.dropped {
                        println!("{host}: drop {} sha256:{}", r.name, &r.manifest[..12]);
                    }
                    println!(
                        "{host}: {verb} {} blob(s) and {} stale .part file(s), {}; kept {} blob(s) ({})",
                        p.remove.len(),
                        p.remove_parts.len(),
                        human(p.bytes_freed()),
                        p.keep.len(),
                        human(p.keep.values().sum()),
                    );
                }
                Err(e) => println!("{host}: error: {e}"),
            }
        }
        summary(&outcomes, a.dry_run);
    }
    if failed > 0 {
        eprintln!(
            "error: {failed} of {} host(s) failed (see above); fix them and run `ferry gc` again",
            outcomes.len()
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}
