//! `ferry submit`: `spark-submit` in a throwaway container of the cluster's
//! image, against every master.

use crate::ssh::Script;
use std::io::Write;

use super::LaunchError;
use super::scripts::SUBMIT_SH;
use crate::cluster::hosts::ClusterHost;
use crate::cluster::plan::{HostPlan, Plan, Role, SECRET_VAR};

/// Runs `spark-submit` in a throwaway container of the cluster's image on
/// the host `on` (host networking), against every master; the driver's
/// output streams to `out`. A `job` given as `local` content is sent to the
/// host and mounted; otherwise `job` is a path inside the image.
#[allow(clippy::too_many_arguments)]
pub fn run(
    plan: &Plan,
    on: &HostPlan,
    conn: &dyn ClusterHost,
    driver: &str,
    spark_home: &str,
    spark_user: &str,
    job: &str,
    local: Option<&[u8]>,
    args: &[String],
    out: &mut dyn Write,
) -> Result<i32, LaunchError> {
    let script = submit_script(
        plan,
        on,
        driver,
        spark_home,
        spark_user,
        job,
        local.is_some(),
        args,
    );
    conn.stream("running spark-submit", &script, local.unwrap_or(&[]), out)
        .map_err(|e| LaunchError::Host(e.to_string()))
}

/// The script [`submit`] runs (see [`SUBMIT_SH`]); with `local`, the job
/// comes on its stdin.
#[allow(clippy::too_many_arguments)]
pub(super) fn submit_script(
    plan: &Plan,
    on: &HostPlan,
    driver: &str,
    spark_home: &str,
    spark_user: &str,
    job: &str,
    local: bool,
    args: &[String],
) -> Script {
    let mut auth = Vec::new();
    if on.secret.is_some() {
        auth = vec![
            "--properties-file".to_string(),
            "/etc/ferry/submit/auth.conf".into(),
        ];
    }
    let job_in = match local {
        true => {
            // its name is seen inside the container only; no `:` or `,`
            // may reach the volume's spec
            let name: String = std::path::Path::new(job)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "job.py".into())
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || "._-".contains(c) {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            format!("/opt/ferry/submit/{name}")
        }
        false => job.to_string(),
    };
    let mut cmd = vec![format!("{spark_home}/bin/spark-submit")];
    cmd.extend(auth);
    cmd.extend([
        "--master".to_string(),
        plan.master_url.clone(),
        "--conf".into(),
        format!("spark.driver.host={}", on.address),
        // a worker being drained (`ferry scale --remove-worker`) gets no
        // new tasks, and its executors leave once idle
        "--conf".into(),
        "spark.decommission.enabled=true".into(),
    ]);
    // Spark asks for 1 GiB executors by default: on smaller workers a job
    // would wait for resources forever
    if let Some(mib) = smallest_worker_mib(plan).filter(|m| *m < 1024) {
        cmd.extend(["--conf".into(), format!("spark.executor.memory={mib}m")]);
    }
    let inside = if local { job_in.clone() } else { String::new() };
    cmd.push(job_in);
    cmd.extend(args.iter().cloned());
    Script::new(SUBMIT_SH)
        .arg(driver)
        .arg(format!("ferry.driver={}", plan.cluster))
        .arg(spark_user)
        .arg(&plan.image.reference)
        .arg(on.secret.as_ref().map(|s| s.path.as_str()).unwrap_or(""))
        .arg(SECRET_VAR)
        .arg(inside)
        .args(cmd)
}

/// The memory of the smallest worker (its `--memory`), in MiB.
fn smallest_worker_mib(plan: &Plan) -> Option<u64> {
    plan.hosts
        .iter()
        .flat_map(|h| &h.containers)
        .filter(|c| c.role == Role::Worker)
        .filter_map(|c| {
            let i = c.command.iter().position(|a| a == "--memory")?;
            mib(c.command.get(i + 1)?)
        })
        .min()
}

/// `512m`, `2g`... in MiB.
pub(super) fn mib(m: &str) -> Option<u64> {
    let (n, unit) = m.split_at(m.len().checked_sub(1)?);
    let n: u64 = n.parse().ok()?;
    match unit.to_ascii_lowercase().as_str() {
        "k" => Some(n / 1024),
        "m" => Some(n),
        "g" => Some(n * 1024),
        "t" => Some(n * 1024 * 1024),
        _ => None,
    }
}
