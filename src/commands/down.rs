//! `ferry down --local`: remove a cluster's containers from this machine's
//! Docker. Its files and data stay, so a later `up` finds them.

use std::process::ExitCode;

use anyhow::Result;

use crate::cli::DownArgs;
use crate::cluster::launch;

pub fn run(a: DownArgs) -> Result<ExitCode> {
    let (plan, _) =
        super::plan::local_plan(a.target.cluster.as_deref(), a.target.image.as_deref())?;
    launch::check_local(&plan)?;
    let removed = launch::down_local(&plan.cluster)?;
    if removed.is_empty() {
        println!("cluster `{}` has no containers here", plan.cluster);
    } else {
        println!("removed {}", removed.join(", "));
    }
    Ok(ExitCode::SUCCESS)
}
