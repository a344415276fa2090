//! `ferry submit --local`: `spark-submit` from the image against the
//! cluster's masters; the driver's output streams to this terminal.

use std::process::ExitCode;

use anyhow::{Context, Result};

use crate::cli::SubmitArgs;
use crate::cluster::launch;

pub fn run(a: SubmitArgs) -> Result<ExitCode> {
    let (plan, facts) = super::plan::local_plan(a.cluster.as_deref(), a.image.as_deref())?;
    launch::check_local(&plan)?;
    let label = |l: &str| {
        facts
            .labels
            .get(l)
            .cloned()
            .with_context(|| format!("image `{}` has no `{l}` label", facts.reference))
    };
    let job = match a.job {
        Some(j) => j,
        None => label("ferry.sample-job")?,
    };
    let status = launch::submit_local(
        &plan,
        &label("ferry.spark.home")?,
        &label("ferry.spark.user")?,
        &job,
        &a.args,
    )?;
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        eprintln!("error: `{job}` failed ({status}); its driver output is above");
        ExitCode::FAILURE
    })
}
