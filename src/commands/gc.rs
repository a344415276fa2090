//! `ferry gc`: remove the blobs hosts keep for images nobody will load
//! again, and print per host what went and what stayed (or JSON).

use std::process::ExitCode;

use anyhow::Result;
use serde_json::json;

use super::human;
use super::push::{ssh_options, targets};
use crate::cli::GcArgs;
use crate::push::gc::{self, Record};

fn image_json(r: &Record) -> serde_json::Value {
    json!({"name": r.name, "manifest": format!("sha256:{}", r.manifest)})
}

pub fn run(a: GcArgs) -> Result<ExitCode> {
    let targets = targets(&a.hosts)?;
    let ssh = ssh_options(a.ssh);
    let outcomes = gc::gc_all(&targets, &a.store, usize::from(a.keep), a.dry_run, &ssh);
    let failed = outcomes.iter().filter(|o| o.result.is_err()).count();
    if a.json {
        let v = json!({
            "dry_run": a.dry_run,
            "keep": a.keep,
            "ok": failed == 0,
            "hosts": outcomes.iter().map(|o| match &o.result {
                Ok(p) => json!({
                    "host": o.target.label(),
                    "ok": true,
                    "kept_images": p.kept.iter().map(image_json).collect::<Vec<_>>(),
                    "dropped_images": p.dropped.iter().map(image_json).collect::<Vec<_>>(),
                    "removed_blobs": p.remove.keys().map(|h| format!("sha256:{h}")).collect::<Vec<_>>(),
                    "removed_parts": p.remove_parts.len(),
                    "kept_blobs": p.keep.len(),
                    "bytes_freed": p.bytes_freed(),
                }),
                Err(e) => json!({"host": o.target.label(), "ok": false, "error": e.to_string()}),
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
