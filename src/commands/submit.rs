//! `ferry submit`: `spark-submit` from the image against the cluster's
//! masters, in a throwaway container on a master's host; the driver's output
//! streams to this terminal.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};

use super::launch::{connect, load};
use crate::cli::SubmitArgs;
use crate::cluster::launch;
use crate::cluster::plan::Role;

pub fn run(a: SubmitArgs) -> Result<ExitCode> {
    let (cluster, job) = match (&a.cluster, a.local, a.items.as_slice()) {
        (Some(c), _, [job]) => (Some(c.clone()), Some(job.clone())),
        (Some(c), _, []) => (Some(c.clone()), None),
        (None, true, [job]) => (None, Some(job.clone())),
        (None, true, []) => (None, None),
        (None, false, [c]) => (Some(PathBuf::from(c)), None),
        (None, false, [c, job]) => (Some(PathBuf::from(c)), Some(job.clone())),
        (None, false, []) => {
            bail!("name the cluster file: `ferry submit cluster.toml [job.py]` (or --local)")
        }
        _ => bail!(
            "too many arguments: with --local or --cluster give only the job (`ferry submit --local job.py -- ARGS`)"
        ),
    };
    let loaded = load(cluster.as_deref(), a.image.as_deref(), a.local)?;
    let plan = &loaded.plan;
    let label = |l: &str| {
        loaded
            .facts
            .labels
            .get(l)
            .cloned()
            .with_context(|| format!("image `{}` has no `{l}` label", loaded.facts.reference))
    };
    let job = match job {
        Some(j) => j,
        None => label("ferry.sample-job")?,
    };
    let local_job = std::path::Path::new(&job);
    let content = if local_job.is_file() {
        Some(std::fs::read(local_job).with_context(|| format!("reading `{job}`"))?)
    } else {
        None
    };
    let fleet = connect(plan, &a.ssh, a.local);
    // the driver runs on a master's host: it reaches masters and workers
    let on = plan
        .hosts
        .iter()
        .filter(|h| h.containers.iter().any(|c| c.role == Role::Master))
        .find_map(|h| fleet.ok(&h.name).map(|c| (h, c)));
    let Some((hp, conn)) = on else {
        let why = fleet
            .failures()
            .into_iter()
            .map(|(h, w)| format!("{h}: {w}"))
            .collect::<Vec<_>>()
            .join("; ");
        bail!(
            "no master's host of cluster `{}` can be reached: {why}",
            plan.cluster
        );
    };
    eprintln!("submitting `{job}` from {} to {}", hp.name, plan.master_url);
    let code = launch::submit(
        plan,
        hp,
        conn,
        &label("ferry.spark.home")?,
        &label("ferry.spark.user")?,
        &job,
        content.as_deref(),
        &a.args,
        &mut std::io::stdout(),
    )?;
    Ok(if code == 0 {
        ExitCode::SUCCESS
    } else {
        eprintln!("error: `{job}` failed (exit status {code}); its driver output is above");
        ExitCode::FAILURE
    })
}
