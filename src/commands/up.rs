//! `ferry up`: deliver the image, write the files and start a cluster's
//! containers in the plan's order, over SSH or (`--local`) on this machine.
//! The flow is [`super::cluster_access::up`], which `ferry scale` ends with too.

use std::process::ExitCode;

use anyhow::Result;

use crate::cli::UpArgs;

pub fn run(a: UpArgs) -> Result<ExitCode> {
    super::cluster_access::up(a)
}
