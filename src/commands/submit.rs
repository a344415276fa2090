//! `ferry submit`: `spark-submit` from the image against the cluster's
//! masters, in a throwaway container on a master's host; the driver's output
//! streams to this terminal.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, bail};

use super::launch::{connect, host_options, load, target_of};
use crate::cli::{SshArgs, SubmitArgs};
use crate::cluster::hosts::{ClusterHost, LocalHost, SshHost};
use crate::cluster::launch;
use crate::cluster::plan::{HostPlan, Plan, Role};
use crate::push::sh_quote;

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
    // the driver's container is named, so that Ctrl-C can remove it: the
    // SSH session's end does not stop it on the host
    let driver = format!(
        "ferry-{}-driver-{}-{:x}",
        plan.cluster,
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
    );
    remove_on_interrupt(plan, hp, &a.ssh, a.local, &driver)?;
    let code = launch::submit(
        plan,
        hp,
        conn,
        &driver,
        &label("ferry.spark.home")?,
        &label("ferry.spark.user")?,
        &job,
        content.as_deref(),
        &a.args,
        &mut std::io::stdout(),
    );
    if INTERRUPTED.load(Ordering::SeqCst) {
        // removing the driver ended the run: the handler says how it went
        // and exits; wait for it rather than report the driver's end
        let t0 = std::time::Instant::now();
        while t0.elapsed() < std::time::Duration::from_secs(120) {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        return Ok(ExitCode::from(130));
    }
    let code = code?;
    Ok(if code == 0 {
        ExitCode::SUCCESS
    } else {
        eprintln!("error: `{job}` failed (exit status {code}); its driver output is above");
        ExitCode::FAILURE
    })
}

/// Set by the Ctrl-C handler before it removes the driver.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// On Ctrl-C (or SIGTERM), removes the driver's container from its host
/// through a session of its own, then exits with 130 as a shell would.
fn remove_on_interrupt(
    plan: &Plan,
    hp: &HostPlan,
    ssh: &SshArgs,
    local: bool,
    driver: &str,
) -> Result<()> {
    let (plan, hp, ssh, driver) = (plan.clone(), hp.clone(), ssh.clone(), driver.to_string());
    ctrlc::set_handler(move || {
        INTERRUPTED.store(true, Ordering::SeqCst);
        eprintln!("interrupted: removing the driver `{driver}` from {}", hp.name);
        let conn: Result<Box<dyn ClusterHost>, String> = if local {
            Ok(Box::new(LocalHost))
        } else {
            target_of(&plan, &hp, &ssh)
                .map_err(|e| e.to_string())
                .and_then(|t| {
                    SshHost::connect(&t, &host_options(&hp, &ssh))
                        .map(|c| Box::new(c) as Box<dyn ClusterHost>)
                        .map_err(|e| e.to_string())
                })
        };
        let removed = conn.and_then(|c| {
            c.run(
                "removing the driver",
                &format!("docker rm -f {} >/dev/null", sh_quote(&driver)),
                &[],
            )
        });
        if let Err(why) = removed {
            eprintln!(
                "error: {}: the driver `{driver}` may still run there (`docker rm -f {driver}`): {why}",
                hp.name
            );
        }
        std::process::exit(130);
    })
    .context("setting the Ctrl-C handler")
}
