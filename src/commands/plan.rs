//! `ferry plan`: read a cluster file (or import a flat config), find the
//! image's digest and labels, and print the plan as text or JSON.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};

use super::cluster_access::image_facts;
use crate::cli::PlanArgs;
use crate::cluster::envcfg;
use crate::cluster::file::ClusterFile;
use crate::cluster::plan;
use crate::fsutil;

pub fn run(a: PlanArgs) -> Result<ExitCode> {
    let (file, base) = match (&a.cluster, &a.from_env_cfg) {
        (Some(path), _) => (
            ClusterFile::load(path)?,
            fsutil::parent_dir(path).to_path_buf(),
        ),
        (None, Some(cfg)) => {
            let imported = envcfg::load(cfg)?;
            for n in &imported.notes {
                eprintln!("note: {n}");
            }
            if let Some(out) = &a.write_cluster {
                fsutil::write_atomic(out, imported.toml.as_bytes())
                    .with_context(|| format!("writing `{}`", out.display()))?;
                eprintln!("wrote `{}`", out.display());
            }
            // the converted text is what is checked; `--write-cluster` shows it
            let named = PathBuf::from(format!("{} (converted)", cfg.display()));
            let file = ClusterFile::parse(&imported.toml, &named)?;
            (file, PathBuf::from("."))
        }
        (None, None) => unreachable!("clap requires a cluster file or --from-env-cfg"),
    };
    let facts = image_facts(&file, a.image.as_deref(), &base)?;
    let plan = plan::plan(&file, &facts)?;
    if a.json {
        print!("{}", plan.to_json());
    } else {
        print!("{}", plan.to_text());
    }
    Ok(ExitCode::SUCCESS)
}
